import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { InvalidInputError } from "../../agent/errors.js";
import { CoalescingConfigWriter, haproxyMessages, type ConfigWriteResult } from "../../agent/hybrid/config-writer.js";
import { checkContext, compileTemplate, loadTemplate, locateTemplateError, parseTemplateVars, type ConfigTemplate } from "../../agent/hybrid/render-config.js";
import {
  addressSortKey,
  fromDesired,
  fromObserved,
  nextSlotNames,
  slotPrefixOf,
  type RenderBackend,
  type RenderContext,
  type RenderServer,
} from "../../agent/hybrid/render-model.js";
import { parseDesiredState } from "../../agent/model/desired-state.js";
import { asName, asObservedAddress, asPort } from "../../agent/model/values.js";
import { DYNAMIC_PREFIX, type AdminMode, type ObservedBackend, type ObservedServer, type ObservedState } from "../../agent/reconcile/observed-state.js";
import { caught, seededRandom } from "../support/helpers.js";

const DEFAULT_TEMPLATE = fileURLToPath(new URL("../../deploy/hybrid/haproxy.cfg.njk", import.meta.url));

// --- Observed-state fixtures, built field by field (no parser in the way) ---

interface ServerSpec {
  addr?: string;
  port?: number | null;
  admin?: AdminMode;
  weight?: number;
  iweight?: number;
}

function server(id: number, rawName: string, spec: ServerSpec = {}): ObservedServer {
  const rawAddress = spec.addr ?? "0.0.0.0";
  const port = spec.port === undefined ? 80 : spec.port;
  const admin = spec.admin ?? (rawAddress === "0.0.0.0" ? "maint" : "ready");
  return {
    rawName,
    name: asName(rawName),
    id,
    rawAddress,
    address: asObservedAddress(rawAddress),
    port: port === null ? null : asPort(port),
    admin,
    adminBits: admin === "maint" ? 5 : admin === "drain" ? 12 : 4,
    userWeight: spec.weight ?? 10,
    initialWeight: spec.iweight ?? 10,
    checked: false,
    dynamic: rawName.startsWith(DYNAMIC_PREFIX),
    status: null,
    sessions: null,
  };
}

function backend(rawName: string, servers: ObservedServer[], algorithm: string | null = "roundrobin"): ObservedBackend {
  return { rawName, name: asName(rawName), algorithm, servers };
}

function observed(...backends: ObservedBackend[]): ObservedState {
  return new Map(backends.map((b) => [b.rawName, b]));
}

/** `name endpoint [disabled] wW` per server: the whole rendered model of one backend, at a glance. */
function lines(b: RenderBackend | undefined): string[] {
  return (b?.servers ?? []).map((s) => `${s.name} ${s.endpoint}${s.disabled ? " disabled" : ""} w${s.weight}`);
}

