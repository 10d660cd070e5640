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
//                                              [--instances N]  (then N instances contending for the same aggregates:
//                                                                the conflict-retry rate of a cluster's instances)
//                        scripts/bench --memory [N]   (memory after N creates, default 100,000, and a restart against them)
//                        scripts/bench --steady SECONDS [--policies N] [--rate R] [--sample-every S]
//                                     (memory under SECONDS of a fixed mix at R requests/s against N policies)
//                        --node-flags "FLAGS"  (extra flags of the service's node process, e.g. V8 heap flags to compare;
//                                     they win over the NODE_OPTIONS of package.json "config.nodeOptions", which the
//                                     service gets as the launchers give it)
//                        --service-env K=V,…   (extra environment of the service, e.g. HEAP_GROWING_PERCENT=0,NODE_OPTIONS=)
//                        scripts/bench --restart [N] [--baseline PATH/main.js]   (start-up against N events, default
//                                                     1,000,000, and cold loads of a 10,000- vs a 10-event aggregate)
// (or from service/: npm run bench -- …). Not part of the test suite; performance claims come only from here.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { freePort, SERVICE_MAIN, SERVICE_ROOT, sleep, startCluster, startNatsServer, type NatsServer } from "../test/helpers/nats.js";
import { restartBench } from "./restart.js";
import { RULES } from "./rules.js";

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
  /** R1 chained appends stored only in part (another instance's write came between), per command executed. */
  chainBreakRate?: number;
  conflicts?: number;
  /**
   * CPU time per operation (µs, user + system, all threads) of each process taking part, from /proc/PID/stat around
   * each slice: on a saturated machine throughput follows total CPU per operation, and CPU time moves far less than
   * wall time with the shared machine's load.
   */
  cpuUsPerOp?: CpuPerOp;
}

