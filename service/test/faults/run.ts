// The fault-injection run: 3 clustered nats-servers (sync_interval: always), 3 service instances (R3, or R1 with --replicas 1;
// SNAPSHOT_FREQUENCY=10), client workers that retry with their command_id, faults on a seeded schedule, then checks
// of what the stream, the replicas and every instance's read side hold. See docs/reliability.md.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { replay, type EventEnvelope } from "../../src/domain/index.js";
import { SERVICE_MAIN, onLines, startCluster, startService, sleep, type NatsCluster, type ServiceProcess } from "../helpers/nats.js";
import { readAllEvents, type StoredEventRow } from "../helpers/client.js";
import { rng, type Rng } from "./rng.js";
import { setLink, type NodeSlot } from "./topology.js";
import type { CommandReport, WorkerConfig } from "./worker.js";

export interface RunOptions {
  seed: number;
  durationS: number;
  clients: number;
  timeoutMs: number;
  maxTries: number;
  /** STREAM_REPLICAS: 3, or 1 (the stream on one server; its "leader" is that server, with no followers). */
  replicas: 1 | 3;
  /** The load and the checks without faults (a baseline); the "fault injected" checks are skipped. */
  noFaults: boolean;
  disableIdempotency: boolean;
  slots: NodeSlot[];
  /** Why the partition fault cannot run (no namespaces), or null. */
  partitionUnavailable: string | null;
  keepLogs: boolean;
  signal: AbortSignal;
}

const STREAM = "POLICY_EVENTS";
const HOT_POLICIES = 4;
// How long nats-server may take to be healthy again after a fault. A replica of a partitioned stream
// leader was seen catching up for ~100 s on this 2-core machine (seed 34, docs/reliability.md):
// nats-server's own catch-up, not the service's; the bound leaves room for it.
const RECOVERY_DEADLINE_MS = 150_000;
/** No new fault starts this close to the end of the load, so the clients' last retries meet a healthy cluster. */
const QUIET_END_MS = 15_000;
const MAX_EXTENSION_MS = 60_000;

type FaultKind = "nats-kill" | "service-kill" | "nats-stop" | "partition";
interface FaultRecord { kind: FaultKind; node: number; leader: boolean; startedAt: number; healedAt: number; recoveredMs: number | null; note: string }
interface Check { name: string; status: "pass" | "fail" | "skip"; detail: string }

function log(text: string): void {
  process.stdout.write(`${text}\n`);
}

