import { InvalidInputError } from "../../agent/errors.js";
import { labelKeySchema, labelValueSchema } from "../config/controller-config.js";

/** --selector K=V, repeated: every label must match. */
export function parseSelector(entries: readonly string[], flag = "--selector"): Record<string, string> {
  const selector: Record<string, string> = {};
  for (const entry of entries) {
    const [key = "", ...rest] = entry.split("=");
    const value = rest.join("=");
    if (rest.length === 0 || !labelKeySchema.safeParse(key).success || !labelValueSchema.safeParse(value).success) {
      throw new InvalidInputError(flag, [{ path: "", message: "must be KEY=VALUE, each 1-63 letters, digits, '.', '_' or '-'", value: entry }]);
    }
    selector[key] = value;
  }
  return selector;
}
