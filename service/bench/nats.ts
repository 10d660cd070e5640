// The benchmark command (issue 12): in ONE run, against NATS servers this script starts, it measures the ceilings
//   raw request/reply echo   — a responder in a second Node process (as the service is) that echoes the payload;
//   raw JetStream publish    — the benchmark client publishes to a stream itself, acknowledged;
//   minimal command          — a responder in a second Node process that, per request, does ONE acknowledged
//                              JetStream publish of the payload and replies with the ack: the least a command can be;
// and policy-service's create, update (many aggregates, and a few hot ones: conflict-retry rate), update with a
// command_id, and evaluate (3 rules, audit on), each at 1, 16 and 64 requests in flight, with p50/p99 and the ratio to
// its ceiling (commands → minimal command, evaluate → echo). Two topologies: one node with R1 streams, three clustered
// nodes on loopback with R3 streams. Every stream (ceilings and the service's) is file storage with the same replicas
// and the same server settings (sync_interval: the server default, or `always` with --sync-always).
//
// Run from the repository root:  scripts/bench [--quick] [--json FILE] [--seconds N] [--sync-always] [--only r1|r3]
//                                              [--service PATH/main.js]  (another build, for before/after figures)
//                        scripts/bench --memory [N]   (memory after N creates, default 100,000, and a restart against them)
//                        scripts/bench --restart [N] [--baseline PATH/main.js]   (start-up against N events, default
//                                                     1,000,000, and cold loads of a 10,000- vs a 10-event aggregate)
// (or from service/: npm run bench -- …). Not part of the test suite; performance claims come only from here.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { writeFileSync, readFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { SERVICE_MAIN, SERVICE_ROOT, sleep, startCluster, startNatsServer, type NatsServer } from "../test/helpers/nats.js";
import { restartBench } from "./restart.js";

interface PhaseResult {
  topology: string;
  name: string;
  inFlight: number;
  ops: number;
  errors: number;
  seconds: number;
  reqPerSec: number;
  p50ms: number;
  p99ms: number;
  /** Name of the ceiling phase this one is compared with (same topology and in-flight). */
  ceiling?: string;
  ratio?: number;
  p50Ratio?: number;
  /** Messages the service sent to NATS per operation, its reply included (nats-server /connz): its round trips. */
  serviceMsgsPerOp?: number;
  /** Hot-aggregate updates: lost append races per executed command on the service ($SRV.STATS). */
  conflictRetryRate?: number;
  conflicts?: number;
}

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const option = (name: string) => (args.indexOf(name) >= 0 ? args[args.indexOf(name) + 1] : undefined);
const quick = flag("--quick");
/** Measured seconds per phase and in-flight level, in `rounds` interleaved slices. */
const seconds = Number(option("--seconds") ?? (quick ? 1.5 : 5)) || 5;
const rounds = quick ? 3 : 5;
const warmupMs = quick ? 200 : 500;
const jsonFile = option("--json");
const syncAlways = flag("--sync-always");
const only = option("--only");
/** Another build of the service to measure (e.g. a checkout of an older version, for before/after figures). */
const serviceMain = option("--service") ?? SERVICE_MAIN;
/** Profiling: the service runs with `node --cpu-prof --cpu-prof-dir=DIR` (written when it stops). */
const cpuProfDir = option("--cpu-prof");
/** Only the phases whose name starts with one of these (comma separated), e.g. `--phases create,minimal`. */
const phaseFilter = option("--phases")?.split(",");
const wanted = (name: string) => !phaseFilter || phaseFilter.some((p) => name.startsWith(p));
/** Requests in flight per phase (`--in-flight 1,64` to measure only some). */
const IN_FLIGHT = (option("--in-flight") ?? "1,16,64").split(",").map(Number).filter((n) => n > 0);
const PAYLOAD_600 = JSON.stringify({ pad: "x".repeat(580) });

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Accumulator { latencies: number[]; errors: number; seconds: number }

