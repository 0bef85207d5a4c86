import { describe, expect, it } from "vitest";
import { addressSchema, asObservedAddress, endpointKey, type Address, type Port } from "../../agent/model/values.js";

// What HAProxy 2.6 prints after `set server B/S addr ::ffff:127.0.0.1`: the form it was given.
const HAPROXY_MAPPED = "::ffff:127.0.0.1";

describe("IPv4-mapped IPv6 addresses are their IPv4 host", () => {
  it.each([
    ["::ffff:127.0.0.1", "127.0.0.1"],
    ["::FFFF:127.0.0.1", "127.0.0.1"],
    ["::ffff:7f00:1", "127.0.0.1"],
    ["0:0:0:0:0:ffff:10.1.2.3", "10.1.2.3"],
  ])("a desired %j is sent as %j", (text, address) => {
    expect(addressSchema.parse(text)).toBe(address);
  });

  it("reads HAProxy's mapped form as the IPv4 address, so desired and observed compare equal", () => {
    const observed = asObservedAddress(HAPROXY_MAPPED);
    expect(observed).toBe("127.0.0.1");
    const port = 8080 as Port;
    expect(endpointKey(observed!, port)).toBe(endpointKey(addressSchema.parse("127.0.0.1"), port));
    expect(endpointKey(addressSchema.parse(HAPROXY_MAPPED), port)).toBe("127.0.0.1:8080");
  });

  it("refuses the mapped unspecified address like 0.0.0.0, desired or observed", () => {
    expect(addressSchema.safeParse("::ffff:0.0.0.0").success).toBe(false);
    expect(asObservedAddress("::ffff:0.0.0.0")).toBeNull();
  });

  it("still takes only inet_ntop's own form from HAProxy", () => {
    expect(asObservedAddress("::FFFF:127.0.0.1")).toBeNull();
    expect(asObservedAddress("::ffff:7f00:1")).toBeNull();
  });

  it.each([
    ["::1.2.3.4", "::1.2.3.4"],
    ["64:ff9b::1.2.3.4", "64:ff9b::102:304"],
    ["::ffff:0:1.2.3.4", "::ffff:0:102:304"],
  ])("leaves other IPv6 addresses with an IPv4 tail as IPv6: %j", (text, address) => {
    expect(addressSchema.parse(text)).toBe(address);
    expect(asObservedAddress(address)).toBe(address as Address);
  });
});
