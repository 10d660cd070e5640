// Monitoring: Prometheus metrics (prom-client) and a readiness endpoint, served over HTTP on METRICS_LISTEN
// (off by default). Requests are counted where every endpoint's outcome is known, the micro service's reply
// (MicroService's `observe` hook), so neither the command handler nor the query code carries metrics. The command
// handler's own counters (conflict retries, idempotent replays) and the read side (lag, pending expiries) are read
// at scrape time.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { PUBLIC_COMMANDS, type AggregateState, type ExemptionState } from "../domain/index.js";
import type { Logger } from "../support/logger.js";
import { packageVersion } from "./version.js";

const PREFIX = "policy_service_";
/** Seconds; from a cached query (~100 µs) to a command that waited out JetStream retries (several seconds). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** A scrape never waits longer than this for the stream's info (the lag is then left at its last value). */
const STREAM_INFO_TIMEOUT_MS = 2000;

export type RequestKind = "command" | "evaluation" | "query";

/** policy.commands.evaluate → evaluation/evaluate; policy.commands.create → command/create; policy.queries.get → query/get. */
export function classifySubject(subject: string): { kind: RequestKind; name: string } | undefined {
  const match = /^policy\.(commands|queries)\.([a-z_]+)$/.exec(subject);
  if (match === null) return undefined;
  const name = match[2]!;
  if (match[1] === "queries") return { kind: "query", name };
  return { kind: name === "evaluate" || name === "check_compliance" ? "evaluation" : "command", name };
}

/** What the metrics read at scrape time, once the service is up (see Metrics.attach). */
export interface MetricSources {
  /** The command handler's counters (instance-wide, since start). */
  commandCounters: { readonly conflictRetries: number; readonly replayedReplies: number; readonly duplicates: number; readonly forwarded: number; readonly chainBreaks: number };
  projection: { readonly lastSeq: number; readonly consumerRecreations: number; exemptions(): AggregateState[] };
  jsm: JetStreamManager;
  streamName: string;
  /** Watched for disconnects: an instance cut off from NATS is not ready. */
  nc: NatsConnection;
  now?: () => number;
}