/** Keeps `inFlight` operations running for `ms`; adds what it measured (latency per op, by the client) to `acc`. */
async function slice(inFlight: number, ms: number, op: () => Promise<boolean>, acc: Accumulator | null): Promise<void> {
  const started = Date.now();
  const end = started + ms;
  const worker = async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      let ok = false;
      try {
        ok = await op();
      } catch {
        ok = false;
      }
      if (!acc) continue;
      if (ok) acc.latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      else acc.errors++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  if (acc) acc.seconds += (Date.now() - started) / 1000;
}

function summarise(topology: string, name: string, inFlight: number, acc: Accumulator): PhaseResult {
  const latencies = acc.latencies.sort((x, y) => x - y);
  const result: PhaseResult = {
    topology, name, inFlight, ops: latencies.length, errors: acc.errors, seconds: acc.seconds,
    reqPerSec: latencies.length / acc.seconds, p50ms: percentile(latencies, 50), p99ms: percentile(latencies, 99),
  };
  process.stderr.write(`  ${topology} ${name} @${inFlight}: ${result.reqPerSec.toFixed(0)}/s p50 ${result.p50ms.toFixed(3)} ms${acc.errors ? ` errors ${acc.errors}` : ""}\n`);
  return result;
}

/** A helper process (echo or minimal command), in its own Node process like the service. */
function startResponder(kind: "echo" | "minimal", url: string): Promise<{ stop(): Promise<void> }> {
  const code = kind === "echo"
    ? `
    import { connect } from "@nats-io/transport-node";
    const nc = await connect({ servers: ${JSON.stringify(url)} });
    const sub = nc.subscribe("bench.echo", { queue: "q" });
    await nc.flush();
    console.log("ready");
    for await (const m of sub) m.respond(m.data);
  `
    : `
    import { connect } from "@nats-io/transport-node";
    import { jetstream } from "@nats-io/jetstream";
    const nc = await connect({ servers: ${JSON.stringify(url)} });
    const js = jetstream(nc);
    const sub = nc.subscribe("bench.minimal", { queue: "q" });
    await nc.flush();
    console.log("ready");
    for await (const m of sub) {
      // One acknowledged publish per request, handled concurrently (as the service handles up to MAX_IN_FLIGHT).
      js.publish("bench.min.x", m.data).then(
        (ack) => m.respond(JSON.stringify({ ok: true, seq: ack.seq })),
        (err) => m.respond(JSON.stringify({ ok: false, error: String(err) })),
      );
    }
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], { cwd: SERVICE_ROOT, stdio: ["ignore", "pipe", "inherit"] });
  const stop = () => killChild(child);
  process.once("exit", () => child.kill("SIGKILL"));
  return new Promise((resolve, reject) => {
    child.stdout!.once("data", () => resolve({ stop }));
    child.once("exit", (codeNum) => reject(new Error(`${kind} responder exited (${codeNum})`)));
  });
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGTERM");
    const exited = await Promise.race([new Promise((r) => child.once("exit", () => r(true))), sleep(10_000).then(() => false)]);
    if (!exited) {
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
    }
  }
}

/**
 * The built service (`node dist/main.js`) with its log going nowhere (production logs at info: the service pays for
 * its logging; the benchmark does not pay for reading it). Ready when a query is answered.
 */
async function startBenchService(nc: NatsConnection, env: Record<string, string>): Promise<{ pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [...(cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`] : []), serviceMain], {
    cwd: SERVICE_ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: "info", ...env }, stdio: ["ignore", "ignore", "inherit"],
  });
  process.once("exit", () => child.kill("SIGKILL"));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`service exited with ${child.exitCode}`);
    try {
      const reply = await nc.request("policy.queries.list", JSON.stringify({ aggregate_type: "Policy", limit: 1 }), { timeout: 1000 });
      if (reply.json<{ ok?: boolean }>().ok !== undefined) break;
    } catch { /* not yet */ }
    await sleep(100);
  }
  return { pid: child.pid ?? -1, stop: () => killChild(child) };
}

async function request(nc: NatsConnection, subject: string, body: unknown): Promise<Record<string, any>> {
  const reply = await nc.request(subject, JSON.stringify(body), { timeout: 15_000 });
  return reply.json<Record<string, any>>();
}

