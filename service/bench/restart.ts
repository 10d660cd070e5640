// `scripts/bench --restart [N]` (issue 12, start-up targets): a stream of N events (default 1,000,000), then
//   1. cold loads: EventStore.load (what a command runs while its instance's projection has not caught up) of a
//      10,000-event and of a 10-event aggregate, with snapshots on (the service's bucket, a snapshot written by the
//      service's own code) and off (an empty bucket), interleaved; medians and the ratio 10,000 / 10;
//   2. restarts of the service against that stream (of each build given, alternately), probed from the spawn:
//      a command and a query every PROBE_INTERVAL_MS, each outcome counted ("no responders" split by whether the
//      instance had connected to NATS yet, by its own log), until the query answers with data.
//
// How the events are made: the service provisions the stream (a first start), then the benchmark publishes real
// envelopes straight to the stream in batches (core publishes, a flush every 2,000, the stream's count checked): going
// through the service's command path would take 5-10 minutes for a million events on this machine. Each envelope is
// made by the domain's own parseCommand/decide/evolve (a 20-command policy story: create with 3 rules, edits, rule
// changes, approve, activate, suspend, resume…; one template per story, ids, event ids, command ids and times filled
// in per policy), interleaved across 5,000 policies at a time, about half with a command_id; occurred_at spreads
// over the last 30 days (so the command-id index holds only the recent tail, as in production). One aggregate gets
// 10,000 events (a create and updates) spread through the whole stream; one gets 10 through the service itself.
import { RULES } from "./rules.js";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { SERVICE_MAIN, sleep, startNatsServer, startService, type ServiceProcess } from "../test/helpers/nats.js";
import { decide, evolve, parseCommand, type AggregateState, type CommandName, type EventEnvelope } from "../src/domain/index.js";
import { EventStore } from "../src/adapters/nats/event-store.js";

const TEMPLATE_ID = "00000000-0000-4000-8000-0000000000aa";
const PROBE_INTERVAL_MS = 25;
const PROBE_TIMEOUT_MS = 1000;
/** A restart gives up after this long (the figure is then "not reached"). */
const RESTART_LIMIT_MS = 120_000;
const BIG_EVENTS = 10_000;
const SMALL_EVENTS = 10;
const STORY_LENGTH = 20;
const INTERLEAVE = 5000;
const DAY_MS = 86_400_000;

const CREATE = {
  name: "Bench retention policy",
  description: "Data must be retained for seven years and encrypted at rest; created by the benchmark to give the event a realistic size",
  policy_type: "Retention",
  enforcement: "Mandatory",
  scope: "Organization",
};

/** The 20 commands of one policy's story (every one must be accepted by the domain). */
function story(id: string): [CommandName, Record<string, unknown>][] {
  const p = { policy_id: id };
  return [
    ["create", { ...p, ...CREATE, rules: RULES }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v2)" }],
    ["add_rule", { ...p, rule: { rule_id: "owner", name: "Owner", severity: "Low", expression: { op: "exists", field: "data.owner" } } }],
    ["update", { ...p, updated_by: "editor", description: "Retained for seven years, encrypted at rest, owned by a named team" }],
    ["update_rule", { ...p, rule_id: "retention", rule: { name: "Retention (7y)", severity: "High", expression: { op: "greater_than_or_equal", field: "data.retention_days", value: 2557 } } }],
    ["update", { ...p, updated_by: "editor", tags: ["gdpr", "sox"] }],
    ["approve", { ...p, approved_by: "compliance-officer" }],
    ["activate", { ...p, activated_by: "compliance-officer" }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v3)" }],
    ["suspend", { ...p, suspended_by: "ciso", reason: "Under review" }],
    ["activate", { ...p, activated_by: "compliance-officer" }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v4)" }],
    ["remove_rule", { ...p, rule_id: "owner" }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v5)" }],
    ["reorder_rules", { ...p, rule_ids: ["encrypted", "region", "retention"] }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v6)" }],
    ["suspend", { ...p, suspended_by: "ciso", reason: "Second review" }],
    ["activate", { ...p, activated_by: "compliance-officer" }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v7)" }],
    ["update", { ...p, updated_by: "editor", name: "Bench retention policy (v8)" }],
  ];
}