function byName(context: RenderContext, name: string): RenderBackend | undefined {
  return context.backends.find((b) => b.name === name);
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

/** The test template: every field of the context, one line per server. */
const PLAIN = `{% for b in backends %}backend {{ b.name }} [{{ b.balance }}]
{% for s in b.servers %}  {{ s.name }} {{ s.address }} {{ s.port }} {{ s.endpoint }} {{ s.weight }} {{ s.disabled }}
{% endfor %}{% endfor %}`;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-render-unit-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function plain(): ConfigTemplate {
  return compileTemplate(PLAIN, join(dir, "plain.njk"));
}

describe("fromObserved: what HAProxy runs, as a template context", () => {
  it("renders every server with its runtime name, address, port and weight, in server-id order", () => {
    const context = fromObserved(
      observed(
        backend("be_app", [
          server(2, "srv2", { addr: "10.0.0.2", port: 8002, weight: 20 }),
          server(1, "srv1", { addr: "10.0.0.1", port: 8001, weight: 0 }),
          server(5, "hafleet-10.0.0.5-8005", { addr: "10.0.0.5", port: 8005, weight: 50 }),
          server(3, "srv3", { addr: "2001:db8::3", port: 8003, weight: 256 }),
        ]),
      ),
      { spareSlots: 0 },
    );
    expect(context).toEqual({
      backends: [
        {
          name: "be_app",
          balance: "roundrobin",
          servers: [
            { name: "srv1", address: "10.0.0.1", port: 8001, endpoint: "10.0.0.1:8001", weight: 0, disabled: false },
            { name: "srv2", address: "10.0.0.2", port: 8002, endpoint: "10.0.0.2:8002", weight: 20, disabled: false },
            { name: "srv3", address: "2001:db8::3", port: 8003, endpoint: "[2001:db8::3]:8003", weight: 256, disabled: false },
            { name: "hafleet-10.0.0.5-8005", address: "10.0.0.5", port: 8005, endpoint: "10.0.0.5:8005", weight: 50, disabled: false },
          ],
        },
      ],
    });
  });

  it("disables servers in maintenance, keeps drains enabled (only the state file can carry a drain)", () => {
    const context = fromObserved(
      observed(
        backend("be", [
          server(1, "srv1", { addr: "10.0.0.1", admin: "maint" }),
          server(2, "srv2", { addr: "10.0.0.2", admin: "drain" }),
          server(3, "srv3", { addr: "10.0.0.3", admin: "ready" }),
          server(4, "hafleet-10.0.0.4-80", { addr: "10.0.0.4", admin: "maint" }),
        ]),
      ),
      { spareSlots: 0 },
    );
    expect(lines(byName(context, "be"))).toEqual([
      "srv1 10.0.0.1:80 disabled w10",
      "srv2 10.0.0.2:80 w10",
      "srv3 10.0.0.3:80 w10",
      "hafleet-10.0.0.4-80 10.0.0.4:80 disabled w10",
    ]);
  });

  it("renders servers without a usable address or port as disabled placeholders, whatever their state", () => {
    const context = fromObserved(
      observed(
        backend("be", [
          server(1, "srv1", { addr: "0.0.0.0", port: 80, admin: "maint" }),
          server(2, "srv2", { addr: "::", port: 80, admin: "ready" }),
          server(3, "srv3", { addr: "-", port: 8080, admin: "ready" }),
          server(4, "srv4", { addr: "10.0.0.4", port: null, admin: "ready", weight: 7 }),
        ]),
      ),
      { spareSlots: 0 },
    );
    expect(lines(byName(context, "be"))).toEqual(["srv1 0.0.0.0:80 disabled w10", "srv2 0.0.0.0:80 disabled w10", "srv3 0.0.0.0:80 disabled w10", "srv4 0.0.0.0:80 disabled w7"]);
  });

  it("adds spare slots only up to the number of free slots asked for, continuing the numbering", () => {
    const running = backend("be", [
      server(1, "srv1", { addr: "10.0.0.1" }),
      server(2, "srv2", { addr: "10.0.0.2", admin: "maint" }), // a freed slot counts as free
      server(3, "srv3"), // a placeholder slot too
      server(4, "srv4", { addr: "10.0.0.4" }),
      server(5, "hafleet-10.0.0.9-80", { addr: "10.0.0.9", admin: "maint" }), // a dynamic server is never a slot
    ]);
    const names = (spareSlots: number) => byName(fromObserved(observed(running), { spareSlots }), "be")!.servers.map((s) => s.name);
    expect(names(0)).toEqual(["srv1", "srv2", "srv3", "srv4", "hafleet-10.0.0.9-80"]);
    expect(names(2)).toEqual(["srv1", "srv2", "srv3", "srv4", "hafleet-10.0.0.9-80"]);
    expect(names(3)).toEqual(["srv1", "srv2", "srv3", "srv4", "hafleet-10.0.0.9-80", "srv5"]);
    expect(names(5)).toEqual(["srv1", "srv2", "srv3", "srv4", "hafleet-10.0.0.9-80", "srv5", "srv6", "srv7"]);
  });

  it("names spares after the highest slot number, never a name in use, with the backend's configured weight", () => {
    const context = fromObserved(
      observed(
        backend("be", [
          server(1, "web2", { addr: "10.0.0.1", iweight: 30, weight: 99 }),
          server(2, "web10", { addr: "10.0.0.2" }),
          server(3, "web07", { addr: "10.0.0.3" }),
          server(4, "hafleet-10.0.0.5-11", { addr: "10.0.0.5", port: 11 }),
        ]),
      ),
      { spareSlots: 2 },
    );
    expect(lines(byName(context, "be")).slice(-2)).toEqual(["web11 0.0.0.0:80 disabled w30", "web12 0.0.0.0:80 disabled w30"]);
  });

  it("takes the spares' weight from an empty slot first, whose configured weight no runtime change moved", () => {
    const context = fromObserved(
      observed(backend("be", [server(1, "srv1", { addr: "10.0.0.1", iweight: 50, weight: 50 }), server(2, "srv2", { iweight: 10 }), server(3, "srv3", { addr: "10.0.0.3", iweight: 10 })])),
      { spareSlots: 2 },
    );
    expect(lines(byName(context, "be")).slice(-1)).toEqual(["srv4 0.0.0.0:80 disabled w10"]);
  });

  it("falls back to the slot prefix and default weight for a backend without numbered slots", () => {
    const context = fromObserved(
      observed(
        backend("be_dyn", [server(1, "hafleet-10.0.0.1-80", { addr: "10.0.0.1", iweight: 77 })]),
        backend("be_empty", []),
        backend("be_odd", [server(1, "main", { addr: "10.0.0.1", iweight: 3 })]),
      ),
      { spareSlots: 2, slotPrefix: "slot", defaultWeight: 5 },
    );
    expect(lines(byName(context, "be_dyn"))).toEqual(["hafleet-10.0.0.1-80 10.0.0.1:80 w10", "slot1 0.0.0.0:80 disabled w5", "slot2 0.0.0.0:80 disabled w5"]);
    expect(lines(byName(context, "be_empty"))).toEqual(["slot1 0.0.0.0:80 disabled w5", "slot2 0.0.0.0:80 disabled w5"]);
    expect(lines(byName(context, "be_odd"))).toEqual(["main 10.0.0.1:80 w10", "slot1 0.0.0.0:80 disabled w3", "slot2 0.0.0.0:80 disabled w3"]);
  });

  it("keeps a balance algorithm only where a bare `balance X` line reproduces it", () => {
    const algorithms = ["roundrobin", "static-rr", "leastconn", "first", "source", "uri", "hdr", "random", null];
    const context = fromObserved(observed(...algorithms.map((algorithm, i) => backend(`be${i}`, [], algorithm))), { spareSlots: 0 });
    expect(context.backends.map((b) => b.balance)).toEqual(["roundrobin", "static-rr", "leastconn", "first", "source", "", "", "", ""]);
  });

  it("includes only the backends asked for, sorted by name; names HAProxy does not run are skipped", () => {
    const state = observed(backend("zz", []), backend("be_b", []), backend("be_a", []), backend("other", []));
    expect(fromObserved(state, { spareSlots: 0 }).backends.map((b) => b.name)).toEqual(["be_a", "be_b", "other", "zz"]);
    expect(fromObserved(state, { spareSlots: 0, backends: ["zz", "be_a", "missing"] }).backends.map((b) => b.name)).toEqual(["be_a", "zz"]);
    expect(fromObserved(state, { spareSlots: 0, backends: [] }).backends).toEqual([]);
  });

  it("refuses (rather than drops) servers whose name or weight cannot be written back", () => {
    const error = caught(() =>
      fromObserved(
        observed(
          backend("be", [server(1, "bad name", { addr: "10.0.0.1" }), server(2, "srv2", { addr: "10.0.0.2", weight: 300 })]),
          backend("be#x", []),
        ),
        { spareSlots: 1 },
      ),
    );
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).source).toBe("running HAProxy");
    expect((error as InvalidInputError).issues).toEqual([
      { path: "be/bad name", message: "server name cannot be written in a config file" },
      { path: "be/srv2", message: "weight is not an integer in 0..256", value: 300 },
      { path: 'backend "be#x"', message: "name cannot be written in a config file" },
    ]);
  });

  it("accepts every name HAProxy itself accepts, ':' included", () => {
    const context = fromObserved(observed(backend("be:v1", [server(1, "srv:1", { addr: "10.0.0.1" })])), { spareSlots: 1 });
    // `srv:1` is not a name hafleet can send in a command, so its series is not continued.
    expect(lines(byName(context, "be:v1"))).toEqual(["srv:1 10.0.0.1:80 w10", "srv1 0.0.0.0:80 disabled w10"]);
  });

  it("rejects option values that are programming errors", () => {
    const state = observed(backend("be", []));
    expect(() => fromObserved(state, { spareSlots: -1 })).toThrow(RangeError);
    expect(() => fromObserved(state, { spareSlots: 1.5 })).toThrow(RangeError);
    expect(() => fromObserved(state, { spareSlots: 10_001 })).toThrow(RangeError);
    expect(() => fromObserved(state, { spareSlots: 1, slotPrefix: "srv1" })).toThrow(RangeError);
    expect(() => fromObserved(state, { spareSlots: 1, slotPrefix: "a b" })).toThrow(RangeError);
    expect(() => fromObserved(state, { spareSlots: 1, defaultWeight: 257 })).toThrow(RangeError);
  });

  it("gives the same bytes for the same state in any input order, and keeps every invariant (seeded fuzz)", () => {
    const template = compileTemplate(PLAIN, join(dir, "fuzz.njk"));
    for (let seed = 1; seed <= 200; seed++) {
      const random = seededRandom(seed);
      const spareSlots = Math.floor(random() * 4);
      const backends = Array.from({ length: 1 + Math.floor(random() * 4) }, (_, b) => {
        const servers: ObservedServer[] = [];
        const count = Math.floor(random() * 8);
        for (let id = 1; id <= count; id++) {
          const kind = random();
          const admin = (["ready", "drain", "maint"] as const)[Math.floor(random() * 3)]!;
          const addr = random() < 0.2 ? "0.0.0.0" : random() < 0.3 ? `2001:db8::${id}` : `10.${b}.0.${id}`;
          const name = kind < 0.3 ? `hafleet-${addr.replaceAll(":", "_")}-${8000 + id}` : `srv${id + Math.floor(random() * 3)}`;
          if (servers.some((s) => s.rawName === name)) continue;
          servers.push(server(id * 3, name, { addr, port: 8000 + id, admin, weight: Math.floor(random() * 257) }));
        }
        return backend(`be_${Math.floor(random() * 1000)}_${b}`, servers);
      });
      const state = observed(...backends);
      const first = fromObserved(state, { spareSlots });
      const reordered = observed(...shuffled(backends, random).map((b) => ({ ...b, servers: shuffled(b.servers, random) })));
      expect(template.render(fromObserved(reordered, { spareSlots })), `seed ${seed}`).toBe(template.render(first));

      for (const rendered of first.backends) {
        const source = state.get(rendered.name)!;
        const names = rendered.servers.map((s) => s.name);
        expect(new Set(names).size, `seed ${seed}: unique names`).toBe(names.length);
        const kept = rendered.servers.slice(0, source.servers.length);
        expect(kept.map((s) => s.name), `seed ${seed}: every running server, in id order`).toEqual([...source.servers].sort((a, c) => a.id - c.id).map((s) => s.rawName));
        for (const s of kept) {
          const original = source.servers.find((o) => o.rawName === s.name)!;
          if (original.address !== null) expect(`${s.address} ${s.port} ${s.weight}`).toBe(`${original.address} ${original.port} ${original.userWeight}`);
          expect(s.disabled, `seed ${seed}: ${s.name}`).toBe(original.address === null || original.admin === "maint");
        }
        const free = rendered.servers.filter((s) => s.disabled && !s.name.startsWith(DYNAMIC_PREFIX)).length;
        expect(free, `seed ${seed}: free slots`).toBeGreaterThanOrEqual(spareSlots);
        expect(() => checkContext({ backends: [rendered] })).not.toThrow();
      }
    }
  });
});

