// Connecting to NATS: waits (forever, with capped backoff) while the server is not up yet, logging why,
// then reconnects forever. Credentials come from files read at start (see support/config.ts).
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { credsAuthenticator, nkeyAuthenticator } from "@nats-io/nats-core";
import type { Config, Credentials } from "../../support/config.js";
import type { Logger } from "../../support/logger.js";
import { backoffDelay, sleep } from "../../support/backoff.js";

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
  if (credentials.creds) opts.authenticator = credsAuthenticator(credentials.creds);
  else if (credentials.nkeySeed) opts.authenticator = nkeyAuthenticator(credentials.nkeySeed);
  else if (credentials.user !== undefined) { opts.user = credentials.user; opts.pass = credentials.password ?? ""; }
  else if (credentials.token !== undefined) opts.token = credentials.token;
  if (credentials.tls) opts.tls = { ...credentials.tls };
  return opts;
}

/** Retries until connected or `signal` aborts (then throws). Each failure is logged with its reason. */
export async function connectWithRetry(opts: ConnectionOptions, logger: Logger, signal?: AbortSignal): Promise<NatsConnection> {
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw new Error("aborted while waiting for NATS");
    try {
      const nc = await connect(opts);
      logger.info({ server: nc.getServer(), server_version: nc.info?.version, attempt }, "connected to NATS");
      return nc;
    } catch (err) {
      const delay = backoffDelay(attempt, { initialMs: 250, maxMs: 5000, jitter: 0.3 });
      logger.warn({ err, servers: opts.servers, attempt, retry_in_ms: delay }, "NATS not reachable yet; retrying");
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
