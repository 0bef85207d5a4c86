import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ReplyParseError } from "../../agent/errors.js";
import { saveServerState, StateFileWriteError } from "../../agent/hybrid/state-file.js";
import type { RuntimeCommand } from "../../agent/runtime/commands.js";
import type { CommandReply } from "../../agent/runtime/reply.js";

// As the prompt framer hands it over: HAProxy's reply without its trailing blank line.
const STATE = readFileSync(new URL("../fixtures/haproxy-2.6/show-servers-state.txt", import.meta.url), "utf8").replace(/\n+$/, "");
const EMPTY_BACKEND = readFileSync(new URL("../fixtures/haproxy-2.6/show-servers-state-empty-backend.txt", import.meta.url), "utf8").replace(/\n+$/, "");

function replying(...texts: string[]) {
  const sent: string[] = [];
  return {
    sent,
    name: "/run/haproxy.sock",
    run: async (commands: readonly RuntimeCommand[]): Promise<CommandReply[]> => {
      sent.push(...commands.map((command) => command.text));
      const text = texts.shift() ?? STATE;
      return commands.map((command) => ({ command, ok: true as const, text }));
    },
  };
}

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hafleet-state-file-"));
  dirs.push(dir);
  return dir;
}

describe("saveServerState", () => {
  it("writes HAProxy's reply as the state file, readable by HAProxy's user", async () => {
    const path = join(await tempDir(), "sub", "server-state");
    const client = replying();
    const saved = await saveServerState(client, path);
    expect(client.sent).toEqual(["show servers state"]);
    expect(await readFile(path, "utf8")).toBe(`${STATE}\n`);
    expect(saved).toEqual({ path, servers: STATE.split("\n").length - 2, bytes: Buffer.byteLength(`${STATE}\n`) });
    expect((await stat(path)).mode & 0o777).toBe(0o644);
  });

  it("writes a state without servers: it is what runs", async () => {
    const path = join(await tempDir(), "server-state");
    expect((await saveServerState(replying(EMPTY_BACKEND), path)).servers).toBe(0);
    expect(await readFile(path, "utf8")).toBe(`${EMPTY_BACKEND}\n`);
  });

  it("keeps the old file when the reply does not parse", async () => {
    const path = join(await tempDir(), "server-state");
    await writeFile(path, "old\n");
    for (const garbled of ["", "1", STATE.slice(0, -10), STATE.replace("# be_id", "be_id"), "No such backend."]) {
      await expect(saveServerState(replying(garbled), path)).rejects.toBeInstanceOf(ReplyParseError);
      expect(await readFile(path, "utf8")).toBe("old\n");
    }
  });

  it("reports a file it cannot write as StateFileWriteError", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "not-a-dir"), "");
    const error = await saveServerState(replying(), join(dir, "not-a-dir", "server-state")).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StateFileWriteError);
    expect(error).toMatchObject({ code: "HAFLEET_STATE_FILE_WRITE", path: join(dir, "not-a-dir", "server-state") });
  });

  it("runs saves to one path in call order, so the last call's state is the file", async () => {
    const path = join(await tempDir(), "server-state");
    const first = STATE.replace(" srv1 ", " first1 ");
    const second = STATE.replace(" srv1 ", " second1 ");
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slow = {
      run: async (commands: readonly RuntimeCommand[]): Promise<CommandReply[]> => {
        await held;
        return commands.map((command) => ({ command, ok: true as const, text: first }));
      },
    };
    const a = saveServerState(slow, path);
    const b = saveServerState(replying(second), path);
    release();
    await Promise.all([a, b]);
    expect(await readFile(path, "utf8")).toBe(`${second}\n`);
  });
});
