import type { HaproxyView, SyncView } from "./observe.js";

/** The demo's text: pure functions of what was observed, so every line reads the same way. */

export interface LiveSample {
  elapsedMs: number;
  catalog: { valid: number; invalid: number };
  haproxy: HaproxyView;
  sync: SyncView;
  served: number;
  failed: number;
}

/** `t+12s  catalog=6  haproxy=6 (srv1..4 + 2 added)  agent=in-sync  served=2,134  failed=0` */
export function liveLine(sample: LiveSample): string {
  const invalid = sample.catalog.invalid > 0 ? ` (+${sample.catalog.invalid} invalid)` : "";
  const held = sample.sync.held === null ? "" : "  controller=holding";
  return [
    `t+${Math.floor(sample.elapsedMs / 1000)}s`.padEnd(6),
    `catalog=${sample.catalog.valid}${invalid}`,
    `haproxy=${sample.haproxy.serving.length} ${serversText(sample.haproxy)}`,
    `agent=${sample.sync.agent}${held}`,
    `served=${count(sample.served)}`,
    `failed=${count(sample.failed)}`,
  ].join("  ");
}

/** `(srv1..4 + 2 added)`, `(srv1,srv3; 2 draining)`, `(none)` */
export function serversText(view: HaproxyView): string {
  const slots = view.serving.filter((server) => !server.dynamic).map((server) => server.rawName);
  const added = view.serving.length - slots.length;
  const parts = [slots.length > 0 ? nameRange(slots) : "", added > 0 ? `${added} added` : ""].filter((part) => part !== "");
  const draining = view.draining.length > 0 ? `; ${view.draining.length} draining` : "";
  return `(${parts.length > 0 ? parts.join(" + ") : "none"}${draining})`;
}

/** `srv1..4` for a run of numbered names, else the names as they are. */
export function nameRange(names: readonly string[]): string {
  const numbered = names.map((name) => /^(.*?)(\d+)$/.exec(name));
  const prefix = numbered[0]?.[1];
  const numbers = numbered.map((match) => (match === null || match[1] !== prefix ? NaN : Number(match[2]))).sort((a, b) => a - b);
  const run = numbers.length > 1 && numbers.every((value, index) => value === numbers[0]! + index);
  return run ? `${prefix}${numbers[0]}..${numbers[numbers.length - 1]}` : names.join(",");
}

/** `text` as lines of at most `width` columns, each indented by three spaces, broken between words. */
export function block(text: string, width = 100): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && 3 + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  lines.push(line);
  return lines.map((text, index) => `${index === 0 ? "   " : "     "}${text}`).join("\n");
}

export function count(value: number): string {
  return value.toLocaleString("en-US");
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}