describe("fromDesired: the standalone render", () => {
  const desired = parseDesiredState(
    {
      backends: [
        {
          name: "be_web",
          servers: [
            { address: "10.0.0.10", port: 80 },
            { address: "2001:db8::1", port: 80, weight: 5 },
            { address: "10.0.0.9", port: 8080, weight: 0 },
            { address: "10.0.0.9", port: 443 },
            { address: "::ffff:10.0.0.1", port: 80 },
          ],
        },
        { name: "be_api", servers: [{ address: "192.168.1.1", port: 9000, weight: 256 }] },
        { name: "be_empty", servers: [] },
      ],
    },
    "test",
  );

  it("numbers servers srv1..N by address (numerically, IPv4 first) then port, then adds spares", () => {
    const context = fromDesired(desired, { slotPrefix: "srv", spareSlots: 2 });
    expect(context.backends.map((b) => b.name)).toEqual(["be_api", "be_empty", "be_web"]);
    // ::ffff:10.0.0.1 is the IPv4 host 10.0.0.1 (values.ts).
    expect(lines(byName(context, "be_web"))).toEqual([
      "srv1 10.0.0.1:80 w1",
      "srv2 10.0.0.9:443 w1",
      "srv3 10.0.0.9:8080 w0",
      "srv4 10.0.0.10:80 w1",
      "srv5 [2001:db8::1]:80 w5",
      "srv6 0.0.0.0:80 disabled w1",
      "srv7 0.0.0.0:80 disabled w1",
    ]);
    expect(lines(byName(context, "be_empty"))).toEqual(["srv1 0.0.0.0:80 disabled w1", "srv2 0.0.0.0:80 disabled w1"]);
    expect(context.backends.every((b) => b.balance === "")).toBe(true);
  });

  it("takes a slot prefix and a default weight", () => {
    expect(lines(byName(fromDesired(desired, { slotPrefix: "s-", spareSlots: 1, defaultWeight: 10 }), "be_api"))).toEqual(["s-1 192.168.1.1:9000 w256", "s-2 0.0.0.0:80 disabled w10"]);
  });

  it("gives the same bytes whatever the order of backends and servers", () => {
    const template = plain();
    const expected = template.render(fromDesired(desired, { spareSlots: 3 }));
    const random = seededRandom(7);
    for (let round = 0; round < 50; round++) {
      const reordered = { backends: shuffled(desired.backends, random).map((b) => ({ ...b, servers: shuffled(b.servers, random) })) };
      expect(template.render(fromDesired(reordered, { spareSlots: 3 }))).toBe(expected);
    }
  });

  it("orders addresses numerically", () => {
    const sorted = ["10.0.0.10", "10.0.0.9", "9.255.255.255", "::1", "::", "2001:db8::", "fe80::1", "::ffff:1.2.3.4", "1::"].sort((a, b) => (addressSortKey(a) < addressSortKey(b) ? -1 : 1));
    expect(sorted).toEqual(["9.255.255.255", "10.0.0.9", "10.0.0.10", "::", "::1", "::ffff:1.2.3.4", "1::", "2001:db8::", "fe80::1"]);
    expect(addressSortKey("::ffff:1.2.3.4")).toBe("6:0000:0000:0000:0000:0000:ffff:0102:0304");
    expect(addressSortKey("1::")).toBe("6:0001:0000:0000:0000:0000:0000:0000:0000");
  });
});

