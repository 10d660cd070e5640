// Connecting to NATS: waits (forever, with capped backoff) while the server is not up yet, logging why,
// then reconnects forever. Credentials come from files read at start (see support/config.ts).
// A refusal that waiting cannot cure (credentials rejected, an untrusted or misnamed server certificate,
// a server without TLS where TLS is required) ends the wait with a CredentialError naming the variable.
import { connect as tcpConnect } from "node:net";
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { credsAuthenticator, nkeyAuthenticator, UserAuthenticationExpiredError, type Authenticator } from "@nats-io/nats-core";
import type { Config, Credentials } from "../../support/config.js";
import type { Logger } from "../../support/logger.js";
import { backoffDelay, sleep } from "../../support/backoff.js";

/** A configured credential that cannot work; `variable` is the environment variable to fix. */
export class CredentialError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.variable = variable;
    this.name = "CredentialError";
  }
}

/** The variable holding the credential the server judges (for a refusal's message). */
function authVariable(config: Config): { variable: string; what: string } {
  const files = config.credentialFiles;
  if (files.creds) return { variable: "NATS_CREDS_FILE", what: `the user JWT in ${files.creds}` };
  if (files.nkeySeed) return { variable: "NATS_NKEY_SEED_FILE", what: `the NKey seed in ${files.nkeySeed}` };
  if (files.user) return { variable: "NATS_PASSWORD_FILE", what: `user ${JSON.stringify(files.user)} with the password in ${files.password}` };
  if (files.token) return { variable: "NATS_TOKEN_FILE", what: `the token in ${files.token}` };
  if (files.cert) return { variable: "NATS_CERT_FILE", what: `the client certificate ${files.cert}` };
  return { variable: "NATS_CREDS_FILE", what: "a connection without credentials (set one of NATS_CREDS_FILE, NATS_NKEY_SEED_FILE, NATS_USER + NATS_PASSWORD_FILE, NATS_TOKEN_FILE)" };
}

/** Signs a throw-away nonce, so a malformed creds file or seed fails here, naming its variable, not at each connect. */
function checkedAuthenticator(authenticator: Authenticator, variable: string, path: string | undefined, what: string): Authenticator {
  try {
    authenticator("policy-service-self-check");
  } catch (err) {
    // The library's message names the format problem, never the content.
    throw new CredentialError(variable, `${path} is not a valid ${what} (${(err as Error).message})`);
  }
  return authenticator;
}

export function connectionOptions(config: Config, credentials: Credentials, name: string): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: config.natsServers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    reconnectJitter: 500,
    pingInterval: 10_000,
    timeout: 5000,
    // No stack trace captured per request (an Error object per publish and reply: ~8% of a command's CPU, measured
    // with --cpu-prof); errors still carry their own stack.
    noAsyncTraces: true,
  };
  const files = config.credentialFiles;
  if (credentials.creds) opts.authenticator = checkedAuthenticator(credsAuthenticator(credentials.creds), "NATS_CREDS_FILE", files.creds, "NATS credentials file (.creds: user JWT and seed)");
  else if (credentials.nkeySeed) opts.authenticator = checkedAuthenticator(nkeyAuthenticator(credentials.nkeySeed), "NATS_NKEY_SEED_FILE", files.nkeySeed, "NKey user seed (SU…)");
  else if (credentials.user !== undefined) { opts.user = credentials.user; opts.pass = credentials.password ?? ""; }
  else if (credentials.token !== undefined) opts.token = credentials.token;
  // A tls:// URL means TLS or nothing: without a `tls` option the client would fall back to plain text
  // when the server offers no TLS (measured with nats.js 3.4 against a server without a tls block).
  if (credentials.tls || config.natsServers.some((url) => url.startsWith("tls://"))) opts.tls = { ...credentials.tls };
  return opts;
}

/** Node's codes for a server certificate that does not verify against the configured CA. */
const UNTRUSTED_CERTIFICATE = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
]);

/**
 * A connect failure that retrying cannot cure, as the error to stop with; null for the ones worth waiting
 * out (refused, timed out, an "Authentication Timeout" of a busy server).
 */
export function permanentConnectFailure(err: unknown, config: Config): CredentialError | null {
  if (!(err instanceof Error)) return null;
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof UserAuthenticationExpiredError) {
    return new CredentialError("NATS_CREDS_FILE", `the NATS server refused the user JWT in ${config.credentialFiles.creds}: it has expired (${err.message})`);
  }
  if (/authorization violation/i.test(err.message)) {
    const { variable, what } = authVariable(config);
    return new CredentialError(variable, `the NATS server refused ${what} (Authorization Violation)`);
  }
  if (code && UNTRUSTED_CERTIFICATE.has(code)) {
    const ca = config.credentialFiles.ca;
    return new CredentialError(
      "NATS_CA_FILE",
      ca ? `the NATS server's certificate does not verify against the CA in ${ca} (${code}: ${err.message})` : `the NATS server's certificate is not trusted by the system CAs and NATS_CA_FILE is not set (${code}: ${err.message})`,
    );
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") return new CredentialError("NATS_URL", `the host is not named in the NATS server's certificate (${err.message})`);
  if (/server does not support 'tls'/.test(err.message)) {
    return new CredentialError(config.credentialFiles.ca ? "NATS_CA_FILE" : "NATS_URL", "TLS is configured, but the NATS server does not offer TLS (no tls block in its configuration?)");
  }
  return null;
}

