// Issue 3: many instances, one truth. Three nats-server nodes on loopback (R3 stream), three service instances
// each connected to a different node, clients on every node, one node SIGKILLed and restarted mid-run.
// Also: idempotency across instances, snapshots (and a corrupted one), and the cost of loading a long aggregate.
import { describe, test, type TestContext } from "node:test";
import { spawn, type ChildProcess } from "node:child_process";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";
import { decide, evolve, parseCommand, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { EventStore } from "../../src/adapters/nats/event-store.js";
import type { Logger } from "../../src/support/logger.js";
import { freePort, onLines, SERVICE_MAIN, SERVICE_ROOT, serverBinFromEnv, sleep, startCluster, startNatsServer, startService, type NatsCluster, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { cpuQuotaUnavailable, limitCpu, type CpuQuota } from "../helpers/cpu-quota.js";
import { call, callOk, policyBody, readAllEvents, streamInfo, type Json } from "../helpers/client.js";

interface ClusterRun {
  acked: number;
  attempts: number;
  retried: number;
  elapsedMs: number;
  maxGapMs: number;
  perInstance: number[];
}

async function startInstances(cluster: NatsCluster, extraEnv: Record<string, string> = {}): Promise<ServiceProcess[]> {
  const services = cluster.servers.map((s) => startService({ NATS_URL: s.url, STREAM_REPLICAS: "3", LOG_LEVEL: "info", ...extraEnv }));
  // Start-up races for stream creation are part of the test: all three provision concurrently.
  try {
    await Promise.all(services.map((s) => s.ready(45_000)));
  } catch (err) {
    await Promise.all(services.map((s) => s.stop()));
    throw err;
  }
  return services;
}

/** Three nodes, an instance and a client on each (clients[i] on node i); stops them all when `body` ends. */
async function withInstanceOnEveryNode(body: (clients: NatsConnection[]) => Promise<void>): Promise<void> {
  const cluster = await startCluster(3);
  let services: ServiceProcess[] = [];
  const clients: NatsConnection[] = [];
  try {
    services = await startInstances(cluster);
    for (const s of cluster.servers) clients.push(await connect({ servers: s.url }));
    await body(clients);
  } finally {
    for (const c of clients) await c.close().catch(() => undefined);
    await Promise.all(services.map((s) => s.stop()));
    await cluster.stop();
  }
}

async function waitReplicasCurrent(nc: NatsConnection, stream: string, timeoutMs = 30_000): Promise<Json> {
  const deadline = Date.now() + timeoutMs;
  let last: Json = {};
  while (Date.now() < deadline) {
    try {
      const info = await streamInfo(nc, stream);
      last = info.cluster ?? {};
      const replicas = info.cluster?.replicas ?? [];
      if (info.cluster?.leader && replicas.length === 2 && replicas.every((r) => r.current && !r.offline && (r.lag ?? 0) === 0)) return info as unknown as Json;
    } catch { /* leader election in progress */ }
    await sleep(200);
  }
  assert.fail(`replicas of ${stream} not current within ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

/**
 * Writes `count` events of one policy straight into the stream (test setup, 500 publishes in flight), with
 * envelopes produced by the domain itself so that replaying them is genuine: a create, then updates.
 */
async function writeDomainEvents(js: JetStreamClient, id: string, count: number): Promise<void> {
  let state: AggregateState | undefined;
  const envelopes: EventEnvelope[] = [];
  for (let v = 1; v <= count; v++) {
    const body = v === 1 ? { ...policyBody(), policy_id: id } : { policy_id: id, updated_by: "loader", name: `name-${v}` };
    const parsed = parseCommand(v === 1 ? "create" : "update", body);
    assert.ok(parsed.ok);
    const decision = decide(state, parsed.command, { now: "2026-01-01T00:00:00Z", refs: new Map() });
    assert.ok(decision.ok, JSON.stringify(decision));
    const e = decision.events[0]!;
    const envelope: EventEnvelope = {
      event_id: randomUUID(), event_type: e.event_type, aggregate_type: "Policy", aggregate_id: id, version: v,
      occurred_at: "2026-01-01T00:00:00Z", command_id: null, correlation_id: null, causation_id: null, data: e.data,
    };
    state = evolve(state, envelope);
    envelopes.push(envelope);
  }
  for (let i = 0; i < envelopes.length; i += 500) {
    await Promise.all(envelopes.slice(i, i + 500).map((e) => js.publish(`events.policy.${id}.${e.event_type}`, JSON.stringify(e), { msgID: e.event_id })));
  }
}

/**
 * Hundreds of concurrent `update`s on a handful of aggregates through clients on all three nodes, each retried
 * with its command_id until acknowledged, while the stream leader's node is SIGKILLed and later restarted.
 */
async function concurrencyScenario(bin: string | undefined, label: string): Promise<ClusterRun> {
  const cluster = await startCluster(3, bin ? { bin } : {});
  let services: ServiceProcess[] = [];
  const clients: NatsConnection[] = [];
  try {
    // Snapshots every 10 versions (issue 11's setting): retries then meet snapshots that cover their first attempt's
    // event, the path that stored commands twice on 0.9.0 (exactly-once.test.ts reproduces it deterministically).
    services = await startInstances(cluster, { SNAPSHOT_FREQUENCY: "10" });
    for (const s of cluster.servers) clients.push(await connect({ servers: s.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 }));
    const admin = await connect({ servers: cluster.urls.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    clients.push(admin);

    const AGGREGATES = 5;
    const COMMANDS = 300;
    const IN_FLIGHT = 24;
    const ids: string[] = [];
    for (let i = 0; i < AGGREGATES; i++) {
      const r = await call(clients[i % 3]!, "create", policyBody({ name: `agg-${i}` }));
      assert.equal(r.reply.ok, true, JSON.stringify(r.reply));
      ids.push(r.reply.aggregate_id);
    }

    const work = Array.from({ length: COMMANDS }, (_, i) => ({
      commandId: randomUUID(),
      body: { policy_id: ids[i % AGGREGATES], updated_by: `writer-${i % 7}`, name: `name-${i}` },
    }));
    const acked = new Map<string, Json>();
    let attempts = 0;
    let retried = 0;
    let lastAck = Date.now();
    let maxGapMs = 0;
    const started = Date.now();
    let next = 0;
    let killed = false;
    const kill = async () => {
      const info = await streamInfo(admin, "POLICY_EVENTS");
      const leader = info.cluster?.leader;
      const victim = cluster.servers.find((s) => s.name === leader) ?? cluster.servers[0]!;
      await victim.kill();
      await sleep(2000);
      await victim.restart();
    };
    let killing: Promise<void> | null = null;

    const worker = async (w: number) => {
      while (next < work.length) {
        const item = work[next++]!;
        if (!killed && next >= COMMANDS / 3) { killed = true; killing = kill(); }
        let lastProblem = "";
        for (let attempt = 0; ; attempt++) {
          attempts++;
          if (attempt > 0) retried++;
          const client = clients[(w + attempt) % 3]!;
          try {
            const { reply } = await call(client, "update", { ...item.body, command_id: item.commandId }, 12_000);
            if (reply.ok) {
              const now = Date.now();
              maxGapMs = Math.max(maxGapMs, now - lastAck);
              lastAck = now;
              acked.set(item.commandId, reply);
              break;
            }
            lastProblem = JSON.stringify(reply.error);
            if (!["conflict", "unavailable"].includes(reply.error.code)) {
              const errors = services.flatMap((s, i) => s.lines.filter((l) => l.level >= 50).slice(-3).map((l) => `#${i} ${JSON.stringify(l).slice(0, 600)}`));
              assert.fail(`unexpected refusal ${JSON.stringify(reply)}\n${errors.join("\n")}`);
            }
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            // timeout / no responders while the node is down: retry, same command_id, another node
            lastProblem = String(err);
          }
          if (Date.now() - started > 90_000) {
            const warnings = services.flatMap((s, i) => s.lines.filter((l) => l.level >= 40).slice(-5).map((l) => `#${i} ${JSON.stringify(l).slice(0, 300)}`));
            assert.fail(`${label}: command ${item.commandId} not acknowledged after 90 s; last problem: ${lastProblem}\n${warnings.join("\n")}`);
          }
          await sleep(100 + Math.random() * 200);
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, (_, w) => worker(w)));
    if (killing) await killing;
    const elapsedMs = Date.now() - started;

    await waitReplicasCurrent(admin, "POLICY_EVENTS");
    const events = await readAllEvents(admin, "POLICY_EVENTS");
    // Every acknowledged command stored exactly once.
    const perCommand = new Map<string, number>();
    for (const e of events) if (e.envelope.command_id) perCommand.set(e.envelope.command_id, (perCommand.get(e.envelope.command_id) ?? 0) + 1);
    assert.equal(acked.size, COMMANDS, "every command acknowledged (with retries)");
    for (const [commandId, reply] of acked) {
      assert.equal(perCommand.get(commandId), 1, `command ${commandId} stored ${perCommand.get(commandId) ?? 0} times`);
      const stored = events.find((e) => e.seq === reply.events[0].seq);
      assert.equal(stored?.envelope.command_id, commandId, "the acknowledged seq holds this command's event");
      assert.equal(stored?.envelope.version, reply.version);
    }
    // Versions per aggregate contiguous 1..n, event ids unique, nothing else stored.
    assert.equal(events.length, AGGREGATES + COMMANDS);
    assert.equal(new Set(events.map((e) => e.envelope.event_id)).size, events.length, "event ids unique");
    for (const id of ids) {
      const versions = events.filter((e) => e.envelope.aggregate_id === id).map((e) => e.envelope.version);
      assert.deepEqual(versions, Array.from({ length: versions.length }, (_, i) => i + 1), `versions of ${id}`);
      assert.equal(versions.length, 1 + COMMANDS / AGGREGATES);
    }
    // Work sharing: every instance served some requests.
    const perInstance: number[] = [];
    const stats = [];
    for await (const s of await new Svcm(admin).client().stats("policy-service")) stats.push(s);
    assert.equal(stats.length, 3, "three instances answer $SRV.STATS");
    for (const s of stats) {
      const n = (s.endpoints ?? []).filter((e) => e.subject.startsWith("policy.commands.")).reduce((sum, e) => sum + e.num_requests, 0);
      perInstance.push(n);
      assert.ok(n > 0, `instance ${s.id} handled no request`);
    }
    for (const svc of services) assert.ok(svc.running, "no instance crashed");
    for (const c of clients) await c.close();
    return { acked: acked.size, attempts, retried, elapsedMs, maxGapMs, perInstance };
  } finally {
    for (const c of clients) if (!c.isClosed()) await c.close().catch(() => undefined);
    await Promise.all(services.map((s) => s.stop()));
    await cluster.stop();
  }
}