describe("slot names", () => {
  it("continues the first numbered slot's series and skips taken names", () => {
    expect(slotPrefixOf(["main", "srv3", "web1"])).toBe("srv");
    expect(slotPrefixOf(["main", "42"])).toBeNull();
    expect(nextSlotNames(["srv1", "srv3", "srv04"], "srv", 3)).toEqual(["srv5", "srv6", "srv7"]);
    expect(nextSlotNames(["srv1", "srv2", "web9"], "web", 2)).toEqual(["web10", "web11"]);
    expect(nextSlotNames([], "srv", 0)).toEqual([]);
    // A `srvX` name that is no number of this series can still not clash with a spare.
    expect(nextSlotNames(["srv-1", "srvsrv2"], "srv", 2)).toEqual(["srv1", "srv2"]);
  });
});

describe("renderConfig: nunjucks with errors named by file and line", () => {
  it("renders the default template: global, defaults, frontend and one backend per context entry", async () => {
    const template = await loadTemplate(DEFAULT_TEMPLATE);
    const context = fromObserved(
      observed(
        backend("be_app", [server(1, "srv1", { addr: "10.0.0.1", port: 8080, weight: 20 }), server(2, "srv2", { addr: "10.0.0.2", admin: "maint" }), server(3, "srv3", { addr: "::1", port: 81 })]),
        backend("be_static", [server(1, "srv1", { addr: "10.0.1.1" })], "static-rr"),
      ),
      { spareSlots: 1 },
    );
    const text = template.render(context, { adminSocket: "/run/hafleet/admin.sock", stateFile: "/var/lib/hafleet/state", bind: "127.0.0.1:8080", maxconn: "1000" });
    expect(text.startsWith("# Rendered by hafleet")).toBe(true);
    expect(text.endsWith("\n")).toBe(true);
    expect(text).not.toMatch(/\n\n\n/);
    const body = text.split("\n");
    // -W on the command line: the keyword is deprecated in 3.3 and gone in 3.5.
    expect(body).not.toContain("    master-worker");
    expect(body).toContain("    stats socket /run/hafleet/admin.sock mode 600 level admin expose-fd listeners");
    expect(body).toContain("    server-state-file /var/lib/hafleet/state");
    expect(body).toContain("    load-server-state-from-file global");
    expect(body).toContain("    maxconn 1000");
    expect(body).not.toContain("    nbthread");
    expect(body).toContain("    bind 127.0.0.1:8080");
    expect(body).toContain("    default_backend be_app");
    expect(text).toContain(
      [
        "backend be_app",
        "    balance roundrobin",
        "    server srv1 10.0.0.1:8080 weight 20 check",
        "    server srv2 10.0.0.2:80 disabled weight 10 check",
        "    server srv3 [::1]:81 weight 10 check",
        "",
        "backend be_static",
        "    balance static-rr",
        "    server srv1 10.0.1.1:80 weight 10 check",
        "    server srv2 0.0.0.0:80 disabled weight 10 check",
        "",
      ].join("\n"),
    );
  });

  it("lets the default template's optional variables fall back, and takes server options", async () => {
    const template = await loadTemplate(DEFAULT_TEMPLATE);
    const text = template.render({ backends: [{ name: "b", balance: "", servers: [{ name: "s1", address: "10.0.0.1", port: 80, endpoint: "10.0.0.1:80", weight: 1, disabled: false }] }] }, { serverOptions: "", defaultBackend: "elsewhere" });
    expect(text).toContain("    stats socket /run/haproxy/admin.sock mode 600");
    expect(text).toContain("    bind *:80\n    default_backend elsewhere\n");
    expect(text).toContain("    server s1 10.0.0.1:80 weight 1\n");
    expect(template.render({ backends: [] })).not.toContain("default_backend");
  });

  it("names the template file, line and offending line for an undefined variable", () => {
    const path = join(dir, "undefined.njk");
    const template = compileTemplate("global\n    stats socket {{ adminSocket }} level admin\n", path);
    const error = caught(() => template.render({ backends: [] })) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.source).toBe(path);
    expect(error.issues).toEqual([{ path: "line 2, column 18", message: "attempted to output null or undefined value in: stats socket {{ adminSocket }} level admin" }]);
    expect(error.message).toBe(`${path}: line 2, column 18: attempted to output null or undefined value in: stats socket {{ adminSocket }} level admin`);
  });

  it("treats a field missing from a server as undefined too", () => {
    const template = compileTemplate("{% for b in backends %}\n{% for s in b.servers %}\nserver {{ s.name }} {{ s.fqdn }}\n{% endfor %}\n{% endfor %}\n", join(dir, "field.njk"));
    const context = fromDesired({ backends: [{ name: "be" as never, servers: [] }] }, { spareSlots: 1 });
    expect((caught(() => template.render(context)) as InvalidInputError).issues[0]!.path).toBe("line 3, column 21");
  });

  it("names the line of a syntax error when the template is compiled, before any render", async () => {
    const path = join(dir, "syntax.njk");
    await writeFile(path, "global\n\n{% for b in backends %}\nbackend {{ b.name }\n{% endfor %}\n");
    const error = (await loadTemplate(path).catch((e: unknown) => e)) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.source).toBe(path);
    expect(error.issues).toEqual([{ path: "line 4, column 19", message: "expected variable end in: backend {{ b.name }" }]);
    expect(error.code).toBe("HAFLEET_INVALID_INPUT");
  });

  it("corrects nunjucks' 0-based line for errors it wraps from a JS exception", () => {
    const error = caught(() => compileTemplate("a\nb\n{{ nothing() }}\n", join(dir, "call.njk")).render({ backends: [] })) as InvalidInputError;
    expect(error.issues).toEqual([{ path: "line 3, column 11", message: "Error: Unable to call `nothing`, which is undefined or falsey in: {{ nothing() }}" }]);
  });

  it("names the included file and its line for an error inside an include", async () => {
    await writeFile(join(dir, "part.njk"), "ok\n  {{ missing }}\n");
    const error = caught(() => compileTemplate("a\n{% include 'part.njk' %}\n", join(dir, "main.njk")).render({ backends: [] })) as InvalidInputError;
    expect(error.source).toBe(join(dir, "part.njk"));
    expect(error.issues).toEqual([{ path: "line 2, column 3", message: "attempted to output null or undefined value in: {{ missing }}" }]);
  });

  it("includes only from the template's own folder", () => {
    const sub = join(dir, "sub.njk");
    for (const outside of ["../etc/passwd", "/etc/passwd", "../../../../../../etc/hostname"]) {
      const error = caught(() => compileTemplate(`{% include '${outside}' %}`, sub).render({ backends: [] })) as InvalidInputError;
      expect(error).toBeInstanceOf(InvalidInputError);
      expect(error.issues[0]!.message).toMatch(/template not found: /);
    }
  });

  it("reports an unreadable template as invalid input", async () => {
    const error = (await loadTemplate(join(dir, "nope.njk")).catch((e: unknown) => e)) as InvalidInputError;
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.issues[0]!.message).toMatch(/^cannot read the template: ENOENT/);
  });

  it("does not escape values (no HTML entities in a config file) and ends the file with a newline", () => {
    const template = compileTemplate("{{ v }}", join(dir, "raw.njk"));
    expect(template.render({ backends: [] }, { v: "a<b>&'\"c" })).toBe("a<b>&'\"c\n");
  });

  it("keeps `backends` for the rendered backends: a variable cannot shadow them", () => {
    expect(() => parseTemplateVars(["backends=x"])).toThrow(InvalidInputError);
    const template = compileTemplate("{{ backends | length }}", join(dir, "len.njk"));
    expect(template.render(fromDesired({ backends: [] }, { spareSlots: 0 }), { backends: "x" } as Record<string, string>)).toBe("0\n");
  });

  it("extracts file, line and detail from nunjucks messages", () => {
    expect(locateTemplateError("(/t/a.njk) [Line 2, Column 1]\n  attempted to output null or undefined value", "/f")).toEqual({ file: "/t/a.njk", line: 2, column: 1, detail: "attempted to output null or undefined value" });
    expect(locateTemplateError("(/t/a.njk) [Line 4]\n  unexpected end of file", "/f")).toEqual({ file: "/t/a.njk", line: 4, column: null, detail: "unexpected end of file" });
    expect(locateTemplateError("(/t/a.njk)\n  Error: filter not found: nofilter", "/f")).toEqual({ file: "/t/a.njk", line: null, column: null, detail: "Error: filter not found: nofilter" });
    expect(locateTemplateError("(unknown path) [Line 1, Column 2]\n  x", "/f")).toEqual({ file: "/f", line: 1, column: 2, detail: "x" });
    expect(locateTemplateError("something else", "/f")).toEqual({ file: "/f", line: null, column: null, detail: "something else" });
    const nested = "(/t/main.njk)\n  Template render error: (/t/main.njk)\n  Template render error: (/t/part.njk) [Line 2, Column 3]\n  attempted to output null or undefined value";
    expect(locateTemplateError(nested, "/f")).toEqual({ file: "/t/part.njk", line: 2, column: 3, detail: "attempted to output null or undefined value" });
  });
});

