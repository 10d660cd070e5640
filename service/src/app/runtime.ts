// Start-up and shutdown of one service instance. main.ts handles argv and signals; this wires the parts:
// connect (waiting for NATS) → check the server version → every endpoint's subject answering `unavailable` → stream +
// KV buckets → command handler and micro service (commands served) → the projection's replay (own connection) →
// read side (queries served once caught up).
import { hostname } from "node:os";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { PUBLIC_COMMANDS, type CommandName } from "../domain/index.js";
import { connectionOptions, connectWithRetry, watchStatus } from "../adapters/nats/connection.js";
import { BatchedRecordLookup } from "../adapters/nats/record-lookup.js";
import { EventStore } from "../adapters/nats/event-store.js";
import { MicroService, answerWhileStarting, type EndpointHandler, type HandlerResult } from "../adapters/nats/service.js";
import { atLeast, checkServerVersion, commandsTtlMs, ensureBucket, ensureEventStream, type ServerVersion } from "../adapters/nats/setup.js";
import { Projection } from "../adapters/nats/projection.js";
import { COMMAND_HASH_METADATA, pingPeers, SuccessRecordGate } from "../adapters/nats/peers.js";
import { CommandForwarder, FORWARD_METADATA } from "../adapters/nats/forward.js";
import { CommandHandler, idempotencyDisabledByEnv } from "./commands.js";
import { failure } from "../support/replies.js";
import { untilProvisioned } from "../support/transient.js";
import { readCredentials, describeConfig, type Config } from "../support/config.js";
import { componentLogger, type Logger } from "../support/logger.js";
import { buildFingerprint, packageVersion } from "./version.js";
import { EVALUATION_ENDPOINTS, QUERY_ENDPOINTS, startReadSide } from "./read-side.js";
import type { Metrics } from "./metrics.js";

export const SHUTDOWN_TIMEOUT_MS = 10_000;
const JS_TIMEOUT_MS = 3000;
/** How long a start-up permission probe waits for its answer (a refused publish is dropped, never answered). */
const PROBE_TIMEOUT_MS = 1000;
/** How often an R1 instance checks that the event stream still has one replica (chained appends, EventStore.chainable). */
const REPLICA_CHECK_MS = 1000;

export interface Runtime {
  readonly config: Config;
  readonly logger: Logger;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly server: ServerVersion;
  readonly store: EventStore;
  readonly commands: CommandHandler;
  /** The in-memory state of every aggregate: the read side's model and the state commands decide against. */
  readonly projection: Projection;
  readonly service: MicroService;
  /**
   * This instance's place in an exemption's order among the instances that take forwarded commands: 0 for its owner
   * (or when no owner is known), which expires it at `expires_at`; the others wait their turn (expiry.ts).
   */
  expiryRank(exemptionId: string): number;
  /** Runs `fn` on shutdown after the endpoints stopped and before the connection drains (last registered, first run). */
  onShutdown(fn: () => Promise<void> | void): void;
  /** Stops endpoints, finishes in-flight requests, runs hooks, drains the connection. Idempotent. */
  shutdown(reason: string): Promise<void>;
  /** Resolves when the connection is closed (after shutdown, or if it closes by itself). */
  closed(): Promise<void>;
}

export function commandEndpoints(commands: CommandHandler): Record<string, EndpointHandler> {
  const endpoints: Record<string, EndpointHandler> = {};
  for (const name of PUBLIC_COMMANDS) {
    endpoints[name] = async (payload) => {
      const reply = await commands.execute(name as CommandName, payload);
      return reply.ok ? { body: reply } : { body: reply, error: { code: reply.error.code, message: reply.error.message } };
    };
  }
  return endpoints;
}

/**
 * Writes the read-model checkpoint every READ_MODEL_CHECKPOINT_INTERVAL_S (when there are new events): bounds what a
 * crash (no graceful stop) costs at the next start to the events of one interval. The write pauses the event loop in
 * short slices while the state is serialised (docs/performance.md, startup block), so the default is minutes.
 */
function periodicCheckpoints(projection: Projection, config: Config, log: Logger): () => void {
  if (!config.checkpointPath) return () => undefined;
  let writing = false;
  const timer = setInterval(() => {
    if (writing || !projection.caughtUp) return;
    writing = true;
    projection.writeCheckpoint("periodic")
      .catch((err: unknown) => log.warn({ err, path: config.checkpointPath }, "read-model checkpoint not written"))
      .finally(() => { writing = false; });
  }, config.checkpointIntervalSeconds * 1000);
  timer.unref();
  return () => clearInterval(timer);
}

