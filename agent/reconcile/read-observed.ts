import { RuntimeCommand } from "../runtime/commands.js";
import { parseBackendList } from "../runtime/parsers/backend-list.js";
import { parseServersState } from "../runtime/parsers/servers-state.js";
import { parseStatCsv } from "../runtime/parsers/stat-csv.js";
import type { RuntimeClient } from "../runtime/runtime-client.js";
import { buildObservedState, type ObservedState } from "./observed-state.js";

const READ_BATCH = [RuntimeCommand.showBackend(), RuntimeCommand.showServersState(), RuntimeCommand.showStat()];

/** What HAProxy runs now, read in one pipelined batch so the three views agree in time. */
export async function readObservedState(client: RuntimeClient): Promise<ObservedState> {
  const [backends, servers, stats] = await client.run(READ_BATCH);
  return buildObservedState(parseBackendList(backends!.text), parseServersState(servers!.text), parseStatCsv(stats!.text));
}