describe("no injection from values", () => {
  const good: RenderServer = { name: "srv1", address: "10.0.0.1", port: 80, endpoint: "10.0.0.1:80", weight: 1, disabled: false };
  const contextWith = (fields: Partial<RenderServer>, name = "be"): RenderContext => ({ backends: [{ name, balance: "", servers: [{ ...good, ...fields }] }] });

  it("refuses a hand-built context holding anything a config line cannot hold", () => {
    const template = plain();
    const bad: Array<[RenderContext, string]> = [
      [contextWith({ name: "srv1\n    server evil 6.6.6.6:80" }), "backends[0].servers[0].name"],
      [contextWith({ name: "srv1 # comment" }), "backends[0].servers[0].name"],
      [contextWith({ address: "10.0.0.1\nbackend x" }), "backends[0].servers[0].address"],
      [contextWith({ address: "evil.example.com" }), "backends[0].servers[0].address"],
      [contextWith({ port: 0 }), "backends[0].servers[0].port"],
      [contextWith({ port: 65536 }), "backends[0].servers[0].port"],
      [contextWith({ weight: 257 }), "backends[0].servers[0].weight"],
      [contextWith({ weight: 1.5 }), "backends[0].servers[0].weight"],
      [contextWith({ endpoint: "10.0.0.1:80 backup" }), "backends[0].servers[0].endpoint"],
      [contextWith({ disabled: "yes" as unknown as boolean }), "backends[0].servers[0].disabled"],
      [contextWith({}, "be\nfrontend"), "backends[0].name"],
      [{ backends: [{ name: "be", balance: "uri whole" as never, servers: [] }] }, "backends[0].balance"],
      [{ backends: [{ name: "be", balance: "", servers: [good, good] }] }, "backends[0].servers[1].name"],
      [{ backends: [{ name: "be", balance: "", servers: [] }, { name: "be", balance: "", servers: [] }] }, "backends[1].name"],
    ];
    for (const [context, path] of bad) {
      const error = caught(() => template.render(context)) as InvalidInputError;
      expect(error, path).toBeInstanceOf(InvalidInputError);
      expect(error.source).toBe("render context");
      expect(error.issues.map((issue) => issue.path)).toEqual([path]);
    }
  });

  it("never gets a line break or '#' in from a desired state: it is refused before rendering", () => {
    for (const input of [
      { name: "be\nbackend x", servers: [] },
      { name: "be#x", servers: [] },
      { name: "be", servers: [{ address: "10.0.0.1\n", port: 80 }] },
      { name: "be", servers: [{ address: "10.0.0.1 backup", port: 80 }] },
      { name: "be", servers: [{ address: "10.0.0.1", port: "80\n" }] },
    ]) {
      expect(() => parseDesiredState({ backends: [input] }, "t"), JSON.stringify(input)).toThrow(InvalidInputError);
    }
  });

  it("checks --var values and names", () => {
    expect(parseTemplateVars(["adminSocket=/run/a.sock", "bind=*:80", "empty=", "eq=a=b", "serverOptions=check inter 1s"])).toEqual({
      adminSocket: "/run/a.sock",
      bind: "*:80",
      empty: "",
      eq: "a=b",
      serverOptions: "check inter 1s",
    });
    const cases: Array<[string[], string]> = [
      [["noequals"], "must be KEY=VALUE"],
      [["=v"], "must be KEY=VALUE"],
      [["a=1", "a=2"], "given twice"],
      [["1a=x"], "a variable name is letters, digits and '_', not starting with a digit"],
      [["__proto__=x"], "names starting with '__' are reserved"],
      [["a-b=x"], "a variable name is letters, digits and '_', not starting with a digit"],
      [["a=x\nbackend evil"], "must not hold a line break, a control character or '#'"],
      [["a=x\r"], "must not hold a line break, a control character or '#'"],
      [["a=x # y"], "must not hold a line break, a control character or '#'"],
      [["a=\u0000"], "must not hold a line break, a control character or '#'"],
      [[`a=${"x".repeat(4097)}`], "must be at most 4096 characters"],
    ];
    for (const [texts, message] of cases) {
      const error = caught(() => parseTemplateVars(texts)) as InvalidInputError;
      expect(error, texts.join(" ")).toBeInstanceOf(InvalidInputError);
      expect(error.source).toBe("--var");
      expect(error.issues.map((issue) => issue.message)).toContain(message);
    }
  });
});

