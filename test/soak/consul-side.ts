import { z } from "zod";
import { instance, type AgentApi } from "../consul-emulator/consul-emulator.js";
import { endpointView, WEIGHT_META, type ConsulOperation } from "./soak-catalog.js";

/** The soak's two contacts with Consul (emulated): writes through its agent API, and its own health answer read back. */

// Far beyond any soak: a TTL check left alone must not expire and turn the instance critical.
const CHECK = { TTL: "1h", Status: "passing" };

export function writeOperation(api: AgentApi, operation: ConsulOperation): Promise<void> {
  switch (operation.kind) {
    case "register":
      return api.register(instance(operation.id, operation.service, "127.0.0.1", operation.port, { Meta: { [WEIGHT_META]: String(operation.weight) }, Check: CHECK }));
    case "deregister":
      return api.deregister(operation.id);
    case "fail":
      return api.fail(`service:${operation.id}`);
    case "pass":
      return api.pass(`service:${operation.id}`);
  }
}

const healthAnswerSchema = z.array(
  z.object({
    Node: z.object({ Address: z.string() }),
    Service: z.object({ Address: z.string(), Port: z.number().int(), Meta: z.record(z.string(), z.string()).nullable() }),
  }),
);

/** What Consul itself says the service runs (passing instances), spelled as HAProxy's view is. */
export async function consulView(consulUrl: string, service: string): Promise<string[]> {
  const url = `${consulUrl}/v1/health/service/${encodeURIComponent(service)}?passing`;
  const response = await fetch(url);
  if (response.status !== 200) throw new Error(`GET ${url}: HTTP ${response.status}: ${await response.text()}`);
  const parsed = healthAnswerSchema.safeParse(await response.json());
  if (!parsed.success) throw new Error(`GET ${url}: not a health answer: ${parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ")}`);
  return parsed.data.map(({ Node, Service }) => endpointView(Service.Address || Node.Address, Service.Port, Service.Meta?.[WEIGHT_META] ?? "absent")).sort();
}