/** Real envelopes for `commands` on one aggregate, by the domain's own code (the service's envelope shape). */
function envelopes(id: string, commands: [CommandName, Record<string, unknown>][], now: string): EventEnvelope[] {
  let state: AggregateState | undefined;
  const out: EventEnvelope[] = [];
  for (const [name, payload] of commands) {
    const parsed = parseCommand(name, payload);
    if (!parsed.ok) throw new Error(`bench story: ${name} does not parse: ${JSON.stringify(parsed)}`);
    const decision = decide(state, parsed.command, { now, refs: new Map() });
    if (!decision.ok) throw new Error(`bench story: ${name} refused: ${decision.error.message}`);
    for (const e of decision.events) {
      const envelope: EventEnvelope = {
        event_id: randomUUID(), event_type: e.event_type, aggregate_type: "Policy", aggregate_id: id, version: (state?.version ?? 0) + 1,
        occurred_at: now, command_id: null, correlation_id: null, causation_id: null, data: e.data,
      } as EventEnvelope;
      state = evolve(state, envelope);
      out.push(envelope);
    }
  }
  return out;
}

interface Template { subjectTail: string; parts: string[] }

/** An envelope as text with holes for the aggregate id, event id, command id and time (filled per policy). */
function template(envelope: EventEnvelope, withCommandId: boolean): Template {
  const text = JSON.stringify({ ...envelope, event_id: "@EVENT@", occurred_at: "@TIME@", command_id: withCommandId ? "@CMD@" : null, causation_id: withCommandId ? "@CMD@" : null });
  return { subjectTail: envelope.event_type, parts: text.split(/(@EVENT@|@TIME@|@CMD@|00000000-0000-4000-8000-0000000000aa)/) };
}

function fill(t: Template, id: string, time: string): string {
  const cmd = randomUUID();
  let out = "";
  for (const part of t.parts) {
    out += part === "@EVENT@" ? randomUUID() : part === "@TIME@" ? time : part === "@CMD@" ? cmd : part === TEMPLATE_ID ? id : part;
  }
  return out;
}

/**
 * Core publishes to the stream's subjects (JetStream stores them like acknowledged ones), flushed every `window`
 * messages: a round trip per batch instead of per event, so the server, not the client, sets the pace. The stream's
 * message count is checked afterwards (waitForStream), so a lost message cannot go unnoticed.
 */
class Publisher {
  published = 0;
  private readonly nc: NatsConnection;
  private readonly window: number;
  constructor(nc: NatsConnection, window: number) {
    this.nc = nc;
    this.window = window;
  }
  async publish(subject: string, body: string): Promise<void> {
    this.nc.publish(subject, body);
    if (++this.published % this.window === 0) await this.nc.flush();
  }
  async drain(): Promise<void> {
    await this.nc.flush();
  }
}

async function waitForStream(nc: NatsConnection, expected: number): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + 60_000;
  let messages = 0;
  while (Date.now() < deadline) {
    messages = (await jsm.streams.info("POLICY_EVENTS")).state.messages;
    if (messages >= expected) return;
    await sleep(200);
  }
  throw new Error(`the stream holds ${messages} events, expected ${expected}: publishes were lost`);
}

interface Generated { events: number; policies: number; bigId: string; bigLastSeq: number; bigState: AggregateState; smallId: string; seconds: number }

