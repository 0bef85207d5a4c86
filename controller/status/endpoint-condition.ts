import { InvalidInputError } from "../../agent/errors.js";
import { addressSchema, endpointKey, nameSchema, portSchema } from "../../agent/model/values.js";
import { parseListen } from "../config/config-values.js";

/** One endpoint of one backend, as `wait --contains/--lacks` and the status API's ?endpoint= name it. */
export interface EndpointCondition {
  backend: string;
  /** ADDR:PORT (IPv6 as [ADDR]:PORT), canonical, as agents report endpoints. */
  endpoint: string;
}

/** BACKEND=ADDR:PORT (IPv6 as [ADDR]:PORT), the endpoint in the form agents report it. */
export function parseEndpointCondition(flag: string, text: string): EndpointCondition {
  const bad = (message: string): never => {
    throw new InvalidInputError(flag, [{ path: "", message, value: text.slice(0, 200) }]);
  };
  const at = text.indexOf("=");
  if (at <= 0) bad("must be BACKEND=ADDR:PORT, e.g. be_app=10.0.0.5:8080");
  const backend = nameSchema.safeParse(text.slice(0, at));
  if (!backend.success) bad("the backend must be a name: letters, digits, '.', '_' or '-', at most 64");
  let parts: { host: string; port: number } | null = null;
  try {
    parts = parseListen(text.slice(at + 1));
  } catch {
    bad("the endpoint must be ADDR:PORT (IPv6 as [ADDR]:PORT)");
  }
  const address = addressSchema.safeParse(parts!.host);
  const port = portSchema.safeParse(parts!.port);
  if (!address.success) bad("the address must be an IPv4 or IPv6 literal");
  if (!port.success) bad("the port must be 1..65535");
  return { backend: backend.data!, endpoint: endpointKey(address.data!, port.data!) };
}

