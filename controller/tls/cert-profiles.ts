import { isIP } from "node:net";
import { z } from "zod";
import { agentIdSchema, agentUri } from "./peer-identity.js";

/*
 * What `hafleet certs` asks of openssl, as plain data: the config text and the argument lists
 * of each run, built only from values that passed the schemas below. Every value that reaches
 * the config text is a whitelisted name, DNS name or IP literal: openssl's config syntax
 * knows `$` expansions, `#` comments and line breaks, and none of them can get in. File
 * names are fixed and relative: openssl runs in a private work directory.
 */

/** Agent ids and controller names: the agent id rules, so either can stand in a URI or CN. */
const subjectNameSchema = agentIdSchema;

const DNS_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const DNS_NAME = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);

const dnsNameSchema = z.string().regex(DNS_NAME, "must be a DNS name: dot-separated labels of letters, digits and '-'");
// isIP alone lets an IPv6 zone (`%eth0`, anything after the %) through.
const ipSchema = z.string().refine((text) => /^[0-9A-Fa-f:.]+$/.test(text) && isIP(text) !== 0, "must be an IPv4 or IPv6 address");
export const daysSchema = z.number().int("must be a whole number of days").min(1, "must be at least 1").max(3650, "must be at most 3650 (10 years)");

export const leafProfileSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("agent"), id: subjectNameSchema }),
  z
    .strictObject({
      kind: z.literal("controller"),
      name: subjectNameSchema,
      dns: z.array(dnsNameSchema),
      ips: z.array(ipSchema),
    })
    .refine((profile) => profile.dns.length + profile.ips.length > 0, {
      path: ["dns"],
      message: "needs at least one DNS name or IP address: agents check the address they dial against them",
    }),
]);
/** Who a leaf certificate is for: an agent (its id as SAN URI) or a controller (DNS/IP SANs). */
export type LeafProfile = z.output<typeof leafProfileSchema>;

export const CA_DAYS = 3650;
const CA_SUBJECT = "/CN=hafleet fleet CA";
/** What a certificate and its key are called in the certificates directory. */
export interface PairNames {
  cert: string;
  key: string;
}
export const CA_FILES: PairNames = { cert: "ca.crt", key: "ca.key" };

export function leafFiles(profile: LeafProfile): PairNames {
  const base = profile.kind === "agent" ? `agent-${profile.id}` : `controller-${profile.name}`;
  return { cert: `${base}.crt`, key: `${base}.key` };
}

/** Files of the work directory: the config, openssl's CA database, the CA and the new pair. */
export const WORK = { config: "openssl.cnf", index: "index.txt", ca: CA_FILES, key: "new.key", csr: "new.csr", cert: "new.crt" } as const;

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** From an hour ago, so that a host whose clock lags a little takes a new certificate. */
export function validityFor(days: number, now: number): Validity {
  return { notBefore: new Date(now - 3_600_000), notAfter: new Date(now + days * 86_400_000) };
}

/** `YYYYMMDDHHMMSSZ`, the form `openssl ca -startdate/-enddate` takes. */
export function opensslTime(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, "").replace(/\.\d{3}Z$/, "Z");
}

/** The openssl config of every run: the CA's extensions, `openssl ca`'s settings, and the leaf's extensions when there is a leaf. */
export function opensslConfig(profile: LeafProfile | null): string {
  const lines = [
    "[ req ]",
    "distinguished_name = req_dn",
    "[ req_dn ]",
    "[ ca_ext ]",
    "basicConstraints = critical, CA:true, pathlen:0",
    "keyUsage = critical, keyCertSign, cRLSign",
    "subjectKeyIdentifier = hash",
    "[ ca ]",
    "default_ca = fleet_ca",
    "[ fleet_ca ]",
    `database = ${WORK.index}`,
    "serial = serial",
    "new_certs_dir = .",
    "default_md = sha256",
    "policy = fleet_policy",
    "unique_subject = no",
    "copy_extensions = none",
    "email_in_dn = no",
    "[ fleet_policy ]",
    "commonName = supplied",
  ];
  if (profile !== null) lines.push(...leafExtensions(profile));
  return lines.join("\n") + "\n";
}

function leafExtensions(profile: LeafProfile): string[] {
  const names =
    profile.kind === "agent"
      ? [`URI.1 = ${agentUri(profile.id)}`]
      : [...profile.dns.map((name, i) => `DNS.${i + 1} = ${name}`), ...profile.ips.map((ip, i) => `IP.${i + 1} = ${ip}`)];
  return [
    "[ leaf_ext ]",
    "basicConstraints = critical, CA:false",
    "keyUsage = critical, digitalSignature",
    `extendedKeyUsage = ${profile.kind === "agent" ? "clientAuth" : "serverAuth"}`,
    "subjectAltName = @leaf_san",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid:always",
    "[ leaf_san ]",
    ...names,
  ];
}

const NEW_KEY = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];

/** The runs that make the fleet CA: its key, then its self-signed certificate. */
export function caRuns(days: number): string[][] {
  return [
    [...NEW_KEY, "-out", WORK.ca.key],
    ["req", "-x509", "-new", "-key", WORK.ca.key, "-subj", CA_SUBJECT, "-days", String(days), "-sha256", "-config", WORK.config, "-extensions", "ca_ext", "-out", WORK.ca.cert],
  ];
}

/** The runs that make a leaf: its key, a request, and the CA's signature over the given validity. */
export function leafRuns(profile: LeafProfile, validity: Validity): string[][] {
  const cn = profile.kind === "agent" ? profile.id : profile.name;
  return [
    [...NEW_KEY, "-out", WORK.key],
    ["req", "-new", "-key", WORK.key, "-subj", `/CN=${cn}`, "-config", WORK.config, "-out", WORK.csr],
    // `openssl ca` rather than `x509 -req`: only it takes an explicit start date (openssl 3.0).
    ["ca", "-batch", "-config", WORK.config, "-cert", WORK.ca.cert, "-keyfile", WORK.ca.key, "-in", WORK.csr, "-out", WORK.cert, "-notext", "-rand_serial", "-extensions", "leaf_ext", "-startdate", opensslTime(validity.notBefore), "-enddate", opensslTime(validity.notAfter)],
  ];
}