async function generate(nc: NatsConnection, total: number): Promise<Generated> {
  const started = Date.now();
  const before = (await (await jetstreamManager(nc)).streams.info("POLICY_EVENTS")).state.messages;
  const publisher = new Publisher(nc, 2000);
  const nowMs = Date.now();
  const storyEvents = envelopes(TEMPLATE_ID, story(TEMPLATE_ID), new Date(nowMs).toISOString());
  if (storyEvents.length !== STORY_LENGTH) throw new Error(`bench story has ${storyEvents.length} events, expected ${STORY_LENGTH}`);
  const templates = storyEvents.map((e, i) => template(e, i % 2 === 0));

  // The 10,000-event aggregate: a create, then updates, decided by the domain (each update renames it).
  const bigId = randomUUID();
  const bigCommands: [CommandName, Record<string, unknown>][] = [["create", { policy_id: bigId, ...CREATE, rules: RULES }]];
  for (let i = 1; i < BIG_EVENTS; i++) bigCommands.push(["update", { policy_id: bigId, updated_by: "editor", name: `Hot policy, revision ${i}` }]);
  const big = envelopes(bigId, bigCommands, new Date(nowMs).toISOString());
  let bigState: AggregateState | undefined;
  for (const e of big) bigState = evolve(bigState, e);

  const bulk = Math.max(0, total - BIG_EVENTS - SMALL_EVENTS);
  const policies = Math.ceil(bulk / STORY_LENGTH);
  let emitted = 0;
  let bigNext = 0;
  const bigEvery = Math.max(1, Math.floor(bulk / BIG_EVENTS));
  const time = (i: number) => new Date(nowMs - 30 * DAY_MS + Math.floor((30 * DAY_MS * i) / Math.max(1, bulk))).toISOString();
  const publishBig = async () => {
    const e = big[bigNext++]!;
    await publisher.publish(`events.policy.${bigId}.${e.event_type}`, JSON.stringify({ ...e, occurred_at: time(emitted) }));
  };
  let lastReport = Date.now();
  for (let first = 0; first < policies; first += INTERLEAVE) {
    const ids = Array.from({ length: Math.min(INTERLEAVE, policies - first) }, () => randomUUID());
    for (let step = 0; step < STORY_LENGTH; step++) {
      const t = templates[step]!;
      for (const id of ids) {
        if (emitted >= bulk) break;
        await publisher.publish(`events.policy.${id}.${t.subjectTail}`, fill(t, id, time(emitted)));
        emitted++;
        if (emitted % bigEvery === 0 && bigNext < big.length) await publishBig();
      }
    }
    if (Date.now() - lastReport > 5000) {
      process.stderr.write(`  generated ${publisher.published} events (${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
      lastReport = Date.now();
    }
  }
  while (bigNext < big.length) await publishBig();
  await publisher.drain();
  await waitForStream(nc, before + publisher.published);
  const bigLastSeq = (await (await jetstreamManager(nc)).streams.getMessage("POLICY_EVENTS", { last_by_subj: `events.policy.${bigId}.*` }))!.seq;
  return { events: publisher.published, policies, bigId, bigLastSeq, bigState: bigState!, smallId: "", seconds: (Date.now() - started) / 1000 };
}

const noLog = { debug() {}, info() {}, warn() {}, error() {}, fatal() {}, trace() {}, child() { return noLog; } } as never;

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

async function coldLoads(nc: NatsConnection, g: Generated, rounds: number): Promise<Record<string, number>> {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const kvm = new Kvm(nc);
  const snapshots = await kvm.open("POLICY_EVENTS_SNAPSHOTS");
  const empty = await kvm.create("BENCH_NO_SNAPSHOTS", { history: 1 });
  const on = new EventStore({ js, nc, jsm, snapshots, streamName: "POLICY_EVENTS", snapshotFrequency: 100, logger: noLog });
  const off = new EventStore({ js, nc, jsm, snapshots: empty, streamName: "POLICY_EVENTS", snapshotFrequency: 100, logger: noLog });
  // The snapshot the service would have written at version 10,000 (its own code: compare-and-set, same shape).
  await on.writeSnapshot(g.bigId, g.bigState, g.bigLastSeq);
  const cases = { "snapshots on, 10,000 events": [on, g.bigId], "snapshots on, 10 events": [on, g.smallId], "snapshots off, 10,000 events": [off, g.bigId], "snapshots off, 10 events": [off, g.smallId] } as const;
  const times = new Map<string, number[]>(Object.keys(cases).map((k) => [k, []]));
  const read = new Map<string, number>();
  for (let round = 0; round < rounds + 1; round++) {
    for (const [name, [store, id]] of Object.entries(cases)) {
      const t0 = performance.now();
      const loaded = await store.load(id);
      const ms = performance.now() - t0;
      if (loaded.version !== (id === g.bigId ? BIG_EVENTS : SMALL_EVENTS)) throw new Error(`cold load of ${name}: version ${loaded.version}`);
      read.set(name, loaded.eventsRead);
      if (round > 0) times.get(name)!.push(ms); // round 0 warms the connection up
    }
  }
  const out: Record<string, number> = {};
  for (const [name, ms] of times) {
    out[`cold load median ms, ${name}`] = +median(ms).toFixed(2);
    out[`cold load events read, ${name}`] = read.get(name)!;
  }
  out["cold load ratio 10,000/10, snapshots on"] = +(median(times.get("snapshots on, 10,000 events")!) / median(times.get("snapshots on, 10 events")!)).toFixed(2);
  out["cold load ratio 10,000/10, snapshots off"] = +(median(times.get("snapshots off, 10,000 events")!) / median(times.get("snapshots off, 10 events")!)).toFixed(2);
  return out;
}

interface RestartFigures {
  service_main: string;
  checkpoint: "on" | "off";
  checkpoint_used: string | null;
  checkpoint_written: Record<string, unknown> | null;
  ms_to_connected: number | null;
  ms_to_registered: number | null;
  ms_to_first_command: number | null;
  ms_to_first_query_answer: number | null;
  ms_to_query_data: number | null;
  ms_to_caught_up_log: number | null;
  probes_no_responders_before_connected: number;
  probes_no_responders_after_connected: number;
  probes_no_responders_after_registered: number;
  probes_unavailable: number;
  probes_timeout: number;
  probes_other_error: number;
  command_probes_unavailable: number;
  command_probes_ok: number;
  cold_command_ms_10000_events: number | null;
  cold_command_ms_10_events: number | null;
  rss_mib_after: number | null;
}

function rssMiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

/** One restart, probed from the spawn. */
async function restartOnce(nc: NatsConnection, url: string, main: string, g: Generated, cpuProfDir?: string, checkpointPath?: string): Promise<RestartFigures> {
  const spawnedAt = Date.now();
  const profile = cpuProfDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${cpuProfDir}` } : {};
  const checkpoint = checkpointPath ? { READ_MODEL_CHECKPOINT: checkpointPath } : {};
  const service: ServiceProcess = startService({ NATS_URL: url, LOG_LEVEL: "info", ...profile, ...checkpoint }, [], main);
  const logTime = (msg: string) => {
    const line = service.lines.find((l) => l.msg === msg);
    return line && typeof line.time === "string" ? Date.parse(line.time) - spawnedAt : null;
  };
  const f: RestartFigures = {
    service_main: main, checkpoint: checkpointPath ? "on" : "off", checkpoint_used: null, checkpoint_written: null, ms_to_connected: null, ms_to_registered: null, ms_to_first_command: null, ms_to_first_query_answer: null, ms_to_query_data: null, ms_to_caught_up_log: null,
    probes_no_responders_before_connected: 0, probes_no_responders_after_connected: 0, probes_no_responders_after_registered: 0, probes_unavailable: 0, probes_timeout: 0, probes_other_error: 0,
    command_probes_unavailable: 0, command_probes_ok: 0, cold_command_ms_10000_events: null, cold_command_ms_10_events: null, rss_mib_after: null,
  };
  const noResponders: number[] = [];
  const classify = (err: unknown, sentAt: number) => {
    const text = String(err);
    if (/no responders/i.test(text)) noResponders.push(sentAt);
    else if (/timeout/i.test(text)) f.probes_timeout++;
    else f.probes_other_error++;
  };
  const inFlight = new Set<Promise<void>>();
  const track = (p: Promise<void>) => { inFlight.add(p); void p.finally(() => inFlight.delete(p)); };
  let coldDone = false;
  try {
    while (Date.now() - spawnedAt < RESTART_LIMIT_MS) {
      if (!service.running) throw new Error(`service exited during the restart: ${service.rawOutput.slice(-5).join("\n")}`);
      const sentAt = Date.now();
      track(nc.request("policy.commands.create", JSON.stringify(CREATE), { timeout: PROBE_TIMEOUT_MS }).then((m) => {
        const r = m.json<{ ok?: boolean; error?: { code?: string } }>();
        if (r.ok === true) { f.command_probes_ok++; f.ms_to_first_command ??= Date.now() - spawnedAt; }
        else if (r.error?.code === "unavailable") f.command_probes_unavailable++;
        else f.probes_other_error++;
      }, (err) => classify(err, sentAt)));
      // A get of one policy: cheap at any size (a list sorts every policy: at 40 probes/s against 50,000 policies
      // the probes alone would overload the instance).
      track(nc.request("policy.queries.get", JSON.stringify({ id: g.smallId }), { timeout: PROBE_TIMEOUT_MS }).then((m) => {
        const r = m.json<{ ok?: boolean; error?: { code?: string } }>();
        f.ms_to_first_query_answer ??= Date.now() - spawnedAt;
        if (r.ok === true) f.ms_to_query_data ??= Date.now() - spawnedAt;
        else if (r.error?.code === "unavailable") f.probes_unavailable++;
        else f.probes_other_error++;
      }, (err) => classify(err, sentAt)));
      // A command on each big/small aggregate as soon as commands are served and before the read side is back:
      // it loads from the stream (the cold path commands take while the projection catches up).
      if (f.ms_to_first_command !== null && f.ms_to_query_data === null && !coldDone) {
        coldDone = true;
        track((async () => {
          for (const [id, key] of [[g.bigId, "cold_command_ms_10000_events"], [g.smallId, "cold_command_ms_10_events"]] as const) {
            const t0 = performance.now();
            const r = (await nc.request("policy.commands.update", JSON.stringify({ policy_id: id, updated_by: "bench", name: `restart ${randomUUID()}` }), { timeout: 10_000 })).json<{ ok?: boolean }>();
            if (r.ok === true) f[key] = +(performance.now() - t0).toFixed(1);
          }
        })().catch(() => undefined));
      }
      if (f.ms_to_query_data !== null && f.ms_to_first_command !== null) break;
      await sleep(PROBE_INTERVAL_MS);
    }
    await Promise.allSettled([...inFlight]);
    f.ms_to_connected = logTime("connected to NATS");
    // Builds that log when their endpoints are registered: no-responders after that line are the ones that count.
    const registered = service.lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("endpoints registered"));
    f.ms_to_registered = registered && typeof registered.time === "string" ? Date.parse(registered.time) - spawnedAt : null;
    f.ms_to_caught_up_log = logTime("projection caught up");
    for (const at of noResponders) {
      if (f.ms_to_connected !== null && at - spawnedAt >= f.ms_to_connected) f.probes_no_responders_after_connected++;
      else f.probes_no_responders_before_connected++;
      if (f.ms_to_registered !== null && at - spawnedAt >= f.ms_to_registered) f.probes_no_responders_after_registered++;
    }
    await sleep(500);
    f.rss_mib_after = rssMiB(service.pid);
  } finally {
    await service.stop();
  }
  // A graceful stop (SIGTERM), as the service is stopped in operation: the checkpoint is written then.
  const used = service.lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("read-model checkpoint"));
  if (checkpointPath) f.checkpoint_used = used?.msg === "read-model checkpoint used: replay from the next sequence" ? "used" : String(used?.code ?? "no line");
  const written = service.lines.find((l) => l.msg === "read-model checkpoint written");
  if (written) f.checkpoint_written = { seq: written.seq, aggregates: written.aggregates, bytes: written.bytes, pause_ms: written.pause_ms, ms: written.ms };
  return f;
}

