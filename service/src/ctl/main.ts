// `policy-service ctl …`: an operator CLI for hosts without natscli. It connects exactly like the service
// (same environment, credentials and TLS files), so whatever the service can reach, ctl can inspect.
import { RequestError, type NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { PUBLIC_COMMANDS } from "../domain/index.js";
import { StreamFollower } from "../adapters/nats/stream-follower.js";

export const CTL_USAGE = `usage: policy-service ctl <command> [options]

  send <name|subject> '<json>'   send a command or query and print the reply
                                 (create → policy.commands.create, get → policy.queries.get,
                                  or a full subject such as policy.queries.list;
                                  an unknown name lists the valid ones)
  events [--since <seq>] [--count <n>]
                                 follow events.policy.> (from <seq>, default: new events only)
  status                         event/audit streams and KV buckets, replicas and their currency, leaders,
                                 service instances discovered with $SRV.PING/INFO/STATS
options:
  --json                         machine-readable output (one JSON document, or one per event)
  --timeout <ms>                 request timeout for send/status (default 5000)

Connection settings come from the same environment as the service (NATS_URL, NATS_CREDS_FILE, …).`;

const QUERY_NAMES = new Set(["get", "list", "history", "applicable"]);
/** Every name `send` accepts: policy.commands.<name> (the commands and the evaluation endpoints) and policy.queries.<name>. */
export const SEND_TARGETS = {
  commands: [...PUBLIC_COMMANDS, "evaluate", "check_compliance"] as readonly string[],
  queries: [...QUERY_NAMES] as readonly string[],
};
const SERVICE_NAME = "policy-service";

/** The valid names, for an unknown one (instead of NATS's "no responders"). */
export function sendTargetsHelp(): string {
  return `commands: ${SEND_TARGETS.commands.join(", ")}\nqueries:  ${SEND_TARGETS.queries.join(", ")}`;
}

/** The name `send` was given does not exist on the policy service (a bare name, or policy.commands|queries.<name>). */
export function unknownSendTarget(target: string): boolean {
  const subject = subjectFor(target);
  const match = /^policy\.(commands|queries)\.([^.]+)$/.exec(subject);
  if (match === null) return subject.startsWith("policy.commands.") || subject.startsWith("policy.queries.");
  return !(match[1] === "commands" ? SEND_TARGETS.commands : SEND_TARGETS.queries).includes(match[2]!);
}

export interface CtlDeps {
  /** Connects with the service's configuration and credentials. */
  connect(): Promise<NatsConnection>;
  streamName: string;
  auditStreamName: string;
  out?: (line: string) => void;
  err?: (line: string) => void;
}

interface CtlOptions {
  json: boolean;
  timeoutMs: number;
  since: number | null;
  count: number | null;
  positional: string[];
}

function parseOptions(args: string[]): CtlOptions {
  const options: CtlOptions = { json: false, timeoutMs: 5000, since: null, count: null, positional: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const numberAfter = (name: string): number => {
      const value = Number(args[++i]);
      if (!Number.isInteger(value) || value < 0) throw new UsageError(`${name} needs a non-negative integer`);
      return value;
    };
    if (arg === "--json") options.json = true;
    else if (arg === "--timeout") options.timeoutMs = numberAfter("--timeout");
    else if (arg === "--since") options.since = numberAfter("--since");
    else if (arg === "--count") options.count = numberAfter("--count");
    else if (arg.startsWith("--")) throw new UsageError(`unknown option ${arg}`);
    else options.positional.push(arg);
  }
  return options;
}

class UsageError extends Error {}

/** Maps a short name to its subject; a name containing a dot is taken as a subject as written. */
export function subjectFor(target: string): string {
  if (target.includes(".")) return target.startsWith("commands.") || target.startsWith("queries.") ? `policy.${target}` : target;
  return QUERY_NAMES.has(target) ? `policy.queries.${target}` : `policy.commands.${target}`;
}

/** Runs one ctl command; returns the process exit code (0 ok, 1 failed request or error reply, 2 usage). */
export async function runCtl(argv: string[], deps: CtlDeps): Promise<number> {
  const out = deps.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const err = deps.err ?? ((line: string) => process.stderr.write(`${line}\n`));
  const [command, ...rest] = argv;
  let options: CtlOptions;
  try {
    options = parseOptions(rest);
  } catch (e) {
    err(`${(e as Error).message}\n${CTL_USAGE}`);
    return 2;
  }
  if (!command || command === "help" || command === "--help") {
    out(CTL_USAGE);
    return command ? 0 : 2;
  }
  if (!["send", "events", "status"].includes(command)) {
    err(`unknown ctl command ${JSON.stringify(command)}\n${CTL_USAGE}`);
    return 2;
  }
  if (command === "send" && (options.positional.length < 1 || options.positional.length > 2)) {
    err(`send needs a command or subject and an optional JSON payload\n${CTL_USAGE}`);
    return 2;
  }
  if (command === "send" && unknownSendTarget(options.positional[0]!)) {
    err(`unknown command or query ${JSON.stringify(options.positional[0])} (subject ${subjectFor(options.positional[0]!)}); send one of:\n${sendTargetsHelp()}`);
    return 2;
  }
  let payloadText = "{}";
  if (command === "send") {
    payloadText = options.positional[1] ?? "{}";
    try {
      JSON.parse(payloadText);
    } catch (e) {
      err(`the payload is not valid JSON: ${(e as Error).message}`);
      return 2;
    }
  }

  let nc: NatsConnection;
  try {
    nc = await deps.connect();
  } catch (e) {
    err(`cannot connect to NATS: ${(e as Error).message}`);
    return 1;
  }
  try {
    if (command === "send") return await send(nc, options, subjectFor(options.positional[0]!), payloadText, out, err);
    if (command === "events") return await follow(nc, options, deps.streamName, out, err);
    return await status(nc, options, deps, out);
  } catch (e) {
    err(`${command} failed: ${(e as Error).message}`);
    return 1;
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

async function send(
  nc: NatsConnection,
  options: CtlOptions,
  subject: string,
  payload: string,
  out: (l: string) => void,
  err: (l: string) => void,
): Promise<number> {
  let reply;
  try {
    reply = await nc.request(subject, payload, { timeout: options.timeoutMs });
  } catch (e) {
    if (!(e instanceof RequestError && e.isNoResponders())) throw e;
    err(`no service answers on ${subject}: is policy-service running and connected to this NATS (NATS_URL)? ` +
      "`policy-service ctl status` lists the instances it can see.");
    return 1;
  }
  const text = reply.string();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: print as received */
  }
  const errorCode = reply.headers?.get("Nats-Service-Error-Code");
  if (options.json) out(JSON.stringify(body));
  else {
    out(typeof body === "string" ? body : JSON.stringify(body, null, 2));
    if (errorCode) err(`service error ${errorCode}: ${reply.headers?.get("Nats-Service-Error") ?? ""}`);
  }
  const ok = typeof body === "object" && body !== null && (body as { ok?: unknown }).ok === true;
  return ok && !errorCode ? 0 : 1;
}

async function follow(
  nc: NatsConnection,
  options: CtlOptions,
  streamName: string,
  out: (l: string) => void,
  err: (l: string) => void,
): Promise<number> {
  // "New events only" is resolved to the sequence after the stream's last one, so that a consumer recreated before
  // anything arrived (its server went silent, stream-follower.ts) starts there too, not at whatever is newest then.
  const fromSeq = options.since !== null ? Math.max(1, options.since) : (await (await jetstreamManager(nc)).streams.info(streamName)).state.last_seq + 1;
  let seen = 0;
  let failed = false;
  let finish = () => {};
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const say = (obj: object, msg?: string) => err(`${msg ?? ""} ${JSON.stringify(obj, (key, value: unknown) => (key === "err" ? String(value) : value))}`);
  const follower = new StreamFollower({
    js: jetstream(nc),
    streamName,
    filterSubject: "events.policy.>",
    name: "ctl events",
    logger: {
      info: say,
      warn: say,
      error: say,
    },
    onMessage: (msg) => {
      if (options.count !== null && seen >= options.count) return;
      let event: Record<string, unknown> = {};
      try {
        event = msg.json<Record<string, unknown>>();
      } catch {
        /* shown without a body */
      }
      if (options.json) out(JSON.stringify({ seq: msg.seq, subject: msg.subject, time: msg.time.toISOString(), event }));
      else {
        out(`${msg.seq}\t${msg.time.toISOString()}\t${msg.subject}\tv${String(event.version ?? "?")}\t${JSON.stringify(event.data ?? {})}`);
      }
      seen++;
      if (options.count !== null && seen >= options.count) finish();
    },
  });
  process.once("SIGINT", finish);
  process.once("SIGTERM", finish);
  try {
    await follower.start(fromSeq);
    if (!options.json) err(`following events.policy.> on ${streamName} from sequence ${fromSeq} (Ctrl-C to stop)`);
    // The follower ends by itself only when its consumer did (the connection closed, the stream deleted).
    await Promise.race([finished, follower.ended.then(() => { failed = true; })]);
  } finally {
    process.off("SIGINT", finish);
    process.off("SIGTERM", finish);
    await follower.stop();
  }
  return failed ? 1 : 0;
}

interface StreamSummary {
  name: string;
  exists: boolean;
  messages?: number;
  bytes?: number;
  first_seq?: number;
  last_seq?: number;
  replicas?: number;
  cluster?: string | null;
  leader?: string | null;
  peers?: { name: string; current: boolean; offline: boolean; lag: number; active_ms: number }[];
  error?: string;
}

async function streamSummary(nc: NatsConnection, name: string): Promise<StreamSummary> {
  const jsm = await jetstreamManager(nc);
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(name);
  } catch (e) {
    const message = (e as Error).message;
    return /not found/i.test(message) ? { name, exists: false } : { name, exists: false, error: message };
  }
  return {
    name,
    exists: true,
    messages: info.state.messages,
    bytes: info.state.bytes,
    first_seq: info.state.first_seq,
    last_seq: info.state.last_seq,
    replicas: info.config.num_replicas,
    cluster: info.cluster?.name ?? null,
    leader: info.cluster?.leader ?? null,
    peers: (info.cluster?.replicas ?? []).map((r) => ({
      name: r.name,
      current: r.current,
      offline: r.offline ?? false,
      lag: r.lag ?? 0,
      active_ms: Math.round((r.active ?? 0) / 1e6),
    })),
  };
}

async function collect<T>(iterator: Promise<AsyncIterable<T>>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of await iterator) out.push(item);
  return out;
}