/** How long a client should wait before retrying a request that reached an instance still provisioning. */
export const STARTING_RETRY_AFTER_MS = 500;

/** The answer of an instance that is connected but has not provisioned the stream and buckets yet. */
function startingReply(): HandlerResult & { error: { code: string; message: string } } {
  const message = `this instance is starting (provisioning the stream and buckets); retry in about ${STARTING_RETRY_AFTER_MS} ms`;
  return { body: { ok: false, error: { code: "unavailable", message, details: { retry_after_ms: STARTING_RETRY_AFTER_MS } } }, error: { code: "unavailable", message } };
}

/** Endpoint handlers that give the starting answer (until the real ones are bound in their place). */
export function startingEndpoints(names: readonly string[]): Record<string, EndpointHandler> {
  const reply = startingReply();
  return Object.fromEntries(names.map((name) => [name, () => Promise.resolve(reply)]));
}

export interface StartOptions {
  /** Aborts the waits of start-up (connecting, provisioning). */
  signal?: AbortSignal;
  /** When monitoring is on (METRICS_LISTEN): counts every answered request and learns when the instance is ready. */
  metrics?: Metrics;
  /**
   * Called once commands are served, before the read side is ready (its replay can take seconds): from here on a
   * stop must drain the in-flight commands through `runtime.shutdown`, not exit.
   */
  onServing?: (runtime: Runtime) => void;
}