function stamp(started: number): string {
  return `[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

const liveWorkers = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of liveWorkers) { try { child.kill("SIGKILL"); } catch { /* gone */ } }
});

interface Worker { child: ChildProcess; reports: CommandReport[]; done: Promise<void>; stderr: string[]; ready: Promise<void>; exited: Promise<number | null> }

function startWorker(cfg: WorkerConfig, wrap: string[]): Worker {
  const script = fileURLToPath(new URL("./worker.js", import.meta.url));
  const [cmd, ...prefix] = [...wrap, process.execPath];
  const child = spawn(cmd!, [...prefix, script], { stdio: ["pipe", "pipe", "pipe"] });
  const reports: CommandReport[] = [];
  const stderr: string[] = [];
  let markReady: () => void = () => undefined;
  let markDone: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => { markReady = resolve; });
  const done = new Promise<void>((resolve) => { markDone = resolve; });
  onLines(child.stdout!, (line) => {
    try {
      const msg = JSON.parse(line) as { t: string } & CommandReport;
      if (msg.t === "cmd") reports.push(msg);
      else if (msg.t === "ready") markReady();
      else if (msg.t === "done") markDone();
    } catch { stderr.push(line); }
  });
  child.stderr!.on("data", (chunk: Buffer) => { stderr.push(chunk.toString()); });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => { markDone(); markReady(); resolve(code); }));
  child.stdin!.write(`${JSON.stringify(cfg)}\n`);
  liveWorkers.add(child);
  child.once("exit", () => liveWorkers.delete(child));
  return { child, reports, done, stderr, ready, exited };
}

function countBy<T>(items: T[], key: (t: T) => string | undefined): Map<string, number> {
  const m = new Map<string, number>();
  for (const it of items) {
    const k = key(it);
    if (k !== undefined) m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

function fmt(m: Map<string, number>): string {
  return [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
}

function jsonEqual(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(JSON.parse(JSON.stringify(a ?? null)), JSON.parse(JSON.stringify(b ?? null)));
}

export async function runSuite(opts: RunOptions): Promise<number> {
  const started = Date.now();
  const say = (text: string) => log(`${stamp(started)} ${text}`);
  const r = rng(opts.seed);
  const checks: Check[] = [];
  const faults: FaultRecord[] = [];
  const logDir = mkdtempSync(join(tmpdir(), `policy-faults-${opts.seed}-`));
  let cluster: NatsCluster | null = null;
  const services: (ServiceProcess | null)[] = [null, null, null];
  const retired: ServiceProcess[] = [];
  const conns: NatsConnection[] = [];
  const workers: Worker[] = [];
  const stopped = new Set<number>();
  const partitioned = new Set<number>();
  let failed = false;

  const serviceEnv: Record<string, string> = {
    STREAM_REPLICAS: String(opts.replicas),
    SNAPSHOT_FREQUENCY: "10",
    LOG_LEVEL: process.env.FAULTS_SERVICE_LOG_LEVEL ?? "info",
    ...(opts.disableIdempotency ? { POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY: "1" } : {}),
  };
  const startInstance = (i: number): ServiceProcess => startService({ ...serviceEnv, NATS_URL: opts.slots[i]!.localUrl }, [], SERVICE_MAIN, { wrap: opts.slots[i]!.wrap });

  try {
    say(`starting 3 nats-servers (jetstream sync_interval: always) ${opts.slots[0]!.namespace ? `in network namespaces ${opts.slots.map((s) => `${s.namespace} (${s.host})`).join(", ")}` : "on 127.0.0.1"}`);
    cluster = await startCluster(3, { syncAlways: true }, (i) => {
      const s = opts.slots[i]!;
      return { host: s.host, bindHost: s.bindHost, wrap: s.wrap, port: s.port, httpPort: s.httpPort, clusterPort: s.clusterPort, extraConfig: `client_advertise: "${s.clientAdvertise}"` };
    });
    const servers = cluster.servers;
    // Interrupted (SIGINT/SIGTERM exits at once), the servers' data directories still go.
    const dataDirs = servers.map((s) => dirname(s.storeDir));
    process.on("exit", () => { for (const d of dataDirs) rmSync(d, { recursive: true, force: true }); });
    say(`nats-server ${servers[0]!.version}: ${servers.map((s) => `${s.name} pid ${s.pid}`).join(", ")}`);
    // All three provision the stream and buckets at once, as three leaves booting together would. An instance that
    // dies doing so is a failed check; it is started once more so the rest of the run still tests something.
    for (let i = 0; i < 3; i++) services[i] = startInstance(i);
    const starts = await Promise.allSettled(services.map((s) => s!.ready(90_000)));
    const startProblems: string[] = [];
    for (const [i, result] of starts.entries()) {
      if (result.status === "fulfilled") continue;
      const fatal = services[i]!.lines.find((l) => l.level >= 50);
      startProblems.push(`instance ${i + 1}: ${fatal ? `${String(fatal.msg)}: ${JSON.stringify((fatal as any).err?.message ?? fatal)}` : String(result.reason).slice(0, 300)}`);
      retired.push(services[i]!);
      services[i] = startInstance(i);
      await services[i]!.ready(90_000);
    }
    checks.push({
      name: "three instances start together on a fresh cluster",
      status: startProblems.length === 0 ? "pass" : "fail",
      detail: startProblems.length === 0 ? "all ready" : `${startProblems.join("; ")} (started once more to go on)`,
    });
    say(`3 service instances ready (STREAM_REPLICAS=${opts.replicas}, SNAPSHOT_FREQUENCY=10${opts.disableIdempotency ? ", POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY=1: idempotency OFF" : ""}): pids ${services.map((s) => s!.pid).join(", ")}`);
    const connOpts = { maxReconnectAttempts: -1, reconnectTimeWait: 250, ignoreClusterUpdates: true, timeout: 10_000 };
    const admin = await connect({ servers: servers.map((s) => s.url), ...connOpts });
    conns.push(admin);
    const jsm = await jetstreamManager(admin, { timeout: 10_000 });

    const adminCall = async (name: string, body: Record<string, unknown>): Promise<any> => {
      for (let attempt = 0; attempt < 10; attempt++) {
        try {
          const m = await admin.request(`policy.commands.${name}`, JSON.stringify(body), { timeout: 10_000 });
          const reply = m.json<any>();
          if (reply.ok) return reply;
          if (!["conflict", "unavailable"].includes(reply.error?.code)) throw new Error(`${name}: ${JSON.stringify(reply)}`);
        } catch (err) {
          if (attempt === 9) throw err;
        }
        await sleep(500);
      }
    };
    const hot: string[] = [];
    for (let i = 0; i < HOT_POLICIES; i++) {
      const reply = await adminCall("create", { name: `hot ${i}`, description: "written by every client", policy_type: "Operational", enforcement: "Recommended", scope: "Organization", command_id: crypto.randomUUID() });
      hot.push(reply.aggregate_id);
    }

    const streamLeader = async (): Promise<number | null> => {
      try {
        const info = await withTimeout(jsm.streams.info(STREAM), 5000, "stream info");
        const idx = servers.findIndex((s) => s.name === info.cluster?.leader);
        return idx >= 0 ? idx : null;
      } catch { return null; }
    };

    /** Servers up and healthy, stream led with both replicas current, 3 instances answering $SRV.PING. */
    const clusterHealthy = async (): Promise<string | null> => {
      for (const [i, s] of servers.entries()) {
        if (!s.running) return `${s.name} not running`;
        try {
          const res = await fetch(`http://${opts.slots[i]!.host}:${s.httpPort}/healthz`, { signal: AbortSignal.timeout(3000) });
          if (!res.ok) return `${s.name} /healthz ${res.status}: ${(await res.text().catch(() => "")).trim().slice(0, 200)}`;
        } catch (err) { return `${s.name} /healthz: ${(err as Error).message}`; }
      }
      try {
        const info = await withTimeout(jsm.streams.info(STREAM), 5000, "stream info");
        const replicas = info.cluster?.replicas ?? [];
        if (!info.cluster?.leader || replicas.length !== opts.replicas - 1 || !replicas.every((x) => x.current && !x.offline)) return `stream replicas ${JSON.stringify(info.cluster)}`;
      } catch (err) { return `stream info: ${(err as Error).message}`; }
      try {
        const ids = new Set<string>();
        for await (const p of await new Svcm(admin).client({ strategy: "count", maxMessages: 3, maxWait: 3000 }).ping("policy-service")) ids.add(p.id);
        if (ids.size !== 3) return `${ids.size} instances answer $SRV.PING`;
      } catch (err) { return `$SRV.PING: ${(err as Error).message}`; }
      return null;
    };
    let lastUnhealthy = "";
    const waitRecovered = async (since: number): Promise<number | null> => {
      let why: string | null = "not checked";
      while (Date.now() - since < RECOVERY_DEADLINE_MS && !opts.signal.aborted) {
        why = await clusterHealthy();
        if (why === null) return Date.now() - since;
        await sleep(500);
      }
      say(`  not recovered within ${RECOVERY_DEADLINE_MS / 1000} s: ${why}`);
      lastUnhealthy = why ?? "";
      return null;
    };

    // Clients: one worker per node, inside its namespace; each reaches every server.
    const perWorker = Math.max(1, Math.round(opts.clients / 3));
    for (let i = 0; i < 3; i++) {
      const reachable = [servers[i]!.url, ...servers.filter((_, j) => j !== i).map((s) => s.url)];
      const cfg: WorkerConfig = {
        index: i, seed: opts.seed, clients: perWorker, servers: reachable, hotPolicies: hot, timeoutMs: opts.timeoutMs, maxTries: opts.maxTries,
        // Long exemptions (revoked by their client) outlive the run, so no expiry lands while the read sides are compared.
        resendProbability: 0.1, shortExpiryMs: [3000, 8000], longExpiryMs: opts.durationS * 1000 + 3_600_000,
      };
      workers.push(startWorker(cfg, opts.slots[i]!.wrap));
    }
    await withTimeout(Promise.all(workers.map((w) => w.ready)), 30_000, "client workers");
    say(`load: ${perWorker * 3} clients (${perWorker} per node), timeout ${opts.timeoutMs} ms, up to ${opts.maxTries} tries per command, for ${opts.durationS} s`);

    // Faults on the seeded schedule: each kind once per round of four, in a seeded order. The first round always
    // completes: on a slow machine the load is extended for it (by at most MAX_EXTENSION_MS beyond the time its
    // faults took to recover, and said so). A recovery may take up to RECOVERY_DEADLINE_MS, more than the extension:
    // one slow catch-up after a partition (113 s, seed 2122141725) had left no time for the round's last kind.
    let loadEnds = Date.now() + opts.durationS * 1000;
    let hardEnd = loadEnds + MAX_EXTENSION_MS;
    const kinds: FaultKind[] = ["nats-kill", "service-kill", "nats-stop", "partition"];
    let round: FaultKind[] = [];
    let rounds = 0;
    if (opts.noFaults) say("no faults (--no-faults): the load alone");
    while (!opts.signal.aborted && !opts.noFaults) {
      const gap = r.int(2000, 5000);
      if (Date.now() + gap + QUIET_END_MS > loadEnds) {
        if (rounds > 0 || Date.now() + gap + QUIET_END_MS > hardEnd) break;
        const extended = Date.now() + gap + QUIET_END_MS + 1000;
        say(`load extended by ${Math.round((extended - loadEnds) / 1000)} s to complete the first round of faults`);
        loadEnds = extended;
      }
      await sleep(gap);
      if (round.length === 0) round = r.shuffle([...kinds]);
      const kind = round.shift()!;
      if (round.length === 0) rounds++;
      const leader = await streamLeader();
      const targetLeader = leader !== null && r.chance(0.5);
      const node = targetLeader ? leader : r.int(0, 2);
      // "leader" is about the nats-server; a service-kill picks an instance, wherever the stream leader is.
      const record: FaultRecord = { kind, node, leader: kind !== "service-kill" && node === leader, startedAt: Date.now(), healedAt: 0, recoveredMs: null, note: "" };
      if (kind === "partition" && opts.partitionUnavailable) {
        record.note = `skipped: ${opts.partitionUnavailable}`;
        record.healedAt = Date.now();
        faults.push(record);
        say(`fault partition skipped (${opts.partitionUnavailable})`);
        continue;
      }
      const srv = servers[node]!;
      switch (kind) {
        case "nats-kill": {
          const down = r.int(2000, 5000);
          say(`fault nats-kill: SIGKILL ${srv.name} (pid ${srv.pid}${record.leader ? ", stream leader" : ""}), restart in ${down} ms`);
          await srv.kill();
          await sleep(down);
          try { await srv.restart(); } catch (err) { record.note = `restart: ${(err as Error).message.slice(0, 200)}`; }
          break;
        }
        case "service-kill": {
          const svc = services[node]!;
          const down = r.int(500, 3000);
          say(`fault service-kill: SIGKILL instance ${node + 1} (pid ${svc.pid}) with commands in flight, restart in ${down} ms`);
          await svc.kill();
          retired.push(svc);
          await sleep(down);
          const fresh = startInstance(node);
          services[node] = fresh;
          try { await fresh.ready(90_000); } catch (err) { record.note = `restart: ${(err as Error).message.slice(0, 200)}`; }
          break;
        }
        case "nats-stop": {
          const pause = r.int(5000, 8000);
          say(`fault nats-stop: SIGSTOP ${srv.name} (pid ${srv.pid}${record.leader ? ", stream leader" : ""}) for ${pause} ms, then SIGCONT`);
          process.kill(srv.pid, "SIGSTOP");
          stopped.add(node);
          await sleep(pause);
          process.kill(srv.pid, "SIGCONT");
          stopped.delete(node);
          break;
        }
        case "partition": {
          const cut = r.int(6000, 10_000);
          const ns = opts.slots[node]!.namespace!;
          say(`fault partition: link of ${srv.name} (${ns}${record.leader ? ", stream leader" : ""}) down for ${cut} ms; its clients keep writing to their side`);
          setLink(ns, false);
          partitioned.add(node);
          await sleep(cut);
          setLink(ns, true);
          partitioned.delete(node);
          break;
        }
      }
      record.healedAt = Date.now();
      record.recoveredMs = await waitRecovered(record.healedAt);
      if (record.recoveredMs === null) record.note = lastUnhealthy;
      else if (rounds === 0) hardEnd += record.recoveredMs;
      faults.push(record);
      say(`  healed; cluster healthy again after ${record.recoveredMs === null ? "—" : `${record.recoveredMs} ms`}`);
    }
    while (Date.now() < loadEnds && !opts.signal.aborted) await sleep(Math.min(1000, loadEnds - Date.now()));

    // Stop the load: each client finishes the command it is on (retries included).
    const finishBound = opts.maxTries * (opts.timeoutMs + 2500) + 15_000;
    say(`stopping the load (clients finish their current command; at most ${Math.round(finishBound / 1000)} s)`);
    const stopAt = Date.now();
    for (const w of workers) w.child.stdin!.write("stop\n");
    let finished = true;
    try { await withTimeout(Promise.all(workers.map((w) => w.done)), finishBound, "client workers"); } catch { finished = false; }
    if (finished) await withTimeout(Promise.all(workers.map((w) => w.exited)), 10_000, "client workers' exit").catch(() => undefined);
    const crashedWorkers = workers.filter((w) => w.child.exitCode !== 0);
    checks.push({
      name: "clients finished their last command in time",
      status: finished && crashedWorkers.length === 0 ? "pass" : "fail",
      detail: `${Math.round((Date.now() - stopAt) / 1000)} s (bound ${Math.round(finishBound / 1000)} s)${crashedWorkers.map((w) => `\n      a worker ended with exit ${w.child.exitCode}: ${w.stderr.join("").slice(0, 300)}`).join("")}`,
    });
    const reports = workers.flatMap((w) => w.reports);
    for (const w of workers) if (w.stderr.length > 0) say(`worker stderr: ${w.stderr.join("").slice(0, 500)}`);

    // Settle: replicas at one last sequence; due exemptions expired.
    const replicaState = async (): Promise<{ lastSeqs: (number | null)[]; agree: boolean }> => {
      const lastSeqs: (number | null)[] = [];
      for (const s of servers) {
        try {
          const jsz = await s.monitor<any>("/jsz?accounts=true&streams=true");
          let seq: number | null = null;
          for (const acc of jsz.account_details ?? []) for (const st of acc.stream_detail ?? []) if (st.name === STREAM) seq = st.state?.last_seq ?? null;
          lastSeqs.push(seq);
        } catch { lastSeqs.push(null); }
      }
      // R1: the one server that holds the stream (the others have none to report).
      if (opts.replicas === 1) return { lastSeqs, agree: lastSeqs.filter((x) => x !== null).length === 1 };
      return { lastSeqs, agree: lastSeqs.every((x) => x !== null && x === lastSeqs[0]) };
    };
    let settled = await replicaState();
    const settleDeadline = Date.now() + 60_000;
    while (!settled.agree && Date.now() < settleDeadline) { await sleep(1000); settled = await replicaState(); }
    const healthyAtEnd = await waitRecovered(Date.now());
    // Instances still write after the load (exemptions expiring): a replica one entry behind the leader at the moment
    // of one look is Raft at work. The replicas must be current together at some look before the deadline.
    const allCurrent = (i: StreamInfo) => (i.cluster?.replicas ?? []).length === opts.replicas - 1 && (i.cluster?.replicas ?? []).every((x) => x.current && !x.offline && (x.lag ?? 0) === 0);
    let info = await jsm.streams.info(STREAM);
    const currentDeadline = Math.max(settleDeadline, Date.now() + 10_000);
    while (!allCurrent(info) && Date.now() < currentDeadline) { await sleep(500); info = await jsm.streams.info(STREAM); }
    const replicasCurrent = allCurrent(info);
    checks.push({
      name: opts.replicas === 1 ? "the stream held by one server, led, answering (R1)" : "all replicas at the same last sequence",
      status: settled.agree && replicasCurrent ? "pass" : "fail",
      detail: `/jsz last_seq per server ${settled.lastSeqs.join("/")}; stream info: leader ${info.cluster?.leader}, replicas ${(info.cluster?.replicas ?? []).map((x) => `${x.name} current=${x.current} lag=${x.lag ?? 0}`).join(", ")}`,
    });

    let events = await readAllEvents(admin, STREAM);
    const due = (rows: StoredEventRow[], at: number) => rows.filter((e) => e.envelope.event_type === "exemption_granted" && Date.parse(e.envelope.data.expires_at) <= at);
    const lastDue = Math.max(0, ...events.filter((e) => e.envelope.event_type === "exemption_granted").map((e) => Date.parse(e.envelope.data.expires_at)).filter((t) => t <= Date.now() + 15_000));
    while (Date.now() < lastDue + 3000) await sleep(500);
    const expiryCutoff = Date.now() - 2000;
    const expiryDeadline = Date.now() + 45_000;
    const terminal = (rows: StoredEventRow[], id: string) => rows.filter((e) => e.envelope.aggregate_id === id && (e.envelope.event_type === "exemption_expired" || e.envelope.event_type === "exemption_revoked")).length;
    for (;;) {
      events = await readAllEvents(admin, STREAM);
      const pending = due(events, expiryCutoff).filter((g) => terminal(events, g.envelope.aggregate_id) === 0);
      if (pending.length === 0 || Date.now() > expiryDeadline) break;
      await sleep(1000);
    }
    settled = await replicaState();
    while (!settled.agree && Date.now() < settleDeadline + 30_000) { await sleep(1000); settled = await replicaState(); }
    info = await jsm.streams.info(STREAM);
    events = await readAllEvents(admin, STREAM);
    say(`stream: ${events.length} events, last seq ${info.state.last_seq}`);

    // ---- checks on the stream
    const bySeq = new Map(events.map((e) => [e.seq, e]));
    const byCommand = new Map<string, StoredEventRow[]>();
    for (const e of events) {
      const id = e.envelope.command_id as string | null;
      if (id) byCommand.set(id, [...(byCommand.get(id) ?? []), e]);
    }
    const acked = reports.filter((x) => x.outcome === "ok");
    const losses: string[] = [];
    const mismatched: string[] = [];
    for (const a of acked) {
      const stored = byCommand.get(a.command_id) ?? [];
      const seqs = a.ack!.seqs;
      if (seqs.length > 0 && stored.length === 0) { losses.push(`${a.name} ${a.command_id}`); continue; }
      const atSeqs = seqs.map((s) => bySeq.get(s));
      const sameEvents = stored.length === seqs.length && atSeqs.every((e) => e?.envelope.command_id === a.command_id) &&
        (seqs.length === 0 || atSeqs[atSeqs.length - 1]!.envelope.version === a.ack!.version);
      if (!sameEvents) mismatched.push(`${a.name} ${a.command_id}: reply seqs [${seqs.join(",")}] v${a.ack!.version}, stored at [${stored.map((e) => `${e.seq} v${e.envelope.version}`).join(", ")}]`);
    }
    checks.push({
      name: "every acknowledged command stored exactly once, where its reply says",
      status: losses.length === 0 && mismatched.length === 0 ? "pass" : "fail",
      detail: `${acked.length} acknowledged; lost ${losses.length}; stored other than acknowledged ${mismatched.length}${[...losses, ...mismatched].slice(0, 5).map((x) => `\n      ${x}`).join("")}`,
    });
    const twice = [...byCommand.entries()].filter(([, rows]) => rows.length > 1);
    const extraEvents = twice.reduce((n, [, rows]) => n + rows.length - 1, 0);
    checks.push({
      name: "no command_id stored twice",
      status: twice.length === 0 ? "pass" : "fail",
      detail: `${byCommand.size} command_ids in the stream; ${twice.length} stored more than once (${extraEvents} extra events)${twice.slice(0, 5).map(([id, rows]) => `\n      ${id}: ${rows.map((e) => `${e.envelope.event_type}@${e.seq} ${e.envelope.aggregate_id.slice(0, 8)} v${e.envelope.version}`).join(", ")}`).join("")}`,
    });
    const byAggregate = new Map<string, StoredEventRow[]>();
    for (const e of events) byAggregate.set(e.envelope.aggregate_id, [...(byAggregate.get(e.envelope.aggregate_id) ?? []), e]);
    const gaps = [...byAggregate.entries()].filter(([, rows]) => !rows.every((e, i) => e.envelope.version === i + 1));
    const eventIds = new Set(events.map((e) => e.envelope.event_id));
    checks.push({
      name: "per-aggregate versions 1..n, event ids unique",
      status: gaps.length === 0 && eventIds.size === events.length ? "pass" : "fail",
      detail: `${byAggregate.size} aggregates; ${gaps.length} with a gap or repeat; ${events.length - eventIds.size} repeated event ids${gaps.slice(0, 3).map(([id, rows]) => `\n      ${id}: ${rows.map((e) => e.envelope.version).join(",")}`).join("")}`,
    });
    const resends = acked.filter((a) => a.resend);
    const inconsistent = resends.filter((a) => !a.resend!.consistent);
    checks.push({
      name: "a re-sent command gets its original reply",
      status: inconsistent.length === 0 ? "pass" : "fail",
      detail: `${resends.length} acknowledged commands re-sent through another server; ${inconsistent.length} answered differently${inconsistent.slice(0, 3).map((a) => `\n      ${a.name} ${a.command_id}: first v${a.ack!.version} seqs [${a.ack!.seqs.join(",")}], then ${JSON.stringify(a.resend!.second).slice(0, 200)}`).join("")}`,
    });
    // A short exemption whose last try reached the service after its own expires_at is refused by design (an
    // exemption that could never apply, docs/protocol.md); such a grant must not be stored either, which the
    // exactly-once check above covers (a stored but refused command is "stored other than acknowledged").
    const lateGrant = (x: CommandReport) =>
      x.name === "grant_exemption" && x.code === "validation_failed" && x.expires_at !== undefined && x.ended >= Date.parse(x.expires_at);
    const refused = reports.filter((x) => x.outcome === "refused" && !lateGrant(x));
    const lateGrants = reports.filter((x) => x.outcome === "refused" && lateGrant(x)).length;
    checks.push({
      name: "no unexpected refusal (each client's model predicts every answer)",
      status: refused.length === 0 ? "pass" : "fail",
      detail: `${refused.length} refused unexpectedly; ${lateGrants} grant(s) retried past their own expiry refused as documented${refused.slice(0, 3).map((x) => `\n      ${x.name} after ${x.tries} tries (${x.problems.join(" | ").slice(0, 240)})`).join("")}`,
    });
    const dueGrants = due(events, expiryCutoff);
    const badExpiry: string[] = [];
    for (const g of dueGrants) {
      const rows = byAggregate.get(g.envelope.aggregate_id) ?? [];
      const expired = rows.filter((e) => e.envelope.event_type === "exemption_expired").length;
      const revoked = rows.filter((e) => e.envelope.event_type === "exemption_revoked").length;
      if (!(expired === 1 && revoked === 0) && !(expired === 0 && revoked === 1)) badExpiry.push(`${g.envelope.aggregate_id}: expires ${g.envelope.data.expires_at}, ${expired} expired, ${revoked} revoked`);
    }
    const multiExpired = [...byAggregate.values()].filter((rows) => rows.filter((e) => e.envelope.event_type === "exemption_expired").length > 1).length;
    checks.push({
      name: "every exemption whose expiry passed has exactly one exemption_expired (or was revoked before)",
      status: badExpiry.length === 0 && multiExpired === 0 ? "pass" : "fail",
      detail: `${dueGrants.length} exemptions due, ${dueGrants.filter((g) => (byAggregate.get(g.envelope.aggregate_id) ?? []).some((e) => e.envelope.event_type === "exemption_expired")).length} expired; ${badExpiry.length} wrong; ${multiExpired} with several exemption_expired${badExpiry.slice(0, 3).map((x) => `\n      ${x}`).join("")}`,
    });

    // ---- every instance's read side vs. a fresh replay of the stream
    // Queries are served in the queue group across the cluster (the answering instance is not the one on the
    // requester's server), so each answer is attributed through $SRV.STATS: with no other query traffic, exactly one
    // instance's query counter moves per request. Every instance must answer every list page (whole state of every
    // aggregate) and a sample of gets.
    say("comparing every instance's read side with a replay of the stream");
    const lastSeq = info.state.last_seq;
    const replayed = new Map<string, unknown>();
    for (const [id, rows] of byAggregate) replayed.set(id, replay(rows.map((e) => e.envelope as unknown as EventEnvelope)));
    const instanceIds = services.map((s) => String(s!.lines.find((l) => l.msg === "ready")?.service_id ?? ""));
    const queryCounts = async (): Promise<Map<string, number>> => {
      const m = new Map<string, number>();
      for await (const st of await new Svcm(admin).client({ strategy: "count", maxMessages: 3, maxWait: 5000 }).stats("policy-service")) {
        m.set(st.id, (st.endpoints ?? []).filter((e) => e.subject.startsWith("policy.queries.")).reduce((n, e) => n + e.num_requests, 0));
      }
      return m;
    };
    let counts = await queryCounts();
    let unattributed = 0;
    /** Sends the query until instance `want` answers it (at most 40 tries); null if it never does. */
    const askInstance = async (want: number, subject: string, body: unknown): Promise<any | null> => {
      for (let attempt = 0; attempt < 40; attempt++) {
        let answer: any;
        try { answer = (await admin.request(`policy.queries.${subject}`, JSON.stringify(body), { timeout: 10_000 })).json<any>(); } catch { await sleep(500); counts = await queryCounts(); continue; }
        const next = await queryCounts();
        const moved = instanceIds.filter((id) => (next.get(id) ?? 0) !== (counts.get(id) ?? 0));
        counts = next;
        if (moved.length !== 1) { unattributed++; continue; }
        if (moved[0] === instanceIds[want]) return answer;
      }
      return null;
    };
    const readProblems: string[] = [];
    const readSummary: string[] = [];
    const sampleIds = rng(opts.seed).fork(7).shuffle([...replayed.keys()]).slice(0, 25);
    for (let i = 0; i < 3; i++) {
      const problems: string[] = [];
      // The projection has applied everything (projection_seq from list).
      const catchUp = Date.now() + 60_000;
      let projectionSeq = -1;
      while (Date.now() < catchUp) {
        projectionSeq = (await askInstance(i, "list", { limit: 1 }))?.projection_seq ?? -1;
        if (projectionSeq >= lastSeq) break;
        await sleep(500);
      }
      if (projectionSeq < lastSeq) problems.push(`projection_seq ${projectionSeq} < stream last seq ${lastSeq} after 60 s`);
      const listed = new Map<string, any>();
      let pages = 0;
      for (const type of ["Policy", "PolicySet", "PolicyExemption"]) {
        let cursor: string | null = null;
        do {
          const page: any = await askInstance(i, "list", { aggregate_type: type, limit: 500, ...(cursor ? { cursor } : {}) });
          if (!page?.ok) { problems.push(`list ${type}: ${page ? JSON.stringify(page).slice(0, 160) : "never answered by this instance"}`); break; }
          pages++;
          for (const item of page.items) listed.set(item.aggregate_id, item);
          cursor = page.next_cursor ?? null;
        } while (cursor);
      }
      let differ = 0;
      for (const [id, state] of replayed) {
        const st = state as { aggregate_type: string; version: number };
        const item = listed.get(id);
        if (!jsonEqual(item, { aggregate_type: st.aggregate_type, aggregate_id: id, version: st.version, state })) {
          differ++;
          if (problems.length < 4) problems.push(`list item ${id}: ${item ? `v${item.version} ${JSON.stringify(item.state).slice(0, 160)}` : "missing"} vs replay v${st.version}`);
        }
      }
      const extra = [...listed.keys()].filter((id) => !replayed.has(id));
      if (extra.length > 0) problems.push(`${extra.length} listed aggregates have no events`);
      let getDiffer = 0;
      for (const id of sampleIds) {
        const st = replayed.get(id) as { aggregate_type: string; version: number };
        const answer = await askInstance(i, "get", { id });
        if (!jsonEqual(answer, { ok: true, aggregate_type: st.aggregate_type, aggregate_id: id, version: st.version, state: st })) {
          getDiffer++;
          if (problems.length < 6) problems.push(`get ${id}: ${answer ? JSON.stringify(answer).slice(0, 160) : "never answered by this instance"}`);
        }
      }
      if (differ > 0 || getDiffer > 0) problems.push(`${differ} of ${replayed.size} list items and ${getDiffer} of ${sampleIds.length} gets differ from the replay`);
      readSummary.push(`instance ${i + 1}: projection_seq ${projectionSeq}, ${listed.size} listed in ${pages} pages, ${sampleIds.length} gets, ${differ + getDiffer + extra.length} differ`);
      readProblems.push(...problems.map((x) => `instance ${i + 1}: ${x}`));
    }
    const after = await jsm.streams.info(STREAM);
    if (after.state.last_seq !== lastSeq) readProblems.push(`the stream moved during the comparison (last seq ${lastSeq} → ${after.state.last_seq}): nothing should write once the load stopped and due exemptions expired`);
    checks.push({
      name: "every instance's read side (get, list) agrees with a fresh replay of the stream",
      status: readProblems.length === 0 ? "pass" : "fail",
      detail: `${replayed.size} aggregates replayed; ${readSummary.join("; ")}${unattributed ? `; ${unattributed} answers not attributable (ignored, re-asked)` : ""}${readProblems.slice(0, 8).map((x) => `\n      ${x}`).join("")}`,
    });
    const pingIds = new Set<string>();
    try { for await (const p of await new Svcm(admin).client({ strategy: "count", maxMessages: 3, maxWait: 3000 }).ping("policy-service")) pingIds.add(p.id); } catch { /* counted below */ }
    const alive = services.filter((s) => s?.running).length;
    const crashed = services.filter((s) => s && !s.running).length;
    checks.push({
      name: "every instance serving",
      status: alive === 3 && pingIds.size === 3 && instanceIds.every((id) => pingIds.has(id)) && healthyAtEnd !== null ? "pass" : "fail",
      detail: `${alive} of 3 processes running (${crashed} exited on their own), ${pingIds.size} answer $SRV.PING, all answered queries above`,
    });
    const unrecovered = faults.filter((f) => f.recoveredMs === null && !f.note.startsWith("skipped"));
    checks.push({
      name: "the cluster recovered after every fault",
      status: opts.noFaults ? "skip" : unrecovered.length === 0 ? "pass" : "fail",
      detail: opts.noFaults ? "--no-faults: no fault to recover from" : `${faults.length - unrecovered.length} of ${faults.length} within ${RECOVERY_DEADLINE_MS / 1000} s; longest ${Math.max(0, ...faults.map((f) => f.recoveredMs ?? 0))} ms${unrecovered.map((f) => `\n      ${f.kind} node ${f.node + 1} ${f.note}`).join("")}`,
    });
    const injected = faults.filter((f) => !f.note.startsWith("skipped"));
    for (const kind of kinds) {
      const n = injected.filter((f) => f.kind === kind).length;
      if (opts.noFaults) checks.push({ name: `fault injected: ${kind}`, status: "skip", detail: "--no-faults: a run of the load alone" });
      else if (kind === "partition" && opts.partitionUnavailable) checks.push({ name: "fault injected: partition", status: "skip", detail: opts.partitionUnavailable });
      else checks.push({ name: `fault injected: ${kind}`, status: n > 0 ? "pass" : "fail", detail: `${n} time(s)${n === 0 ? " (the run was too short for a full round; raise --duration)" : ""}` });
    }

    // ---- counts
    const retried = reports.filter((x) => x.tries > 1);
    const allRefused = reports.filter((x) => x.outcome === "refused");
    log("");
    log(`seed ${opts.seed} · ${opts.durationS} s of load${opts.noFaults ? " without faults" : ""} · ${perWorker * 3} clients · ${opts.slots[0]!.namespace ? "network namespaces" : "loopback"}${opts.disableIdempotency ? " · IDEMPOTENCY DISABLED (test switch)" : ""}`);
    log(`commands: ${reports.length} sent, ${acked.length} acknowledged, ${retried.length} retried (${reports.reduce((n, x) => n + x.tries, 0)} tries in all), ${allRefused.length} refused (${allRefused.length - refused.length} of them grants retried past their own expiry), ${reports.filter((x) => x.outcome === "failed").length} failed after ${opts.maxTries} tries`);
    log(`  by command: ${fmt(countBy(reports, (x) => x.name))}`);
    log(`  refused by code: ${fmt(countBy(allRefused, (x) => x.code))}`);
    log(`  failed by code: ${fmt(countBy(reports.filter((x) => x.outcome === "failed"), (x) => x.code))}`);
    log(`  problems seen on tries: ${fmt(countBy(reports.flatMap((x) => x.problems.map((p) => p.split(":")[0]!)), (p) => p))}`);
    log(`faults: ${fmt(countBy(injected, (f) => `${f.kind}${f.leader ? " (leader)" : ""}`))}${faults.length > injected.length ? `; skipped ${faults.length - injected.length} partition(s)` : ""}`);
    for (const f of faults.filter((x) => x.kind === "partition" && !x.note)) {
      const side = reports.filter((x) => x.worker === f.node && x.started <= f.healedAt && x.ended >= f.startedAt);
      const others = reports.filter((x) => x.worker !== f.node && x.started <= f.healedAt && x.ended >= f.startedAt);
      log(`  partition of node ${f.node + 1}: cut-off side's clients had ${side.length} commands in flight (${side.filter((x) => x.outcome === "ok").length} acknowledged, ${side.filter((x) => x.outcome === "ok" && x.ended > f.healedAt).length} of them after the heal); the other side ${others.length} (${others.filter((x) => x.outcome === "ok" && x.ended <= f.healedAt).length} acknowledged during the cut)`);
    }
    log(`duplicates: ${twice.length} command_ids stored twice or more (${extraEvents} extra events); losses: ${losses.length}`);
    // What the instances did with the contended writes to the hot policies (counters since each one's last start).
    try {
      const sum: Record<string, number> = {};
      for await (const st of await new Svcm(admin).client({ strategy: "count", maxMessages: 3, maxWait: 3000 }).stats("policy-service")) {
        const counters = (st.endpoints ?? []).find((e) => e.subject === "policy.commands.update")?.data as { commands?: Record<string, number> } | undefined;
        for (const [k, v] of Object.entries(counters?.commands ?? {})) sum[k] = (sum[k] ?? 0) + v;
      }
      log(`instances (since each one's last start): ${sum.conflictRetries ?? 0} lost races, ${sum.forwarded ?? 0} commands forwarded to an aggregate's owner, ${sum.forwardedHere ?? 0} run for another instance, ${sum.forwardFallbacks ?? 0} run here because the owner had gone, ${sum.unavailable ?? 0} unavailable${opts.replicas === 1 ? `, ${sum.chainBreaks ?? 0} chain breaks` : ""}`);
    } catch (err) {
      log(`instances' command counters not read: ${(err as Error).message}`);
    }

    writeFileSync(join(logDir, "commands.jsonl"), reports.map((x) => JSON.stringify(x)).join("\n") + "\n");
    writeFileSync(join(logDir, "faults.json"), JSON.stringify(faults, null, 2));
  } catch (err) {
    failed = true;
    checks.push({ name: "the run completed", status: "fail", detail: (err as Error)?.stack ?? String(err) });
  } finally {
    for (const n of partitioned) { try { setLink(opts.slots[n]!.namespace!, true); } catch { /* deleted with the namespace */ } }
    if (cluster) for (const n of stopped) { try { process.kill(cluster.servers[n]!.pid, "SIGCONT"); } catch { /* gone */ } }
    for (const w of workers) { if (w.child.exitCode === null) w.child.kill("SIGKILL"); }
    for (const c of conns) await c.close().catch(() => undefined);
    for (const [i, s] of [...services, ...retired].entries()) {
      if (!s) continue;
      writeFileSync(join(logDir, `service-${i}.log`), [...s.lines.map((l) => JSON.stringify(l)), ...s.rawOutput].join("\n"));
    }
    await Promise.all(services.map((s) => s?.stop()));
    if (cluster) {
      cluster.servers.forEach((s, i) => writeFileSync(join(logDir, `nats-${i + 1}.log`), (s as unknown as { tail(n: number): string }).tail(200)));
      await cluster.stop();
    }
  }

  log("");
  for (const c of checks) log(`${c.status === "pass" ? "ok     " : c.status === "fail" ? "NOT OK " : "skip   "} ${c.name}: ${c.detail}`);
  const passed = checks.filter((c) => c.status === "pass").length;
  const failedChecks = checks.filter((c) => c.status === "fail").length;
  const skipped = checks.filter((c) => c.status === "skip").length;
  if (failed || failedChecks > 0 || opts.keepLogs) log(`logs (service and nats-server output, every command's outcome, the faults): ${logDir}`);
  else rmSync(logDir, { recursive: true, force: true });
  log(`reproduce: scripts/faults --seed ${opts.seed} --duration ${opts.durationS} --clients ${opts.clients}${opts.replicas === 1 ? " --replicas 1" : ""}${opts.noFaults ? " --no-faults" : ""}${opts.disableIdempotency ? " --disable-idempotency" : ""} (the schedule and the clients' choices repeat; timing does not)`);
  log(`took ${Math.round((Date.now() - started) / 1000)} s`);
  log(`faults: ${passed} passed, ${failedChecks} failed, ${skipped} skipped`);
  return failed || failedChecks > 0 ? 1 : 0;
}
