import { describe, expect, it } from "vitest";
import { agentUri, parseSubjectAltNames, refuseClaim, type PeerCertificateFields } from "../../controller/tls/peer-identity.js";

function peer(subjectaltname: string | undefined, cn = "edge-1"): PeerCertificateFields {
  return { subject: { CN: cn }, subjectaltname, fingerprint256: "AA:BB" };
}

describe("subjectAltName text, as node gives it", () => {
  it("splits the entries, types with spaces included", () => {
    expect(parseSubjectAltNames("DNS:ctl-1.example, IP Address:10.0.0.1, URI:hafleet://agent/edge-1")).toEqual([
      { type: "DNS", value: "ctl-1.example" },
      { type: "IP Address", value: "10.0.0.1" },
      { type: "URI", value: "hafleet://agent/edge-1" },
    ]);
    expect(parseSubjectAltNames("")).toEqual([]);
  });

  it("unquotes the values node JSON-quotes, so a comma inside one cannot forge a second entry", () => {
    expect(parseSubjectAltNames('URI:"hafleet://x, URI:hafleet://agent/edge-2", DNS:a')).toEqual([
      { type: "URI", value: "hafleet://x, URI:hafleet://agent/edge-2" },
      { type: "DNS", value: "a" },
    ]);
  });

  it("refuses text of another shape", () => {
    for (const text of ["URI", ":x", 'URI:"unterminated', "URI:a,DNS:b", 'URI:"\\q"']) expect(parseSubjectAltNames(text)).toBeNull();
  });
});

describe("the hello's agent id against the client certificate", () => {
  it("accepts the agent its certificate names", () => {
    expect(refuseClaim("edge-1", peer(`DNS:x, URI:${agentUri("edge-1")}`))).toBeNull();
  });

  it("refuses another agent's id, naming both and the certificate", () => {
    expect(refuseClaim("edge-2", peer("URI:hafleet://agent/edge-1"))).toEqual({
      agent: "edge-1",
      certificate: { cn: "edge-1", san: "URI:hafleet://agent/edge-1", fingerprint256: "AA:BB" },
      reason: "the hello claims agent edge-2, the client certificate is agent edge-1's",
    });
  });

  it("refuses a stream without a client certificate", () => {
    expect(refuseClaim("edge-1", undefined)).toMatchObject({ agent: null, certificate: null, reason: expect.stringMatching(/no client certificate/) });
  });

  it("takes the id from the URI only: a CN, a DNS name or a near-miss URI names no agent", () => {
    const cases = [
      undefined,
      "DNS:edge-1",
      "URI:hafleet://agent/",
      "URI:hafleet://agent/edge-1/x",
      "URI:hafleet://agent/edge 1",
      "URI:HAFLEET://agent/edge-1",
      "URI:https://hafleet/agent/edge-1",
      'URI:"hafleet://x, URI:hafleet://agent/edge-1"',
    ];
    for (const san of cases) expect(refuseClaim("edge-1", peer(san)), String(san)).toMatchObject({ agent: null, reason: expect.stringMatching(/names no agent/) });
  });

  it("refuses a certificate that names two agents, and one it cannot read", () => {
    expect(refuseClaim("edge-1", peer("URI:hafleet://agent/edge-1, URI:hafleet://agent/edge-2"))?.reason).toMatch(/several agents \(edge-1, edge-2\)/);
    expect(refuseClaim("edge-1", peer("URI:hafleet://agent/edge-1, URI:hafleet://agent/edge-1"))).toBeNull();
    expect(refuseClaim("edge-1", peer('URI:"broken'))?.reason).toMatch(/cannot be read/);
  });
});