describe("3-node cluster, R3, three instances", () => {
  test("concurrent commands with a node SIGKILLed: stored exactly once, contiguous versions, replicas current, work shared", async () => {
    const run = await concurrencyScenario(undefined, "newest");
    console.log(`# cluster (newest server): ${run.acked} commands acknowledged in ${run.elapsedMs} ms, ${run.attempts} attempts (${run.retried} retries), ` +
      `longest gap between acks ${run.maxGapMs} ms, per instance ${run.perInstance.join("/")}`);
  });

  test("the same concurrency scenario on the oldest supported server (NATS_SERVER_OLDEST_BIN)", async (t) => {
    const oldest = serverBinFromEnv("NATS_SERVER_OLDEST_BIN");
    if (!oldest) {
      console.log("# SKIPPED oldest-server cluster run: NATS_SERVER_OLDEST_BIN is not set (eval \"$(scripts/ensure-tools --oldest)\" sets it)");
      t.skip("NATS_SERVER_OLDEST_BIN not set");
      return;
    }
    const run = await concurrencyScenario(oldest.path, `oldest ${oldest.version}`);
    console.log(`# cluster (nats-server ${oldest.version}): ${run.acked} acknowledged in ${run.elapsedMs} ms, ${run.retried} retries, longest gap ${run.maxGapMs} ms`);
  });

  test("idempotency across instances: one command_id sent via every node (sequentially and at once) → identical replies, stored once", async () => {
    await withInstanceOnEveryNode(async (clients) => {
      const created = await call(clients[0]!, "create", policyBody());
      const id = created.reply.aggregate_id as string;

      const sequential = { policy_id: id, updated_by: "x", name: "seq", command_id: randomUUID() };
      const replies = [];
      for (const c of clients) replies.push((await call(c, "update", sequential)).reply);
      assert.equal(replies[0]!.ok, true);
      for (const r of replies) assert.deepEqual(r, replies[0]);

      for (let round = 0; round < 5; round++) {
        const body = { policy_id: id, updated_by: "x", name: `race-${round}`, command_id: randomUUID() };
        const concurrent = await Promise.all(clients.map((c) => call(c, "update", body)));
        assert.equal(concurrent[0]!.reply.ok, true, JSON.stringify(concurrent[0]!.reply));
        for (const r of concurrent) assert.deepEqual(r.reply, concurrent[0]!.reply, "identical replies from every instance");
      }
      // A create with a generated id, retried on every node: one aggregate.
      const createBody = { ...policyBody({ name: "generated" }), command_id: randomUUID() };
      const creates = await Promise.all(clients.map((c) => call(c, "create", createBody)));
      for (const r of creates) assert.deepEqual(r.reply, creates[0]!.reply);

      const events = await readAllEvents(clients[0]!, "POLICY_EVENTS");
      const counts = new Map<string, number>();
      for (const e of events) if (e.envelope.command_id) counts.set(e.envelope.command_id, (counts.get(e.envelope.command_id) ?? 0) + 1);
      assert.ok([...counts.values()].every((n) => n === 1), "every command_id stored once");
      assert.equal(events.filter((e) => e.envelope.aggregate_id === id).length, 1 + 1 + 5);
      assert.equal(events.filter((e) => e.envelope.command_id === createBody.command_id).length, 1);
    });
  });
});