interface CpuPerOp { client: number; service: number; responders: number; servers: number; total: number }

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
/** Extra flags of the service's `node` (V8 flags to compare, put before the script); unset: none. */
const serviceNodeOptions = option("--node-flags");
const nodeFlags = serviceNodeOptions?.split(" ").filter(Boolean) ?? [];
/** Extra environment of the service (`--service-env HEAP_GROWING_PERCENT=0,NODE_OPTIONS=`: V8's own heap sizing). */
const extraServiceEnv: Record<string, string> = Object.fromEntries(
  (option("--service-env") ?? "").split(",").filter((kv) => kv.includes("=")).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
);
/** Only the phases whose name starts with one of these (comma separated), e.g. `--phases create,minimal`. */
const phaseFilter = option("--phases")?.split(",");
const wanted = (name: string) => !phaseFilter || phaseFilter.some((p) => name.startsWith(p));
/** `--instances N`: also N instances contending for the same aggregates (see contention()); default 1, none. */
const INSTANCES = Math.max(1, Math.floor(Number(option("--instances") ?? 1)) || 1);
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
function startResponder(kind: "echo" | "minimal", url: string): Promise<{ pid: number; stop(): Promise<void> }> {
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
    child.stdout!.once("data", () => resolve({ pid: child.pid ?? -1, stop }));
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
  const child = spawn(process.execPath, [...(cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`] : []), ...nodeFlags, serviceMain], {
    cwd: SERVICE_ROOT, env: serviceEnv(env), stdio: ["ignore", "ignore", "inherit"],
  });
  process.once("exit", () => child.kill("SIGKILL"));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`service exited with ${child.exitCode}`);
    try {
      const reply = await nc.request("policy.queries.list", JSON.stringify({ aggregate_type: "Policy", limit: 1 }), { timeout: 1000 });
      // Ready once a query is answered from the read side: while starting, an instance answers `unavailable`.
      if (reply.json<{ ok?: boolean }>().ok === true) break;
    } catch { /* not yet */ }
    await sleep(100);
  }
  return { pid: child.pid ?? -1, stop: () => killChild(child) };
}

/** NODE_OPTIONS the launchers give the service (package.json "config.nodeOptions"; docs/operations.md). */
const LAUNCHER_NODE_OPTIONS: string =
  (JSON.parse(readFileSync(`${SERVICE_ROOT}/package.json`, "utf8")) as { config?: { nodeOptions?: string } }).config?.nodeOptions ?? "";

/** The service's environment: nothing inherited but PATH and HOME; NODE_OPTIONS as the launchers set it. */
function serviceEnv(env: Record<string, string>): Record<string, string | undefined> {
  return { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: "info", NODE_OPTIONS: LAUNCHER_NODE_OPTIONS, ...extraServiceEnv, ...env };
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

/** An Active policy with the 3 rules, and the body of an evaluate request against it (all rules pass). */
async function evaluateRequestBody(nc: NatsConnection): Promise<string> {
  const policy = await okRequest(nc, "policy.commands.create", { ...POLICY, rules: RULES });
  const policyId = policy.aggregate_id as string;
  await okRequest(nc, "policy.commands.approve", { policy_id: policyId, approved_by: "bench" });
  await okRequest(nc, "policy.commands.activate", { policy_id: policyId, activated_by: "bench" });
  return JSON.stringify({
    policy_id: policyId,
    context: { data: { retention_days: 2600, region: "eu-west-1", encryption: { enabled: true, algorithm: "AES-256-GCM" } } },
  });
}

async function commandCounters(nc: NatsConnection): Promise<{ executed: number; conflictRetries: number; conflicts: number; chainBreaks: number }> {
  const sum = { executed: 0, conflictRetries: 0, conflicts: 0, chainBreaks: 0 };
  const replies = await nc.requestMany("$SRV.STATS.policy-service", "", { maxWait: 500 });
  for await (const m of replies) {
    const stats = m.json<{ endpoints?: { subject: string; data?: { commands?: typeof sum } }[] }>();
    const data = stats.endpoints?.find((e) => e.subject === "policy.commands.update")?.data?.commands;
    if (data) {
      sum.executed += data.executed;
      sum.conflictRetries += data.conflictRetries;
      sum.conflicts += data.conflicts;
      sum.chainBreaks += data.chainBreaks ?? 0; // absent from builds before chained appends
    }
  }
  return sum;
}

/** Messages the service's connections have sent to these servers (its client connections, by name). */
async function serviceSentMsgs(servers: NatsServer[]): Promise<number> {
  let sum = 0;
  for (const server of servers) {
    const connz = await server.monitor<{ connections?: { name?: string; in_msgs: number }[] }>("/connz?limit=1024");
    sum += (connz.connections ?? []).filter((c) => c.name?.startsWith("policy-service@")).reduce((total, c) => total + c.in_msgs, 0);
  }
  return sum;
}

const CLOCK_TICKS_PER_S = 100; // USER_HZ: what /proc/PID/stat counts in on Linux

/** utime + stime of a process (all its threads) in µs; 0 when it is gone or not on Linux. */
function processCpuUs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS_PER_S;
  } catch {
    return 0;
  }
}

interface CpuReading { client: number; service: number; responders: number; servers: number }

/** The processes whose CPU time is counted: the service's instances, the helpers (echo, minimal command), the servers. */
interface Pids { services: number[]; responders: number[]; servers: number[] }

function readCpu(pids: Pids): CpuReading {
  const usage = process.cpuUsage();
  const sum = (list: number[]) => list.reduce((total, pid) => total + processCpuUs(pid), 0);
  return { client: usage.user + usage.system, service: sum(pids.services), responders: sum(pids.responders), servers: sum(pids.servers) };
}

function rssMiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

function rssSplit(pid: number): { rss_anon_mib?: number; rss_file_mib?: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1]);
    const anon = kib("RssAnon");
    const file = kib("RssFile");
    return Number.isFinite(anon) && Number.isFinite(file) ? { rss_anon_mib: +(anon / 1024).toFixed(1), rss_file_mib: +(file / 1024).toFixed(1) } : {};
  } catch {
    return {};
  }
}

/**
 * One memory sample of the service process. `rss_mib` is what the issue's figure counts: the resident set of the
 * instance's process, VmRSS of /proc/PID/status (Linux). The rest comes from the service's own /metrics
 * (METRICS_LISTEN; prom-client's default gauges: process.memoryUsage(), V8's heap spaces, GC time, CPU time).
 */
interface MemorySample {
  t_s: number;
  rss_mib: number | null;
  /** RssAnon (heap, malloc, stacks) and RssFile (the node binary's text and libraries, shared with other processes). */
  rss_anon_mib?: number;
  rss_file_mib?: number;
  heap_used_mib?: number;
  heap_total_mib?: number;
  external_mib?: number;
  new_space_mib?: number;
  old_space_mib?: number;
  /** V8's large-object space: objects over about 128 KiB (arrays and strings), each on pages of its own. */
  large_object_space_mib?: number;
  gc_seconds?: number;
  cpu_seconds?: number;
}

async function metricsText(metricsUrl: string): Promise<string | null> {
  try {
    const response = await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(2000) });
    return response.ok ? await response.text() : null;
  } catch {
    return null;
  }
}

/** Sum of the samples of one metric (all label sets) in a Prometheus text exposition. */
function metricSum(text: string, name: string, label?: string): number | undefined {
  let sum: number | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || (line[name.length] !== " " && line[name.length] !== "{")) continue;
    if (label && !line.includes(label)) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

async function sampleMemory(pid: number, metricsUrl: string, t0: number): Promise<MemorySample> {
  const mib = (bytes: number | undefined) => (bytes === undefined ? undefined : +(bytes / 2 ** 20).toFixed(1));
  const text = await metricsText(metricsUrl);
  const rss = rssMiB(pid);
  const sample: MemorySample = { t_s: +((Date.now() - t0) / 1000).toFixed(1), rss_mib: rss === null ? null : +rss.toFixed(1), ...rssSplit(pid) };
  if (text === null) return sample;
  const m = (name: string, label?: string) => metricSum(text, `policy_service_${name}`, label);
  return {
    ...sample,
    heap_used_mib: mib(m("nodejs_heap_size_used_bytes")),
    heap_total_mib: mib(m("nodejs_heap_size_total_bytes")),
    external_mib: mib(m("nodejs_external_memory_bytes")),
    new_space_mib: mib(m("nodejs_heap_space_size_total_bytes", 'space="new"')),
    old_space_mib: mib(m("nodejs_heap_space_size_total_bytes", 'space="old"')),
    large_object_space_mib: mib(m("nodejs_heap_space_size_total_bytes", 'space="large_object"')),
    gc_seconds: m("nodejs_gc_duration_seconds_sum"),
    cpu_seconds: m("process_cpu_seconds_total"),
  };
}

function printSample(label: string, s: MemorySample): void {
  console.log(`${label}: RSS ${s.rss_mib} MiB (anon ${s.rss_anon_mib}, file ${s.rss_file_mib}), heap used ${s.heap_used_mib} / total ${s.heap_total_mib} MiB ` +
    `(new space ${s.new_space_mib}, old space ${s.old_space_mib}, large objects ${s.large_object_space_mib}), external ${s.external_mib} MiB, ` +
    `GC ${s.gc_seconds?.toFixed(1)} s of ${s.cpu_seconds?.toFixed(1)} s CPU`);
}

/** Samples the service's memory every `everyMs` until stopped (sampling never overlaps itself). */
function startSampler(pid: number, metricsUrl: string, t0: number, everyMs: number, onSample?: (s: MemorySample) => void): { samples: MemorySample[]; stop(): Promise<void> } {
  const samples: MemorySample[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const s = await sampleMemory(pid, metricsUrl, t0);
      samples.push(s);
      onSample?.(s);
      const wait = everyMs - ((Date.now() - t0) % everyMs);
      for (let waited = 0; waited < wait && !stopped; waited += 100) await sleep(Math.min(100, wait - waited));
    }
  })();
  return { samples, stop: async () => { stopped = true; await loop; } };
}

const peakRss = (samples: MemorySample[]) => Math.max(...samples.map((x) => x.rss_mib ?? 0));

/** Least-squares slope of y over x (per unit of x); NaN with fewer than two points. */
function slope(points: [number, number][]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? NaN : sxy / sxx;
}

/** Creates `count` policies through the service, `inFlight` at a time; returns the ids of those created. */
async function createPolicies(nc: NatsConnection, count: number, inFlight = 64): Promise<{ ids: string[]; failed: number; seconds: number }> {
  const t0 = Date.now();
  const ids: string[] = [];
  let next = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < count) {
      next++;
      const reply = await request(nc, "policy.commands.create", POLICY).catch(() => ({ ok: false }) as Record<string, any>);
      if (reply.ok === true) ids.push(reply.aggregate_id as string);
      else failed++;
    }
  }));
  return { ids, failed, seconds: (Date.now() - t0) / 1000 };
}

const POLICY = {
  name: "Bench retention policy",
  description: "Data must be retained for seven years and encrypted at rest; created by the benchmark to give the event a realistic size",
  policy_type: "Retention",
  enforcement: "Mandatory",
  scope: "Organization",
};

interface Phase {
  name: string;
  op: () => Promise<boolean>;
  /** Lost append races per executed command are counted for this phase ($SRV.STATS deltas). */
  countConflicts?: boolean;
  inFlight?: number[];
}

/**
 * Measures `phases` at each in-flight level in interleaved slices (round after round, every phase once per round).
 * `nc` asks the instances for their counters ($SRV.STATS); `servers` count the instances' messages (/connz).
 */
async function measurePhases(topology: string, phases: Phase[], ctx: { nc: NatsConnection; servers: NatsServer[]; pids: Pids }, results: PhaseResult[]): Promise<void> {
  const { nc, servers, pids } = ctx;
  for (const n of IN_FLIGHT) {
    const active = phases.filter((p) => (p.inFlight ?? IN_FLIGHT).includes(n));
    const acc = new Map(active.map((p) => [p.name, { latencies: [], errors: 0, seconds: 0 } as Accumulator]));
    const conflicts = new Map(active.map((p) => [p.name, { executed: 0, conflictRetries: 0, conflicts: 0, chainBreaks: 0 }]));
    const sent = new Map(active.map((p) => [p.name, 0]));
    const cpu = new Map(active.map((p) => [p.name, { client: 0, service: 0, responders: 0, servers: 0 } as CpuReading]));
    for (const p of active) await slice(n, warmupMs, p.op, null);
    for (let round = 0; round < rounds; round++) {
      for (const p of active) {
        const before = p.countConflicts ? await commandCounters(nc) : null;
        const sentBefore = await serviceSentMsgs(servers);
        const cpuBefore = readCpu(pids);
        await slice(n, (seconds * 1000) / rounds, p.op, acc.get(p.name)!);
        // Drain: replies still in flight when the slice ended are counted with it.
        sent.set(p.name, sent.get(p.name)! + (await serviceSentMsgs(servers)) - sentBefore);
        // The audit's linger (20 ms) and the last acks: the phase's work that finishes after its slice.
        await sleep(50);
        const cpuAfter = readCpu(pids);
        const c = cpu.get(p.name)!;
        for (const k of ["client", "service", "responders", "servers"] as const) c[k] += cpuAfter[k] - cpuBefore[k];
        if (before) {
          const after = await commandCounters(nc);
          const c = conflicts.get(p.name)!;
          c.executed += after.executed - before.executed;
          c.conflictRetries += after.conflictRetries - before.conflictRetries;
          c.conflicts += after.conflicts - before.conflicts;
          c.chainBreaks += after.chainBreaks - before.chainBreaks;
        }
      }
    }
    for (const p of active) {
      const r = summarise(topology, p.name, n, acc.get(p.name)!);
      const c = cpu.get(p.name)!;
      const perOp = (us: number) => +(us / Math.max(1, r.ops + r.errors)).toFixed(1);
      r.cpuUsPerOp = {
        client: perOp(c.client), service: perOp(c.service), responders: perOp(c.responders), servers: perOp(c.servers),
        total: perOp(c.client + c.service + c.responders + c.servers),
      };
      if (!p.name.startsWith("raw") && !p.name.startsWith("minimal")) r.serviceMsgsPerOp = sent.get(p.name)! / Math.max(1, r.ops + r.errors);
      if (p.countConflicts) {
        const c = conflicts.get(p.name)!;
        r.conflictRetryRate = c.executed > 0 ? c.conflictRetries / c.executed : 0;
        r.conflicts = c.conflicts;
        r.chainBreakRate = c.executed > 0 ? c.chainBreaks / c.executed : 0;
      }
      results.push(r);
    }
  }
}

/**
 * `--instances N` (N > 1): N instances of the service contending for the same aggregates, as the instances of a
 * cluster do in a deployment (one instance on one node cannot lose an append race: its commands on an aggregate run one
 * at a time). At R3 the instances sit on the nodes in turn (the first one is the one-instance phases' instance) and
 * the load goes through one client connection per node, so that each instance takes its own node's requests (NATS
 * prefers a queue subscriber on the publisher's node); at R1 all share the one node and its connection. Measured after
 * the one-instance phases (the extra instances' projections follow every event, so they do not run during those),
 * with the minimal command measured again beside them as the ceiling.
 */
async function contention(topology: string, servers: NatsServer[], replicas: number,
  base: { nc: NatsConnection; pids: Pids; many: string[]; hot: number; minimalPhase: Phase | undefined }, results: PhaseResult[]): Promise<void> {
  const label = `${topology}, ${INSTANCES} instances`;
  const extra: { pid: number; stop(): Promise<void> }[] = [];
  const clients: NatsConnection[] = [];
  let counter = 0;
  const update = (count: number) => async () => {
    const i = counter++;
    const body = { policy_id: base.many[i % count], updated_by: "bench", name: `c${i}` };
    return (await request(clients[i % clients.length]!, "policy.commands.update", body)).ok === true;
  };
  const contended = IN_FLIGHT.filter((n) => n > 1);
  const phases: Phase[] = [
    ...(base.minimalPhase ? [{ ...base.minimalPhase, inFlight: contended }] : []),
    { name: `update (${base.many.length} aggregates)`, op: update(base.many.length), countConflicts: true, inFlight: contended },
    { name: `update (${base.hot} hot aggregates)`, op: update(base.hot), countConflicts: true, inFlight: contended },
  ].filter((p) => wanted(p.name));
  if (contended.length === 0 || !phases.some((p) => p.name.startsWith("update"))) return;
  try {
    for (let i = 1; i < INSTANCES; i++) {
      extra.push(await startLoggedInstance({ NATS_URL: servers[i % servers.length]!.url, STREAM_REPLICAS: String(replicas) }));
    }
    if (replicas > 1) for (const server of servers) clients.push(await connect({ servers: server.url }));
    else clients.push(base.nc);
    const pids: Pids = { ...base.pids, services: [...base.pids.services, ...extra.map((e) => e.pid)] };
    await measurePhases(label, phases, { nc: base.nc, servers, pids }, results);
  } finally {
    for (const c of clients) if (c !== base.nc) await c.close().catch(() => undefined);
    for (const e of extra.reverse()) await e.stop().catch(() => undefined);
  }
}

/**
 * Another instance of the service, its log in a temporary file, removed when it stops. Ready on its own "ready" line:
 * a query, startBenchService's test, goes to whichever instance the queue group picks, here mostly the first. The
 * file is read only until then, so the benchmark does not pay for reading the log either.
 */
async function startLoggedInstance(env: Record<string, string>): Promise<{ pid: number; stop(): Promise<void> }> {
  const logPath = join(tmpdir(), `policy-bench-${process.pid}-${randomUUID()}.log`);
  const fd = openSync(logPath, "w");
  const child = spawn(process.execPath, [...(cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`] : []), ...nodeFlags, serviceMain], { cwd: SERVICE_ROOT, env: serviceEnv(env), stdio: ["ignore", fd, "inherit"] });
  closeSync(fd);
  const killAtExit = () => child.kill("SIGKILL");
  process.once("exit", killAtExit);
  const stop = async () => {
    await killChild(child);
    process.off("exit", killAtExit);
    rmSync(logPath, { force: true });
  };
  const deadline = Date.now() + 60_000;
  while (!readFileSync(logPath, "utf8").includes('"msg":"ready"')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(child.exitCode !== null ? `an extra instance exited with ${child.exitCode}` : "an extra instance was not ready within 60 s");
    }
    await sleep(100);
  }
  return { pid: child.pid ?? -1, stop };
}