async function okRequest(nc: NatsConnection, subject: string, body: unknown): Promise<Record<string, any>> {
  const reply = await request(nc, subject, body);
  if (reply.ok !== true) throw new Error(`${subject} failed: ${JSON.stringify(reply)}`);
  return reply;
}

async function commandCounters(nc: NatsConnection): Promise<{ executed: number; conflictRetries: number; conflicts: number }> {
  const sum = { executed: 0, conflictRetries: 0, conflicts: 0 };
  const replies = await nc.requestMany("$SRV.STATS.policy-service", "", { maxWait: 500 });
  for await (const m of replies) {
    const stats = m.json<{ endpoints?: { subject: string; data?: { commands?: typeof sum } }[] }>();
    const data = stats.endpoints?.find((e) => e.subject === "policy.commands.update")?.data?.commands;
    if (data) {
      sum.executed += data.executed;
      sum.conflictRetries += data.conflictRetries;
      sum.conflicts += data.conflicts;
    }
  }
  return sum;
}

/** Messages the service's connection has sent to this server (its client connection, by name). */
async function serviceSentMsgs(server: NatsServer): Promise<number> {
  const connz = await server.monitor<{ connections?: { name?: string; in_msgs: number }[] }>("/connz?limit=1024");
  return (connz.connections ?? []).filter((c) => c.name?.startsWith("policy-service@")).reduce((sum, c) => sum + c.in_msgs, 0);
}

function rssMiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

const POLICY = {
  name: "Bench retention policy",
  description: "Data must be retained for seven years and encrypted at rest; created by the benchmark to give the event a realistic size",
  policy_type: "Retention",
  enforcement: "Mandatory",
  scope: "Organization",
};
const RULES = [
  { rule_id: "retention", name: "Retention", severity: "High", expression: { op: "greater_than_or_equal", field: "data.retention_days", value: 2555 } },
  { rule_id: "region", name: "Region", severity: "Medium", expression: { op: "in", field: "data.region", values: ["eu-west-1", "eu-central-1"] } },
  { rule_id: "encrypted", name: "Encrypted", severity: "Critical", expression: { op: "and", args: [
    { op: "equal", field: "data.encryption.enabled", value: true },
    { op: "starts_with", field: "data.encryption.algorithm", value: "AES" },
  ] } },
];

interface Phase {
  name: string;
  op: () => Promise<boolean>;
  /** Lost append races per executed command are counted for this phase ($SRV.STATS deltas). */
  countConflicts?: boolean;
  inFlight?: number[];
}

/**
 * Every phase on one topology. All helpers and the service run at once (idle when not measured), and the phases are
 * measured in interleaved slices (round after round, every phase once per round), so that the load of a shared machine
 * changing over time weighs on the ceilings and on the service alike: the ratios within a run are what count.
 */
