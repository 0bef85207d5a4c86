import { parseFlags } from "../../agent/cli/args.js";
import { Soak, type SoakRecord } from "./soak-run.js";
import { parseSoakSize, soakSettings } from "./soak-settings.js";

/*
 * The soak as a program, for the integration test: `node dist/test/soak/soak-main.js --dir DIR
 * --events N --backends N --phases N --rate N [--max-ms N]`. It prints its records as JSON
 * lines, an `error` record if it fails, and stops every process it started, on SIGTERM and
 * SIGINT too. DIR is the caller's: it holds the logs, and the caller removes it.
 */

const print = (record: SoakRecord | { record: "error"; message: string }): void => void process.stdout.write(`${JSON.stringify(record)}\n`);

async function main(args: string[]): Promise<number> {
  const flags = parseFlags("soak", args, {
    dir: { type: "string" },
    events: { type: "string" },
    backends: { type: "string" },
    phases: { type: "string" },
    rate: { type: "string" },
    "max-ms": { type: "string" },
  });
  if (flags.dir === undefined) throw new Error("soak: --dir is required");
  const size = parseSoakSize({ events: flags.events, backends: flags.backends, phases: flags.phases, rate: flags.rate, ...(flags["max-ms"] === undefined ? {} : { maxMs: flags["max-ms"] }) }, "soak flags");
  const settings = soakSettings(size);
  const soak = new Soak(settings, flags.dir, print);
  const stopOn = (signal: NodeJS.Signals, code: number): void => void process.once(signal, () => void soak.stop().finally(() => process.exit(code)));
  stopOn("SIGTERM", 143);
  stopOn("SIGINT", 130);
  // The run bounds itself; this only trips on a hang, and still stops what it started.
  setTimeout(() => {
    print({ record: "error", message: `over ${settings.maxMs + 30_000} ms, giving up` });
    void soak.stop().finally(() => process.exit(2));
  }, settings.maxMs + 30_000).unref();
  await soak.run();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    print({ record: "error", message: error instanceof Error ? error.message : String(error) });
    process.exit(1);
  },
);