export async function restartBench(opts: { events: number; mains: string[]; rounds: number; jsonFile?: string; syncAlways: boolean; cpuProfDir?: string }): Promise<void> {
  const started = Date.now();
  const server = await startNatsServer({ syncAlways: opts.syncAlways });
  const nc = await connect({ servers: server.url });
  try {
    // A first start provisions the stream and buckets exactly as the service does; the 10-event aggregate goes
    // through its command path.
    const first = startService({ NATS_URL: server.url, LOG_LEVEL: "info" }, [], SERVICE_MAIN);
    await first.ready(60_000);
    const created = (await nc.request("policy.commands.create", JSON.stringify({ ...CREATE, rules: RULES }), { timeout: 10_000 })).json<{ ok: boolean; aggregate_id: string }>();
    if (!created.ok) throw new Error(`create failed: ${JSON.stringify(created)}`);
    for (let i = 1; i < SMALL_EVENTS; i++) {
      const r = (await nc.request("policy.commands.update", JSON.stringify({ policy_id: created.aggregate_id, updated_by: "bench", name: `Small ${i}` }), { timeout: 10_000 })).json<{ ok: boolean }>();
      if (!r.ok) throw new Error(`update failed: ${JSON.stringify(r)}`);
    }
    await first.stop();

    process.stderr.write(`restart bench: publishing about ${opts.events} events\n`);
    const g = await generate(nc, opts.events);
    g.smallId = created.aggregate_id;
    const info = await (await jetstreamManager(nc)).streams.info("POLICY_EVENTS");
    process.stderr.write(`  ${info.state.messages} events in the stream (${(info.state.bytes / 2 ** 20).toFixed(0)} MiB), generated in ${g.seconds.toFixed(0)} s\n`);

    const cold = await coldLoads(nc, g, opts.rounds >= 2 ? 15 : 9);
    for (const [k, v] of Object.entries(cold)) console.log(`${k}: ${v}`);

    const restarts: RestartFigures[] = [];
    // This build also restarts with its read-model checkpoint: a first run with it on writes it at its graceful
    // stop (full replay, not counted), then every "on" restart uses the one its predecessor wrote (a few events stale:
    // each restart's probes append some).
    const checkpointDir = mkdtempSync(join(tmpdir(), "bench-checkpoint-"));
    const checkpointPath = join(checkpointDir, "read-model.checkpoint");
    try {
      process.stderr.write(`  priming the checkpoint of ${SERVICE_MAIN}\n`);
      console.log(JSON.stringify({ priming: true, ...(await restartOnce(nc, server.url, SERVICE_MAIN, g, undefined, checkpointPath)) }));
      for (let round = 0; round < opts.rounds; round++) {
        for (const main of opts.mains) {
          process.stderr.write(`  restart ${round + 1}/${opts.rounds} of ${main}\n`);
          const f = await restartOnce(nc, server.url, main, g, opts.cpuProfDir);
          restarts.push(f);
          console.log(JSON.stringify(f));
        }
        process.stderr.write(`  restart ${round + 1}/${opts.rounds} of ${SERVICE_MAIN} with its checkpoint\n`);
        const f = await restartOnce(nc, server.url, SERVICE_MAIN, g, opts.cpuProfDir, checkpointPath);
        restarts.push(f);
        console.log(JSON.stringify(f));
      }
    } finally {
      rmSync(checkpointDir, { recursive: true, force: true });
    }
    const result = {
      date: new Date().toISOString(), node: process.version, nats_server: server.version, events_in_stream: info.state.messages,
      stream_mib: +(info.state.bytes / 2 ** 20).toFixed(0), policies: g.policies + 2, generate_seconds: +g.seconds.toFixed(1),
      generation: "real envelopes (domain parseCommand/decide/evolve templates) published straight to the stream (core publishes, a flush every 2000, the stream's count checked); the 10-event aggregate through the service",
      probe_interval_ms: PROBE_INTERVAL_MS, cold_loads: cold, restarts, seconds: Math.round((Date.now() - started) / 1000),
    };
    if (opts.jsonFile) {
      writeFileSync(opts.jsonFile, JSON.stringify(result, null, 2) + "\n");
      console.log(`JSON: ${opts.jsonFile}`);
    }
  } finally {
    await nc.close().catch(() => undefined);
    await server.stop();
  }
}