async function runTopology(topology: string, server: NatsServer, replicas: number, results: PhaseResult[], memory: Record<string, number | null>): Promise<void> {
  const url = server.url;
  const nc = await connect({ servers: url });
  const stops: (() => Promise<void>)[] = [];
  try {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const streamSettings = { storage: "file" as never, num_replicas: replicas };
    await jsm.streams.add({ name: "BENCH_PUB", subjects: ["bench.pub.>"], ...streamSettings });
    await jsm.streams.add({ name: "BENCH_MIN", subjects: ["bench.min.>"], ...streamSettings });
    stops.push((await startResponder("echo", url)).stop);
    stops.push((await startResponder("minimal", url)).stop);
    const service = await startBenchService(nc, { NATS_URL: url, STREAM_REPLICAS: String(replicas) });
    stops.push(service.stop);

    const MANY = 1000;
    const HOT = 4;
    const many: string[] = [];
    for (let i = 0; i < MANY; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => okRequest(nc, "policy.commands.create", POLICY)));
      many.push(...batch.map((r) => r.aggregate_id as string));
    }
    const policy = await okRequest(nc, "policy.commands.create", { ...POLICY, rules: RULES });
    const policyId = policy.aggregate_id as string;
    await okRequest(nc, "policy.commands.approve", { policy_id: policyId, approved_by: "bench" });
    await okRequest(nc, "policy.commands.activate", { policy_id: policyId, activated_by: "bench" });
    const evaluateBody = JSON.stringify({
      policy_id: policyId,
      context: { data: { retention_days: 2600, region: "eu-west-1", encryption: { enabled: true, algorithm: "AES-256-GCM" } } },
    });
    let counter = 0;
    const update = (ids: string[], count: number, withCommandId: boolean) => async () => {
      const i = counter++;
      const body = { policy_id: ids[i % count], updated_by: "bench", name: `n${i}`, ...(withCommandId ? { command_id: randomUUID() } : {}) };
      return (await request(nc, "policy.commands.update", body)).ok === true;
    };
    const phases: Phase[] = [
      { name: "raw echo", op: async () => { await nc.request("bench.echo", PAYLOAD_600, { timeout: 10_000 }); return true; } },
      { name: "raw JetStream publish", op: async () => { await js.publish("bench.pub.x", PAYLOAD_600, { timeout: 10_000 }); return true; } },
      { name: "minimal command", op: async () => (await nc.request("bench.minimal", PAYLOAD_600, { timeout: 10_000 })).json<{ ok: boolean }>().ok },
      { name: "create", op: async () => (await request(nc, "policy.commands.create", POLICY)).ok === true },
      { name: `update (${MANY} aggregates)`, op: update(many, MANY, false) },
      { name: `update with command_id (${MANY} aggregates)`, op: update(many, MANY, true) },
      { name: `update (${HOT} hot aggregates)`, op: update(many, HOT, false), countConflicts: true, inFlight: IN_FLIGHT.filter((n) => n > 1) },
      { name: "evaluate (3 rules, audit on)", op: async () => (await nc.request("policy.commands.evaluate", evaluateBody, { timeout: 10_000 })).json<{ ok: boolean }>().ok === true },
    ].filter((p) => wanted(p.name));

    for (const n of IN_FLIGHT) {
      const active = phases.filter((p) => (p.inFlight ?? IN_FLIGHT).includes(n));
      const acc = new Map(active.map((p) => [p.name, { latencies: [], errors: 0, seconds: 0 } as Accumulator]));
      const conflicts = new Map(active.map((p) => [p.name, { executed: 0, conflictRetries: 0, conflicts: 0 }]));
      const sent = new Map(active.map((p) => [p.name, 0]));
      for (const p of active) await slice(n, warmupMs, p.op, null);
      for (let round = 0; round < rounds; round++) {
        for (const p of active) {
          const before = p.countConflicts ? await commandCounters(nc) : null;
          const sentBefore = await serviceSentMsgs(server);
          await slice(n, (seconds * 1000) / rounds, p.op, acc.get(p.name)!);
          // Drain: replies still in flight when the slice ended are counted with it.
          sent.set(p.name, sent.get(p.name)! + (await serviceSentMsgs(server)) - sentBefore);
          if (before) {
            const after = await commandCounters(nc);
            const c = conflicts.get(p.name)!;
            c.executed += after.executed - before.executed;
            c.conflictRetries += after.conflictRetries - before.conflictRetries;
            c.conflicts += after.conflicts - before.conflicts;
          }
        }
      }
      for (const p of active) {
        const r = summarise(topology, p.name, n, acc.get(p.name)!);
        if (!p.name.startsWith("raw") && !p.name.startsWith("minimal")) r.serviceMsgsPerOp = sent.get(p.name)! / Math.max(1, r.ops + r.errors);
        if (p.countConflicts) {
          const c = conflicts.get(p.name)!;
          r.conflictRetryRate = c.executed > 0 ? c.conflictRetries / c.executed : 0;
          r.conflicts = c.conflicts;
        }
        results.push(r);
      }
    }
    memory[`${topology} service RSS after the phases (MiB)`] = rssMiB(service.pid);
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await nc.close().catch(() => undefined);
  }
}