describe("3-node cluster, R3: hot aggregates", () => {
  test("many commands at once on two aggregates through three instances: grouped into atomic batches, stored once, contiguous versions, every reply names its own event", async () => {
    await withInstanceOnEveryNode(async (clients) => {
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) ids.push((await call(clients[0]!, "create", policyBody({ name: `hot ${i}` }))).reply.aggregate_id as string);
      const PER_CLIENT = 40;
      const bodies = clients.flatMap((_, c) => Array.from({ length: PER_CLIENT }, (_, i) => ({ c, body: { policy_id: ids[i % 2]!, updated_by: "x", name: `n${c}-${i}`, command_id: randomUUID() } })));
      const replies = await Promise.all(bodies.map(async ({ c, body }) => {
        // Retried with the same command_id until acknowledged (a lost race across instances can end in `conflict`).
        for (let attempt = 0; attempt < 10; attempt++) {
          const r = (await call(clients[c]!, "update", body)).reply;
          if (r.ok === true) return r;
          assert.equal((r.error as Json | undefined)?.code, "conflict", JSON.stringify(r));
        }
        assert.fail(`not acknowledged: ${JSON.stringify(body)}`);
      }));

      const events = await readAllEvents(clients[0]!, "POLICY_EVENTS");
      const bySeq = new Map(events.map((e) => [e.seq, e]));
      for (const [i, r] of replies.entries()) {
        const stored = bySeq.get(((r.events as Json[])[0] as { seq: number }).seq);
        assert.equal(stored?.envelope.command_id, bodies[i]!.body.command_id, "the reply's seq holds this command's event");
        assert.equal(stored?.envelope.version, r.version);
      }
      const counts = new Map<string, number>();
      for (const e of events) if (e.envelope.command_id) counts.set(e.envelope.command_id as string, (counts.get(e.envelope.command_id as string) ?? 0) + 1);
      assert.equal(counts.size, bodies.length);
      assert.ok([...counts.values()].every((n) => n === 1), "every command_id stored once");
      for (const id of ids) {
        const versions = events.filter((e) => e.envelope.aggregate_id === id).map((e) => e.envelope.version);
        assert.deepEqual(versions, versions.map((_, i) => i + 1), `contiguous versions of ${id}`);
      }
      // Grouped appends happened: stored messages that share a batch id.
      const jsm = await jetstreamManager(clients[0]!);
      const batches = new Map<string, number>();
      for (const e of events) {
        const batchId = (await jsm.streams.getMessage("POLICY_EVENTS", { seq: e.seq }))?.header?.get("Nats-Batch-Id");
        if (batchId) batches.set(batchId, (batches.get(batchId) ?? 0) + 1);
      }
      const grouped = [...batches.values()].filter((n) => n > 1);
      console.log(`# hot aggregates: ${bodies.length} commands, ${grouped.length} batches of ${grouped.join("/")} commands`);
      assert.ok(grouped.length > 0, "some commands were appended together as one atomic batch");
    });
  });
});

describe("3-node cluster, R3: history read from the replicas", () => {
  // A history read used to create an ordered consumer: at R3 a proposal through the JetStream meta leader per
  // query. It now reads with direct gets, which a replica answers (docs/concurrency.md, "Loading always terminates").
  test("history of a 2,500-event aggregate through an instance on a follower node: complete, in order, no consumer created; each command's event is in the history asked for right after its reply", async () => {
    const cluster = await startCluster(3);
    let service: ServiceProcess | null = null;
    let nc: NatsConnection | null = null;
    try {
      service = startService({ NATS_URL: cluster.servers[0]!.url, STREAM_REPLICAS: "3", LOG_LEVEL: "info" });
      await service.ready(45_000); // provisions the stream
      const leaderNc = await connect({ servers: cluster.servers[0]!.url });
      const leader = ((await waitReplicasCurrent(leaderNc, "POLICY_EVENTS")) as Json).cluster.leader as string;
      const follower = cluster.servers.find((s) => s.name !== leader)!;
      const id = randomUUID();
      await writeDomainEvents(jetstream(leaderNc), id, 2_500);
      await leaderNc.close();

      // The instance that answers, and the client that asks, are both on a node that is not the stream's leader.
      // At debug level it logs each direct read that found the replica behind the leader.
      await service.stop();
      service = startService({ NATS_URL: follower.url, STREAM_REPLICAS: "3", LOG_LEVEL: "debug" });
      await service.ready(45_000);
      nc = await connect({ servers: follower.url });
      for (let i = 0; i < 100 && (await call(nc, "policy.queries.get", { id })).reply.version !== 2_500; i++) await sleep(100);
      assert.equal((await call(nc, "policy.queries.get", { id })).reply.version, 2_500, "the instance's projection has the aggregate");
      await waitReplicasCurrent(nc, "POLICY_EVENTS");

      // Every consumer the account creates is asked for here (the service's requests go through this node). Only
      // creations count: the projection's own consumer pulls (MSG.NEXT) whenever its pull expires.
      const consumerCreates: string[] = [];
      const watch = nc.subscribe("$JS.API.CONSUMER.CREATE.>", { callback: (_err, msg) => { consumerCreates.push(msg.subject); } });
      await nc.flush();

      const versions: number[] = [];
      const seqs: number[] = [];
      for (let from: number | null = 1; from !== null;) {
        const page = await callOk(nc, "policy.queries.history", { id, from_version: from, limit: 1000 });
        assert.equal(page.version, 2_500);
        for (const e of page.events as Json[]) { versions.push(e.version); seqs.push(e.seq); }
        from = page.next_from_version as number | null;
      }
      assert.deepEqual(versions, Array.from({ length: 2_500 }, (_, i) => i + 1), "every version once, oldest first");
      assert.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]!), "stream sequences ascending");
      await nc.flush();
      assert.equal(consumerCreates.length, 0, `a history read with current replicas creates no consumer: ${consumerCreates.join(", ")}`);

      // Read-after-write on a follower: the instance replies once its projection has the event, and the history read
      // that follows must find it on the stream, also when the replica that answers the direct gets lags behind.
      for (let round = 1; round <= 20; round++) {
        const updated = await callOk(nc, "update", { policy_id: id, updated_by: "tester", name: `round-${round}` });
        assert.equal(updated.version, 2_500 + round);
        const tail = await callOk(nc, "policy.queries.history", { id, from_version: 2_500 + round });
        assert.deepEqual((tail.events as Json[]).map((e) => [e.version, e.data.name]), [[2_500 + round, `round-${round}`]], `round ${round}`);
      }
      await nc.flush();
      watch.unsubscribe();
      const behind = service.lines.filter((l) => l.component === "history" && l.msg === "direct read incomplete; retrying").length;
      console.log(`# history on a follower: 2,500 events in 3 pages, then 20 writes each read back at once; direct reads retried ` +
        `because the replica was behind: ${behind}; consumers created: ${consumerCreates.length}`);
      assert.equal(consumerCreates.length, 0, `a read completes from the stream leader, not with a consumer: ${consumerCreates.join(", ")}`);
    } finally {
      await nc?.close().catch(() => undefined);
      await service?.stop();
      await cluster.stop();
    }
  });
});

/** Skips a CPU-quota test where no cgroup controller is usable, printing why; true when skipped. */
function skippedWithoutCpuQuota(t: TestContext, what: string): boolean {
  const unavailable = cpuQuotaUnavailable();
  if (!unavailable) return false;
  console.log(`# SKIPPED ${what}: ${unavailable}`);
  t.skip(unavailable);
  return true;
}

/** Direct gets of `stream` that `server` has answered (its `_sys_` subscriptions to them); null while it has none. */
async function directGetsAnswered(server: NatsServer, stream: string): Promise<number | null> {
  const subject = `$JS.API.DIRECT.GET.${stream}`;
  const subs = await server.monitor<Json>("/subsz?subs=1&limit=10000");
  const mine = ((subs.subscriptions_list as Json[] | undefined) ?? [])
    .filter((x) => (x.subject === subject || (x.subject as string).startsWith(`${subject}.`)) && x.qgroup === "_sys_");
  return mine.length > 0 ? mine.reduce((sum, x) => sum + (x.msgs as number), 0) : null;
}

/**
 * Waits (at most 20 s) until `server` answers `stream`'s direct gets, and returns how many it has answered. A follower
 * joins them once it is (nearly) caught up, checked every 2 s, and a starved one would not catch up: a CPU quota comes
 * after this, as for a replica that was healthy until then.
 */
