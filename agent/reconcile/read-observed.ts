import { RuntimeCommand } from "../runtime/commands.js";
import { parseBackendList } from "../runtime/parsers/backend-list.js";
import { parseServersState } from "../runtime/parsers/servers-state.js";
import { parseStatCsv } from "../runtime/parsers/stat-csv.js";
import type { CommandRunner } from "../runtime/runtime-client.js";
import { adminMode, buildObservedState, type ObservedState } from "./observed-state.js";

/**
 * What HAProxy runs now. `plan` reads what planning needs: every server's state, each
 * backend's algorithm, and sessions only for draining servers (a full `show stat` of 10,000
 * servers is 2 MB, most of a pass's time). `full` adds every server's status and sessions.
 */
export async function readObservedState(client: CommandRunner, detail: "plan" | "full" = "plan"): Promise<ObservedState> {
  const scope = detail === "full" ? "backends-and-servers" : "backends";
  // One pipelined batch, so that the views agree in time.
  const [backends, servers, stats] = await client.run([RuntimeCommand.showBackend(), RuntimeCommand.showServersState(), RuntimeCommand.showStat(scope)]);
  const serverRows = parseServersState(servers!.text);
  const statRows = parseStatCsv(stats!.text);
  if (detail === "plan") {
    const draining = serverRows.filter((row) => adminMode(row.adminState) === "drain");
    const replies = await client.run(draining.map((row) => RuntimeCommand.showServerStat(row.backendId, row.serverId)));
    for (const reply of replies) statRows.push(...parseStatCsv(reply.text));
  }
  return buildObservedState(parseBackendList(backends!.text), serverRows, statRows);
}
