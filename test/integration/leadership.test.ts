import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { ConsulLeadership } from "../../controller/leadership/consul-leadership.js";
import { LeadershipLostError, NotLeaderError } from "../../controller/leadership/leadership-errors.js";
import { startConsulEmulator, type ConsulEmulator, type ConsulEmulatorOptions } from "../consul-emulator/consul-emulator.js";
import { until } from "../support/helpers.js";

/*
 * Controller replicas electing a rollout leader through the Consul emulator's sessions and
 * KV store: what each replica says is checked against who holds the key in Consul and what
 * the key holds. TTL and lock-delay are short (5 s, 2.5 s; Consul's are 15 s by default), yet
 * not so short that a busy machine's scheduling (a request times out at TTL/3) decides them.
 */

const KEY = "hafleet/rollout-leader";
const TTL_MS = 5_000;
const LOCK_DELAY_MS = 2_500;
const TAKEOVER_MS = 30_000;

const dataSchema = z.strictObject({ rollout: z.string(), wave: z.number().int().min(0) });
type Data = z.infer<typeof dataSchema>;

interface Replica {
  id: string;
  leadership: ConsulLeadership<Data>;
  logs: Record<string, unknown>[];
}

let consul: ConsulEmulator | undefined;
let replicas: Replica[] = [];
/** Every leading start and end, in the order the replicas told them. */
let transitions: string[] = [];
/** Moments when more than one replica said it led: must stay empty. */
let overlaps: string[][] = [];

afterEach(async () => {
  await Promise.all(replicas.map((replica) => replica.leadership.stop()));
  replicas = [];
  await consul?.close();
  consul = undefined;
});

async function startConsul(options: ConsulEmulatorOptions = {}): Promise<ConsulEmulator> {
  transitions = [];
  overlaps = [];
  consul = await startConsulEmulator({ sessionTtlMinMs: 100, ...options });
  return consul;
}

function startReplica(id: string, token?: string): Replica {
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const leadership = new ConsulLeadership({
    address: consul!.url,
    ...(token === undefined ? {} : { token }),
    key: KEY,
    sessionTtlMs: TTL_MS,
    lockDelayMs: LOCK_DELAY_MS,
    replica: { id, url: `https://${id}:7901` },
    data: dataSchema,
    logger,
  });
  let wasLeading = false;
  leadership.onChange((view) => {
    if (view.leading !== wasLeading) transitions.push(`${id} ${view.leading ? "leads" : "follows"}`);
    wasLeading = view.leading;
    const leaders = replicas.filter((replica) => replica.leadership.leading()).map((replica) => replica.id);
    if (leaders.length > 1) overlaps.push(leaders);
  });
  const replica = { id, leadership, logs };
  replicas.push(replica);
  leadership.start();
  return replica;
}

async function startReplicas(count: number): Promise<Replica[]> {
  await startConsul();
  return Array.from({ length: count }, (_, index) => startReplica(`ctl-${index + 1}`));
}

/** Waits until exactly one replica leads and every other one names it. */
async function settledLeader(among = replicas, timeoutMs = TAKEOVER_MS): Promise<Replica> {
  return until(
    () => {
      const leaders = among.filter((replica) => replica.leadership.leading());
      if (leaders.length !== 1) return false;
      const leader = leaders[0]!;
      return among.every((replica) => replica.leadership.view().leader?.id === leader.id) && leader;
    },
    "exactly one leader, named by every replica",
    timeoutMs,
    async () => JSON.stringify(among.map((replica) => ({ id: replica.id, ...replica.leadership.view() }))),
  );
}

/** The key as Consul holds it: its lock holder and its value, decoded. */
async function keyInConsul(): Promise<{ session: string | null; value: unknown }> {
  const response = await fetch(`${consul!.url}/v1/kv/${KEY}`, { headers: { "X-Consul-Token": "root" } });
  expect(response.status).toBe(200);
  const [entry] = (await response.json()) as { Value: string | null; Session?: string }[];
  return { session: entry?.Session ?? null, value: entry?.Value == null ? null : (JSON.parse(Buffer.from(entry.Value, "base64").toString("utf8")) as unknown) };
}