async function untilAnsweringDirectGets(server: NatsServer, stream: string): Promise<number> {
  for (let i = 0; i < 100 && (await directGetsAnswered(server, stream)) === null; i++) await sleep(200);
  const answered = await directGetsAnswered(server, stream);
  assert.notEqual(answered, null, `${server.name} answers direct gets of ${stream}`);
  return answered!;
}

/** How far `serverName`'s replica of `stream` is behind, as the stream's leader reports it (0 when not listed). */
async function replicaLag(nc: NatsConnection, stream: string, serverName: string): Promise<number> {
  return (await streamInfo(nc, stream)).cluster?.replicas?.find((r) => r.name === serverName)?.lag ?? 0;
}

/** Waits (at most about 10 s) until that replica is 100 entries behind; returns the highest lag seen. */
async function untilBehind(nc: NatsConnection, stream: string, serverName: string): Promise<number> {
  let maxLag = 0;
  for (let i = 0; i < 100 && maxLag < 100; i++) {
    maxLag = Math.max(maxLag, await replicaLag(nc, stream, serverName));
    if (maxLag < 100) await sleep(100);
  }
  assert.ok(maxLag >= 100, `the starved replica fell behind: lag ${maxLag}`);
  return maxLag;
}

describe("3-node cluster, R3: history reads while a replica is starved of CPU", () => {
  // A read's direct gets are answered by any replica: nats-server (v2.14) subscribes a replica to them once it has
  // caught up at its start, and does not unsubscribe it when it falls behind later. A replica starved of CPU (an
  // overcommitted VM) falls behind under writes, and a read it answers lacks the newest events (or is a 404, when it
  // has none of them): the reader retries it, then reads what is missing from the stream leader (event-store.ts,
  // readEvents). Here that replica is real: a follower held to 5 % of a CPU by a cgroup quota while events are written.
  // Before, a read answered by it failed (`internal`, the 404 unhandled), and the fallback was an ordered consumer,
  // which the meta leader may place on that same replica.
  test("a follower held to 5 % of a CPU under a write load, then stopped: each history read right after a command has the command's event (within 5 s); direct reads that found that replica behind or silent were retried", async (t) => {
    if (skippedWithoutCpuQuota(t, "history reads with a starved replica")) return;
    const cluster = await startCluster(3);
    const node1 = cluster.servers[0]!;
    let service: ServiceProcess | null = null;
    let nc: NatsConnection | null = null;
    let quota: CpuQuota | null = null;
    let stalledPid = 0;
    let loading = false;
    let load: Promise<number> = Promise.resolve(0);
    try {
      nc = await connect({ servers: node1.url });
      // The starved replica must be neither the stream's leader (it takes every write) nor the server of the
      // projection's consumer (a consumer there delivers late: every command would wait for its projection), nor
      // node 1, through which the instance and the client talk. The instance is restarted until such a node exists.
      let victim: NatsServer | undefined;
      for (let attempt = 1; attempt <= 12 && !victim; attempt++) {
        service = startService({ NATS_URL: node1.url, STREAM_REPLICAS: "3", LOG_LEVEL: "debug" });
        await service.ready(45_000);
        const leader = ((await waitReplicasCurrent(nc, "POLICY_EVENTS")) as Json).cluster.leader as string;
        const consumerHosts = await eventConsumerHosts(nc);
        const meta = await cluster.metaLeader();
        const candidates = cluster.servers.filter((s) => s !== node1 && s.name !== leader && !consumerHosts.includes(s.name));
        victim = candidates.find((s) => s.name !== meta) ?? candidates[0];
        if (!victim) {
          await service.stop();
          service = null;
          await deleteEventConsumers(nc);
        }
      }
      assert.ok(service && victim, "no node other than node 1, the stream leader and the projection's consumer's, 12 times in a row");
      const id = (await callOk(nc, "create", policyBody())).aggregate_id as string;
      // The quota comes after it has joined the direct gets (a starved replica would never join them).
      const answeredBefore = await untilAnsweringDirectGets(victim, "POLICY_EVENTS");

      quota = limitCpu(victim.pid, 5);
      // The write load: other aggregates' events, straight to the stream, until the reads are done (at most 60 s or
      // 200 aggregates of 200 events).
      const js = jetstream(nc);
      loading = true;
      load = (async () => {
        let written = 0;
        const until = Date.now() + 60_000;
        for (let i = 0; loading && i < 1_000 && Date.now() < until; i++) {
          await writeDomainEvents(js, randomUUID(), 200);
          written += 200;
        }
        return written;
      })();
      const maxLag = await untilBehind(nc, "POLICY_EVENTS", victim.name);

      const consumerCreates: string[] = [];
      const watch = nc.subscribe("$JS.API.CONSUMER.CREATE.>", { callback: (_err, msg) => { consumerCreates.push(msg.subject); } });
      await nc.flush();
      const retriedBefore = service.lines.length;
      const missing: string[] = [];
      const ROUNDS = 30;
      for (let round = 1; round <= ROUNDS; round++) {
        const updated = await callOk(nc, "update", { policy_id: id, updated_by: "tester", name: `starved-${round}` });
        const version = updated.version as number;
        const tail = await callOk(nc, "policy.queries.history", { id, from_version: version }).catch((err: unknown) => {
          const lines = service!.lines.filter((l) => l.level >= 40 || l.component === "history").slice(-20).map((l) => JSON.stringify(l)).join("\n");
          throw new Error(`${String(err)}; the instance's log (warnings, and the history reader):\n${lines}`);
        });
        const got = (tail.events as Json[]).map((e) => `${e.version}:${e.data.name}`);
        if (tail.version !== version || got.join() !== `${version}:starved-${round}`) missing.push(`round ${round}: version ${tail.version}, events ${got.join(", ")}`);
      }
      await nc.flush();
      watch.unsubscribe();
      loading = false;
      const written = await load;
      const lagAtEnd = await replicaLag(nc, "POLICY_EVENTS", victim.name);
      quota.release();
      const answeredByVictim = ((await directGetsAnswered(victim, "POLICY_EVENTS")) ?? 0) - answeredBefore;
      const logged = (msg: string) => service!.lines.slice(retriedBefore).filter((l) => l.component === "history" && l.msg === msg).length;
      const retried = logged("direct read incomplete; retrying");
      const fromLeader = logged("direct read completed from the stream leader");
      console.log(`# history with a starved replica (${victim.name}, ${quota.percent} % of a CPU): ${ROUNDS} reads after their commands, ${missing.length} without the command's event; ` +
        `direct reads retried because the replica was behind: ${retried}; reads completed from the stream leader: ${fromLeader}; consumers created: ${consumerCreates.length}; ` +
        `direct gets it answered meanwhile: ${answeredByVictim}; its lag ${maxLag} before the reads, ${lagAtEnd} after; ${written} events written meanwhile`);
      assert.deepEqual(missing, []);
      assert.ok(retried > 0, "some direct reads were answered by the starved replica, behind the leader, and retried");
      assert.equal(consumerCreates.length, 0, "a read completes from the stream leader, not with a consumer");

      // The same replica stalled (SIGSTOP): it answers nothing. A read's direct get that goes to it gives up after
      // 1.5 s (event-store.ts, DIRECT_GET_DEADLINE_MS) and is tried again, within a client's default 5 s.
      stalledPid = victim.pid;
      process.kill(stalledPid, "SIGSTOP");
      const stalledMs: number[] = [];
      const stalledMissing: string[] = [];
      // Each read's first direct get goes to any of three replicas: until three reads waited for the stopped one
      // (at most 40 reads; none in 40 would be a chance of about 1 in 10 million).
      const waited = () => stalledMs.filter((ms) => ms >= 1_400).length;
      for (let round = 1; round <= 40 && waited() < 3; round++) {
        const updated = await callOk(nc, "update", { policy_id: id, updated_by: "tester", name: `stalled-${round}` });
        const version = updated.version as number;
        const started = Date.now();
        const tail = await call(nc, "policy.queries.history", { id, from_version: version }, 5_000).catch((err: unknown) => ({ reply: { error: String(err) } as Json }));
        stalledMs.push(Date.now() - started);
        const got = ((tail.reply.events ?? []) as Json[]).map((e) => `${e.version}:${e.data.name}`);
        if (got.join() !== `${version}:stalled-${round}`) stalledMissing.push(`round ${round}: ${JSON.stringify(tail.reply).slice(0, 300)}`);
      }
      console.log(`# history with that replica stalled (SIGSTOP): ${stalledMs.length} reads, ms: ${stalledMs.join(", ")}; ${stalledMissing.length} without the command's event within 5 s`);
      assert.deepEqual(stalledMissing, [], "every read answered within a client's default 5 s, with the command's event");
      assert.ok(waited() >= 1, `some reads waited for the stalled replica: ${stalledMs.join(", ")}`);
    } finally {
      if (stalledPid) process.kill(stalledPid, "SIGCONT");
      loading = false;
      await load.catch(() => 0);
      quota?.release();
      await nc?.close().catch(() => undefined);
      await service?.stop();
      await cluster.stop();
    }
  });
});