export class Metrics {
  readonly registry = new Registry();
  private sources: MetricSources | undefined;
  private ready = false;
  private connected = true;
  private readonly requests: Record<RequestKind, Counter<"name" | "outcome">>;
  private readonly durations: Record<RequestKind, Histogram<"name">>;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    const counter = (kind: string, help: string) =>
      new Counter({ name: `${PREFIX}${kind}_total`, help, labelNames: ["name", "outcome"] as const, registers });
    const histogram = (kind: string, help: string) =>
      new Histogram({ name: `${PREFIX}${kind}_duration_seconds`, help, labelNames: ["name"] as const, buckets: LATENCY_BUCKETS, registers });
    this.requests = {
      command: counter("commands", "Commands answered, by command name and outcome (ok, or the error code of the reply)."),
      evaluation: counter("evaluations", "Evaluations answered (evaluate, check_compliance), by outcome (ok, or the error code)."),
      query: counter("queries", "Queries answered (get, list, history, applicable), by outcome (ok, or the error code)."),
    };
    this.durations = {
      command: histogram("command", "Time from receiving a command to sending its reply, by command name."),
      evaluation: histogram("evaluation", "Time from receiving an evaluation request to sending its reply."),
      query: histogram("query", "Time from receiving a query to sending its reply."),
    };
    new Gauge({ name: `${PREFIX}build_info`, help: "Always 1; the running policy-service version as a label.", labelNames: ["version"] as const, registers })
      .set({ version: packageVersion() }, 1);
    // Every endpoint's series exists from the start (ok: 0), so rate() and absent-series alerts work before traffic.
    const endpoints: Record<RequestKind, readonly string[]> = {
      command: PUBLIC_COMMANDS,
      evaluation: ["evaluate", "check_compliance"],
      query: ["get", "list", "history", "applicable"],
    };
    for (const kind of Object.keys(endpoints) as RequestKind[]) {
      for (const name of endpoints[kind]) {
        this.requests[kind].inc({ name, outcome: "ok" }, 0);
        this.durations[kind].zero({ name });
      }
    }
    const self = this;
    const fromCounters = (name: string, help: string, read: (s: MetricSources) => number) =>
      new Counter({
        name: `${PREFIX}${name}`, help, registers,
        collect() {
          if (self.sources === undefined) return;
          // The source's count since start (it only grows) is the counter's value.
          this.reset();
          this.inc(read(self.sources));
        },
      });
    fromCounters("command_conflict_retries_total", "Commands decided again after losing an append race on their aggregate.", (s) => s.commandCounters.conflictRetries);
    fromCounters("command_idempotent_replays_total", "Resent commands answered for their command_id: from its idempotency record, or rebuilt from the events it stored.", (s) => s.commandCounters.replayedReplies);
    fromCounters("command_duplicates_total", "Appends JetStream recognised as duplicates (same Nats-Msg-Id), answered without a new event.", (s) => s.commandCounters.duplicates);
    fromCounters("command_chain_breaks_total", "Grouped appends on an R1 stream stored only in part (another writer's message came between); the rest decided again.", (s) => s.commandCounters.chainBreaks);
    fromCounters("commands_forwarded_total", "Commands sent on to the instance that writes their aggregate (one this instance lost append races on).", (s) => s.commandCounters.forwarded);
    fromCounters("projection_consumer_recreations_total", "Times the projection recreated its consumer because the one before missed its heartbeats (its server died, stalled or was cut off).", (s) => s.projection.consumerRecreations);
    new Gauge({
      name: `${PREFIX}stream_last_seq`, help: "Last sequence of the event stream, read at scrape time.", registers,
      async collect() {
        const last = await self.streamLastSeq();
        if (last !== undefined) this.set(last);
      },
    });
    new Gauge({
      name: `${PREFIX}projection_applied_seq`, help: "Last event stream sequence this instance's projection (read model) has applied.", registers,
      collect() { if (self.sources) this.set(self.sources.projection.lastSeq); },
    });
    new Gauge({
      name: `${PREFIX}read_side_lag_events`,
      help: "Events stored but not yet applied by this instance's projection: stream last seq minus projection applied seq.",
      registers,
      async collect() {
        const sources = self.sources;
        const last = await self.streamLastSeq();
        // JetStream did not answer in time: keep the last value rather than fail the scrape.
        if (sources === undefined || last === undefined) return;
        this.set(Math.max(0, last - sources.projection.lastSeq));
      },
    });
    new Gauge({
      name: `${PREFIX}exemptions_granted`, help: "Exemptions currently Granted in this instance's projection.", registers,
      collect() { if (self.sources) this.set(self.sources.projection.exemptions().filter(isGranted).length); },
    });
    new Gauge({
      name: `${PREFIX}expiries_pending`,
      help: "Granted exemptions whose expires_at has passed and whose exemption_expired is not stored yet (the sweeper records it within seconds).",
      registers,
      collect() {
        const sources = self.sources;
        if (sources === undefined) return;
        const now = (sources.now ?? Date.now)();
        this.set(sources.projection.exemptions().filter((e) => isGranted(e) && Date.parse((e as ExemptionState).expires_at) <= now).length);
      },
    });
    new Gauge({
      name: `${PREFIX}ready`, help: "1 when the instance serves requests (projection caught up, endpoints registered), else 0.", registers,
      collect() { this.set(self.isReady() ? 1 : 0); },
    });
  }

  private lastSeqInFlight: Promise<number | undefined> | undefined;

  /** The stream's last sequence; the gauges of one scrape (collected concurrently) share one JetStream request. */
  private streamLastSeq(): Promise<number | undefined> {
    const sources = this.sources;
    if (sources === undefined) return Promise.resolve(undefined);
    this.lastSeqInFlight ??= lastSequence(sources.jsm, sources.streamName).finally(() => { this.lastSeqInFlight = undefined; });
    return this.lastSeqInFlight;
  }

  /** MicroService's `observe` hook: one answered request on `subject`, its error code (null: ok) and duration. */
  readonly observe = (subject: string, errorCode: string | null, seconds: number): void => {
    const endpoint = classifySubject(subject);
    if (endpoint === undefined) return;
    this.requests[endpoint.kind].inc({ name: endpoint.name, outcome: errorCode ?? "ok" });
    this.durations[endpoint.kind].observe({ name: endpoint.name }, seconds);
  };

  /** The parts read at scrape time; call once the runtime is up. */
  attach(sources: MetricSources): void {
    this.sources = sources;
    void (async () => {
      for await (const status of sources.nc.status()) {
        if (status.type === "disconnect") this.connected = false;
        else if (status.type === "reconnect") this.connected = true;
      }
    })().catch(() => undefined);
    void sources.nc.closed().then(() => { this.connected = false; });
  }

  setReady(ready: boolean): void {
    this.ready = ready;
  }

  /** Caught up and serving (setReady), and connected to NATS. */
  isReady(): boolean {
    return this.ready && this.connected;
  }
}

function isGranted(state: AggregateState): boolean {
  return state.aggregate_type === "PolicyExemption" && (state as ExemptionState).status === "Granted";
}

async function lastSequence(jsm: JetStreamManager, streamName: string): Promise<number | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), STREAM_INFO_TIMEOUT_MS); });
  try {
    return await Promise.race([jsm.streams.info(streamName).then((info) => info.state.last_seq), timeout]);
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

export interface MonitoringServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/**
 * Serves GET /metrics (Prometheus text format) and GET /ready (200 "ready" or 503 "not ready") on host:port.
 * Started before the service connects to NATS, so /ready answers 503 while it starts and after shutdown begins.
 */
export async function startMonitoringServer(listen: { host: string; port: number }, metrics: Metrics, logger: Logger): Promise<MonitoringServer> {
  const server: Server = createServer((req, res) => void handle(req, res, metrics, logger));
  // A scrape that stalls must not hold a connection forever.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  logger.info({ address: address.address, port: address.port }, "metrics and readiness endpoint listening (/metrics, /ready)");
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, metrics: Metrics, logger: Logger): Promise<void> {
  const path = (req.url ?? "/").split("?")[0];
  const send = (status: number, body: string, contentType = "text/plain; charset=utf-8") => {
    res.writeHead(status, { "Content-Type": contentType, "Cache-Control": "no-store" });
    res.end(req.method === "HEAD" ? undefined : body);
  };
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    send(405, "method not allowed: use GET\n");
    return;
  }
  if (path === "/ready") {
    if (metrics.isReady()) send(200, "ready\n");
    else send(503, "not ready: starting, catching up or shutting down\n");
    return;
  }
  if (path === "/metrics") {
    try {
      send(200, await metrics.registry.metrics(), metrics.registry.contentType);
    } catch (err) {
      logger.warn({ err }, "collecting metrics failed");
      send(500, "collecting metrics failed\n");
    }
    return;
  }
  send(404, "not found: the endpoints are /metrics and /ready\n");
}