/**
 * Every phase on one topology. All helpers and the service run at once (idle when not measured), and the phases are
 * measured in interleaved slices (round after round, every phase once per round), so that the load of a shared machine
 * changing over time weighs on the ceilings and on the service alike: the ratios within a run are what count.
 */
async function runTopology(topology: string, servers: NatsServer[], replicas: number, results: PhaseResult[], memory: Record<string, number | null>,
  leaders: Record<string, Record<string, string>>): Promise<void> {
  const server = servers[0]!;
  const url = server.url;
  const nc = await connect({ servers: url });
  const stops: (() => Promise<void>)[] = [];
  try {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const streamSettings = { storage: "file" as never, num_replicas: replicas };
    await jsm.streams.add({ name: "BENCH_PUB", subjects: ["bench.pub.>"], ...streamSettings });
    await jsm.streams.add({ name: "BENCH_MIN", subjects: ["bench.min.>"], ...streamSettings });
    const echo = await startResponder("echo", url);
    stops.push(echo.stop);
    const minimal = await startResponder("minimal", url);
    stops.push(minimal.stop);
    const service = await startBenchService(nc, { NATS_URL: url, STREAM_REPLICAS: String(replicas) });
    stops.push(service.stop);

    const MANY = 1000;
    const HOT = 4;
    const many: string[] = [];
    for (let i = 0; i < MANY; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => okRequest(nc, "policy.commands.create", POLICY)));
      many.push(...batch.map((r) => r.aggregate_id as string));
    }
    const evaluateBody = await evaluateRequestBody(nc);
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

    const pids: Pids = { services: [service.pid], responders: [echo.pid, minimal.pid], servers: servers.map((s) => s.pid) };
    await measurePhases(topology, phases, { nc, servers, pids }, results);
    memory[`${topology} service RSS after the phases (MiB)`] = rssMiB(service.pid);
    if (replicas > 1) leaders[topology] = await streamLeaders(jsm, server.name, ["BENCH_PUB", "BENCH_MIN", "POLICY_EVENTS", "POLICY_AUDIT"]);
    if (INSTANCES > 1) {
      const minimalPhase = phases.find((p) => p.name === "minimal command");
      await contention(topology, servers, replicas, { nc, pids, many, hot: HOT, minimalPhase }, results);
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await nc.close().catch(() => undefined);
  }
}

