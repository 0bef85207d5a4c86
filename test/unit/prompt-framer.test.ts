import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { PromptFramer } from "../../agent/runtime/prompt-framer.js";
import { seededRandom } from "../support/helpers.js";

// Reply texts as HAProxy 2.6.12 sends them in interactive mode (see the notes): some end
// with a blank line before the prompt, some do not, empty replies are the prompt alone.
const PROMPT = "\n> ";
const SET_ADDR = "IP changed from '127.0.0.1' to '127.0.0.2', port changed from '80' to '8081' by 'stats socket command'";
const DYNAMIC_REFUSED = "Backend must use a dynamic load balancing to support dynamic servers.";
const DELETED = "Server deleted.";
const NOT_IN_MAINT = "Only servers in maintenance mode can be deleted.";
const REGISTERED = "New server registered.";
const SERVERS_STATE = readFileSync(new URL("../fixtures/haproxy-2.6/show-servers-state.txt", import.meta.url), "utf8");
const SERVERS_STATE_BODY = SERVERS_STATE.replace(/\n+$/, "");

/** `prompt`, `set server ... addr`, `add server` (refused), `set server ... state ready`, `del server` x2, `add server`. */
const SESSION =
  PROMPT +
  `${SET_ADDR}\n` +
  PROMPT +
  `${DYNAMIC_REFUSED}` +
  PROMPT +
  PROMPT +
  `${NOT_IN_MAINT}` +
  PROMPT +
  `${DELETED}` +
  PROMPT +
  `${REGISTERED}\n` +
  PROMPT;
const SESSION_REPLIES = ["", SET_ADDR, DYNAMIC_REFUSED, "", NOT_IN_MAINT, DELETED, REGISTERED];

/** The same, with a multi-line `show servers state` reply in the middle. */
const LONG_SESSION = PROMPT + `${SET_ADDR}\n` + PROMPT + SERVERS_STATE + "> " + `${DELETED}` + PROMPT;
const LONG_SESSION_REPLIES = ["", SET_ADDR, SERVERS_STATE_BODY, DELETED];

function frame(chunks: readonly string[]): { replies: string[]; pending: string } {
  const framer = new PromptFramer();
  const replies = chunks.flatMap((chunk) => framer.push(chunk));
  return { replies, pending: framer.pending };
}

function randomChunks(text: string, next: () => number, maxChunk: number): string[] {
  const chunks: string[] = [];
  let at = 0;
  while (at < text.length) {
    // Empty chunks too: a read may deliver nothing new.
    const size = Math.floor(next() * (maxChunk + 1));
    chunks.push(text.slice(at, at + size));
    at += size;
  }
  return chunks;
}

describe("PromptFramer: real sequences", () => {
  it("reads the fixture as a multi-line body ending in a blank line", () => {
    // Guards the test data itself: the body has many lines and the blank line before the prompt.
    expect(SERVERS_STATE.endsWith("\n\n")).toBe(true);
    expect(SERVERS_STATE_BODY.split("\n").length).toBeGreaterThan(10);
    expect(SERVERS_STATE_BODY.startsWith("1\n# be_id be_name srv_id")).toBe(true);
  });

  it("gives the empty answer to `prompt` first", () => {
    expect(frame([PROMPT])).toEqual({ replies: [""], pending: "" });
  });

  it("gives a reply that ends with a blank line, without the trailing newline", () => {
    expect(frame([PROMPT, `${SET_ADDR}\n\n> `])).toEqual({ replies: ["", SET_ADDR], pending: "" });
  });

  it("gives a reply that ends without a blank line (del server, add server errors)", () => {
    expect(frame([`${DYNAMIC_REFUSED}\n> `])).toEqual({ replies: [DYNAMIC_REFUSED], pending: "" });
    expect(frame([`${DELETED}\n> `])).toEqual({ replies: [DELETED], pending: "" });
  });

  it("gives empty replies for commands that answer nothing", () => {
    expect(frame([PROMPT + PROMPT + PROMPT])).toEqual({ replies: ["", "", ""], pending: "" });
  });

  it("gives every reply of a whole session delivered in one chunk, in order", () => {
    expect(frame([SESSION])).toEqual({ replies: SESSION_REPLIES, pending: "" });
  });

  it("gives a multi-line reply (show servers state) whole, with its inner lines intact", () => {
    expect(frame([LONG_SESSION])).toEqual({ replies: LONG_SESSION_REPLIES, pending: "" });
  });

  it("trims every trailing newline but keeps leading and inner blank lines", () => {
    expect(frame(["a\n\nb\n\n\n\n> "])).toEqual({ replies: ["a\n\nb"], pending: "" });
    expect(frame(["\n\nx\n> "])).toEqual({ replies: ["\n\nx"], pending: "" });
    expect(frame(["\n\n\n> "])).toEqual({ replies: [""], pending: "" });
  });

  it("does not take '> ' inside a line, or '>' without its space, for a prompt", () => {
    expect(frame(["a > b\n>b\n>\n> "])).toEqual({ replies: ["a > b\n>b\n>"], pending: "" });
  });

  it("gives nothing for an empty chunk", () => {
    const framer = new PromptFramer();
    expect(framer.push("")).toEqual([]);
    expect(framer.pending).toBe("");
    expect(framer.push(PROMPT)).toEqual([""]);
    expect(framer.push("")).toEqual([]);
  });
});

