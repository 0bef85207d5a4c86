import { describe, expect, it } from "vitest";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { leadershipConnection } from "../../controller/leadership/leadership-connection.js";

describe("the leadership's way to Consul", () => {
  it("takes every credential and scope the discovery has, and the session's node checks (none by default)", () => {
    const config = controllerConfigSchema.parse({
      discovery: { consul: { address: "https://consul.internal:8501", tokenFile: "/t", caFile: "/ca", certFile: "/c", keyFile: "/k", tlsServerName: "server.dc1.consul", datacenter: "dc1", namespace: "ns1", partition: "p1" } },
      backends: [{ backend: "b", service: "s" }],
      leadership: { replica: "ctl-1" },
    });
    const consul = "consul" in config.discovery ? config.discovery.consul : null;
    expect(config.leadership?.nodeChecks).toEqual([]);
    expect(leadershipConnection(consul!, config.leadership)).toEqual({
      address: "https://consul.internal:8501",
      waitMs: 60_000,
      tokenFile: "/t",
      caFile: "/ca",
      certFile: "/c",
      keyFile: "/k",
      tlsServerName: "server.dc1.consul",
      datacenter: "dc1",
      namespace: "ns1",
      partition: "p1",
      nodeChecks: [],
    });
  });
});
