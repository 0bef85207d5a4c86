import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { FleetStatus } from "../../controller/status/status-schema.js";
import { FIXTURE_NOW, agentId, fleetStatusFixture, rolloutFixture, serveStatusPage, type StatusPageServer } from "../support/status-fixture.js";

/*
 * The status page in Debian's Chromium, headless, against a stub of the status API served
 * below a path prefix (as behind a proxy) with the page's own security headers. Nothing is
 * timed: every check waits for the page to show what it must, with room for a slow machine.
 */

const CHROMIUM = "/usr/bin/chromium";
const WAIT_MS = 15_000;
const HOSTILE = "<img src=x onerror=alert(1)>";

let context: BrowserContext | undefined;
let server: StatusPageServer | undefined;
let userDataDir: string | undefined;
let serve: () => FleetStatus = () => fleetStatusFixture();
const pageErrors: string[] = [];
const dialogs: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  server = await serveStatusPage(() => serve(), "/ops/fleet");
  userDataDir = await mkdtemp(join(tmpdir(), "hafleet-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1440, height: 900 },
    colorScheme: "light",
  });
}, 60_000);

afterEach(async () => {
  for (const page of context?.pages() ?? []) await page.close();
  expect(pageErrors.splice(0), "uncaught errors in the page").toEqual([]);
  expect(dialogs.splice(0), "dialogs the page opened").toEqual([]);
});

afterAll(async () => {
  try {
    await context?.close();
  } finally {
    try {
      await server?.close();
    } finally {
      if (userDataDir !== undefined) await rm(userDataDir, { recursive: true, force: true });
    }
  }
});

/** Opens the page on `status` and waits for its first answer. */
async function open(status: FleetStatus): Promise<Page> {
  serve = () => status;
  const page = await context!.newPage();
  page.on("pageerror", (error) => pageErrors.push(error.message));
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  await page.goto(server!.url);
  await waitForText(page, "freshness", "updated");
  return page;
}

/** Waits until the region shows `text`; on time-out, says what it shows instead. */
async function waitForText(page: Page, testId: string, text: string | RegExp): Promise<void> {
  const region = page.getByTestId(testId).first();
  try {
    await page.getByTestId(testId).filter({ hasText: text }).first().waitFor({ timeout: WAIT_MS });
  } catch (error) {
    const shown = await region.textContent({ timeout: 1_000 }).catch(() => "(not found)");
    throw new Error(`${testId} never showed ${String(text)}; it shows: ${shown}`, { cause: error });
  }
}

async function text(page: Page, testId: string): Promise<string> {
  return (await page.getByTestId(testId).first().textContent()) ?? "";
}

function agentRow(page: Page, agent: string) {
  return page.getByTestId("agent-row").filter({ hasText: agent });
}

const MIXED = { agents: 40, states: { disconnected: 2, rejected: 3, drifted: 1, held: 1, pending: 2, "not-sent": 1 } } as const;