describe("PromptFramer: pending", () => {
  it("holds a reply in progress until its prompt arrives, then nothing", () => {
    const framer = new PromptFramer();
    expect(framer.push(`${PROMPT}IP changed`)).toEqual([""]);
    expect(framer.pending).toBe("IP changed");
    expect(framer.push(" from '127.0.0.1'")).toEqual([]);
    expect(framer.pending).toBe("IP changed from '127.0.0.1'");
    expect(framer.push(SET_ADDR.slice("IP changed from '127.0.0.1'".length) + "\n\n")).toEqual([]);
    expect(framer.pending).toBe(`${SET_ADDR}\n\n`);
    expect(framer.push("> ")).toEqual([SET_ADDR]);
    expect(framer.pending).toBe("");
  });

  it("holds a prompt missing its last character, and the text after the last prompt", () => {
    const framer = new PromptFramer();
    expect(framer.push(`${DELETED}\n>`)).toEqual([]);
    expect(framer.pending).toBe(`${DELETED}\n>`);
    expect(framer.push(` ${REGISTERED}`)).toEqual([DELETED]);
    expect(framer.pending).toBe(REGISTERED);
  });

  it("is empty before anything arrives", () => {
    expect(new PromptFramer().pending).toBe("");
  });
});

describe("PromptFramer: chunking never changes the replies", () => {
  it.each(["\n|> ", "\n>| ", "\n|>| "])("a prompt split as %j", (split) => {
    const chunks = `${DELETED}${split}${REGISTERED}\n\n${split}`.split("|");
    expect(frame(chunks)).toEqual({ replies: [DELETED, REGISTERED], pending: "" });
  });

  it("split into two at every byte position of a session", () => {
    for (let at = 0; at <= SESSION.length; at++) {
      expect(frame([SESSION.slice(0, at), SESSION.slice(at)]), `split at ${at}`).toEqual({ replies: SESSION_REPLIES, pending: "" });
    }
  });

  it("split into three at every pair of byte positions of a session", () => {
    for (let first = 0; first <= SESSION.length; first++) {
      for (let second = first; second <= SESSION.length; second++) {
        const chunks = [SESSION.slice(0, first), SESSION.slice(first, second), SESSION.slice(second)];
        const framed = frame(chunks);
        // Compare cheaply in the loop, and with a readable diff only when it differs.
        if (JSON.stringify(framed.replies) !== JSON.stringify(SESSION_REPLIES) || framed.pending !== "") {
          expect(framed, `split at ${first} and ${second}`).toEqual({ replies: SESSION_REPLIES, pending: "" });
        }
      }
    }
  });

  it("split into two at every byte position of a session with a multi-line reply", () => {
    for (let at = 0; at <= LONG_SESSION.length; at++) {
      expect(frame([LONG_SESSION.slice(0, at), LONG_SESSION.slice(at)]), `split at ${at}`).toEqual({
        replies: LONG_SESSION_REPLIES,
        pending: "",
      });
    }
  });

  it("one byte at a time", () => {
    expect(frame([...LONG_SESSION])).toEqual({ replies: LONG_SESSION_REPLIES, pending: "" });
  });

  it("gives each reply as soon as its prompt is complete, and not before", () => {
    const framer = new PromptFramer();
    const seen: string[] = [];
    const promptEnds: number[] = [];
    for (let at = SESSION.indexOf(PROMPT); at !== -1; at = SESSION.indexOf(PROMPT, at + PROMPT.length)) {
      promptEnds.push(at + PROMPT.length);
    }
    for (let at = 0; at < SESSION.length; at++) {
      const replies = framer.push(SESSION.charAt(at));
      const completesPrompt = promptEnds.includes(at + 1);
      expect(replies, `byte ${at}`).toHaveLength(completesPrompt ? 1 : 0);
      seen.push(...replies);
    }
    expect(seen).toEqual(SESSION_REPLIES);
  });

  it.each([1, 2, 3, 7, 64, 4096])("random chunkings (chunks of 0..%i bytes) of a session with a multi-line reply", (maxChunk) => {
    for (let seed = 1; seed <= 200; seed++) {
      const chunks = randomChunks(LONG_SESSION, seededRandom(seed * 7919 + maxChunk), maxChunk);
      expect(chunks.join("")).toBe(LONG_SESSION);
      expect(frame(chunks), `seed ${seed}`).toEqual({ replies: LONG_SESSION_REPLIES, pending: "" });
    }
  });

  it("random chunkings of many sessions back to back, with a partial reply left over", () => {
    const stream = PROMPT + (SESSION.slice(PROMPT.length) + LONG_SESSION.slice(PROMPT.length)).repeat(20) + "IP chan";
    const expected = [""];
    for (let i = 0; i < 20; i++) expected.push(...SESSION_REPLIES.slice(1), ...LONG_SESSION_REPLIES.slice(1));
    for (let seed = 1; seed <= 50; seed++) {
      expect(frame(randomChunks(stream, seededRandom(seed), 300)), `seed ${seed}`).toEqual({ replies: expected, pending: "IP chan" });
    }
  });
});