/**
 * The INFO line a NATS server sends in plain text on accepting a connection (before any TLS handshake),
 * or null. Used only to explain a timeout: a server with `tls { verify: true }` drops a client without a
 * certificate after the handshake, which the client reports as a bare timeout.
 */
export function readServerInfo(url: string, timeoutMs = 2000): Promise<Record<string, unknown> | null> {
  let host: string;
  let port: number;
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== "nats:" && parsed.protocol !== "tls:") return Promise.resolve(null);
    host = parsed.hostname.replace(/^\[|\]$/g, "");
    port = Number(parsed.port || 4222);
  } catch {
    return Promise.resolve(null);
  }
  return new Promise((resolve) => {
    let buffered = "";
    const socket = tcpConnect({ host, port });
    const done = (info: Record<string, unknown> | null) => { clearTimeout(timer); socket.destroy(); resolve(info); };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.on("error", () => done(null));
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const end = buffered.indexOf("\r\n");
      if (end < 0) { if (buffered.length > 65_536) done(null); return; }
      const m = /^INFO\s+(\{.*\})\s*$/.exec(buffered.slice(0, end));
      try { done(m ? (JSON.parse(m[1]!) as Record<string, unknown>) : null); } catch { done(null); }
    });
  });
}

/**
 * A TLS timeout explained by the server's INFO: it requires client certificates (tls verify). Without
 * NATS_CERT_FILE that is fatal; with one, the server may be rejecting it (another CA), which the client
 * cannot tell from a slow server: a hint for the retry warning.
 */
async function explainTlsTimeout(err: unknown, opts: ConnectionOptions, config: Config): Promise<{ fatal?: CredentialError; hint?: string }> {
  if (!(err instanceof Error) || !/timeout/i.test(err.message) || !opts.tls) return {};
  const servers = Array.isArray(opts.servers) ? opts.servers : [opts.servers ?? ""];
  for (const server of servers) {
    const info = await readServerInfo(server);
    if (info?.tls_verify !== true) continue;
    if (!config.credentialFiles.cert) {
      return { fatal: new CredentialError("NATS_CERT_FILE", `the NATS server at ${server} requires a client certificate (tls verify); set NATS_CERT_FILE and NATS_KEY_FILE`) };
    }
    return { hint: `the NATS server at ${server} requires client certificates: if this persists, it does not accept NATS_CERT_FILE ${config.credentialFiles.cert} (not signed by the CA in its tls.ca_file?)` };
  }
  return {};
}

/**
 * Retries until connected or `signal` aborts (then throws). Each failure is logged with its reason; a failure
 * that retrying cannot cure (permanentConnectFailure, a client certificate required but not configured)
 * throws its CredentialError.
 */
export async function connectWithRetry(opts: ConnectionOptions, logger: Logger, signal: AbortSignal | undefined, config: Config): Promise<NatsConnection> {
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw new Error("aborted while waiting for NATS");
    try {
      const nc = await connect(opts);
      logger.info({ server: nc.getServer(), server_version: nc.info?.version, attempt }, "connected to NATS");
      return nc;
    } catch (err) {
      const permanent = permanentConnectFailure(err, config);
      if (permanent) throw permanent;
      const tls = await explainTlsTimeout(err, opts, config);
      if (tls.fatal) throw tls.fatal;
      const delay = backoffDelay(attempt, { initialMs: 250, maxMs: 5000, jitter: 0.3 });
      logger.warn({ err, servers: opts.servers, attempt, retry_in_ms: delay, ...(tls.hint ? { hint: tls.hint } : {}) }, "NATS not reachable yet; retrying");
      await sleep(delay);
    }
  }
}

/** Logs connection status changes (disconnect, reconnect, errors) for the operator. */
export function watchStatus(nc: NatsConnection, logger: Logger): void {
  void (async () => {
    for await (const status of nc.status()) {
      const entry: Record<string, unknown> = { status: status.type };
      if ("server" in status) entry.server = status.server;
      if ("error" in status) entry.err = status.error;
      if (status.type === "disconnect" || status.type === "error" || status.type === "staleConnection") logger.warn(entry, "NATS connection status");
      else if (status.type === "ping") logger.trace(entry, "NATS connection status");
      else logger.info(entry, "NATS connection status");
    }
  })().catch((err) => logger.debug({ err }, "status watcher ended"));
}
