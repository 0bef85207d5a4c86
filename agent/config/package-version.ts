import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The version in hafleet's package.json, wherever this code runs from: the source tree, dist/,
 * or a bundle (which ships a package.json beside it for this).
 */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 5; depth++) {
    const candidate = join(dir, "package.json");
    if (existsSync(candidate)) {
      const parsed = JSON.parse(readFileSync(candidate, "utf8")) as { name?: unknown; version?: unknown };
      if (parsed.name === "hafleet" && typeof parsed.version === "string") return parsed.version;
    }
    dir = dirname(dir);
  }
  return "unknown";
}