describe("haproxyMessages", () => {
  const output = [
    "[NOTICE]   (7649) : haproxy version is 2.6.12-1+deb12u4",
    "[WARNING]  (7649) : config : missing timeouts for backend 'b'.",
    "   | While not properly invalid, you will certainly encounter various problems",
    "   | with such a configuration.",
    "[ALERT]    (7649) : config : parsing [h5.cfg:7] : backend 'b', another server named 'a' was already defined at line 6, please use distinct names.",
    "[ALERT]    (7649) : config : Fatal errors found in configuration.",
    "Configuration file is valid",
    "",
  ].join("\n");

  it("keeps each message of a level with its continuation lines", () => {
    expect(haproxyMessages(output, "ALERT")).toEqual([
      "[ALERT]    (7649) : config : parsing [h5.cfg:7] : backend 'b', another server named 'a' was already defined at line 6, please use distinct names.",
      "[ALERT]    (7649) : config : Fatal errors found in configuration.",
    ]);
    expect(haproxyMessages(output, "WARNING")).toEqual([
      "[WARNING]  (7649) : config : missing timeouts for backend 'b'.\n   | While not properly invalid, you will certainly encounter various problems\n   | with such a configuration.",
    ]);
    expect(haproxyMessages("", "ALERT")).toEqual([]);
  });
});