describe("3-node cluster, R3: remembered refusals while a replica of the command records is starved of CPU", () => {
  // A refusal stores no event: its retry is answered from the record written to the COMMANDS bucket before the
  // reply (step 2, docs/concurrency.md). Direct gets of that bucket are answered by any replica, also one that has
  // fallen behind (see the history test above for why a starved replica keeps answering them), and a replica without
  // the record made the retry be decided again: after the policy had been created meanwhile, the retry of a refused
  // `approve` was approved and stored an event (18 of 60 retries with the build before, 2026-12-08). Now each batch
  // of lookups also asks the bucket's leader for its last record, and trusts a replica's misses only when that
  // replica was at or past it (record-lookup.ts).
  test("a follower of the COMMANDS bucket held to 5 % of a CPU under a write load: each retry of a refused command gets the original refusal and stores nothing", async (t) => {
    if (skippedWithoutCpuQuota(t, "remembered refusals with a starved replica")) return;
    const COMMANDS_STREAM = "KV_POLICY_EVENTS_COMMANDS";
    const cluster = await startCluster(3);
    const node1 = cluster.servers[0]!;
    let service: ServiceProcess | null = null;
    let nc: NatsConnection | null = null;
    let quota: CpuQuota | null = null;
    let loading = false;
    let load: Promise<number> = Promise.resolve(0);
    try {
      nc = await connect({ servers: node1.url });
      service = startService({ NATS_URL: node1.url, STREAM_REPLICAS: "3", LOG_LEVEL: "debug" });
      await service.ready(45_000);
      await callOk(nc, "create", policyBody()); // the projection's consumer exists once an event is applied
      // The starved replica is neither node 1 (the instance's and the client's), nor the projection consumer's
      // server, nor the leader of either stream (each takes writes the commands wait for): those leaders are moved.
      const consumerHosts = await eventConsumerHosts(nc);
      const victim = cluster.servers.find((s) => s !== node1 && !consumerHosts.includes(s.name));
      assert.ok(victim, `a node other than node 1 and the consumer's (${consumerHosts.join(", ")})`);
      for (const stream of ["POLICY_EVENTS", COMMANDS_STREAM]) await moveLeaderOff(nc, stream, victim.name);
      // It must be answering the bucket's direct gets before it is starved (it joins them once caught up).
      const answeredBefore = await untilAnsweringDirectGets(victim, COMMANDS_STREAM);

      quota = limitCpu(victim.pid, 5);
      // The write load: filler records in the bucket, 500 puts in flight, until the rounds are done (at most 90 s).
      const kv = await new Kvm(nc).open("POLICY_EVENTS_COMMANDS"); // bound: its get asks the leader, its put is a publish
      const jsm = await jetstreamManager(nc);
      const filler = "x".repeat(200);
      loading = true;
      load = (async () => {
        let written = 0;
        const until = Date.now() + 90_000;
        for (let i = 0; loading && i < 2_000 && Date.now() < until; i++) {
          await Promise.all(Array.from({ length: 500 }, () => kv.put(`load-${randomUUID()}`, filler)));
          written += 500;
        }
        return written;
      })();
      const maxLag = await untilBehind(nc, COMMANDS_STREAM, victim.name);

      const linesBefore = service.lines.length;
      // Each round: approve policies that do not exist (not_found, remembered), create them, retry the approves. The
      // commands of a round go together, so that the instance batches their lookups (a lone one asks the leader).
      const ROUNDS = 10;
      const PER_ROUND = 6;
      const RETRIES = ROUNDS * PER_ROUND;
      const wrong: string[] = [];
      const storedByRetries: string[] = [];
      let directMisses = 0;
      for (let round = 1; round <= ROUNDS; round++) {
        const approves = Array.from({ length: PER_ROUND }, () => ({ policy_id: randomUUID(), approved_by: "tester", command_id: randomUUID() }));
        const firsts = await Promise.all(approves.map((a) => call(nc!, "approve", a)));
        firsts.forEach((first, k) => assert.equal(first.reply.error?.code, "not_found", `round ${round}.${k}: ${JSON.stringify(first.reply)}`));
        // The control: plain direct gets of the records just written (what the lookups were until the fix), some of
        // which the starved replica answers without them.
        for (const a of approves) {
          const got = await jsm.direct.getMessage(COMMANDS_STREAM, { last_by_subj: `$KV.POLICY_EVENTS_COMMANDS.${a.command_id}` });
          if (got === null) directMisses++;
        }
        await Promise.all(approves.map((a) => callOk(nc!, "create", policyBody({ policy_id: a.policy_id }))));
        const retries = await Promise.all(approves.map((a) => call(nc!, "approve", a)));
        retries.forEach((retry, k) => {
          if (JSON.stringify(retry.reply) === JSON.stringify(firsts[k]!.reply)) return;
          wrong.push(`round ${round}.${k}: ${JSON.stringify(retry.reply).slice(0, 200)}`);
          if (retry.reply.ok) storedByRetries.push(approves[k]!.policy_id);
        });
      }
      const lagAtEnd = await replicaLag(nc, COMMANDS_STREAM, victim.name);
      loading = false;
      const written = await load;
      quota.release();
      const answeredByVictim = ((await directGetsAnswered(victim, COMMANDS_STREAM)) ?? 0) - answeredBefore;
      const askedLeader = service.lines.slice(linesBefore).filter((l) => l.component === "record-lookup" && l.msg === "command-record lookup answered by a replica behind the bucket's leader; asking the leader").length;
      console.log(`# remembered refusals with a starved replica (${victim.name}, ${quota.percent} % of a CPU): ${RETRIES} retries, ${wrong.length} not the original refusal ` +
        `(${storedByRetries.length} stored an event); direct gets of a record right after its reply that found none: ${directMisses} of ${RETRIES}; ` +
        `lookups answered by a replica behind the leader (misses then asked of the leader): ${askedLeader}; its lag ${maxLag} before the rounds, ${lagAtEnd} after; ` +
        `direct gets of the bucket it answered meanwhile: ${answeredByVictim}; ${written} filler records written`);
      assert.deepEqual(wrong, [], "every retry of a refused command gets the original refusal");
      assert.ok(directMisses > 0, "the starved replica answered direct gets without records the leader had (else this run shows nothing)");
      assert.ok(askedLeader > 0, "some of the instance's lookups were answered by the starved replica, found behind the leader");
    } finally {
      loading = false;
      await load.catch(() => 0);
      quota?.release();
      await nc?.close().catch(() => undefined);
      await service?.stop();
      await cluster.stop();
    }
  });
});

