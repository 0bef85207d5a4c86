import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { InvalidInputError } from "../../agent/errors.js";
import { readTlsFiles, type TlsFiles, type TlsMaterial } from "../../agent/tls/tls-files.js";

/**
 * The listeners of one kind of update. A new one is told the current update on the next tick,
 * as grpc-js's own providers do: the credentials register the server's watcher only after
 * adding their listeners, and an answer before it would be lost.
 */
class Listeners<U> {
  private readonly listeners = new Set<(update: U) => void>();

  constructor(private readonly current: () => U) {}

  add(listener: (update: U) => void): void {
    this.listeners.add(listener);
    process.nextTick(() => {
      if (this.listeners.has(listener)) listener(this.current());
    });
  }

  remove(listener: (update: U) => void): void {
    this.listeners.delete(listener);
  }

  notify(): void {
    for (const listener of this.listeners) listener(this.current());
  }
}

/**
 * Hands grpc-js only material that passed readTlsFiles. grpc-js's own
 * FileWatcherCertificateProvider is not used: it publishes whatever it read, and a missing
 * or broken file then makes the server drop every new connection until the file is fixed.
 */
class CheckedCertificateProvider implements grpc.experimental.CertificateProvider {
  private readonly ca = new Listeners<grpc.experimental.CaCertificateUpdate>(() => ({ caCertificate: this.material.ca }));
  private readonly identity = new Listeners<grpc.experimental.IdentityCertificateUpdate>(() => ({ certificate: this.material.cert, privateKey: this.material.key }));

  constructor(private material: TlsMaterial) {}

  publish(material: TlsMaterial): void {
    this.material = material;
    this.identity.notify();
    this.ca.notify();
  }

  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.ca.add(listener);
  }

  removeCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.ca.remove(listener);
  }

  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identity.add(listener);
  }

  removeIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identity.remove(listener);
  }
}

export type ReloadOutcome = "reloaded" | "unchanged" | "refused";

export interface ServerTlsOptions {
  logger: Logger;
  /** How often the files are re-read for a change (a renewal); default 30 s. */
  pollMs?: number;
}

/**
 * The controller's mTLS credentials: its certificate and key, and the fleet CA that every
 * client certificate must chain to (no client certificate, no connection). The files are
 * re-read every pollMs and on reload(); a change is taken for new connections (streams
 * already open keep theirs), a file that fails the checks is logged and the previous
 * material stays.
 */
export class ServerTls {
  readonly credentials: grpc.ServerCredentials;
  private readonly provider: CheckedCertificateProvider;
  private readonly timer: NodeJS.Timeout;
  private material: TlsMaterial;
  /** The last problem the poll logged, so that a file broken for an hour is logged once. */
  private polledProblem: string | null = null;

  /** Throws InvalidInputError, naming the file, when the files fail the checks. */
  constructor(
    private readonly files: TlsFiles,
    private readonly options: ServerTlsOptions,
  ) {
    this.material = readTlsFiles(files, Date.now());
    this.provider = new CheckedCertificateProvider(this.material);
    // One provider in both roles: grpc-js's .d.ts and its code disagree on the order of the two.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this.provider, this.provider, true);
    this.timer = setInterval(() => this.refresh(true), options.pollMs ?? 30_000).unref();
  }

  /** Re-reads the files now (e.g. on SIGHUP); a refusal is logged with the file and its problem. */
  reload(): ReloadOutcome {
    return this.refresh(false);
  }

  close(): void {
    clearInterval(this.timer);
  }

  private refresh(polled: boolean): ReloadOutcome {
    const { logger } = this.options;
    let next: TlsMaterial;
    try {
      next = readTlsFiles(this.files, Date.now());
    } catch (error) {
      const problem = error instanceof InvalidInputError ? error.message : String(error);
      if (!polled || problem !== this.polledProblem) logger.error({ err: problem, files: this.files }, "TLS files not reloaded: the controller keeps its previous certificates");
      if (polled) this.polledProblem = problem;
      return "refused";
    }
    this.polledProblem = null;
    const { ca, cert, key } = this.material;
    if (next.ca.equals(ca) && next.cert.equals(cert) && next.key.equals(key)) return "unchanged";
    this.material = next;
    this.provider.publish(next);
    logger.info({ files: this.files }, "TLS files reloaded: new connections use them");
    return "reloaded";
  }
}
