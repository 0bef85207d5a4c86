import * as grpc from "@grpc/grpc-js";
import { readTlsFiles, type TlsFiles } from "./tls-files.js";

/**
 * The agent's side of the fleet's mTLS, built anew for each connection attempt: a certificate
 * renewed on disk is used from the next reconnect on, without a restart. grpc-js checks the
 * controller's certificate against the host of the address dialled (a DNS or IP SAN).
 * Throws InvalidInputError, naming the file, when one is missing or broken.
 */
export function clientCredentials(files: TlsFiles): () => grpc.ChannelCredentials {
  return () => {
    const { ca, key, cert } = readTlsFiles(files, Date.now());
    return grpc.credentials.createSsl(ca, key, cert);
  };
}