/**
 * Where each replicated stream's leader is after the phases: the server the client and the service are connected
 * to, or another one, to which every write then crosses a route first. Leaders are elected in every run, so a
 * surprising R3 figure can be checked against this (in six runs it did not visibly move evaluate's ratio).
 */
async function streamLeaders(jsm: JetStreamManager, connectedTo: string, streams: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of streams) {
    const leader = await jsm.streams.info(name).then((i) => i.cluster?.leader ?? "?", (err: unknown) => `unknown (${(err as Error).message})`);
    out[name] = leader === connectedTo ? `${leader} (the connected server)` : leader;
  }
  return out;
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
  const cols = ["topology", "phase", "in flight", "req/s", "p50 ms", "p99 ms", "errors", "vs ceiling", "× req/s", "× p50", "msgs/op", "retries/cmd", "CPU µs/op (svc)"];
  const rows = results.map((r) => [
    r.topology, r.name, String(r.inFlight), r.reqPerSec.toFixed(0), r.p50ms.toFixed(3), r.p99ms.toFixed(3), String(r.errors),
    r.ceiling ?? "", r.ratio !== undefined ? r.ratio.toFixed(2) : "", r.p50Ratio !== undefined ? r.p50Ratio.toFixed(2) : "",
    r.serviceMsgsPerOp !== undefined ? r.serviceMsgsPerOp.toFixed(2) : "",
    r.conflictRetryRate !== undefined ? `${r.conflictRetryRate.toFixed(2)}${r.conflicts ? ` (${r.conflicts} conflict)` : ""}` : "",
    r.cpuUsPerOp ? `${r.cpuUsPerOp.total.toFixed(0)} (${(r.name.startsWith("raw") || r.name.startsWith("minimal") ? r.cpuUsPerOp.responders : r.cpuUsPerOp.service).toFixed(0)})` : "",
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
    const metricsPort = await freePort();
    const metricsUrl = `http://127.0.0.1:${metricsPort}`;
    service = await startBenchService(nc, { NATS_URL: server.url, METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
    const t0 = Date.now();
    const during = startSampler(service.pid, metricsUrl, t0, 1000);
    const { failed, seconds: createSeconds } = await createPolicies(nc, count);
    await during.stop();
    console.log(`peak RSS while creating (sampled every second): ${peakRss(during.samples)} MiB`);
    const loaded = await sampleMemory(service.pid, metricsUrl, t0);
    printSample("after the creates", loaded);
    const rssLoaded = loaded.rss_mib;
    await sleep(2000);
    const settled = await sampleMemory(service.pid, metricsUrl, t0);
    printSample("2 s later", settled);
    const rssSettled = settled.rss_mib;
    await service.stop();
    service = undefined;
    const events = (await (await jetstreamManager(nc)).streams.info("POLICY_EVENTS")).state.messages;

    const spawnedAt = Date.now();
    const child = spawn(process.execPath, [...nodeFlags, serviceMain], {
      cwd: SERVICE_ROOT, env: serviceEnv({ NATS_URL: server.url, METRICS_LISTEN: `127.0.0.1:${metricsPort}` }), stdio: ["ignore", "ignore", "inherit"],
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
    const restarted = await sampleMemory(service.pid, metricsUrl, spawnedAt);
    printSample("after the restart", restarted);
    const figures = {
      policies_created: count - failed, create_seconds: +createSeconds.toFixed(1), events_in_stream: events,
      rss_mib_peak_while_creating: peakRss(during.samples), rss_mib_after_creates: rssLoaded, rss_mib_2s_later: rssSettled,
      restart_ms_to_first_command: commandAt ? commandAt - spawnedAt : null,
      restart_ms_to_first_query_answer: queryAnswerAt ? queryAnswerAt - spawnedAt : null,
      restart_ms_to_query_data: queryDataAt ? queryDataAt - spawnedAt : null,
      query_probes_no_responders: noResponders, query_probes_unavailable: unavailable,
      rss_mib_after_restart: restarted.rss_mib,
      node_flags: serviceNodeOptions ?? null, node_options: LAUNCHER_NODE_OPTIONS, service_env: extraServiceEnv,
      samples: { after_creates: loaded, two_seconds_later: settled, after_restart: restarted },
    };
    for (const [k, v] of Object.entries(figures)) if (typeof v !== "object" || v === null) console.log(`${k}: ${v}`);
    if (jsonFile) writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), node: process.version, nats_server: server.version, ...figures }, null, 2) + "\n");
  } finally {
    await service?.stop();
    await nc.close().catch(() => undefined);
    await server.stop();
  }
}