function logged(replica: Replica, message: RegExp): Record<string, unknown>[] {
  return replica.logs.filter((line) => typeof line["msg"] === "string" && message.test(line["msg"]));
}

describe("leadership among controller replicas", { timeout: 60_000 }, () => {
  it("exactly one of three leads, holding the key in Consul, and keeps it over several renewals", async () => {
    await startReplicas(3);
    const leader = await settledLeader();

    const held = await keyInConsul();
    expect(held.session).not.toBeNull();
    expect(held.value).toEqual({ leader: { id: leader.id, url: `https://${leader.id}:7901` }, data: null });
    expect(replicas.find((replica) => replica !== leader)?.leadership.view()).toEqual({ leading: false, leader: { id: leader.id, url: `https://${leader.id}:7901` }, data: null });

    // Two TTLs of renewals by all three: the same leader, under the same session.
    const requests = consul!.requestCount;
    await until(() => consul!.requestCount >= requests + 12, "a dozen more requests (renewals)", TAKEOVER_MS);
    expect(await settledLeader()).toBe(leader);
    expect(consul!.lockHolder(KEY)).toBe(held.session);
    expect(consul!.sessionIds()).toHaveLength(3);
    expect(overlaps).toEqual([]);
  });

  it("followers see what the leader publishes, as Consul's key holds it", async () => {
    await startReplicas(3);
    const leader = await settledLeader();

    await leader.leadership.publish({ rollout: "r1", wave: 1 });
    await leader.leadership.publish({ rollout: "r1", wave: 2 });

    await until(() => replicas.every((replica) => replica.leadership.view().data?.wave === 2), "every replica seeing wave 2");
    expect((await keyInConsul()).value).toEqual({ leader: { id: leader.id, url: `https://${leader.id}:7901` }, data: { rollout: "r1", wave: 2 } });
  });

  it("refuses a follower's publish, naming the leader, and writes nothing", async () => {
    await startReplicas(2);
    const leader = await settledLeader();
    await leader.leadership.publish({ rollout: "r1", wave: 1 });
    const follower = replicas.find((replica) => replica !== leader)!;

    const refused = follower.leadership.publish({ rollout: "r2", wave: 5 });

    await expect(refused).rejects.toBeInstanceOf(NotLeaderError);
    await expect(refused).rejects.toThrow(`the leader is '${leader.id}' (https://${leader.id}:7901)`);
    expect((await keyInConsul()).value).toMatchObject({ leader: { id: leader.id }, data: { rollout: "r1", wave: 1 } });
    expect(follower.leadership.leading()).toBe(false);
  });

  it("after the leader stops, another leads once the lock-delay is over, carrying on from the last published data", async () => {
    await startReplicas(3);
    const first = await settledLeader();
    await first.leadership.publish({ rollout: "r7", wave: 3 });
    const firstSession = consul!.lockHolder(KEY);

    await first.leadership.stop();

    expect(first.leadership.leading()).toBe(false);
    expect(consul!.sessionIds()).not.toContain(firstSession);
    const rest = replicas.filter((replica) => replica !== first);
    const second = await settledLeader(rest);
    expect(second.leadership.view().data).toEqual({ rollout: "r7", wave: 3 });
    expect((await keyInConsul()).value).toEqual({ leader: { id: second.id, url: `https://${second.id}:7901` }, data: { rollout: "r7", wave: 3 } });
    expect(transitions.indexOf(`${first.id} follows`)).toBeLessThan(transitions.indexOf(`${second.id} leads`));
    expect(transitions.indexOf(`${first.id} follows`)).toBeGreaterThan(-1);
    expect(overlaps).toEqual([]);
  });

  it("a leader whose renewals Consul answers with 500 stops leading before another takes over, then follows it", async () => {
    await startReplicas(2);
    const first = await settledLeader();
    const session = consul!.lockHolder(KEY)!;

    consul!.failNext(100_000, 500, "rpc error making call: No cluster leader", { endpoint: "session", target: session });

    const second = await until(() => replicas.find((replica) => replica !== first && replica.leadership.leading()), "the other replica leading", TAKEOVER_MS);
    expect(first.leadership.leading()).toBe(false);
    expect(transitions.indexOf(`${first.id} follows`)).toBeLessThan(transitions.indexOf(`${second.id} leads`));
    expect(logged(first, /cannot renew the Consul session/).length).toBeGreaterThan(0);
    expect(consul!.lockHolder(KEY)).not.toBe(session);

    consul!.clearFaults();
    expect(await settledLeader()).toBe(second);
    await until(() => consul!.sessionIds().length === 2, "the old leader with a new session");
    expect(logged(first, /Consul no longer knows the session/).length).toBeGreaterThan(0);
    expect(overlaps).toEqual([]);
  });

  it("a leader whose renewals hang past their timeout stops leading before another takes over", async () => {
    await startReplicas(2);
    const first = await settledLeader();
    const session = consul!.lockHolder(KEY)!;

    consul!.delay(5_000, { endpoint: "session", target: session });

    const second = await until(() => replicas.find((replica) => replica !== first && replica.leadership.leading()), "the other replica leading", TAKEOVER_MS);
    expect(first.leadership.leading()).toBe(false);
    expect(transitions.indexOf(`${first.id} follows`)).toBeLessThan(transitions.indexOf(`${second.id} leads`));
    expect(logged(first, /cannot renew the Consul session/).some((line) => (line["err"] as { message?: string }).message?.includes("did not answer"))).toBe(true);
    expect(overlaps).toEqual([]);
  });

  it("a leader whose session Consul invalidates stops leading; a new session takes the key after the lock-delay", async () => {
    await startReplicas(3);
    const first = await settledLeader();
    await first.leadership.publish({ rollout: "r2", wave: 4 });
    const invalidated = consul!.lockHolder(KEY)!;

    consul!.expireSession(invalidated);

    await until(() => !first.leadership.leading(), "the invalidated leader to stop leading");
    const stoppedAt = transitions.indexOf(`${first.id} follows`);
    // Any replica may win the race after the lock-delay, the old leader too, with a new session.
    const next = await settledLeader(replicas, TAKEOVER_MS);
    expect(consul!.lockHolder(KEY)).not.toBe(invalidated);
    expect(next.leadership.view().data).toEqual({ rollout: "r2", wave: 4 });
    expect(transitions.slice(stoppedAt + 1)).toContain(`${next.id} leads`);
    expect(overlaps).toEqual([]);
  });

  it("Consul fences a leader that missed losing the key: its publish is refused and it follows", async () => {
    await startReplicas(1);
    const [only] = replicas;
    await settledLeader();
    await only!.leadership.publish({ rollout: "r1", wave: 1 });
    // The leader's reads of the key fail from now on: it cannot see the key change hands.
    consul!.failNext(100_000, 503, "unavailable", { endpoint: "kv", target: KEY, method: "GET" });
    const intruder = await put("/v1/session/create", JSON.stringify({ TTL: "10s" }));
    const intruderSession = (JSON.parse(intruder) as { ID: string }).ID;
    expect(await put(`/v1/kv/${KEY}`, "", "DELETE")).toBe("true");
    expect(await put(`/v1/kv/${KEY}?acquire=${intruderSession}`, JSON.stringify({ leader: { id: "intruder" }, data: { rollout: "x", wave: 9 } }))).toBe("true");
    expect(only!.leadership.leading()).toBe(true);

    const publishing = only!.leadership.publish({ rollout: "r1", wave: 2 });

    await expect(publishing).rejects.toBeInstanceOf(LeadershipLostError);
    await expect(publishing).rejects.toThrow(`lost the lock on Consul key '${KEY}'`);
    expect(only!.leadership.leading()).toBe(false);
    consul!.clearFaults();
    expect(await keyInConsul()).toEqual({ session: intruderSession, value: { leader: { id: "intruder" }, data: { rollout: "x", wave: 9 } } });
    await until(() => only!.leadership.view().leader?.id === "intruder", "the fenced leader to name the intruder");
  });

  it("reads a corrupt or schema-invalid value as no data, logging the key and what was wrong; the leader overwrites it", async () => {
    await startConsul();
    await put(`/v1/kv/${KEY}`, "{not json");
    const [one, two] = [startReplica("ctl-1"), startReplica("ctl-2")];

    // The leader read the key before it acquired it (the other may have come after).
    const leader = await settledLeader();
    const follower = leader === one ? two : one;
    expect(leader.leadership.view().data).toBeNull();
    expect((await keyInConsul()).value).toEqual({ leader: { id: leader.id, url: `https://${leader.id}:7901` }, data: null });
    const errors = logged(leader, /unusable value/);
    expect(errors.length).toBe(1);
    expect(errors[0]).toMatchObject({ level: 50, key: KEY });
    expect(errors[0]?.["problem"]).toMatch(/^value of Consul key 'hafleet\/rollout-leader': not valid JSON/);

    // A plain write keeps the lock where it is and puts data of the wrong shape under it.
    await put(`/v1/kv/${KEY}`, JSON.stringify({ leader: { id: leader.id }, data: { rollout: "r1", wave: "two" } }));
    const schemaProblem = () => logged(follower, /unusable value/).find((line) => String(line["problem"]).includes("field data"));
    await until(schemaProblem, "the follower logging the data of the wrong shape");
    expect(schemaProblem()?.["problem"]).toMatch(/^value of Consul key 'hafleet\/rollout-leader', field data: wave: .*\(got "two"\)/);
    expect(follower.leadership.view()).toMatchObject({ leader: { id: leader.id }, data: null });
    expect(leader.leadership.leading()).toBe(true);

    await leader.leadership.publish({ rollout: "r1", wave: 2 });
    await until(() => follower.leadership.view().data?.wave === 2, "the follower seeing the overwritten data");
    expect((await keyInConsul()).value).toMatchObject({ data: { rollout: "r1", wave: 2 } });
  });

  it("with Consul down, nobody claims to lead once the TTL has passed", async () => {
    await startReplicas(2);
    const leader = await settledLeader();

    await consul!.close();

    await until(() => replicas.every((replica) => !replica.leadership.leading()), "no replica leading", TAKEOVER_MS);
    expect(transitions).toContain(`${leader.id} follows`);
    expect(leader.leadership.view().leader).toBeNull();
    await until(() => logged(leader, /cannot renew the Consul session/).length > 0, "the failed renewal logged");
  });

  it("sends its ACL token; without one Consul refuses the session and it never leads", async () => {
    await startConsul({ token: "root" });
    const withToken = startReplica("ctl-1", "root");
    const without = startReplica("ctl-2");

    expect(await settledLeader([withToken])).toBe(withToken);
    await until(() => logged(without, /cannot create a Consul session/).length > 0, "the refused session logged");
    expect(JSON.stringify(logged(without, /cannot create a Consul session/)[0])).toContain("Permission denied");
    expect(without.leadership.leading()).toBe(false);
  });
});

/** A request to the emulator as the management token; answers the body. */
async function put(path: string, body: string, method = "PUT"): Promise<string> {
  const response = await fetch(`${consul!.url}${path}`, { method, headers: { "X-Consul-Token": "root" }, body: method === "DELETE" ? null : body });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return text;
}
