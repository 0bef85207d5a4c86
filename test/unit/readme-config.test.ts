import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { parseControllerConfigText } from "../../controller/config/load-config.js";

describe("the README's controller configuration example", () => {
  it("is a valid configuration", async () => {
    const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
    const example = /```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const config = parseControllerConfigText(example!, "yaml", "README.md");
    expect(config.backends.map((backend) => backend.backend)).toEqual(["be_app", "be_app_eu", "be_batch", "be_pay"]);
    expect(config.guards).toEqual({ maxDropShare: 0.5, recheckMs: 5000 });
  });
});
