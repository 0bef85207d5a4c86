// Builds dist/bundle/ (or the folder given as --out DIR): hafleet-agent.mjs and hafleet.mjs, each a single file that runs with
// `node` alone (no node_modules), beside what they read at run time: hafleet.proto (found next
// to the bundle by proto/fleet-protocol.ts), package.json (hafleet's name and version, for
// --version and the agent's hello) and THIRD-PARTY-LICENSES (the bundled packages' licenses,
// which their terms ask to travel with them).
import { build } from "esbuild";
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const out = resolve(parseArgs({ options: { out: { type: "string" } } }).values.out ?? join(root, "dist", "bundle"));
const pkg = JSON.parse(await readFile(join(root, "package.json"), "utf8"));

// The oldest Node the bundle is tested on (Debian bookworm's nodejs package); package.json's
// engines and the .deb's Depends say the same.
const TARGET = "node18.20";

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: { "hafleet-agent": join(root, "agent/cli/main.ts"), hafleet: join(root, "controller/cli/main.ts") },
  outdir: out,
  outExtension: { ".js": ".mjs" },
  bundle: true,
  platform: "node",
  format: "esm",
  target: TARGET,
  // ESM output, for the entry points' top-level await; the CommonJS dependencies inside still
  // call require() for node's own modules, which an ES module does not have.
  banner: { js: 'import { createRequire as __hafleetCreateRequire } from "node:module"; const require = __hafleetCreateRequire(import.meta.url);' },
  // Unminified: a stack trace from a production host should read like the source.
  minify: false,
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
});

await copyFile(join(root, "proto", "hafleet.proto"), join(out, "hafleet.proto"));
await writeFile(join(out, "package.json"), JSON.stringify({ name: pkg.name, version: pkg.version, private: true, license: pkg.license }, null, 2) + "\n");
await writeFile(join(out, "THIRD-PARTY-LICENSES"), await thirdPartyLicenses(Object.keys(result.metafile.inputs)));
for (const [file, { bytes }] of Object.entries(result.metafile.outputs)) console.log(`${file}  ${(bytes / 1024).toFixed(0)} KiB`);

/** Every package a bundle holds code of, with its license text. */
async function thirdPartyLicenses(inputs) {
  const packages = new Set();
  for (const input of inputs) {
    const match = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (match) packages.add(match[1]);
  }
  const sections = [];
  for (const name of [...packages].sort()) {
    const dir = join(root, "node_modules", name);
    const meta = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
    const licenseFile = (await readdir(dir)).find((file) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(file));
    const text = licenseFile ? await readFile(join(dir, licenseFile), "utf8") : `(no license file; package.json says ${meta.license})`;
    sections.push(`${name} ${meta.version} (${meta.license})\n\n${text.trim()}\n`);
  }
  return `hafleet bundles code from these packages.\n\n${sections.join("\n" + "-".repeat(72) + "\n\n")}`;
}