export async function startRuntime(config: Config, logger: Logger, options: StartOptions = {}): Promise<Runtime> {
  const { signal, metrics, onServing } = options;
  const log = componentLogger(logger, "runtime");
  const credentials = readCredentials(config);
  const version = packageVersion();
  log.info({ version, config: describeConfig(config) }, "starting");

  const nc = await connectWithRetry(connectionOptions(config, credentials, `policy-service@${hostname()}`), componentLogger(logger, "nats"), signal, config);
  watchStatus(nc, componentLogger(logger, "nats"));
  let feedNc: NatsConnection | undefined;
  // Success records while an older build may serve the stream (rolling upgrade from 0.9.0): until the first
  // discovery round has answered, and for the COMMANDS TTL after the last older instance was seen (peers.ts).
  let gate: SuccessRecordGate | undefined;
  let stopReplicaWatch = (): void => undefined;
  try {
    const server = checkServerVersion(nc.info?.version, config.streamReplicas);
    // Every endpoint's subject is answered at once, before anything that needs JetStream: a coded `unavailable` with
    // a retry hint until the real endpoints are subscribed, never NATS "no responders". The price with several
    // instances (queue group `q`): see docs/operations.md, "Start-up: what clients see".
    const everySubject = [...PUBLIC_COMMANDS, ...EVALUATION_ENDPOINTS].map((n) => `policy.commands.${n}`).concat(QUERY_ENDPOINTS.map((n) => `policy.queries.${n}`));
    const starting = await answerWhileStarting(nc, everySubject, startingReply(), componentLogger(logger, "service"));
    log.info({ subjects: everySubject.length }, "endpoints registered (answering unavailable until provisioned)");

    const setupLog = componentLogger(logger, "setup");
    // JetStream may still be forming (meta leader election, peers catching up): retry what is transient.
    // Provisioning and the read side use the client's default API timeout (5 s). The command path gets short ones:
    // a request to a stream that is electing a leader fails fast and is retried within the command's deadline
    // (UNAVAILABLE_DEADLINE_MS) instead of eating it in one long wait.
    const jsm = await untilProvisioned(() => jetstreamManager(nc), setupLog, "JetStream API", signal);
    const js = jetstream(nc);
    const commandJsm = await jetstreamManager(nc, { timeout: JS_TIMEOUT_MS, checkAPI: false });
    const commandJs = jetstream(nc, { timeout: JS_TIMEOUT_MS });
    const streamInfo = await untilProvisioned(() => ensureEventStream(jsm, config, server, setupLog), setupLog, `stream ${config.streamName}`, signal);
    const snapshots = await untilProvisioned(() => ensureBucket(commandJs, jsm, config.snapshotBucket, config.streamReplicas, 0, setupLog), setupLog, `bucket ${config.snapshotBucket}`, signal);
    const commandsKv = await untilProvisioned(() => ensureBucket(commandJs, jsm, config.commandsBucket, config.streamReplicas, commandsTtlMs(config), setupLog), setupLog, `bucket ${config.commandsBucket}`, signal);

    const store = new EventStore({ js: commandJs, nc, jsm: commandJsm, snapshots, streamName: config.streamName, snapshotFrequency: config.snapshotFrequency, logger: componentLogger(logger, "event-store") });
    // Chains only while the stream has one replica (EventStore.chainable), checked every second.
    if (config.streamReplicas === 1) {
      store.noteReplicas(streamInfo.config.num_replicas); // as provisioning just left it
      stopReplicaWatch = store.watchReplicas(REPLICA_CHECK_MS);
    }
    // One projection per instance serves both sides: queries read it, commands decide against it (the append's
    // expected sequence is the safety net) and find earlier events of a command_id in its index.
    // The projection follows the stream on a connection of its own: replaying a long stream keeps megabytes of events
    // in flight, and on the shared connection every command's replies queued behind them (seconds per command while
    // catching up, docs/performance.md). Same credentials; the instance exits if either connection closes.
    feedNc = await connectWithRetry(connectionOptions(config, credentials, `policy-service@${hostname()}/projection`), componentLogger(logger, "nats-projection"), signal, config);
    watchStatus(feedNc, componentLogger(logger, "nats-projection"));
    const feedJsm = await jetstreamManager(feedNc, { checkAPI: false });
    const projection = new Projection({ js: jetstream(feedNc), jsm: feedJsm, streamName: config.streamName, logger: componentLogger(logger, "projection"), commandWindowMs: commandsTtlMs(config),
      ...(config.checkpointPath ? { checkpoint: { path: config.checkpointPath, build: buildFingerprint() } } : {}) });
    const recordLookup = new BatchedRecordLookup({ nc, kv: commandsKv, bucket: config.commandsBucket, jsm: commandJsm, replicated: config.streamReplicas > 1, timeoutMs: JS_TIMEOUT_MS, logger: componentLogger(logger, "record-lookup") });
    // Commands on an aggregate that several instances write go to one of them (forward.ts, docs/concurrency.md).
    const forwarder = new CommandForwarder({ nc, streamName: config.streamName, logger: componentLogger(logger, "forward") });
    const commands = new CommandHandler({
      store, projection, commands: commandsKv, recordLookup, logger: componentLogger(logger, "commands"), atomicBatches: atLeast(server, 2, 12),
      // R1: no raft group, the server stores one stream's messages in arrival order, and an atomic batch is staged
      // on disk (docs/performance.md, "r1batch"): chains. Replicated: atomic batches.
      groupAppends: config.streamReplicas > 1 ? (atLeast(server, 2, 12) ? "atomic" : undefined) : "chained",
      idempotencyDisabled: idempotencyDisabledByEnv(),
      successRecords: () => gate?.successRecords() ?? true,
      router: forwarder,
    });
    // Both ask the server whether this user may do what they need (the permissions of docs/security.md), side by side.
    const takeForwarded = async (name: string, payload: Uint8Array): Promise<string> => {
      // The public commands only: what a client may send to policy.commands.<name> (not the sweeper's own).
      const reply = (PUBLIC_COMMANDS as readonly string[]).includes(name)
        ? await commands.executeForwarded(name as CommandName, payload)
        : failure("validation_failed", `unknown command ${JSON.stringify(name)}`);
      return JSON.stringify(reply);
    };
    if (config.commandForwarding === "off") log.info({ mode: config.commandForwarding }, "COMMAND_FORWARDING=off: every command runs on the instance it reaches");
    const [lookupProbe] = await Promise.all([
      recordLookup.probe(PROBE_TIMEOUT_MS),
      config.commandForwarding === "auto" ? forwarder.start(takeForwarded, PROBE_TIMEOUT_MS) : undefined,
    ]);
    if (lookupProbe.leaderError !== undefined) {
      log.warn({ err: lookupProbe.leaderError, subject: `$JS.API.STREAM.MSG.GET.KV_${config.commandsBucket}` }, "command-record lookups unanswered by the bucket's leader (is this subject allowed? docs/security.md): misses are not checked against it, so a retried refusal can be decided again while a replica is behind");
    }
    if (!lookupProbe.batching) {
      log.warn({ err: lookupProbe.error, subject: `$JS.API.DIRECT.GET.KV_${config.commandsBucket}` }, "batched command-record lookups unanswered (is this subject allowed? docs/security.md): one lookup per command");
    }
    const service = await MicroService.start(nc, {
      version,
      description: "Event-sourced policy management: commands, queries and evaluation",
      // command_hash: this build's stored events answer retries themselves (what peers.ts looks for in its peers).
      // command_forward: the token of the subject this instance takes forwarded commands on, once it could (forward.ts).
      metadata: { stream: config.streamName, server_version: server.text, [COMMAND_HASH_METADATA]: "1", ...(forwarder.capable ? { [FORWARD_METADATA]: forwarder.token } : {}) },
      maxInFlight: config.maxInFlight,
      logger: componentLogger(logger, "service"),
      // Instance-wide command counters (conflict retries, duplicates, unavailable…) on every command endpoint.
      statsData: (subject) => (subject.startsWith("policy.commands.") && !/\.(evaluate|check_compliance)$/.test(subject) ? { commands: { ...commands.counters } } : undefined),
      ...(metrics ? { observe: metrics.observe } : {}),
    });
    gate = new SuccessRecordGate({
      selfId: () => service.id, streamName: config.streamName, mode: config.commandRecords, holdMs: commandsTtlMs(config),
      discover: pingPeers(nc), logger: componentLogger(logger, "peers"),
      onRound: (peers) => forwarder.updatePeers(peers),
    });
    service.addEndpoints("policy.commands", commandEndpoints(commands));
    // The read side binds its handlers in place of these once its audit stream exists (read-side.ts).
    service.addEndpoints("policy.commands", startingEndpoints(EVALUATION_ENDPOINTS));
    service.addEndpoints("policy.queries", startingEndpoints(QUERY_ENDPOINTS));
    await nc.flush();
    await starting.stop();
    let stopCheckpoints = (): void => undefined;
    const hooks: (() => Promise<void> | void)[] = [];
    let shuttingDown: Promise<void> | null = null;
    const runtime: Runtime = {
      config, logger, nc, js, jsm, server, store, commands, projection, service,
      expiryRank: (exemptionId) => forwarder.rankOf(exemptionId) ?? 0,
      onShutdown: (fn) => { hooks.push(fn); },
      shutdown(reason) {
        shuttingDown ??= (async () => {
          const deadline = Date.now() + SHUTDOWN_TIMEOUT_MS - 1000;
          log.info({ reason }, "shutting down: no new requests, finishing in-flight ones");
          metrics?.setReady(false);
          // The forward subject stops with the endpoints: instances forwarding here then get "no responders" and run
          // their commands themselves, instead of waiting for discovery rounds to notice.
          await Promise.all([service.stop(Math.max(0, deadline - Date.now())), forwarder.stop(Math.max(0, deadline - Date.now()))]);
          await gate!.stop();
          for (const hook of [...hooks].reverse()) {
            try { await hook(); } catch (err) { log.warn({ err }, "shutdown hook failed"); }
          }
          await store.flushSnapshots();
          // The read-model checkpoint at its latest: the next start replays only what comes after it.
          stopCheckpoints();
          stopReplicaWatch();
          try { await projection.writeCheckpoint("shutdown"); } catch (err) { log.warn({ err, path: config.checkpointPath }, "read-model checkpoint not written"); }
          try { await feedNc!.drain(); } catch (err) { log.warn({ err }, "drain of the projection's connection failed"); }
          try { await nc.drain(); } catch (err) { log.warn({ err }, "drain failed"); }
          log.info({ reason }, "stopped");
        })();
        return shuttingDown;
      },
      closed: () => Promise.race([nc.closed(), feedNc!.closed()]).then(() => undefined),
    };
    // Commands are served from here on: until the projection has caught up they load their aggregates from the
    // stream (docs/concurrency.md), so its replay starts only now and does not hold up the endpoints above.
    onServing?.(runtime);
    await untilProvisioned(() => projection.start(), componentLogger(logger, "projection"), "the projection's consumer", signal);
    if (!shuttingDown) stopCheckpoints = periodicCheckpoints(projection, config, log);
    // The first round (bounded, peers.ts) runs beside the read side's start; until it has answered, stored commands
    // write their records. "ready" waits for both, so a started instance has its answer.
    const firstRound = gate.start();
    const readSide = await startReadSide(runtime);
    await firstRound; // projection caught up, queries/evaluation endpoints, expiry sweeper, audit (READ)
    if (shuttingDown) {
      // Stopped while the read side started (main.ts): it is not ready, and its sweeper must not write now.
      await readSide.stop();
      return runtime;
    }
    metrics?.attach({ commandCounters: commands.counters, projection: readSide.projection, jsm, streamName: config.streamName, nc });
    metrics?.setReady(true);
    log.info({ server_version: server.text, stream: config.streamName, replicas: config.streamReplicas, service_id: service.id }, "ready");
    return runtime;
  } catch (err) {
    stopReplicaWatch();
    await gate?.stop();
    await feedNc?.close().catch(() => undefined);
    await nc.close().catch(() => undefined);
    throw err;
  }
}
