import type { Logger } from "pino";
import { parseFlags } from "../../agent/cli/args.js";
import { InvalidInputError, UsageError } from "../../agent/errors.js";
import { parseWith } from "../../agent/model/validate.js";
import { CA_DAYS, daysSchema, leafProfileSchema, validityFor } from "../tls/cert-profiles.js";
import { initFleetCa, issueCertificate } from "../tls/fleet-ca.js";

export const CERTS_HELP = `Usage: hafleet certs init --dir DIR [--days N]
       hafleet certs issue --dir DIR --agent ID [--days N]
       hafleet certs issue --dir DIR --controller NAME (--dns NAME | --ip IP) [--dns ...] [--ip ...] [--days N]

The fleet's mTLS certificates, made with openssl (EC P-256). The controller lets in only
agents with a certificate of the fleet CA, and takes an agent's id from its certificate:
an agent cannot claim another's id.

  init                 create the fleet CA in DIR: ca.key (0600) and ca.crt (default 3650 days);
                       refuses to replace an existing one
  issue --agent ID     DIR/agent-ID.key and .crt: client certificate, SAN URI hafleet://agent/ID
                       (and CN ID); ID must be the agent's --id
  issue --controller NAME
                       DIR/controller-NAME.key and .crt: server certificate; agents check the
                       address they dial (--controller HOST:PORT) against its --dns and --ip
  --dir DIR            the certificates directory (it holds the CA key: keep it off the fleet)
  --dns NAME           a DNS name of the controller (repeatable)
  --ip IP              an IP address of the controller (repeatable)
  --days N             validity of an issued certificate (default 365; at most 3650)
  -h, --help           this text

Exit codes: 0 written; 2 invalid input or a file already exists, nothing written; 3 openssl failed.`;

const LEAF_DAYS = 365;

export async function certsCommand(args: string[], _log: Logger): Promise<number> {
  const [action, ...rest] = args;
  if (action === "init") return init(rest);
  if (action === "issue") return issue(rest);
  throw new UsageError(action === undefined ? "give a subcommand: init or issue" : `unknown subcommand '${action}': init or issue`);
}

async function init(args: string[]): Promise<number> {
  const flags = parseFlags("certs init", args, { dir: { type: "string" }, days: { type: "string" } });
  const dir = required(flags.dir, "--dir");
  const days = flags.days === undefined ? CA_DAYS : parseDays(flags.days);
  const written = await initFleetCa(dir, days);
  process.stdout.write(`${written.key}\n${written.cert}\n`);
  return 0;
}

async function issue(args: string[]): Promise<number> {
  const flags = parseFlags("certs issue", args, {
    dir: { type: "string" },
    agent: { type: "string" },
    controller: { type: "string" },
    dns: { type: "string", multiple: true },
    ip: { type: "string", multiple: true },
    days: { type: "string" },
  });
  const dir = required(flags.dir, "--dir");
  if ((flags.agent === undefined) === (flags.controller === undefined)) throw new UsageError("give exactly one of --agent ID, --controller NAME");
  if (flags.agent !== undefined && (flags.dns !== undefined || flags.ip !== undefined)) throw new UsageError("--dns and --ip go with --controller: an agent is named by its id only");
  const profile = parseWith(
    leafProfileSchema,
    flags.agent !== undefined ? { kind: "agent", id: flags.agent } : { kind: "controller", name: flags.controller, dns: flags.dns ?? [], ips: flags.ip ?? [] },
    "certs issue",
  );
  const days = flags.days === undefined ? LEAF_DAYS : parseDays(flags.days);
  const written = await issueCertificate(dir, profile, validityFor(days, Date.now()));
  process.stdout.write(`${written.key}\n${written.cert}\n`);
  return 0;
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === "") throw new UsageError(`${flag} is required`);
  return value;
}

function parseDays(text: string): number {
  if (!/^\d{1,6}$/.test(text)) throw new InvalidInputError("--days", [{ path: "--days", message: "must be a whole number of days", value: text }]);
  return parseWith(daysSchema, Number(text), "--days");
}