function addRatios(results: PhaseResult[]): void {
  for (const r of results) {
    const ceilingName = r.name.startsWith("evaluate") ? "raw echo" : ["create", "update"].some((p) => r.name.startsWith(p)) ? "minimal command" : undefined;
    if (!ceilingName) continue;
    const ceiling = results.find((c) => c.topology === r.topology && c.name === ceilingName && c.inFlight === r.inFlight);
    if (!ceiling) continue;
    r.ceiling = ceilingName;
    r.ratio = r.reqPerSec / ceiling.reqPerSec;
    r.p50Ratio = r.p50ms / ceiling.p50ms;
  }
}

function printTable(results: PhaseResult[], header: string): void {
  const cols = ["topology", "phase", "in flight", "req/s", "p50 ms", "p99 ms", "errors", "vs ceiling", "× req/s", "× p50", "msgs/op", "retries/cmd"];
  const rows = results.map((r) => [
    r.topology, r.name, String(r.inFlight), r.reqPerSec.toFixed(0), r.p50ms.toFixed(3), r.p99ms.toFixed(3), String(r.errors),
    r.ceiling ?? "", r.ratio !== undefined ? r.ratio.toFixed(2) : "", r.p50Ratio !== undefined ? r.p50Ratio.toFixed(2) : "",
    r.serviceMsgsPerOp !== undefined ? r.serviceMsgsPerOp.toFixed(2) : "",
    r.conflictRetryRate !== undefined ? `${r.conflictRetryRate.toFixed(2)}${r.conflicts ? ` (${r.conflicts} conflict)` : ""}` : "",
  ]);
  const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => (i <= 1 || i === 7 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ") + " |";
  console.log(header);
  console.log(line(cols));
  console.log("|" + widths.map((w, i) => (i <= 1 || i === 7 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") + "|");
  for (const row of rows) console.log(line(row));
}

/**
 * `--memory N`: resident memory of one instance after N creates through it (R1), then a restart against that stream:
 * how long until it serves a command, until a query gets any answer (a coded `unavailable` counts), until a query
 * gets data, and its memory then. Timed from the spawn of the new process.
 */
async function memoryAndStartup(count: number): Promise<void> {
  const server = await startNatsServer({ syncAlways });
  const nc = await connect({ servers: server.url });
  let service: { pid: number; stop(): Promise<void> } | undefined;
  try {
    service = await startBenchService(nc, { NATS_URL: server.url });
    const t0 = Date.now();
    let next = 0;
    let failed = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (next < count) {
        next++;
        if ((await request(nc, "policy.commands.create", POLICY).catch(() => ({ ok: false }))).ok !== true) failed++;
      }
    }));
    const createSeconds = (Date.now() - t0) / 1000;
    const rssLoaded = rssMiB(service.pid);
    await sleep(2000);
    const rssSettled = rssMiB(service.pid);
    await service.stop();
    service = undefined;
    const events = (await (await jetstreamManager(nc)).streams.info("POLICY_EVENTS")).state.messages;

    const spawnedAt = Date.now();
    const child = spawn(process.execPath, [serviceMain], {
      cwd: SERVICE_ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: "info", NATS_URL: server.url }, stdio: ["ignore", "ignore", "inherit"],
    });
    process.once("exit", () => child.kill("SIGKILL"));
    service = { pid: child.pid ?? -1, stop: () => killChild(child) };
    let commandAt = 0;
    let queryAnswerAt = 0;
    let queryDataAt = 0;
    let noResponders = 0;
    let unavailable = 0;
    while ((!commandAt || !queryDataAt) && Date.now() - spawnedAt < 120_000) {
      const probes: Promise<void>[] = [];
      if (!commandAt) {
        probes.push(request(nc, "policy.commands.create", POLICY).then((r) => { if (r.ok === true && !commandAt) commandAt = Date.now(); }, () => undefined));
      }
      probes.push(nc.request("policy.queries.list", JSON.stringify({ aggregate_type: "Policy", limit: 1 }), { timeout: 1000 }).then((m) => {
        const r = m.json<{ ok?: boolean; error?: { code?: string } }>();
        if (!queryAnswerAt) queryAnswerAt = Date.now();
        if (r.ok === true && !queryDataAt) queryDataAt = Date.now();
        if (r.error?.code === "unavailable") unavailable++;
      }, (err: unknown) => { if (/no responders/i.test(String(err))) noResponders++; }));
      await Promise.all(probes);
      await sleep(20);
    }
    await sleep(1000);
    const figures = {
      policies_created: count - failed, create_seconds: +createSeconds.toFixed(1), events_in_stream: events,
      rss_mib_after_creates: rssLoaded, rss_mib_2s_later: rssSettled,
      restart_ms_to_first_command: commandAt ? commandAt - spawnedAt : null,
      restart_ms_to_first_query_answer: queryAnswerAt ? queryAnswerAt - spawnedAt : null,
      restart_ms_to_query_data: queryDataAt ? queryDataAt - spawnedAt : null,
      query_probes_no_responders: noResponders, query_probes_unavailable: unavailable,
      rss_mib_after_restart: rssMiB(service.pid),
    };
    for (const [k, v] of Object.entries(figures)) console.log(`${k}: ${v}`);
    if (jsonFile) writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), node: process.version, nats_server: server.version, ...figures }, null, 2) + "\n");
  } finally {
    await service?.stop();
    await nc.close().catch(() => undefined);
    await server.stop();
  }
}

