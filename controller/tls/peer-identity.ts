import { helloSchema } from "../../proto/messages.js";

/*
 * Who an agent is, by its certificate: the SAN URI `hafleet://agent/<ID>` that `hafleet certs
 * issue --agent ID` writes. The CN is not read: a name that only the URI may carry cannot
 * be confused with anything else a CA signed.
 */

const AGENT_URI_PREFIX = "hafleet://agent/";
/** The id an agent says in its hello: its certificate can name no other kind of id. */
export const agentIdSchema = helloSchema.shape.agentId;

/** The URI that names agent `id` in its certificate; `id` must already be a valid agent id. */
export function agentUri(id: string): string {
  return `${AGENT_URI_PREFIX}${id}`;
}

/** The fields of node's PeerCertificate (grpc-js: `call.getAuthContext().sslPeerCertificate`) read here. */
export interface PeerCertificateFields {
  subject?: { CN?: string | string[] } | undefined;
  subjectaltname?: string | undefined;
  fingerprint256?: string | undefined;
}

export interface SubjectAltName {
  type: string;
  value: string;
}

/**
 * Node's `subjectaltname` text (`DNS:a, URI:hafleet://agent/x, IP Address:10.0.0.1`) as
 * entries; a value with a comma, quote or control character comes JSON-quoted (node's fix
 * for CVE-2021-44532), and is unquoted here. Null when the text does not have that shape.
 */
export function parseSubjectAltNames(text: string): SubjectAltName[] | null {
  const entries: SubjectAltName[] = [];
  const entry = /([A-Za-z ]+):(?:("(?:[^"\\]|\\.)*")|([^,"]*))(?:, |$)/y;
  while (entry.lastIndex < text.length) {
    const match = entry.exec(text);
    if (match === null) return null;
    let value = match[3];
    if (match[2] !== undefined) {
      try {
        value = JSON.parse(match[2]) as string;
      } catch {
        return null;
      }
    }
    entries.push({ type: match[1]!, value: value ?? "" });
  }
  return entries;
}

export interface ClaimRefusal {
  /** The agent id the certificate proves, null when it proves none. */
  agent: string | null;
  /** What identifies the certificate in a log: its CN, SAN and SHA-256 fingerprint. */
  certificate: { cn: string | null; san: string | null; fingerprint256: string | null } | null;
  reason: string;
}

/**
 * Null when the certificate names exactly one agent and that is the one `claimed` in the
 * hello; otherwise why the stream must be refused. No certificate at all is a refusal: on an
 * mTLS listener it means the TLS layer let through a client it did not authenticate.
 */
export function refuseClaim(claimed: string, peer: PeerCertificateFields | undefined): ClaimRefusal | null {
  if (peer === undefined) return { agent: null, certificate: null, reason: "no client certificate: the controller accepts agents with a fleet certificate only" };
  const certificate = describe(peer);
  const names = parseSubjectAltNames(peer.subjectaltname ?? "");
  if (names === null) return { agent: null, certificate, reason: "the client certificate's subjectAltName cannot be read" };
  const ids = [...new Set(names.flatMap((name) => (name.type === "URI" ? agentIdIn(name.value) : [])))];
  if (ids.length === 0) return { agent: null, certificate, reason: `the client certificate names no agent (no SAN URI ${AGENT_URI_PREFIX}ID)` };
  if (ids.length > 1) return { agent: null, certificate, reason: `the client certificate names several agents (${ids.join(", ")})` };
  const agent = ids[0]!;
  if (agent === claimed) return null;
  return { agent, certificate, reason: `the hello claims agent ${claimed}, the client certificate is agent ${agent}'s` };
}

function agentIdIn(uri: string): string[] {
  if (!uri.startsWith(AGENT_URI_PREFIX)) return [];
  const id = agentIdSchema.safeParse(uri.slice(AGENT_URI_PREFIX.length));
  return id.success ? [id.data] : [];
}

function describe(peer: PeerCertificateFields): ClaimRefusal["certificate"] {
  const cn = peer.subject?.CN;
  return { cn: (Array.isArray(cn) ? cn.join(",") : cn) ?? null, san: peer.subjectaltname ?? null, fingerprint256: peer.fingerprint256 ?? null };
}
