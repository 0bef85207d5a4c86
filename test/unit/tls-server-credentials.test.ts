import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { TlsFiles } from "../../agent/tls/tls-files.js";
import { validityFor } from "../../controller/tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../../controller/tls/fleet-ca.js";
import { ServerTls } from "../../controller/tls/server-credentials.js";

// The controller's TLS files re-read on a timer: a renewal is taken without a signal, a broken
// file is logged once however long it stays broken, and the previous material stays meanwhile.

let root: string;
let live: TlsFiles;
let renewed: { cert: string; key: string };
const lines: Array<Record<string, unknown>> = [];
const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
let tls: ServerTls | null = null;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "hafleet-server-tls-"));
  const dir = join(root, "fleet");
  const ca = await initFleetCa(dir, 30);
  const first = await issueCertificate(dir, { kind: "controller", name: "ctl", dns: ["ctl.example"], ips: [] }, validityFor(30, Date.now()));
  renewed = await issueCertificate(dir, { kind: "controller", name: "ctl-2", dns: ["ctl.example"], ips: [] }, validityFor(30, Date.now()));
  live = { ca: ca.cert, cert: join(root, "live.crt"), key: join(root, "live.key") };
  await copyFile(first.cert, live.cert);
  await copyFile(first.key, live.key);
});

afterEach(() => {
  vi.useRealTimers();
  tls?.close();
  lines.length = 0;
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const reloaded = () => lines.filter((line) => line.msg === "TLS files reloaded: new connections use them");
const refused = () => lines.filter((line) => line.msg === "TLS files not reloaded: the controller keeps its previous certificates");

describe("server TLS files, polled", () => {
  it("refuses to start on broken files, naming the file", () => {
    expect(() => new ServerTls({ ...live, ca: live.key }, { logger })).toThrow(`TLS files: ca: ${live.key}: holds no PEM certificate`);
  });

  it("takes a renewal on its own, logs a broken file once, and keeps the material in use meanwhile", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    tls = new ServerTls(live, { logger, pollMs: 10 });
    await copyFile(renewed.key, live.key);
    vi.advanceTimersByTime(10);
    // Half renewed: the new key does not fit the old certificate.
    expect(refused()).toHaveLength(1);
    expect(refused()[0]!.err).toMatch(/key: .*live\.key: does not belong to .*live\.crt/);
    await copyFile(renewed.cert, live.cert);
    vi.advanceTimersByTime(10);
    expect(reloaded()).toHaveLength(1);
    expect(tls.reload()).toBe("unchanged");

    await writeFile(live.cert, "garbage");
    vi.advanceTimersByTime(100);
    // Ten polls, one line; an explicit reload says it again.
    expect(refused()).toHaveLength(2);
    expect(tls.reload()).toBe("refused");
    expect(refused()).toHaveLength(3);
    expect(reloaded()).toHaveLength(1);
  });
});
