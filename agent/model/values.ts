import { isIP, SocketAddress } from "node:net";
import { z } from "zod";

/**
 * The whitelist every value passes before it may appear in a Runtime API command.
 * HAProxy's CLI runs a second command after `;` or a newline and takes spaces as extra
 * arguments, so values are checked against what they may contain, never escaped.
 */

export const NAME_MAX_LENGTH = 64;
const NAME_PATTERN = /^[A-Za-z0-9._-]+$/;

/** A backend or server name as HAProxy's CLI can take it verbatim. */
export const nameSchema = z
  .string()
  .min(1, "must not be empty")
  .max(NAME_MAX_LENGTH, `must be at most ${NAME_MAX_LENGTH} characters`)
  .regex(NAME_PATTERN, "may contain only letters, digits, '.', '_' and '-'")
  .brand<"Name">();
export type Name = z.infer<typeof nameSchema>;

// Zone ids (`fe80::1%eth0`) and anything else outside hex digits, dots and colons are refused
// before the address is parsed, so no stray character can reach a command.
const ADDRESS_CHARACTERS = /^[0-9A-Fa-f:.]+$/;

/**
 * An IPv4 or IPv6 literal, in the canonical text form of inet_ntop: the form HAProxy prints
 * back, so that a desired address and an observed one compare equal when they are the same.
 * An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the IPv4 host it maps: see ipv4Mapped.
 */
export const addressSchema = z
  .string()
  .refine(isIpLiteral, { message: "must be an IPv4 or IPv6 literal" })
  .transform((text) => canonicalAddress(text))
  .refine((address) => !isUnspecified(address), { message: "must not be the unspecified address" })
  .brand<"Address">();
export type Address = z.infer<typeof addressSchema>;

function isIpLiteral(text: string): boolean {
  return ADDRESS_CHARACTERS.test(text) && isIP(text) !== 0;
}

// Template slots are configured with the unspecified address as a placeholder: a real
// backend never has it, and accepting it would make a placeholder look desired.
function isUnspecified(address: string): boolean {
  return address === "0.0.0.0" || address === "::";
}

// isIP takes IPv4 only in the dotted decimal form inet_ntop prints (no leading zeros, no hex),
// so an IPv4 literal is already canonical; the SocketAddress round trip, the costliest part of
// validating a push, is needed for IPv6 only.
function canonicalAddress(text: string): string {
  if (isIP(text) === 4) return text;
  const printed = ntop6(text);
  return ipv4Mapped(printed) ?? printed;
}

function ntop6(text: string): string {
  return new SocketAddress({ address: text, family: "ipv6" }).address;
}

// inet_ntop prints every IPv4-mapped address this way, whatever form it was written in.
const IPV4_MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/;

/**
 * HAProxy keeps the form it was given: after `set server B/S addr ::ffff:127.0.0.1` (2.6),
 * `show servers state` prints `::ffff:127.0.0.1` and `show stat` `[::ffff:127.0.0.1]:P`, while
 * both reach the same IPv4 host. hafleet takes the IPv4 form as the one name of that host: it
 * sends it, so HAProxy prints what an IPv4 config line shows, and reads the mapped form as it.
 */
function ipv4Mapped(printed: string): string | null {
  return IPV4_MAPPED.exec(printed)?.[1] ?? null;
}

/** HAProxy wraps ports modulo 65536 and accepts 0 or `1e3`: only an integer in range passes. */
export const portSchema = z
  .number({ error: "must be a number" })
  .int("must be an integer")
  .min(1, "must be between 1 and 65535")
  .max(65535, "must be between 1 and 65535")
  .brand<"Port">();
export type Port = z.infer<typeof portSchema>;

export const weightSchema = z
  .number({ error: "must be a number" })
  .int("must be an integer")
  .min(0, "must be between 0 and 256")
  .max(256, "must be between 0 and 256")
  .brand<"Weight">();
export type Weight = z.infer<typeof weightSchema>;

/*
 * The same rules as the schemas, as plain checks for values HAProxy printed: reading back
 * 10,000 servers goes through these 30,000 times per pass, where zod costs tens of ms.
 */

export function asName(text: string): Name | null {
  return text.length >= 1 && text.length <= NAME_MAX_LENGTH && NAME_PATTERN.test(text) ? (text as Name) : null;
}

/**
 * HAProxy prints addresses with inet_ntop, so a literal that is not in that form (`2001:DB8::1`)
 * did not come from HAProxy intact; branded as it is, it would never equal the desired address.
 * An IPv4-mapped one comes back as its IPv4 form, the one desired addresses take.
 */
export function asObservedAddress(text: string): Address | null {
  if (!isIpLiteral(text)) return null;
  const address = isIP(text) === 4 ? text : ntop6(text) === text ? (ipv4Mapped(text) ?? text) : null;
  return address === null || isUnspecified(address) ? null : (address as Address);
}

export function asPort(value: number): Port | null {
  return Number.isInteger(value) && value >= 1 && value <= 65535 ? (value as Port) : null;
}

/** `address:port`, bracketed for IPv6: the key a server is known by across slots. */
export function endpointKey(address: Address, port: Port): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}
