import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { z } from "zod";
import { InvalidInputError } from "../errors.js";

/*
 * The three PEM files each side of the fleet's mTLS holds: the fleet CA, its own certificate
 * and its own key. Read and checked the same way on both sides, so a broken file is named
 * with its problem instead of surfacing as a TLS alert on the other host.
 */

const pathSchema = z.string().min(1, "must not be empty");

export const tlsFilesSchema = z.strictObject({
  /** The fleet CA: certificates of the other side must be signed by it. */
  ca: pathSchema,
  cert: pathSchema,
  key: pathSchema,
});
export type TlsFiles = z.output<typeof tlsFilesSchema>;

export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/**
 * Reads the files and checks what TLS would only find out at the handshake, or never: every
 * CA certificate parses (node takes a CA file without one and then trusts nobody), the key
 * is a key and belongs to the certificate, and the certificate is valid at `now`.
 */
export function readTlsFiles(files: TlsFiles, now: number): TlsMaterial {
  const material = { ca: read(files, "ca"), cert: read(files, "cert"), key: read(files, "key") };
  const caText = material.ca.toString("utf8");
  const authorities = caText.match(PEM_CERTIFICATE) ?? [];
  if (authorities.length === 0) fail(files, "ca", "holds no PEM certificate");
  authorities.forEach((pem) => parseCertificate(files, "ca", pem));
  const certificate = parseCertificate(files, "cert", material.cert);
  try {
    createPrivateKey(material.key);
  } catch (error) {
    fail(files, "key", `not a private key (${(error as Error).message})`);
  }
  try {
    createSecureContext({ cert: material.cert, key: material.key });
  } catch (error) {
    fail(files, "key", `does not belong to ${files.cert} (${(error as Error).message})`);
  }
  const from = Date.parse(certificate.validFrom);
  const to = Date.parse(certificate.validTo);
  if (now < from) fail(files, "cert", `not valid before ${new Date(from).toISOString()}`);
  if (now > to) fail(files, "cert", `expired on ${new Date(to).toISOString()}`);
  return material;
}

function read(files: TlsFiles, which: keyof TlsFiles): Buffer {
  try {
    return readFileSync(files[which]);
  } catch (error) {
    return fail(files, which, `cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

function parseCertificate(files: TlsFiles, which: keyof TlsFiles, pem: string | Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    return fail(files, which, `not a PEM certificate (${(error as Error).message})`);
  }
}

function fail(files: TlsFiles, which: keyof TlsFiles, problem: string): never {
  throw new InvalidInputError("TLS files", [{ path: which, message: `${files[which]}: ${problem}` }]);
}
