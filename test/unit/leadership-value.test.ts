import { describe, expect, it } from "vitest";
import { z } from "zod";
import { InvalidInputError } from "../../agent/errors.js";
import { ConsulHttpError, ConsulReplyError } from "../../controller/discovery/consul/consul-client.js";
import { ConsulLeadership } from "../../controller/leadership/consul-leadership.js";
import { goDuration, kvPath, readKeyAnswer } from "../../controller/leadership/consul-lock-api.js";
import { checkPublished, encodeLeaderValue, readLeaderValue } from "../../controller/leadership/leader-value.js";
import { LeadershipLostError, NotLeaderError } from "../../controller/leadership/leadership-errors.js";
import { pino } from "pino";
import { caught } from "../support/helpers.js";

const KEY = "hafleet/rollout-leader";
const dataSchema = z.strictObject({ rollout: z.string(), wave: z.number().int().min(0) });

function base64(text: string): string {
  return Buffer.from(text).toString("base64");
}

describe("the leadership key's value", () => {
  it("reads back what was encoded", () => {
    const text = encodeLeaderValue({ leader: { id: "ctl-1", url: "https://ctl-1:7901" }, data: { rollout: "r1", wave: 2 } });
    expect(readLeaderValue(base64(text), dataSchema, KEY)).toEqual({ leader: { id: "ctl-1", url: "https://ctl-1:7901" }, data: { rollout: "r1", wave: 2 }, problem: null });
    expect(readLeaderValue(base64(encodeLeaderValue({ leader: { id: "ctl-1" }, data: null })), dataSchema, KEY)).toEqual({ leader: { id: "ctl-1" }, data: null, problem: null });
  });

  it("reads an empty value as no leader and no data, with nothing wrong", () => {
    expect(readLeaderValue(null, dataSchema, KEY)).toEqual({ leader: null, data: null, problem: null });
  });

  it("reads text that is not JSON as nothing, naming the key and what was wrong", () => {
    const reading = readLeaderValue(base64("{half"), dataSchema, KEY);
    expect(reading).toMatchObject({ leader: null, data: null });
    expect(reading.problem).toMatch(/^value of Consul key 'hafleet\/rollout-leader': not valid JSON \(.+\): "\{half"$/);
  });

  it("reads a value of another shape as nothing, naming the field", () => {
    const reading = readLeaderValue(base64('{"leader": {"id": ""}, "data": null, "extra": 1}'), dataSchema, KEY);
    expect(reading).toMatchObject({ leader: null, data: null });
    expect(reading.problem).toContain("value of Consul key 'hafleet/rollout-leader'");
    expect(reading.problem).toContain("leader.id: must not be empty");
    expect(reading.problem).toContain("unknown field(s) extra");
  });

  it("reads data that fails its schema as no data, the leader still known", () => {
    const reading = readLeaderValue(base64('{"leader": {"id": "ctl-2"}, "data": {"rollout": "r1", "wave": -1}}'), dataSchema, KEY);
    expect(reading).toMatchObject({ leader: { id: "ctl-2" }, data: null });
    expect(reading.problem).toMatch(/value of Consul key 'hafleet\/rollout-leader', field data: wave: .* \(got -1\)/);
  });

  it("refuses to publish data its own readers would refuse", () => {
    const error = caught(() => checkPublished({ rollout: "r1", wave: 1.5 }, dataSchema, KEY));
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toMatch(/^data published on Consul key 'hafleet\/rollout-leader': wave: .* \(got 1\.5\)$/);
  });
});

describe("Consul's answers to a read of the key", () => {
  const headers = { "x-consul-index": "42" };

  it("reads an entry, its holder, and the index", () => {
    const body = JSON.stringify([{ LockIndex: 1, Key: KEY, Flags: 0, Value: "eA==", Session: "s-1", CreateIndex: 3, ModifyIndex: 40 }]);
    expect(readKeyAnswer({ status: 200, headers, body }, KEY)).toEqual({ index: 42, entry: { session: "s-1", value: "eA==", modifyIndex: 40 } });
    const free = JSON.stringify([{ LockIndex: 1, Key: KEY, Flags: 0, Value: null, CreateIndex: 3, ModifyIndex: 41 }]);
    expect(readKeyAnswer({ status: 200, headers, body: free }, KEY)).toEqual({ index: 42, entry: { session: null, value: null, modifyIndex: 41 } });
  });

  it("reads a 404 as no key, with its index", () => {
    expect(readKeyAnswer({ status: 404, headers, body: "" }, KEY)).toEqual({ index: 42, entry: null });
  });

  it("refuses an error status, a missing index and a body of another shape, naming the key", () => {
    const failed = caught(() => readKeyAnswer({ status: 500, headers, body: "No cluster leader" }, KEY));
    expect(failed).toBeInstanceOf(ConsulHttpError);
    expect((failed as Error).message).toBe(`Consul answered HTTP 500 for key '${KEY}': "No cluster leader"`);

    const unindexed = caught(() => readKeyAnswer({ status: 404, headers: {}, body: "" }, KEY));
    expect(unindexed).toBeInstanceOf(ConsulReplyError);
    expect((unindexed as Error).message).toBe(`Consul's answer for key '${KEY}' is unusable: no X-Consul-Index header`);

    const shapeless = caught(() => readKeyAnswer({ status: 200, headers, body: '{"Key": 1}' }, KEY));
    expect(shapeless).toBeInstanceOf(ConsulReplyError);
    expect((shapeless as Error).message).toMatch(/^Consul's answer for key 'hafleet\/rollout-leader' is unusable: answer: .*array/);
    expect((caught(() => readKeyAnswer({ status: 200, headers, body: "[]" }, KEY)) as Error).message).toContain("must hold exactly the one key asked for");
  });

  it("escapes each segment of the key's path and writes durations as Consul parses them", () => {
    expect(kvPath("hafleet/rollout leader")).toBe("kv/hafleet/rollout%20leader");
    expect(goDuration(15_000)).toBe("15s");
    expect(goDuration(0)).toBe("0s");
    expect(goDuration(1_500)).toBe("1500ms");
  });
});

describe("the leadership's options and errors", () => {
  const valid = { address: "http://127.0.0.1:8500", key: KEY, replica: { id: "ctl-1" }, data: dataSchema, logger: pino({ enabled: false }) };

  it("refuses bad options, naming each", () => {
    const error = caught(() => new ConsulLeadership({ ...valid, address: "ftp://consul:8501", key: "/leader", lockDelayMs: 90_000, replica: { id: "" } }));
    expect(error).toBeInstanceOf(InvalidInputError);
    const message = (error as Error).message;
    expect(message).toMatch(/^Consul leadership options: /);
    expect(message).toContain("address: must be an http:// or https:// URL");
    expect(message).toContain("key: must not begin with '/'");
    expect(message).toContain("lockDelayMs: must be at most 60 s");
    expect(message).toContain("replica.id: must not be empty");
    expect(() => new ConsulLeadership(valid)).not.toThrow();
  });

  it("names the leader, or says none is known, when a follower would publish", () => {
    expect(new NotLeaderError(KEY, { id: "ctl-2", url: "https://ctl-2:7901" }).message).toBe(
      "this replica does not lead on Consul key 'hafleet/rollout-leader': the leader is 'ctl-2' (https://ctl-2:7901); only the leader publishes",
    );
    expect(new NotLeaderError(KEY, null).message).toContain("no leader is known");
    expect(new LeadershipLostError(KEY).code).toBe("HAFLEET_LEADERSHIP_LOST");
  });
});