/**
 * `--steady SECONDS`: memory of one instance (R1) under a fixed mix at a fixed rate against `--policies N` (default
 * 100,000) policies it created first. Per 20 requests: 8 evaluate (3 rules, audit on), 8 get, 3 update, 1 update with
 * a command_id, except that every 200th request is a list (limit 20) instead; gets and updates go round-robin over
 * all N policies. Requests are issued on a clock
 * (`--rate`, default 400/s), not as fast as the service answers; at most 512 in flight (a request that would exceed
 * that is counted as skipped). RSS and the heap are sampled every `--sample-every` seconds (default 10). The slope is
 * fitted (least squares) to the samples after the warm-up (the first 20 % of the run, at least 60 s): flat means the
 * fitted RSS growth over the rest of the run stays under 5 % of the RSS at the end of the warm-up; a run too short to
 * leave two samples after the warm-up reports flat as null (not judged), with `flat_not_judged` saying why.
 */
async function steadyLoad(durationS: number): Promise<void> {
  const policies = Number(option("--policies") ?? 100_000) || 100_000;
  const rate = Number(option("--rate") ?? 400) || 400;
  const everyS = Number(option("--sample-every") ?? 10) || 10;
  const maxInFlight = 512;
  const server = await startNatsServer({ syncAlways });
  const nc = await connect({ servers: server.url });
  let service: { pid: number; stop(): Promise<void> } | undefined;
  try {
    const metricsPort = await freePort();
    const metricsUrl = `http://127.0.0.1:${metricsPort}`;
    service = await startBenchService(nc, { NATS_URL: server.url, METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
    const pid = service.pid;
    const setupT0 = Date.now();
    const during = startSampler(pid, metricsUrl, setupT0, 1000);
    const created = await createPolicies(nc, policies);
    await during.stop();
    const loaded = await sampleMemory(pid, metricsUrl, setupT0);
    console.log(`${created.ids.length} policies created in ${created.seconds.toFixed(1)} s (${created.failed} failed), peak RSS ${peakRss(during.samples)} MiB`);
    printSample("after the creates", loaded);
    const ids = created.ids;
    const evaluateBody = await evaluateRequestBody(nc);
    let n = 0;
    // A list scans and sorts every aggregate (tens of ms with 100,000): one in 200 requests, in place of a get.
    const MIX = ["evaluate", "get", "update", "evaluate", "get", "get", "evaluate", "update", "get", "evaluate",
      "update_cid", "get", "evaluate", "update", "get", "evaluate", "get", "evaluate", "evaluate", "get"] as const;
    const ops: Record<(typeof MIX)[number] | "list", () => Promise<boolean>> = {
      evaluate: async () => (await nc.request("policy.commands.evaluate", evaluateBody, { timeout: 10_000 })).json<{ ok: boolean }>().ok === true,
      get: async () => (await request(nc, "policy.queries.get", { id: ids[n % ids.length] })).ok === true,
      list: async () => (await request(nc, "policy.queries.list", { aggregate_type: "Policy", limit: 20 })).ok === true,
      update: async () => (await request(nc, "policy.commands.update", { policy_id: ids[n % ids.length], updated_by: "bench", name: `n${n}` })).ok === true,
      update_cid: async () => (await request(nc, "policy.commands.update", { policy_id: ids[n % ids.length], updated_by: "bench", name: `n${n}`, command_id: randomUUID() })).ok === true,
    };
    const counts = { ok: 0, failed: 0, skipped: 0 };
    const latencies: number[] = [];
    let inFlight = 0;
    const t0 = Date.now();
    const sampler = startSampler(pid, metricsUrl, t0, everyS * 1000, (x) =>
      process.stderr.write(`  t=${x.t_s}s RSS ${x.rss_mib} MiB (anon ${x.rss_anon_mib}) heap ${x.heap_used_mib}/${x.heap_total_mib} MiB external ${x.external_mib} MiB\n`));
    const end = t0 + durationS * 1000;
    let issued = 0;
    const pending = new Set<Promise<void>>();
    while (Date.now() < end) {
      // Issue what the clock says is due (at most one second's worth at once, if this loop fell behind).
      const due = Math.min(rate, Math.floor(((Date.now() - t0) / 1000) * rate) - issued);
      for (let i = 0; i < due; i++) {
        issued++;
        if (inFlight >= maxInFlight) {
          counts.skipped++;
          continue;
        }
        const kind = n % 200 === 199 ? "list" : MIX[n % MIX.length]!;
        const op = ops[kind];
        n++;
        inFlight++;
        const started = process.hrtime.bigint();
        const p: Promise<void> = op().then((ok) => {
          if (ok) counts.ok++; else counts.failed++;
          if (latencies.length < 2_000_000) latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
        }, () => { counts.failed++; }).finally(() => { inFlight--; pending.delete(p); });
        pending.add(p);
      }
      await sleep(5);
    }
    await Promise.allSettled([...pending]);
    await sampler.stop();
    const seriesEnd = await sampleMemory(pid, metricsUrl, t0);
    const samples = [...sampler.samples, seriesEnd];
    const warmupS = Math.max(60, durationS * 0.2);
    const afterWarmup = samples.filter((x) => x.t_s >= warmupS && x.rss_mib !== null);
    const rssSlope = slope(afterWarmup.map((x) => [x.t_s / 60, x.rss_mib!])); // MiB per minute
    const heapSlope = slope(afterWarmup.filter((x) => x.heap_used_mib !== undefined).map((x) => [x.t_s / 60, x.heap_used_mib!]));
    const fitSpanMin = afterWarmup.length >= 2 ? (afterWarmup.at(-1)!.t_s - afterWarmup[0]!.t_s) / 60 : 0;
    const rssAtWarmup = afterWarmup[0]?.rss_mib ?? NaN;
    const fittedGrowth = rssSlope * fitSpanMin;
    // Under two samples after the warm-up there is nothing to fit: "flat" is not judged (null), rather than false.
    const judged = afterWarmup.length >= 2;
    const flat = judged ? Number.isFinite(fittedGrowth) && fittedGrowth < 0.05 * rssAtWarmup : null;
    const sorted = latencies.sort((a, b) => a - b);
    const figures = {
      policies: ids.length + 1, duration_s: durationS, rate_per_s: rate, mix_per_20: "8 evaluate, 8 get, 3 update, 1 update with command_id; every 200th a list (limit 20)",
      requests_ok: counts.ok, requests_failed: counts.failed, requests_skipped: counts.skipped,
      achieved_per_s: +(counts.ok / durationS).toFixed(0), p50_ms: +percentile(sorted, 50).toFixed(3), p99_ms: +percentile(sorted, 99).toFixed(3),
      rss_mib_peak_while_creating: peakRss(during.samples), rss_mib_after_creates: loaded.rss_mib,
      rss_mib_min: Math.min(...samples.map((x) => x.rss_mib ?? Infinity)), rss_mib_max: peakRss(samples), rss_mib_end: seriesEnd.rss_mib,
      warmup_s: warmupS, rss_slope_mib_per_min: +rssSlope.toFixed(3), heap_used_slope_mib_per_min: +heapSlope.toFixed(3),
      rss_fitted_growth_after_warmup_mib: +fittedGrowth.toFixed(1), flat_criterion: "fitted RSS growth after the warm-up < 5 % of the RSS at its end",
      flat, ...(judged ? {} : { flat_not_judged: `fewer than two samples after the ${warmupS} s warm-up: run for at least ${warmupS + 2 * everyS} s` }),
      node_flags: serviceNodeOptions ?? null, node_options: LAUNCHER_NODE_OPTIONS, service_env: extraServiceEnv,
    };
    console.log("t_s\trss_mib\tanon\tfile\theap_used\theap_total\tnew_space\told_space\tlarge_obj\texternal\tgc_s\tcpu_s");
    for (const x of samples) {
      console.log([x.t_s, x.rss_mib, x.rss_anon_mib, x.rss_file_mib, x.heap_used_mib, x.heap_total_mib, x.new_space_mib, x.old_space_mib, x.large_object_space_mib, x.external_mib, x.gc_seconds?.toFixed(2), x.cpu_seconds?.toFixed(1)].join("\t"));
    }
    for (const [k, v] of Object.entries(figures)) console.log(`${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
    if (jsonFile) {
      writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), node: process.version, nats_server: server.version, ...figures, creating: during.samples, samples }, null, 2) + "\n");
      console.log(`JSON: ${jsonFile}`);
    }
  } finally {
    await service?.stop();
    await nc.close().catch(() => undefined);
    await server.stop();
  }
}

async function main(): Promise<void> {
  if (option("--steady")) {
    await steadyLoad(Number(option("--steady")) || 600);
    return;
  }
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
  /** By topology (R3 only): each replicated stream's leader (streamLeaders). */
  const leaders: Record<string, Record<string, string>> = {};
  const started = Date.now();
  let version = "";
  if (only !== "r3") {
    const server: NatsServer = await startNatsServer({ syncAlways });
    version = server.version;
    try {
      await runTopology("R1 (1 node)", [server], 1, results, memory, leaders);
    } finally {
      await server.stop();
    }
  }
  if (only !== "r1") {
    const cluster = await startCluster(3, { syncAlways });
    version = cluster.servers[0]!.version;
    try {
      await runTopology("R3 (3 nodes)", cluster.servers, 3, results, memory, leaders);
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
    ...(INSTANCES > 1 ? { contention: `then ${INSTANCES} instances (at R3 one per node in turn, one client connection per node): update phases at ${IN_FLIGHT.filter((n) => n > 1).join(", ")} in flight` } : {}),
  };
  const header = `policy-service benchmark — nats-server ${version}, file storage, sync_interval ${settings.sync_interval}, ` +
    `${seconds} s per phase in ${rounds} interleaved slices after ${warmupMs} ms warm-up, Node ${process.version}, ${machine.cpus} × ${machine.cpu_model}, ` +
    `load average ${machine.load_average_at_end.join(" ")}, ${((Date.now() - started) / 1000).toFixed(0)} s in all`;
  printTable(results, header);
  for (const [k, v] of Object.entries(memory)) console.log(`${k}: ${v === null ? "n/a" : v.toFixed(0)}`);
  for (const [topology, byStream] of Object.entries(leaders)) {
    console.log(`${topology} stream leaders: ${Object.entries(byStream).map(([stream, leader]) => `${stream} on ${leader}`).join(", ")}`);
  }
  if (jsonFile) {
    writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), machine, settings, memory, stream_leaders: leaders, results }, null, 2) + "\n");
    console.log(`JSON: ${jsonFile}`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