async function main(): Promise<void> {
  if (flag("--restart")) {
    // `--restart [N]`: start-up against N events (default 1,000,000) and cold loads (bench/restart.ts). `--baseline
    // PATH/main.js[,…]` restarts those builds too, alternately with this one, against the same stream.
    const n = Number(option("--restart"));
    const baseline = option("--baseline");
    await restartBench({ events: n > 0 ? n : 1_000_000, mains: [...(baseline ? baseline.split(",") : []), serviceMain], rounds: quick ? 1 : 2, jsonFile, syncAlways, ...(cpuProfDir ? { cpuProfDir } : {}) });
    return;
  }
  if (option("--memory")) {
    await memoryAndStartup(Number(option("--memory")) || 100_000);
    return;
  }
  const results: PhaseResult[] = [];
  const memory: Record<string, number | null> = {};
  const started = Date.now();
  let version = "";
  if (only !== "r3") {
    const server: NatsServer = await startNatsServer({ syncAlways });
    version = server.version;
    try {
      await runTopology("R1 (1 node)", server, 1, results, memory);
    } finally {
      await server.stop();
    }
  }
  if (only !== "r1") {
    const cluster = await startCluster(3, { syncAlways });
    version = cluster.servers[0]!.version;
    try {
      await runTopology("R3 (3 nodes)", cluster.servers[0]!, 3, results, memory);
    } finally {
      await cluster.stop();
    }
  }
  addRatios(results);
  const machine = {
    cpus: cpus().length, cpu_model: cpus()[0]?.model ?? "unknown", memory_gib: +(totalmem() / 2 ** 30).toFixed(1),
    load_average_at_end: loadavg().map((x) => +x.toFixed(2)), node: process.version,
  };
  const settings = {
    nats_server: version, storage: "file", sync_interval: syncAlways ? "always" : "server default (2 min)",
    payload_bytes_ceilings: PAYLOAD_600.length, seconds_per_phase: seconds, interleaved_rounds: rounds, warmup_ms_per_phase: warmupMs, quick,
    service_main: serviceMain,
    service: "one instance, default configuration (LOG_LEVEL=info, audit on, MAX_IN_FLIGHT=64), on the client's node",
  };
  const header = `policy-service benchmark — nats-server ${version}, file storage, sync_interval ${settings.sync_interval}, ` +
    `${seconds} s per phase in ${rounds} interleaved slices after ${warmupMs} ms warm-up, Node ${process.version}, ${machine.cpus} × ${machine.cpu_model}, ` +
    `load average ${machine.load_average_at_end.join(" ")}, ${((Date.now() - started) / 1000).toFixed(0)} s in all`;
  printTable(results, header);
  for (const [k, v] of Object.entries(memory)) console.log(`${k}: ${v === null ? "n/a" : v.toFixed(0)}`);
  if (jsonFile) {
    writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), machine, settings, memory, results }, null, 2) + "\n");
    console.log(`JSON: ${jsonFile}`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
