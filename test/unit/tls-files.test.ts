import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readTlsFiles, type TlsFiles } from "../../agent/tls/tls-files.js";
import { validityFor } from "../../controller/tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { expectInvalid } from "../support/helpers.js";

// The checks both sides make before handing TLS files to grpc-js, on certificates openssl made.

let root: string;
let good: TlsFiles;
let other: TlsFiles;
const NOW = Date.now();

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "hafleet-tls-files-"));
  const ca = await initFleetCa(join(root, "ca"), 30);
  const edge1 = await issueCertificate(join(root, "ca"), { kind: "agent", id: "edge-1" }, validityFor(30, NOW));
  const edge2 = await issueCertificate(join(root, "ca"), { kind: "agent", id: "edge-2" }, { notBefore: new Date(NOW + 86_400_000), notAfter: new Date(NOW + 2 * 86_400_000) });
  good = { ca: ca.cert, ...edge1 };
  other = { ca: ca.cert, ...edge2 };
  await writeFile(join(root, "junk.pem"), "not a certificate\n");
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function expectProblem(files: TlsFiles, path: keyof TlsFiles, message: string, now = NOW): void {
  expectInvalid(() => void readTlsFiles(files, now), [{ path, message }], "TLS files");
}

describe("TLS files: checked before grpc-js sees them", () => {
  it("reads a matching set", () => {
    const material = readTlsFiles(good, NOW);
    expect(material.cert.toString()).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(material.key.toString()).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it("names a missing file", () => {
    const missing = join(root, "nope.crt");
    expectProblem({ ...good, cert: missing }, "cert", `${missing}: cannot be read (ENOENT)`);
  });

  it("refuses a CA file without a certificate, which node would take and then trust nobody", () => {
    expectProblem({ ...good, ca: join(root, "junk.pem") }, "ca", `${join(root, "junk.pem")}: holds no PEM certificate`);
  });

  it("refuses a certificate or a key that is not one", () => {
    expect(() => readTlsFiles({ ...good, cert: join(root, "junk.pem") }, NOW)).toThrow(/cert: .*junk\.pem: not a PEM certificate/);
    expect(() => readTlsFiles({ ...good, key: good.cert }, NOW)).toThrow(/key: .*agent-edge-1\.crt: not a private key/);
  });

  it("refuses a key that belongs to another certificate", () => {
    expect(() => readTlsFiles({ ...good, key: other.key }, NOW)).toThrow(new RegExp(`key: ${other.key}: does not belong to ${good.cert} \\(.*key values mismatch\\)`));
  });

  it("refuses a certificate outside its validity", () => {
    // Certificates count in whole seconds.
    const notBefore = new Date(Math.floor((NOW + 86_400_000) / 1000) * 1000);
    expectProblem(other, "cert", `${other.cert}: not valid before ${notBefore.toISOString()}`);
    expect(() => readTlsFiles(good, NOW + 31 * 86_400_000)).toThrow(/cert: .* expired on /);
    expect(readTlsFiles(other, NOW + 1.5 * 86_400_000).cert.length).toBeGreaterThan(0);
  });
});
