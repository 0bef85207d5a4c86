import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runHafleet, type CliResult } from "../support/cli.js";
import { freePort } from "../support/haproxy.js";
import { until } from "../support/helpers.js";
import { CONTROLLER_BIN, startNode } from "../support/processes.js";

// The controller's mistakes an operator makes first: a port already taken, a token file that
// is missing or short, a certificate or state dir that a start would trip over. Each is one
// line naming what to fix, exit 2 (input) or 3 (environment), never a stack trace; and the
// quick start can take a token, so that it can be frozen.

let dir: string;
let catalog: string;
let taken: Server;
let takenPort: number;
const TOKEN = "quick-start-token-0123456789";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-controller-cli-"));
  catalog = join(dir, "catalog.json");
  await writeFile(catalog, JSON.stringify({ services: { web: [{ address: "127.0.0.1", port: 8080 }] } }));
  taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  takenPort = (taken.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((resolve) => taken.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

function expectOneLine(result: CliResult, code: number, text: RegExp): void {
  expect(result.code, result.stderr).toBe(code);
  expect(result.stderr).not.toMatch(/^\s+at /m);
  expect(result.stderr.trim().split("\n").filter((line) => !line.startsWith("{"))).toEqual([expect.stringMatching(text)]);
}

async function quickStart(extra: string[]): Promise<CliResult> {
  return runHafleet(["controller", "--catalog-file", catalog, "--map", "web=be_app", ...extra]);
}

describe("hafleet controller, started with a mistake", () => {
  it("a gRPC or HTTP port already in use: one line naming the address and the setting, exit 3", async () => {
    const grpcTaken = await quickStart(["--listen", `127.0.0.1:${takenPort}`, "--http", `127.0.0.1:${await freePort()}`]);
    expectOneLine(grpcTaken, 3, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${takenPort}: address already in use.*--listen`));
    const httpTaken = await quickStart(["--listen", `127.0.0.1:${await freePort()}`, "--http", `127.0.0.1:${takenPort}`]);
    expectOneLine(httpTaken, 3, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${takenPort}: address already in use.*--http`));
  });

  it("a token file missing or shorter than 16 characters: one line, exit 2, nothing started", async () => {
    await writeFile(join(dir, "short"), "short\n");
    expectOneLine(await quickStart(["--listen", `127.0.0.1:${await freePort()}`, "--token-file", join(dir, "short")]), 2, /http\.tokenFile: the first line of .*short must be a token of at least 16 characters \(got 5\)/);
    expectOneLine(await quickStart(["--listen", `127.0.0.1:${await freePort()}`, "--token-file", join(dir, "nosuch")]), 2, /http\.tokenFile: .*nosuch: cannot be read/);
  });

  it("--check-config checks the files a start needs: TLS files, the token file, the state dir", async () => {
    await writeFile(join(dir, "a-file"), "x");
    const config = join(dir, "controller.yaml");
    await writeFile(
      config,
      [
        "listen: 127.0.0.1:7900",
        `tls: { ca: ${join(dir, "nosuch-ca.crt")}, cert: ${join(dir, "nosuch.crt")}, key: ${join(dir, "nosuch.key")} }`,
        `http: { tokenFile: ${join(dir, "short")} }`,
        `stateDir: ${join(dir, "a-file", "state")}`,
        `discovery: { file: ${catalog} }`,
        "backends: [{ backend: be_app, service: web }]",
        "",
      ].join("\n"),
    );
    const result = await runHafleet(["controller", "--check-config", config]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).not.toMatch(/^\s+at /m);
    const lines = result.stderr.trim().split("\n");
    for (const expected of [/tls\.ca: .*nosuch-ca\.crt: cannot be read/, /tls\.cert: .*nosuch\.crt: cannot be read/, /tls\.key: .*nosuch\.key: cannot be read/, /http\.tokenFile: .*at least 16 characters/, /stateDir: .*a-file is not a folder/]) {
      expect(lines.some((line) => expected.test(line)), `${expected} in ${result.stderr}`).toBe(true);
    }
    expect(lines).toHaveLength(5);
  });

  it("the quick start takes --token-file, so an operator can freeze it", async () => {
    await writeFile(join(dir, "token"), `${TOKEN}\n`);
    const http = await freePort();
    const controller = startNode(CONTROLLER_BIN, ["controller", "--listen", `127.0.0.1:${await freePort()}`, "--http", `127.0.0.1:${http}`, "--token-file", join(dir, "token"), "--catalog-file", catalog, "--map", "web=be_app"]);
    try {
      const url = `http://127.0.0.1:${http}/`;
      await until(async () => (await fetch(`${url}healthz`).catch(() => null))?.ok, "the controller's HTTP API");
      const frozen = await runHafleet(["freeze", "--url", url, "--reason", "incident 7"], { HAFLEET_TOKEN: TOKEN });
      expect(frozen.code, frozen.stderr).toBe(0);
      expect((await runHafleet(["freeze", "--url", url, "--reason", "x"], { HAFLEET_TOKEN: "wrong-token-0123456789abcdef" })).code).not.toBe(0);
    } finally {
      await controller.kill();
    }
  });
});
