import { describe, expect, it } from "vitest";
import { controllerConfigSchema } from "../../controller/config/controller-config.js";
import { parseControllerConfigText } from "../../controller/config/load-config.js";
import { expectInvalid } from "../support/helpers.js";

const SOURCE = "hafleet.yaml";

/** A valid YAML document with `head` lines first (line 1 onwards). */
function yaml(head: string) {
  return parseControllerConfigText([head, "discovery:", "  file: catalog.json", "backends:", "  - { backend: be_web, service: web }"].join("\n"), "yaml", SOURCE);
}

describe("controller config: tls and insecure", () => {
  it("reads the tls block; insecure stays absent, which means false", () => {
    const config = yaml("listen: 0.0.0.0:7900\ntls: { ca: /etc/hafleet/ca.crt, cert: /etc/hafleet/ctl.crt, key: /etc/hafleet/ctl.key }");
    expect(config.tls).toEqual({ ca: "/etc/hafleet/ca.crt", cert: "/etc/hafleet/ctl.crt", key: "/etc/hafleet/ctl.key" });
    expect(config.insecure).toBeUndefined();
  });

  it("keeps plaintext on loopback valid without either, as before", () => {
    expect(yaml("listen: 127.0.0.1:7900").tls).toBeUndefined();
    expect(yaml("").listen).toBe("127.0.0.1:7900");
  });

  it("takes insecure: true on any address", () => {
    expect(yaml("listen: 0.0.0.0:7900\ninsecure: true").insecure).toBe(true);
  });

  it("refuses a non-loopback listen without tls, at its line", () => {
    expectInvalid(
      () => void yaml("listen: 0.0.0.0:7900\ninsecure: false"),
      [{ path: "listen", message: "line 1:9: needs tls (ca, cert, key) or insecure: true, since it is not a loopback address", value: "0.0.0.0:7900" }],
      SOURCE,
    );
  });

  it("leaves a listen address that is not one to its own message", () => {
    expectInvalid(() => void yaml("listen: 0.0.0.0"), [{ path: "listen", message: "line 1:9: must be HOST:PORT (IPv6 as [::1]:PORT) with a port in 0..65535", value: "0.0.0.0" }], SOURCE);
  });

  it("refuses tls with insecure: true, an incomplete tls block and unknown or empty fields", () => {
    expectInvalid(() => void yaml("tls: { ca: a, cert: b, key: c }\ninsecure: true"), [{ path: "insecure", message: "line 2:11: contradicts the tls block: remove one of them", value: true }], SOURCE);
    expectInvalid(
      () => void yaml("tls: { ca: a, cert: b, crt: c }"),
      [
        { path: "tls.key", message: "line 1:6: Invalid input: expected string, received undefined" },
        { path: "tls.crt", message: "line 1:24: unknown field" },
      ],
      SOURCE,
    );
    expect(controllerConfigSchema.safeParse({ listen: "127.0.0.1:0", tls: { ca: "", cert: "b", key: "c" }, discovery: { file: "x" }, backends: [{ backend: "b", service: "s" }] }).error?.issues[0]).toMatchObject({ path: ["tls", "ca"], message: "must not be empty" });
    expect(controllerConfigSchema.safeParse({ listen: "127.0.0.1:0", insecure: "yes", discovery: { file: "x" }, backends: [{ backend: "b", service: "s" }] }).success).toBe(false);
  });
});
