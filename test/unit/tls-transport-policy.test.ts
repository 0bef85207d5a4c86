import { describe, expect, it } from "vitest";
import { PLAINTEXT_WARNING, transportFor } from "../../controller/tls/transport-policy.js";
import { expectInvalid } from "../support/helpers.js";

const TLS = { ca: "/etc/hafleet/ca.crt", cert: "/etc/hafleet/controller.crt", key: "/etc/hafleet/controller.key" };

describe("transport policy: mTLS, or plaintext only where nobody else can reach it", () => {
  it("takes mTLS whenever the tls block is given, wherever it listens", () => {
    for (const listen of ["0.0.0.0:7900", "127.0.0.1:7900", "[::]:7900"]) expect(transportFor({ listen, tls: TLS, insecure: false })).toEqual({ kind: "mtls", files: TLS });
  });

  it("lets plaintext through on loopback, silently", () => {
    for (const listen of ["127.0.0.1:7900", "127.8.0.1:0", "[::1]:7900", "localhost:7900"]) {
      expect(transportFor({ listen, insecure: false })).toEqual({ kind: "plaintext", warning: null });
      expect(transportFor({ listen })).toEqual({ kind: "plaintext", warning: null });
    }
  });

  it("lets plaintext through elsewhere only with insecure: true, and with a warning", () => {
    for (const listen of ["0.0.0.0:7900", "[::]:7900", "10.0.0.5:7900", "ctl-1.example:7900"]) {
      expect(transportFor({ listen, insecure: true })).toEqual({ kind: "plaintext", warning: PLAINTEXT_WARNING });
    }
    expect(PLAINTEXT_WARNING).toBe("controller listening without TLS: any host that reaches this port can pose as any agent");
  });

  it("refuses a non-loopback address without tls or insecure, naming the address", () => {
    const error = expectInvalid(
      () => void transportFor({ listen: "0.0.0.0:7900", insecure: false }),
      [{ path: "listen", message: "needs tls (ca, cert, key) or insecure: true, since it is not a loopback address", value: "0.0.0.0:7900" }],
      "controller config",
    );
    expect(error.message).toBe('controller config: listen: needs tls (ca, cert, key) or insecure: true, since it is not a loopback address (got "0.0.0.0:7900")');
    // A name is not resolved to find out: only the literal loopback forms count.
    expect(() => transportFor({ listen: "localhost.example:7900" })).toThrow(/needs tls/);
  });

  it("refuses tls and insecure: true together", () => {
    expectInvalid(() => void transportFor({ listen: "0.0.0.0:7900", tls: TLS, insecure: true }), [{ path: "insecure", message: "contradicts the tls block: remove one of them", value: true }], "controller config");
  });
});
