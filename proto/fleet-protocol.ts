import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * Loads proto/hafleet.proto with proto-loader. The options are part of the wire contract that
 * proto/messages.ts validates: camelCase fields, int64 as numbers (milliseconds fit), defaults
 * filled in, and `body` naming which oneof member is set.
 */
export const LOADER_OPTIONS: protoLoader.Options = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

let loaded: { service: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } | undefined;

/** Parsed once per process: each reconnecting link would otherwise re-read and re-compile it. */
export function loadFleetService(): { service: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } {
  if (!loaded) {
    const definition = protoLoader.loadSync(protoFile(), LOADER_OPTIONS);
    const fleet = (grpc.loadPackageDefinition(definition) as unknown as { hafleet: { v1: { Fleet: grpc.ServiceClientConstructor } } }).hafleet.v1.Fleet;
    loaded = { service: fleet.service, Client: fleet };
  }
  return loaded;
}

/**
 * The .proto sits beside this file in the source tree, two levels up from it once built, and
 * beside the bundle (deploy/package/bundle.mjs ships it there): found from wherever this runs.
 */
function protoFile(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 4; depth++) {
    const candidate = join(dir, "hafleet.proto");
    if (existsSync(candidate)) return candidate;
    const sibling = join(dir, "proto", "hafleet.proto");
    if (existsSync(sibling)) return sibling;
    dir = dirname(dir);
  }
  throw new Error("cannot find proto/hafleet.proto next to the hafleet installation");
}