describe("CoalescingConfigWriter (fake clock, no disk)", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function contextOf(n: number): RenderContext {
    return fromDesired(parseDesiredState({ backends: [{ name: "be", servers: [{ address: "10.0.0.1", port: 80, weight: n % 257 }] }] }, "t"), { spareSlots: 0 });
  }

  function harness(options: { failWith?: () => Error | null; writeMs?: number } = {}) {
    const written: string[] = [];
    const writer = new CoalescingConfigWriter({
      file: "/nowhere/haproxy.cfg",
      intervalMs: 1_000,
      render: (context) => `w=${context.backends[0]!.servers[0]!.weight}`,
      writeText: async (text): Promise<ConfigWriteResult> => {
        if (options.writeMs) await new Promise((resolve) => setTimeout(resolve, options.writeMs));
        const failure = options.failWith?.();
        if (failure) throw failure;
        const changed = written[written.length - 1] !== text;
        if (changed) written.push(text);
        return { file: "/nowhere/haproxy.cfg", changed, backup: null, warnings: [] };
      },
    });
    return { writer, written };
  }

  it("writes once per interval, the latest context, for a burst of 1,000 requests", async () => {
    vi.useFakeTimers();
    const { writer, written } = harness();
    for (let n = 1; n <= 1_000; n++) writer.request(contextOf(n));
    await vi.advanceTimersByTimeAsync(999);
    expect(written).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(written).toEqual([`w=${1_000 % 257}`]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(written).toHaveLength(1);
    expect(writer.stats()).toEqual({ requests: 1_000, attempts: 1, written: 1, unchanged: 0, failed: 0 });
    expect(writer.dirty).toBe(false);
  });

  it("writes requests that arrive during a write after it, once", async () => {
    vi.useFakeTimers();
    const { writer, written } = harness({ writeMs: 300 });
    writer.request(contextOf(1));
    await vi.advanceTimersByTimeAsync(1_100); // the write started at 1,000 and is running
    for (let n = 2; n <= 50; n++) writer.request(contextOf(n));
    await vi.advanceTimersByTimeAsync(200);
    expect(written).toEqual(["w=1"]);
    await vi.advanceTimersByTimeAsync(1_300);
    expect(written).toEqual(["w=1", "w=50"]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(writer.stats().attempts).toBe(2);
  });

  it("flush() writes at once, cancels the timer, and returns null when nothing is pending", async () => {
    vi.useFakeTimers();
    const { writer, written } = harness();
    expect(await writer.flush()).toBeNull();
    writer.request(contextOf(3));
    expect(writer.dirty).toBe(true);
    expect((await writer.flush())?.changed).toBe(true);
    expect(written).toEqual(["w=3"]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(written).toEqual(["w=3"]);
    writer.request(contextOf(3));
    expect((await writer.flush())?.changed).toBe(false);
    expect(writer.stats()).toMatchObject({ attempts: 2, written: 1, unchanged: 1 });
  });

  it("keeps a refused context pending without retrying it alone; flush() retries and throws", async () => {
    vi.useFakeTimers();
    let failure: Error | null = new Error("haproxy -c refused");
    const { writer, written } = harness({ failWith: () => failure });
    writer.request(contextOf(4));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(writer.stats()).toMatchObject({ attempts: 1, failed: 1 });
    expect(writer.dirty).toBe(true);
    await expect(writer.flush()).rejects.toThrow("haproxy -c refused");
    failure = null;
    expect((await writer.flush())?.changed).toBe(true);
    expect(written).toEqual(["w=4"]);
    expect(writer.dirty).toBe(false);
  });

  it("writes a request made during a failing write on the next interval", async () => {
    vi.useFakeTimers();
    let calls = 0;
    const { writer, written } = harness({ writeMs: 300, failWith: () => (++calls === 1 ? new Error("first fails") : null) });
    writer.request(contextOf(1));
    await vi.advanceTimersByTimeAsync(1_100);
    writer.request(contextOf(2));
    await vi.advanceTimersByTimeAsync(2_500);
    expect(written).toEqual(["w=2"]);
  });

  it("close() flushes, and a request after it throws", async () => {
    vi.useFakeTimers();
    const { writer, written } = harness();
    writer.request(contextOf(9));
    expect((await writer.close())?.changed).toBe(true);
    expect(written).toEqual(["w=9"]);
    expect(() => writer.request(contextOf(10))).toThrow(/closed/);
  });

  it("counts a render error as a failed write", async () => {
    const writer = new CoalescingConfigWriter({
      file: "/nowhere",
      render: () => {
        throw new InvalidInputError("t.njk", [{ path: "line 1", message: "boom" }]);
      },
      writeText: () => Promise.reject(new Error("never called")),
    });
    writer.request(contextOf(1));
    await expect(writer.flush()).rejects.toBeInstanceOf(InvalidInputError);
    expect(writer.stats()).toMatchObject({ attempts: 1, failed: 1 });
  });
});