describe("3-node cluster, R3: history through another instance", () => {
  // A request is handed to any member of the queue group, whichever node its client is on (nats-server prefers local
  // members only for messages that arrive over a route): each history read after a command is answered by an
  // instance that did not take it about two times in three.
  test("a command, then its aggregate's history through clients on the two other nodes (mostly answered by other instances): the event is there every time", async () => {
    await withInstanceOnEveryNode(async (clients) => {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await callOk(clients[i]!, "create", policyBody())).aggregate_id as string);
      const missing: string[] = [];
      const ROUNDS = 60;
      for (let round = 1; round <= ROUNDS; round++) {
        const writer = round % 3;
        const id = ids[round % ids.length]!;
        const updated = await callOk(clients[writer]!, "update", { policy_id: id, updated_by: "tester", name: `r${round}` });
        const version = updated.version as number;
        const reads = await Promise.all(clients.filter((_, i) => i !== writer).map((c) => callOk(c, "policy.queries.history", { id, from_version: version })));
        for (const r of reads) if (r.version !== version || r.events.length !== 1) missing.push(`round ${round}: version ${r.version}, ${r.events.length} event(s) from ${version}`);
      }
      console.log(`# history through other instances: ${ROUNDS} rounds, ${missing.length} read(s) without the command's event`);
      assert.deepEqual(missing, []);
    });
  });
});

/** The servers of the stream's consumers (the projection's is an R1 ordered consumer, placed by the meta leader). */
async function eventConsumerHosts(nc: NatsConnection): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const hosts: string[] = [];
  for await (const c of jsm.consumers.list("POLICY_EVENTS")) hosts.push(c.cluster?.leader ?? "?");
  return hosts;
}

/**
 * Deletes the stream's consumers: a stopped follower's ordered consumer (an instance's projection, ctl events) would
 * stay until its inactivity threshold (5 min) and be counted by eventConsumerHosts.
 */
async function deleteEventConsumers(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for await (const c of jsm.consumers.list("POLICY_EVENTS")) await jsm.consumers.delete("POLICY_EVENTS", c.name);
}

/** Asks `stream`'s leader to step down until it is not on `serverName` (a stepdown elects another replica). */
async function moveLeaderOff(nc: NatsConnection, stream: string, serverName: string): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const leader = ((await waitReplicasCurrent(nc, stream)) as Json).cluster.leader as string;
    if (leader !== serverName) return;
    await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, "", { timeout: 5_000 }).catch(() => undefined);
    await sleep(500);
  }
  assert.fail(`${stream}'s leader stayed on ${serverName} after 10 stepdowns`);
}

