import { describe, expect, it } from "vitest";
import { caRuns, leafFiles, leafProfileSchema, leafRuns, opensslConfig, opensslTime, validityFor, type LeafProfile } from "../../controller/tls/cert-profiles.js";

const AGENT: LeafProfile = { kind: "agent", id: "edge-1.eu_west" };
const CONTROLLER: LeafProfile = { kind: "controller", name: "ctl-1", dns: ["ctl-1.example", "ctl"], ips: ["10.0.0.5", "2001:db8::7"] };

function issues(input: unknown): string[] {
  const result = leafProfileSchema.safeParse(input);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
}

describe("certificate profiles: only whitelisted values reach openssl", () => {
  it("takes agent ids and controller names by the agent id rules", () => {
    expect(issues(AGENT)).toEqual([]);
    expect(issues(CONTROLLER)).toEqual([]);
    for (const id of ["", "edge 1", "a/b", "../ca", "x\n[ leaf_ext ]", "$ENV::HOME", "a#b", "é", "x".repeat(129)]) {
      expect(issues({ kind: "agent", id }), JSON.stringify(id)).toEqual(["id: must be 1-128 letters, digits, '.', '_' or '-'"]);
    }
    expect(issues({ kind: "controller", name: "ctl,1", dns: ["a"], ips: [] })).toEqual(["name: must be 1-128 letters, digits, '.', '_' or '-'"]);
  });

  it("takes DNS names and IP literals only, and at least one of them for a controller", () => {
    const controller = (dns: string[], ips: string[]) => issues({ kind: "controller", name: "ctl", dns, ips });
    expect(controller(["a-b.example.com", "localhost", "x1"], ["127.0.0.1", "::1", "fe80::1"])).toEqual([]);
    for (const name of ["", "-a", "a-", "a..b", "a_b", "*.example", "a b", "a\nIP.9 = 1.2.3.4", `${"a".repeat(64)}.example`]) {
      expect(controller([name], []), JSON.stringify(name)).toEqual(["dns.0: must be a DNS name: dot-separated labels of letters, digits and '-'"]);
    }
    for (const ip of ["", "1.2.3", "256.0.0.1", "fe80::1%eth0", "::1\nDNS.9 = x", "10.0.0.1 "]) {
      expect(controller([], [ip]), JSON.stringify(ip)).toEqual(["ips.0: must be an IPv4 or IPv6 address"]);
    }
    expect(controller([], [])).toEqual(["dns: needs at least one DNS name or IP address: agents check the address they dial against them"]);
    expect(issues({ kind: "agent", id: "edge-1", dns: ["a"] })).toEqual([': Unrecognized key: "dns"']);
  });

  it("writes an agent's id as its only SAN, a URI, for client auth", () => {
    const config = opensslConfig(AGENT);
    expect(config).toContain("[ leaf_ext ]\nbasicConstraints = critical, CA:false\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\nsubjectAltName = @leaf_san\n");
    expect(config.endsWith("[ leaf_san ]\nURI.1 = hafleet://agent/edge-1.eu_west\n")).toBe(true);
    expect(leafFiles(AGENT)).toEqual({ cert: "agent-edge-1.eu_west.crt", key: "agent-edge-1.eu_west.key" });
  });

  it("writes a controller's DNS names and IPs as SANs, for server auth", () => {
    const config = opensslConfig(CONTROLLER);
    expect(config).toContain("extendedKeyUsage = serverAuth\n");
    expect(config.endsWith("[ leaf_san ]\nDNS.1 = ctl-1.example\nDNS.2 = ctl\nIP.1 = 10.0.0.5\nIP.2 = 2001:db8::7\n")).toBe(true);
    expect(leafFiles(CONTROLLER)).toEqual({ cert: "controller-ctl-1.crt", key: "controller-ctl-1.key" });
  });

  it("makes the CA a CA that can sign certificates and nothing below it", () => {
    const config = opensslConfig(null);
    expect(config).toContain("[ ca_ext ]\nbasicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n");
    expect(config).not.toContain("leaf");
    expect(caRuns(3650)).toEqual([
      ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"],
      ["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=hafleet fleet CA", "-days", "3650", "-sha256", "-config", "openssl.cnf", "-extensions", "ca_ext", "-out", "ca.crt"],
    ]);
  });

  it("signs a leaf with openssl ca over an explicit validity, its CN the id", () => {
    const validity = validityFor(30, Date.UTC(2026, 0, 2, 3, 4, 5, 678));
    expect(validity).toEqual({ notBefore: new Date(Date.UTC(2026, 0, 2, 2, 4, 5, 678)), notAfter: new Date(Date.UTC(2026, 1, 1, 3, 4, 5, 678)) });
    expect(opensslTime(validity.notBefore)).toBe("20260102020405Z");
    const runs = leafRuns(AGENT, validity);
    expect(runs[1]).toEqual(["req", "-new", "-key", "new.key", "-subj", "/CN=edge-1.eu_west", "-config", "openssl.cnf", "-out", "new.csr"]);
    expect(runs[2]).toEqual(expect.arrayContaining(["ca", "-batch", "-extensions", "leaf_ext", "-rand_serial"]));
    expect(runs[2]!.slice(-4)).toEqual(["-startdate", "20260102020405Z", "-enddate", "20260201030405Z"]);
  });
});
