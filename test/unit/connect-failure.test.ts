import { describe, expect, it } from "vitest";
import { answerCause, explainConnectFailure, lastErrorOf } from "../../agent/run/connect-failure.js";

describe("why a channel failed to connect", () => {
  it("takes the last error out of grpc-js's status details, without its timestamp and note", () => {
    expect(lastErrorOf("No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ")).toBe("connect ECONNREFUSED 127.0.0.1:1");
    expect(lastErrorOf("No connection established. Last error: Protocol error (2026-12-07T21:29:40.248Z). Resolution note: ")).toBe("Protocol error");
    expect(lastErrorOf("something else")).toBe("something else");
  });

  it("says what to do about the causes it knows, and drops OpenSSL's source location", () => {
    expect(explainConnectFailure("8000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/rec_layer_s3.c:1601:SSL alert number 116")).toBe(
      "tlsv13 alert certificate required: the controller requires a client certificate: give this agent tls (ca, cert, key)",
    );
    expect(explainConnectFailure("self-signed certificate in certificate chain")).toMatch(/not signed by this agent's tls\.ca/);
    expect(explainConnectFailure("something new")).toBe("something new");
  });

  it("tells an HTTP/1 port and a TLS one from what they answer a plaintext preface", () => {
    expect(answerCause(Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n"), false)).toMatch(/^it answers "HTTP\/1\.1 400 Bad Request", an HTTP\/1 server, not gRPC/);
    expect(answerCause(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02]), false)).toMatch(/speaks TLS there and this agent plaintext/);
    expect(answerCause(null, false)).toBeNull();
    expect(answerCause(Buffer.from([0x15, 0x03]), true)).toBeNull();
  });
});