describe("fleet status page", () => {
  it("shows the counts per state, each backend's convergence and every agent's problem", async () => {
    const page = await open(fleetStatusFixture({ ...MIXED, held: { be_static: "would drop 5 of 7 servers (71% > 50%)" } }));

    expect(await text(page, "count-in-sync")).toBe("30in sync");
    expect(await text(page, "count-rejected")).toBe("3rejected");
    expect(await text(page, "count-disconnected")).toBe("2disconnected");
    expect(await text(page, "verdict")).toBe("10 of 40 agents not in sync");
    expect(await page.getByTestId("frozen-banner").isHidden()).toBe(true);
    expect(await page.getByTestId("rollout").isHidden()).toBe(true);

    // Least converged first: be_app carries every problem, the others only the disconnected.
    const backends = await page.getByTestId("backend-row").allTextContents();
    expect(backends[0]).toContain("be_app30/40 in sync");
    expect(backends[0]).toContain("3 rejected");
    expect(backends.find((row) => row.startsWith("be_api"))).toContain("38/40 in sync");
    expect(backends.find((row) => row.startsWith("be_static"))).toContain("HELD BY GUARD would drop 5 of 7 servers (71% > 50%)");

    const states = await page.locator('[data-testid="agent-row"] td:first-child').allTextContents();
    expect(states.slice(0, 11)).toEqual(["disconnected", "disconnected", "rejected", "rejected", "rejected", "drifted", "held", "pending", "pending", "not sent", "in sync"]);
    const disconnected = await agentRow(page, agentId(0)).textContent();
    expect(disconnected).toContain("disconnected 1m ago");
    expect(disconnected).toContain("no heartbeat for 15s");
    expect(disconnected).toMatch(/be_appdisconnectedran \w{8}…, desired \w{8}…\+ 2 at the desired version when it left/);
    expect(await agentRow(page, agentId(2)).textContent()).toContain("set server be_app/srv3 addr 10.0.3.2: No such server.");
    expect(await agentRow(page, agentId(5)).textContent()).toContain("missing 10.0.1.5:8080");
    expect(await agentRow(page, agentId(6)).textContent()).toContain("held 10.0.2.6:8080");
    expect(await agentRow(page, agentId(7)).textContent()).toContain("sent 12s ago");
    expect(await agentRow(page, agentId(39)).textContent()).toContain("all 3 in sync");

    const changes = await page.getByTestId("change-row").allTextContents();
    expect(changes[0]).toContain("converging, 40s so far");
    expect(changes[1]).toContain("1.3 s");
  });

  it("filters agents by id, label, backend or state, and to problems only", async () => {
    const page = await open(fleetStatusFixture(MIXED));
    const filter = page.getByTestId("agent-filter");

    await filter.fill("region=eu-central-1");
    await waitForText(page, "agents-shown", "10 of 40 agents match");
    await filter.fill(agentId(17));
    await waitForText(page, "agents-shown", "1 of 40 agents match");
    expect(await page.getByTestId("agent-row").count()).toBe(1);
    await filter.fill("be_app rejected");
    await waitForText(page, "agents-shown", "3 of 40 agents match");
    await filter.fill("region=eu-west-1");
    await page.getByTestId("problems-only").check();
    // eu-west-1 holds agents 0, 4, 8, ...: of those, 0 (disconnected), 4 (rejected) and 8 (pending) have problems.
    await waitForText(page, "agents-shown", "3 of 40 agents match");
    expect(await page.locator('[data-testid="agent-row"] th').allTextContents()).toEqual([agentId(0), agentId(4), agentId(8)]);
  });

  it("says what the status covers, and which replica holds each agent when replicas share status", async () => {
    const single = await open(fleetStatusFixture({ agents: 2 }));
    expect(await text(single, "scope")).toBe("covers: this replica's agents");
    await single.close();
    const fleet = fleetStatusFixture({ agents: 2 });
    const shared: FleetStatus = {
      ...fleet,
      summary: { ...fleet.summary, scope: "fleet (2 replicas)" },
      agents: [{ ...fleet.agents[0]!, replica: "ctl-a" }, { ...fleet.agents[1]!, replica: "ctl-b", peer: "" }],
    };
    const page = await open(shared);
    expect(await text(page, "scope")).toBe("covers: fleet (2 replicas)");
    expect(await agentRow(page, agentId(0)).textContent()).toContain(`replica ctl-a · ${fleet.agents[0]!.peer}`);
    expect(await agentRow(page, agentId(1)).textContent()).toContain("replica ctl-b · hafleet 0.1.0");
    await page.getByTestId("agent-filter").fill("ctl-b");
    await waitForText(page, "agents-shown", "1 of 2 agents match");
  });

  it("shows the FROZEN banner and a halted rollout's reason", async () => {
    const page = await open(
      fleetStatusFixture({
        ...MIXED,
        frozen: { since: FIXTURE_NOW - 300_000, reason: "INC-4711: discovery returned stale data" },
        rollout: rolloutFixture({ phase: "halted", haltReason: "wave 2: 3 agents rejected be_app (at most 1 allowed)" }),
      }),
    );
    expect(await page.getByTestId("frozen-banner").isVisible()).toBe(true);
    expect(await text(page, "frozen-banner")).toMatch(/FROZEN.*5m ago: INC-4711: discovery returned stale data/s);
    expect(await text(page, "rollout")).toMatch(/halted.*wave 2\/3.*9\/12 acked in this wave/s);
    expect(await text(page, "rollout-halt")).toBe("Halt reason: wave 2: 3 agents rejected be_app (at most 1 allowed)");
    expect(await page.title()).toBe("FROZEN · 10 not in sync · hafleet");
  });

  it("says per backend whether discovery is ok, failing since when, or never answered; how each change ended; frozen, not waiting", async () => {
    const status = fleetStatusFixture({ ...MIXED, frozen: { since: FIXTURE_NOW - 60_000, reason: "INC-9: Consul flapping" } });
    status.backends[0]!.discovery = { state: "failing", since: FIXTURE_NOW - 120_000, error: "connect ECONNREFUSED 127.0.0.1:8500" };
    status.backends[1]!.discovery = { state: "never-answered", since: null, error: null };
    status.changes[0] = { ...status.changes[0]!, outcome: "rolled-back", outcomeDetail: "rollout r-7: wave 1/3: agent lb-eu-00001 rejected backend be_app" };
    const page = await open(status);
    const rows = page.getByTestId("backend-row");
    await waitForText(page, "backend-row", /FAILING/);
    const shown = (await rows.allTextContents()).join("\n");
    expect(shown).toMatch(/FAILING since 2m ago: connect ECONNREFUSED 127\.0\.0\.1:8500/);
    expect(shown).toMatch(/NEVER ANSWERED nothing of it is pushed yet/);
    const changes = (await page.getByTestId("change-row").allTextContents()).join("\n");
    expect(changes).toMatch(/rolled back rollout r-7: wave 1\/3: agent lb-eu-00001 rejected backend be_app/);
    expect(changes).not.toMatch(/converging/);
    const notSent = status.agents.find((agent) => agent.state === "not-sent")!;
    expect(await agentRow(page, notSent.agent).textContent()).toMatch(/frozen: INC-9: Consul flapping/);
  });

  it("refreshes live, without reloading, when the status changes", async () => {
    const page = await open(fleetStatusFixture({ agents: 5, states: { rejected: 1 } }));
    await page.evaluate(() => Object.assign(window, { sameDocument: true }));
    serve = () => fleetStatusFixture({ agents: 7, frozen: { since: FIXTURE_NOW, reason: "maintenance" } });

    await waitForText(page, "verdict", "ALL IN SYNC");
    await waitForText(page, "count-in-sync", "7");
    await waitForText(page, "frozen-banner", "maintenance");
    expect(await page.getByTestId("agent-row").count()).toBe(7);
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
  });

  it("redraws only the rows that changed", async () => {
    const status = fleetStatusFixture(MIXED);
    const page = await open(status);
    await page.evaluate(() => Object.assign(window, { drawn: new WeakSet(document.querySelectorAll('[data-testid="agent-row"]')) }));
    const fixed = structuredClone(status);
    const agent = fixed.agents.find((entry) => entry.agent === agentId(2))!;
    agent.state = "in-sync";
    agent.backends[0] = { ...agent.backends[0]!, state: "in-sync", appliedVersion: agent.backends[0]!.desiredVersion, error: null };
    serve = () => fixed;

    await waitForText(page, "agents-table", new RegExp(`in sync${agentId(2)}`));
    const redrawn = await page.evaluate(() => {
      const { drawn } = window as unknown as { drawn: WeakSet<Element> };
      return [...document.querySelectorAll('[data-testid="agent-row"]')].filter((row) => !drawn.has(row)).map((row) => row.querySelector("th")!.textContent);
    });
    expect(redrawn).toEqual([agentId(2)]);
    expect(await page.getByTestId("agent-row").count()).toBe(40);
  });

  it("says the controller is unreachable while the API fails, keeps the last data, and recovers", async () => {
    const page = await open(fleetStatusFixture(MIXED));
    serve = () => {
      throw new Error("controller restarting");
    };
    await waitForText(page, "freshness", "controller unreachable (HTTP 503), data from");
    expect(await page.getByTestId("agent-row").count()).toBe(40);

    serve = () => fleetStatusFixture(MIXED);
    await waitForText(page, "freshness", /^live, updated/);
    await page.route("**/api/v1/status", (route) => route.abort());
    await waitForText(page, "freshness", "controller unreachable (no connection)");
    await page.unroute("**/api/v1/status");
    await waitForText(page, "freshness", /^live, updated/);
  });

  it("shows hostile strings from the API as text and runs nothing", async () => {
    const status = fleetStatusFixture({ ...MIXED, backends: ["be_app", HOSTILE], frozen: { since: FIXTURE_NOW, reason: HOSTILE }, rollout: rolloutFixture({ phase: "halted", haltReason: HOSTILE, reason: HOSTILE }) });
    const rejected = status.agents[2]!;
    rejected.agent = HOSTILE;
    rejected.labels = { [HOSTILE]: HOSTILE };
    rejected.backends[0]!.error = HOSTILE;
    status.agents[5]!.backends[0]!.drift = [{ endpoint: HOSTILE, state: "unexpected" }];
    status.agents[0]!.disconnectReason = HOSTILE;
    const page = await open(status);

    expect(await page.locator("img").count()).toBe(0);
    expect(await agentRow(page, `${HOSTILE}=${HOSTILE}`).textContent()).toContain(`be_apprejected${HOSTILE}`);
    expect(await agentRow(page, agentId(5)).textContent()).toContain(`unexpected ${HOSTILE}`);
    expect(await agentRow(page, agentId(0)).textContent()).toContain(`hafleet 0.1.0${HOSTILE}`);
    expect(await text(page, "frozen-banner")).toContain(HOSTILE);
    expect(await text(page, "rollout-halt")).toBe(`Halt reason: ${HOSTILE}`);
    expect(await page.getByTestId("backend-row").filter({ hasText: HOSTILE }).count()).toBe(1);
  });

  it("renders a 10,000-agent fleet capped at 500 rows, saying how many are hidden", async () => {
    const page = await open(fleetStatusFixture({ agents: 10_000, states: { rejected: 300, drifted: 300, pending: 300 } }));

    await waitForText(page, "agents-hidden", "showing the first 500, 9,500 hidden");
    expect(await text(page, "agents-shown")).toBe("10,000 agents");
    expect(await page.getByTestId("agent-row").count()).toBe(500);
    expect(await page.locator('[data-testid="agent-row"]:last-child td:first-child').textContent()).toBe("drifted");

    // The filter reaches agents past the cap.
    await page.getByTestId("agent-filter").fill(agentId(9_999));
    await waitForText(page, "agents-shown", "1 of 10,000 agents match");
    expect(await page.getByTestId("agents-hidden").isHidden()).toBe(true);
    await page.getByTestId("agent-filter").fill("");
    await page.getByTestId("problems-only").check();
    await waitForText(page, "agents-hidden", "showing the first 500, 400 hidden");
    expect(await text(page, "agents-shown")).toBe("900 of 10,000 agents match");
  }, 60_000);

  it("really draws: a screenshot with content, saved for a human to look at", async () => {
    const page = await open(
      fleetStatusFixture({
        agents: 60,
        states: { disconnected: 2, rejected: 2, drifted: 1, held: 1, pending: 3, "not-sent": 6 },
        held: { be_static: "would drop 5 of 7 servers (71% > 50%)" },
        rollout: rolloutFixture({ phase: "baking" }),
      }),
    );
    const png = await page.screenshot({ fullPage: true, type: "png" });
    const directory = await mkdtemp(join(tmpdir(), "hafleet-status-page-"));
    const path = join(directory, "status-page.png");
    await writeFile(path, png);
    console.log(`status page screenshot: ${path}`);

    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    const width = png.readUInt32BE(16);
    const height = png.readUInt32BE(20);
    expect(width).toBe(1440);
    expect(height).toBeGreaterThan(900);
    const pixels = await sampleColours(png.toString("base64"));
    expect(pixels.colours).toBeGreaterThan(50);
    // Mostly background, but far from all of it: text, tables, bars and chips.
    expect(pixels.nonWhiteShare).toBeGreaterThan(0.05);
    expect(pixels.nonWhiteShare).toBeLessThan(0.9);
  });
});

/** Decodes the PNG in a blank page (no policy there to refuse it) and samples its pixels. */
async function sampleColours(base64: string): Promise<{ colours: number; nonWhiteShare: number }> {
  const blank = await context!.newPage();
  return blank.evaluate(async (data) => {
    const bytes = Uint8Array.from(atob(data), (char) => char.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const drawing = canvas.getContext("2d")!;
    drawing.drawImage(bitmap, 0, 0);
    const rgba = drawing.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const colours = new Set<number>();
    let samples = 0;
    let nonWhite = 0;
    for (let offset = 0; offset < rgba.length; offset += 4 * 7) {
      const colour = (rgba[offset]! << 16) | (rgba[offset + 1]! << 8) | rgba[offset + 2]!;
      colours.add(colour);
      samples++;
      if (colour !== 0xffffff) nonWhite++;
    }
    return { colours: colours.size, nonWhiteShare: nonWhite / samples };
  }, base64);
}