async function status(nc: NatsConnection, options: CtlOptions, deps: CtlDeps, out: (l: string) => void): Promise<number> {
  const client = new Svcm(nc).client({ strategy: "timer", maxWait: Math.min(options.timeoutMs, 1500) });
  const [events, audit, snapshots, commands, pings, infos, stats] = await Promise.all([
    streamSummary(nc, deps.streamName),
    streamSummary(nc, deps.auditStreamName),
    streamSummary(nc, `KV_${deps.streamName}_SNAPSHOTS`),
    streamSummary(nc, `KV_${deps.streamName}_COMMANDS`),
    collect(client.ping(SERVICE_NAME)).catch(() => []),
    collect(client.info(SERVICE_NAME)).catch(() => []),
    collect(client.stats(SERVICE_NAME)).catch(() => []),
  ]);
  const server = nc.info;
  const instances = pings
    .map((p) => {
      const s = stats.find((x) => x.id === p.id);
      const i = infos.find((x) => x.id === p.id);
      const endpoints = s?.endpoints ?? [];
      return {
        id: p.id,
        version: p.version,
        started: s?.started ?? null,
        endpoints: i?.endpoints.length ?? null,
        num_requests: endpoints.reduce((n, e) => n + (e.num_requests ?? 0), 0),
        num_errors: endpoints.reduce((n, e) => n + (e.num_errors ?? 0), 0),
        metadata: p.metadata ?? {},
      };
    })
    .sort((a, b) => a.id.localeCompare(b.id));
  const report = {
    server: server
      ? { name: server.server_name, version: server.version, cluster: server.cluster ?? null, jetstream: server.jetstream ?? false }
      : null,
    streams: { events, audit, snapshots, commands },
    services: { name: SERVICE_NAME, instances },
  };
  if (options.json) {
    out(JSON.stringify(report));
    return events.exists ? 0 : 1;
  }
  if (report.server) {
    out(`connected to ${report.server.name} (nats-server ${report.server.version}${report.server.cluster ? `, cluster ${report.server.cluster}` : ""})`);
  }
  for (const s of [events, audit, snapshots, commands]) {
    if (!s.exists) {
      out(`stream ${s.name}: ${s.error ?? "not found"}`);
      continue;
    }
    out(`stream ${s.name}: ${s.messages} message${s.messages === 1 ? "" : "s"}, seq ${s.first_seq}..${s.last_seq}, ${s.bytes} bytes, R${s.replicas}` +
      (s.leader ? `, leader ${s.leader}` : ""));
    for (const p of s.peers ?? []) {
      out(`  replica ${p.name}: ${p.offline ? "OFFLINE" : p.current ? "current" : "catching up"}, lag ${p.lag}, active ${p.active_ms} ms ago`);
    }
  }
  out(`service ${SERVICE_NAME}: ${instances.length} instance(s)`);
  for (const i of instances) {
    out(`  ${i.id} v${i.version} started ${i.started ?? "?"}: ${i.num_requests} requests, ${i.num_errors} errors`);
  }
  return events.exists ? 0 : 1;
}