describe("3-node cluster, R3: the projection's consumer on a stalled server", () => {
  // A server that stalls (a VM paused or starved, a partition that leaves its routes up until their pings fail,
  // minutes later) answers nothing. Its ordered consumer misses heartbeats; the client library then only re-sends its
  // pulls and asks that server for the consumer's info, again and again. The projection recreates the consumer
  // instead (projection.ts, PROJECTION_MISSED_HEARTBEATS). Before, the read side stood still for the whole stall and
  // every command waited out the 2 s it gives its own projection.
  test("the consumer's server stopped (SIGSTOP) and left stopped: the consumer is recreated elsewhere; commands answer at once again and queries show them", async () => {
    const cluster = await startCluster(3);
    let service: ServiceProcess | null = null;
    let nc: NatsConnection | null = null;
    let stalledPid = 0;
    try {
      nc = await connect({ servers: cluster.servers[0]!.url });
      // The meta leader places the consumer; the test needs it on another node than the instance's own.
      let host = "";
      let metricsPort = 0;
      for (let attempt = 1; attempt <= 12 && !service; attempt++) {
        metricsPort = await freePort();
        service = startService({ NATS_URL: cluster.servers[0]!.url, STREAM_REPLICAS: "3", LOG_LEVEL: "info", METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
        await service.ready(45_000);
        const hosts = await eventConsumerHosts(nc);
        assert.equal(hosts.length, 1, `one consumer, the projection's: ${hosts.join(", ")}`);
        host = hosts[0]!;
        if (host === cluster.servers[0]!.name) {
          await service.stop();
          service = null;
          await deleteEventConsumers(nc);
        }
      }
      assert.ok(service, "the projection's consumer was placed on the instance's own node 12 times in a row");
      const victim = cluster.servers.find((s) => s.name === host)!;
      const id = (await callOk(nc, "create", policyBody())).aggregate_id as string;
      const roles = [(await streamInfo(nc, "POLICY_EVENTS")).cluster?.leader === host ? "stream leader" : "", (await cluster.metaLeader()) === host ? "meta leader" : ""].filter(Boolean);

      stalledPid = victim.pid;
      process.kill(stalledPid, "SIGSTOP");
      const stalledAt = Date.now();
      const BUDGET_MS = 30_000;
      let recoveredMs = -1;
      const slowMs: number[] = [];
      for (let round = 1; recoveredMs < 0 && Date.now() - stalledAt < BUDGET_MS; round++) {
        const started = Date.now();
        // While the stream or meta leader moves (when the stopped server led one), a command may be refused or late.
        const updated = await call(nc, "update", { policy_id: id, updated_by: "tester", name: `stalled-${round}` }).catch(() => null);
        const ms = Date.now() - started;
        if (updated?.reply.ok === true) {
          const seen = await call(nc, "policy.queries.get", { id }).catch(() => null);
          if (ms < 1_000 && seen?.reply.version === updated.reply.version) recoveredMs = Date.now() - stalledAt;
          else slowMs.push(ms);
        }
        if (recoveredMs < 0) await sleep(200);
      }
      console.log(`# projection consumer on a stopped server (${victim.name}${roles.length ? `, ${roles.join(", ")}` : ""}): commands answered at once and shown by ` +
        `queries ${recoveredMs} ms into the stall; ${slowMs.length} command(s) before that (ms: ${slowMs.join(", ")})`);
      assert.ok(recoveredMs >= 0, `within ${BUDGET_MS} ms of the stall, a command answered in under 1 s and shown by a query (command ms: ${slowMs.join(", ")})`);
      assert.ok(service.lines.some((l) => l.component === "projection" && l.msg === "projection consumer recreated"), "the instance says it recreated its consumer");
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const recreations = Number(/^policy_service_projection_consumer_recreations_total (\d+)$/m.exec(metrics)?.[1] ?? "0");
      assert.ok(recreations >= 1, `policy_service_projection_consumer_recreations_total counts it: ${recreations}`);
      const hosts = await eventConsumerHosts(nc);
      assert.ok(hosts.some((h) => h !== victim.name), `the new consumer is on a server that answers: ${hosts.join(", ")}`);
    } finally {
      if (stalledPid) process.kill(stalledPid, "SIGCONT");
      await nc?.close().catch(() => undefined);
      await service?.stop();
      await cluster.stop();
    }
  });
});

describe("3-node cluster, R3: `ctl events` on a stalled server", () => {
  // `policy-service ctl events` follows the stream through the same StreamFollower as the projection. Before, it had
  // a consumer of its own with the library's defaults: on a stalled server it printed nothing more until that server
  // resumed (stream-follower.ts).
  test("its consumer's server stopped (SIGSTOP) and left stopped: it prints the next event, each event once, and exits at --count", async () => {
    const cluster = await startCluster(3);
    const node1 = cluster.servers[0]!;
    let nc: NatsConnection | null = null;
    let child: ChildProcess | null = null;
    let stalledPid = 0;
    try {
      nc = await connect({ servers: node1.url });
      const jsm = await jetstreamManager(nc, { timeout: 15_000 });
      await jsm.streams.add({ name: "POLICY_EVENTS", subjects: ["events.policy.>"], num_replicas: 3 });
      const js = jetstream(nc);
      const id = randomUUID();
      // Retried until a stream leader answers (the stopped server may have led the stream); the message id makes a
      // retry of a publish that was stored after all a duplicate the server drops.
      const publishVersion = async (version: number): Promise<void> => {
        const deadline = Date.now() + 20_000;
        for (;;) {
          try {
            await js.publish(`events.policy.${id}.updated`, JSON.stringify({ version, data: { name: `v${version}` } }), { msgID: `${id}-${version}`, timeout: 2_000 });
            return;
          } catch (err) {
            if (Date.now() > deadline) throw err;
            await sleep(250);
          }
        }
      };
      await publishVersion(1);

      const stdout: string[] = [];
      const stderr: string[] = [];
      let exited: Promise<number | null> = Promise.resolve(null);
      let host = "";
      // The meta leader places the consumer; the test needs it on another node than ctl's own.
      for (let attempt = 1; attempt <= 12 && !child; attempt++) {
        stdout.length = 0;
        stderr.length = 0;
        const started = spawn(process.execPath, [SERVICE_MAIN, "ctl", "events", "--count", "2"], {
          cwd: SERVICE_ROOT,
          env: { PATH: process.env.PATH, HOME: process.env.HOME, NATS_URL: node1.url },
          stdio: ["ignore", "pipe", "pipe"],
        });
        exited = new Promise((resolve) => started.once("exit", (code) => resolve(code)));
        onLines(started.stdout!, (l) => stdout.push(l));
        onLines(started.stderr!, (l) => stderr.push(l));
        child = started;
        for (let i = 0; i < 150 && !stderr.some((l) => l.startsWith("following")); i++) await sleep(100);
        assert.ok(stderr.some((l) => l.startsWith("following")), `ctl events started: ${stderr.join("\n")}`);
        const hosts = await eventConsumerHosts(nc);
        assert.equal(hosts.length, 1, `one consumer, ctl's: ${hosts.join(", ")}`);
        host = hosts[0]!;
        if (host === node1.name) {
          started.kill("SIGTERM");
          assert.equal(await exited, 0, "ctl events ends on SIGTERM");
          child = null;
          await deleteEventConsumers(nc);
        }
      }
      assert.ok(child, "ctl's consumer was placed on its own node 12 times in a row");
      assert.ok(stderr.some((l) => l.includes("from sequence 2")), `"new events only" starts after the last one: ${stderr.join("\n")}`);
      await publishVersion(2);
      for (let i = 0; i < 100 && stdout.length < 1; i++) await sleep(100);
      assert.equal(stdout.length, 1, `ctl printed version 2: ${stdout.join("\n")}`);

      const victim = cluster.servers.find((s) => s.name === host)!;
      stalledPid = victim.pid;
      process.kill(stalledPid, "SIGSTOP");
      const stalledAt = Date.now();
      await publishVersion(3);
      const BUDGET_MS = 30_000;
      const code = await Promise.race([exited, sleep(BUDGET_MS).then(() => "still running")]);
      const ms = Date.now() - stalledAt;
      console.log(`# ctl events, its consumer on a stopped server (${victim.name}): ${code === 0 ? `printed the next event and exited ${ms} ms into the stall` : `${String(code)} ${ms} ms into the stall`}`);
      assert.equal(code, 0, `within ${BUDGET_MS} ms of the stall, ctl events printed version 3 and exited 0; stdout:\n${stdout.join("\n")}\nstderr:\n${stderr.join("\n")}`);
      child = null;
      assert.deepEqual(stdout.map((l) => l.split("\t")[3]), ["v2", "v3"], `each event once, in order: ${stdout.join("\n")}`);
      assert.ok(stderr.some((l) => l.startsWith("ctl events consumer silent")) && stderr.some((l) => l.startsWith("ctl events consumer recreated")), `ctl says it recreated its consumer: ${stderr.join("\n")}`);
    } finally {
      if (stalledPid) process.kill(stalledPid, "SIGCONT");
      if (child?.pid !== undefined) child.kill("SIGKILL");
      await nc?.close().catch(() => undefined);
      await cluster.stop();
    }
  });
});

describe("JetStream unavailable", () => {
  test("an R1 stream whose node is down: `unavailable` (503) after the retry deadline, then normal service once it is back", async () => {
    const cluster = await startCluster(3);
    const admin = await connect({ servers: cluster.urls.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    let svc: ServiceProcess | null = null;
    let client: NatsConnection | null = null;
    try {
      // The stream is placed before the service starts, so the service can sit on another node than its only replica.
      await (await jetstreamManager(admin, { timeout: 15_000 })).streams.add({ name: "POLICY_EVENTS", subjects: ["events.policy.>"], num_replicas: 1 });
      const host = (await streamInfo(admin, "POLICY_EVENTS")).cluster?.leader;
      const streamNode = cluster.servers.find((s) => s.name === host)!;
      const serviceNode = cluster.servers.find((s) => s.name !== host)!;
      svc = startService({ NATS_URL: serviceNode.url, LOG_LEVEL: "debug" });
      await svc.ready();
      // The client sits on the service's node: what is under test is the service while the stream's node is down,
      // not a client whose own server dies under a request in flight (that request is lost, not answered).
      client = await connect({ servers: serviceNode.url });
      const created = await call(client, "create", policyBody());
      assert.equal(created.reply.ok, true);
      await streamNode.kill();
      const t0 = Date.now();
      const logsSinceKill = svc.lines.length;
      const r = await call(client, "approve", { policy_id: created.reply.aggregate_id, approved_by: "x", command_id: randomUUID() }, 20_000).catch((err: unknown) => {
        // Say what the service was doing instead of a bare client timeout.
        const lines = svc!.lines.slice(logsSinceKill).map((l) => JSON.stringify(l)).join("\n");
        throw new Error(`no reply within 20 s after the stream's node died (${String(err)}); service log since the kill:\n${lines}`);
      });
      const ms = Date.now() - t0;
      assert.equal(r.reply.error?.code, "unavailable", JSON.stringify(r.reply));
      assert.equal(r.status, 503);
      assert.ok(ms >= 9_000 && ms < 15_000, `answered after ${ms} ms`);
      assert.ok(svc.running);
      await streamNode.restart();
      await cluster.waitMetaLeader();
      let again = null;
      for (let i = 0; i < 40 && again?.reply.ok !== true; i++) {
        try { again = await call(client, "approve", { policy_id: created.reply.aggregate_id, approved_by: "x" }, 15_000); } catch { /* reconnecting */ }
        if (again?.reply.ok !== true) await sleep(250);
      }
      assert.equal(again?.reply.ok, true, JSON.stringify(again?.reply));
      assert.equal(again?.reply.version, 2);
    } finally {
      await client?.close().catch(() => undefined);
      await admin.close().catch(() => undefined);
      await svc?.stop();
      await cluster.stop();
    }
  });
});

describe("snapshots and load cost (single node)", () => {
  test("a snapshot every SNAPSHOT_FREQUENCY events; a corrupted or foreign snapshot falls back to full replay", async () => {
    const server = await startNatsServer();
    const svc = startService({ NATS_URL: server.url, SNAPSHOT_FREQUENCY: "10", LOG_LEVEL: "info" });
    const nc = await connect({ servers: server.url });
    try {
      await svc.ready();
      const id = (await call(nc, "create", policyBody())).reply.aggregate_id as string;
      assert.equal((await call(nc, "approve", { policy_id: id, approved_by: "a" })).reply.version, 2);
      assert.equal((await call(nc, "activate", { policy_id: id, activated_by: "a" })).reply.version, 3);
      for (let v = 4; v <= 25; v++) assert.equal((await call(nc, "update", { policy_id: id, updated_by: "u", name: `n${v}` })).reply.version, v);

      const kv = await new Kvm(nc).open("POLICY_EVENTS_SNAPSHOTS");
      let snap: Json | null = null;
      for (let i = 0; i < 50 && snap?.version !== 20; i++) {
        const entry = await kv.get(id);
        snap = entry ? entry.json<Json>() : null;
        if (snap?.version !== 20) await sleep(50);
      }
      assert.equal(snap?.version, 20, "snapshot of version 20 (frequency 10)");
      assert.equal(snap?.state.aggregate_id, id);
      assert.equal(snap?.state.status, "Active");
      assert.ok(snap!.seq > 0 && typeof snap!.schema_version === "number");
      const kvInfo = await streamInfo(nc, "KV_POLICY_EVENTS_SNAPSHOTS");
      assert.equal(kvInfo.config.num_replicas, 1, "the stream's replica count");

      // A command decides against its instance's projection once that has caught up; snapshots serve the loader
      // (start-up, and a projection that cannot follow). So each bad snapshot is checked twice: the service's next
      // command sees the true state, and the loader itself, on the same server, falls back to full replay.
      const warnings: Json[] = [];
      const loaderLog = { warn: (obj: object, msg?: string) => { warnings.push({ ...obj, msg }); }, info() {}, debug() {}, error() {} } as unknown as Logger;
      const loader = new EventStore({ js: jetstream(nc), nc, jsm: await jetstreamManager(nc), snapshots: kv, streamName: "POLICY_EVENTS", snapshotFrequency: 10, logger: loaderLog });
      const loadFallsBack = async (expectedWarning: string, expected: { version: number; status: string }) => {
        const loaded = await loader.load(id);
        assert.equal(loaded.snapshotSeq, 0, `${expectedWarning}: the snapshot was not used`);
        assert.equal(loaded.version, expected.version);
        assert.equal((loaded.state as unknown as Json).status, expected.status);
        assert.ok(warnings.some((w) => w.msg === expectedWarning && w.aggregate_id === id), `loader warned "${expectedWarning}": ${JSON.stringify(warnings)}`);
      };

      // Garbage in the key: the next command still sees the true state (Active → suspend ok, version 26).
      await kv.put(id, "\u0000garbage{");
      const suspended = await call(nc, "suspend", { policy_id: id, suspended_by: "ops", reason: "test" });
      assert.equal(suspended.reply.ok, true, JSON.stringify(suspended.reply));
      assert.equal(suspended.reply.version, 26);
      await loadFallsBack("snapshot unreadable; full replay", { version: 26, status: "Suspended" });
      assert.equal((await call(nc, "approve", { policy_id: id, approved_by: "x" })).reply.error.code, "invalid_transition", "state is Suspended");

      // Valid JSON but another schema, or a snapshot that claims a wrong version: ignored too.
      await kv.put(id, JSON.stringify({ ...snap, schema_version: 999 }));
      assert.equal((await call(nc, "activate", { policy_id: id, activated_by: "ops" })).reply.version, 27);
      await loadFallsBack("snapshot stale or from another schema; full replay", { version: 27, status: "Active" });
      await kv.put(id, JSON.stringify({ ...snap, version: 15, state: { ...snap!.state, version: 15, status: "Draft" } }));
      const afterLie = await call(nc, "suspend", { policy_id: id, suspended_by: "ops", reason: "again" });
      assert.equal(afterLie.reply.version, 28, "a snapshot that does not line up with the stream is not trusted");
      await loadFallsBack("snapshot does not line up with the stream; full replay", { version: 28, status: "Suspended" });

      // Crossing version 30 writes a fresh snapshot over the bad one (CAS on its revision).
      await call(nc, "activate", { policy_id: id, activated_by: "ops" });
      await call(nc, "update", { policy_id: id, updated_by: "u", name: "n30" });
      let fresh: Json | null = null;
      for (let i = 0; i < 50 && fresh?.version !== 30; i++) {
        try { fresh = (await kv.get(id))?.json<Json>() ?? null; } catch { fresh = null; }
        if (fresh?.version !== 30) await sleep(50);
      }
      assert.equal(fresh?.version, 30);
    } finally {
      await nc.close();
      await svc.stop();
      await server.stop();
    }
  });

  test("a cold load of a 10,000-event aggregate with a snapshot costs about the same as a 10-event one", async () => {
    const server = await startNatsServer();
    const nc = await connect({ servers: server.url });
    let svc: ServiceProcess | null = null;
    try {
      // Provision with the service, then stop it: history is written straight into the stream (test setup),
      // with envelopes produced by the domain itself so replay is genuine.
      svc = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
      await svc.ready();
      await svc.stop();
      const js = jetstream(nc);
      const longId = randomUUID();
      const shortId = randomUUID();
      await writeDomainEvents(js, longId, 9_999);
      await writeDomainEvents(js, shortId, 9);

      svc = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
      await svc.ready();
      const timed = async (id: string, name: string) => {
        const t0 = performance.now();
        const r = await call(nc, "update", { policy_id: id, updated_by: "bench", name });
        assert.equal(r.reply.ok, true, JSON.stringify(r.reply));
        return { ms: performance.now() - t0, version: r.reply.version as number };
      };
      // Version 10,000: a full replay of 9,999 events, which writes the snapshot.
      const fullReplay = await timed(longId, "first");
      assert.equal(fullReplay.version, 10_000);
      const kv = await new Kvm(nc).open("POLICY_EVENTS_SNAPSHOTS");
      for (let i = 0; i < 100 && (await kv.get(longId))?.json<Json>()?.version !== 10_000; i++) await sleep(20);
      assert.equal((await kv.get(longId))?.json<Json>()?.version, 10_000, "snapshot at version 10,000");
      assert.equal((await timed(shortId, "first")).version, 10);

      const long: number[] = [];
      const short: number[] = [];
      for (let i = 0; i < 15; i++) {
        long.push((await timed(longId, `l${i}`)).ms);
        short.push((await timed(shortId, `s${i}`)).ms);
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const ratio = median(long) / median(short);
      console.log(`# load cost: full replay of 9,999 events ${fullReplay.ms.toFixed(1)} ms; with snapshot: 10,000-event aggregate median ${median(long).toFixed(2)} ms ` +
        `vs 10-event aggregate ${median(short).toFixed(2)} ms per command (ratio ${ratio.toFixed(2)})`);
      assert.ok(ratio < 3, `10,000-event aggregate with snapshot costs ${ratio.toFixed(2)}× a 10-event one`);
    } finally {
      await nc.close();
      await svc?.stop();
      await server.stop();
    }
  });
});
