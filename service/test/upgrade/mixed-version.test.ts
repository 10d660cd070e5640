// A rolling upgrade on one three-node cluster (R3), as docs/operations.md describes it: the previous release
// (built from its tag, or POLICY_SERVICE_PREVIOUS_REF; see test/helpers/previous-release.ts) runs on every node
// and creates the streams; then one node at a time its instance is replaced by this tree's build, and finally one
// node is rolled back. At every step clients on every node send commands (both versions take them: checked with
// each instance's $SRV.STATS) and the get/list answers of every instance must agree, with contiguous versions in
// the stream. While mixed, a command with a command_id stored by one build is retried until the other build has
// answered (the original reply, stored once; a reuse with another payload answered by this tree is conflict). The
// dangerous case of the roll (issue 11): a command stored by this tree, then covered by a snapshot, retried on the
// previous release, which finds no event of it after the snapshot; it must find the idempotency record this tree
// writes while an instance without the payload-hash capability serves the stream (adapters/nats/peers.ts), so the
// retry gets the original reply and nothing is stored twice. SNAPSHOT_FREQUENCY=2 on every instance, so snapshots
// follow commands closely. Without a previous release to build, the test says why and skips.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";
import { Kvm } from "@nats-io/kv";
import { SERVICE_MAIN, SERVICE_ROOT, sleep, startCluster, startService, type NatsCluster, type ServiceProcess } from "../helpers/nats.js";
import { callOk, policyBody, readAllEvents, streamInfo, type Json } from "../helpers/client.js";
import { previousRelease } from "../helpers/previous-release.js";

const prev = previousRelease();
if (!prev.ok) {
  // Loud on purpose: a skipped upgrade test must never look like a passed one.
  console.log(`# mixed-version upgrade test SKIPPED: ${prev.reason}`);
}

type Build = "previous" | "current";
const packageVersion = (serviceDir: string): string => (JSON.parse(readFileSync(join(serviceDir, "package.json"), "utf8")) as { version: string }).version;
interface Instance { node: number; build: Build; id: string; proc: ServiceProcess }

describe(`rolling upgrade from ${prev.ok ? `${prev.ref} (${prev.commit.slice(0, 7)})` : "the previous release"} to this tree on a three-node R3 cluster`, { skip: prev.ok ? false : prev.kind === "missing" ? prev.reason : false }, () => {
  let cluster: NatsCluster;
  const clients: NatsConnection[] = [];
  let admin: NatsConnection;
  const instances: (Instance | undefined)[] = [undefined, undefined, undefined];
  /** Aggregate id → the version the last successful command reported. */
  const expected = new Map<string, number>();
  /** Aggregate id → its rule ids in order (the created r1, then one per add_rule). */
  const expectedRules = new Map<string, string[]>();

  async function instanceIds(): Promise<Set<string>> {
    const ids = new Set<string>();
    try {
      for await (const info of await new Svcm(admin).client().info("policy-service")) ids.add(info.id);
    } catch (err) {
      // No instance running yet: "no responders".
      if (!(err instanceof Error && /no responders/i.test(err.message))) throw err;
    }
    return ids;
  }

  async function startOn(node: number, build: Build): Promise<void> {
    if (!prev.ok) throw new Error(prev.reason);
    const before = await instanceIds();
    const main = build === "previous" ? prev.main : SERVICE_MAIN;
    const proc = startService({ NATS_URL: cluster.servers[node]!.url, STREAM_REPLICAS: "3", LOG_LEVEL: "info", SNAPSHOT_FREQUENCY: "2" }, [], main);
    await proc.ready(60_000);
    // The new instance id is the one $SRV.INFO did not list before (works whatever the ready line says).
    const deadline = Date.now() + 15_000;
    let id: string | undefined;
    while (!id && Date.now() < deadline) {
      id = [...(await instanceIds())].find((x) => !before.has(x));
      if (!id) await sleep(200);
    }
    assert.ok(id, `the ${build} instance on node ${node + 1} does not answer $SRV.INFO`);
    // What an operator watches during the upgrade: each instance's version in `nats micro info`.
    const wanted = packageVersion(build === "previous" ? join(prev.root, "service") : SERVICE_ROOT);
    const infos = [];
    for await (const info of await new Svcm(admin).client().info("policy-service", id)) infos.push(info);
    assert.equal(infos[0]?.version, wanted, `$SRV.INFO of the ${build} instance on node ${node + 1}`);
    instances[node] = { node, build, id, proc };
  }

  async function replace(node: number, build: Build): Promise<void> {
    const old = instances[node];
    if (old) {
      const stopped = await old.proc.stop();
      assert.equal(stopped.code, 0, `the ${old.build} instance on node ${node + 1} stopped cleanly`);
    }
    await startOn(node, build);
  }

  /** Command requests each live instance has handled so far, by instance id. */
  async function commandCounts(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for await (const s of await new Svcm(admin).client().stats("policy-service")) {
      counts.set(s.id, (s.endpoints ?? []).filter((e) => e.subject.startsWith("policy.commands.")).reduce((n, e) => n + e.num_requests, 0));
    }
    return counts;
  }

  /** Commands through the clients of all three nodes in turn: new policies, and the next lifecycle step of older ones. */
  async function workload(label: string): Promise<void> {
    const before = await commandCounts();
    let k = 0;
    const via = () => clients[k++ % clients.length]!;
    for (let i = 0; i < 6; i++) {
      const id = randomUUID();
      const created = await callOk(via(), "create", policyBody({ policy_id: id, name: `${label} ${i}`, rules: [{ rule_id: "r1", name: "Rule r1", severity: "High", expression: { op: "equal", field: "x", value: 1 } }] }));
      expected.set(id, created.version);
      expectedRules.set(id, ["r1"]);
    }
    for (const [id, version] of expected) {
      // Every aggregate gets two more events from different nodes (optimistic concurrency across versions).
      const updated = await callOk(via(), "update", { policy_id: id, updated_by: label, description: `${label}: version ${version + 1}` });
      assert.equal(updated.version, version + 1, `${id}: update after version ${version}`);
      const ruled = await callOk(via(), "add_rule", { policy_id: id, rule: { rule_id: `r${version + 2}`, name: `Rule from ${label}`, severity: "Low", expression: { op: "exists", field: "y" } } });
      assert.equal(ruled.version, version + 2);
      expected.set(id, ruled.version);
      expectedRules.get(id)!.push(`r${version + 2}`);
    }
    // Both builds that are running took commands in this step.
    const afterCounts = await commandCounts();
    const served = new Set<Build>();
    for (const inst of instances) {
      if (!inst) continue;
      const delta = (afterCounts.get(inst.id) ?? 0) - (before.get(inst.id) ?? 0);
      if (delta > 0) served.add(inst.build);
    }
    const running = new Set(instances.filter((x) => x).map((x) => x!.build));
    assert.deepEqual([...served].sort(), [...running].sort(), `${label}: every running build handled commands (counts ${JSON.stringify([...afterCounts])})`);
  }

  /** Sends a command and says which build's instance handled it (the one whose $SRV.STATS count rose). */
  async function handledBy(label: string, send: () => Promise<Json>): Promise<{ reply: Json; build: Build }> {
    const before = await commandCounts();
    const reply = await send();
    // The micro-service counts a request once its handler has returned: poll briefly (bounded).
    for (let i = 0; i < 40; i++) {
      const after = await commandCounts();
      const handler = instances.find((inst) => inst && (after.get(inst.id) ?? 0) > (before.get(inst.id) ?? 0));
      if (handler) return { reply, build: handler.build };
      await sleep(50);
    }
    assert.fail(`${label}: no instance counted the request`);
  }

  /**
   * A command with a command_id first handled by a `stored` instance, then retried (the first reply "lost") until an
   * instance of the other build has answered a retry (bounded; requests go to any instance of the queue group):
   * every retry gets the original reply and nothing is stored twice, whichever build stored it (this tree keeps no
   * idempotency record for a stored command, the previous release does). A reuse with another payload answered by
   * this tree is `conflict`.
   */
  async function retryAcrossBuilds(label: string, stored: Build): Promise<void> {
    const id = [...expected.keys()][0]!;
    let k = 0;
    const via = () => clients[k++ % clients.length]!;
    let original: Json | undefined;
    let body: Json = {};
    for (let i = 0; i < 20 && !original; i++) {
      const version = expected.get(id)!;
      body = { policy_id: id, updated_by: label, description: `${label}: version ${version}`, command_id: randomUUID() };
      const first = await handledBy(label, () => callOk(via(), "update", body));
      assert.equal(first.reply.version, version + 1);
      expected.set(id, version + 1);
      if (first.build === stored) original = first.reply;
    }
    assert.ok(original, `${label}: a command handled by the ${stored} build within 20 tries`);
    const other: Build = stored === "current" ? "previous" : "current";
    let crossed = false;
    for (let i = 0; i < 20 && !crossed; i++) {
      const retry = await handledBy(label, () => callOk(via(), "update", body));
      assert.deepEqual(retry.reply, original, `${label}: a retry answered by the ${retry.build} build gets the original reply`);
      crossed = retry.build === other;
    }
    assert.ok(crossed, `${label}: a retry answered by the ${other} build within 20 tries`);
    const events = (await readAllEvents(admin, "POLICY_EVENTS")).filter((e) => e.envelope.command_id === body.command_id);
    assert.equal(events.length, 1, `${label}: stored once`);
    let reusedOnThisTree = false;
    for (let i = 0; i < 20 && !reusedOnThisTree; i++) {
      const reuse = await handledBy(label, async () => (await via().request("policy.commands.update", JSON.stringify({ ...body, description: "another payload" }), { timeout: 15_000 })).json<Json>());
      if (reuse.build !== "current") continue;
      assert.equal(reuse.reply.error?.code, "conflict", `${label}: a reuse with another payload on this tree: ${JSON.stringify(reuse.reply)}`);
      reusedOnThisTree = true;
    }
    assert.ok(reusedOnThisTree, `${label}: a reuse answered by this tree within 20 tries`);
    assert.equal((await readAllEvents(admin, "POLICY_EVENTS")).filter((e) => e.envelope.command_id === body.command_id).length, 1, `${label}: the reuses stored nothing`);
  }

  /** A KV entry's JSON, or null (none, deleted). */
  async function kvJson(bucket: string, key: string): Promise<Json | null> {
    const entry = await (await new Kvm(admin).open(bucket)).get(key);
    return entry && entry.operation === "PUT" && entry.length > 0 ? entry.json<Json>() : null;
  }

  /**
   * The issue-11 duplicate, made safe by the success-record gate: a command with a command_id stored by this tree
   * while an instance of the previous release serves the stream, then covered by a snapshot, then retried until the
   * previous release has answered: it gets the original reply (from the record this tree wrote), stored once.
   */
  async function retryOnPreviousAfterSnapshot(label: string): Promise<void> {
    const id = [...expected.keys()][1]!;
    let k = 0;
    const via = () => clients[k++ % clients.length]!;
    const update = (body: Json) => handledBy(label, () => callOk(via(), "update", body));
    const next = (commandId?: string): Json => ({ policy_id: id, updated_by: label, description: `${label}: version ${expected.get(id)!}`, ...(commandId ? { command_id: commandId } : {}) });
    let original: Json | undefined;
    let body: Json = {};
    for (let i = 0; i < 20 && !original; i++) {
      body = next(randomUUID());
      const first = await update(body);
      expected.set(id, first.reply.version as number);
      if (first.build === "current") original = first.reply;
    }
    assert.ok(original, `${label}: a command handled by this tree within 20 tries`);
    const storedSeq = original.events[0].seq as number;
    const record = await kvJson("POLICY_EVENTS_COMMANDS", body.command_id as string);
    assert.deepEqual(record?.reply, original, `${label}: this tree wrote the record (an instance of the previous release serves the stream)`);
    // Commands without a command_id on the same aggregate until a snapshot covers the stored one (bounded).
    let covered = false;
    for (let i = 0; i < 10 && !covered; i++) {
      const more = await update(next());
      expected.set(id, more.reply.version as number);
      for (let poll = 0; poll < 20 && !covered; poll++) {
        covered = Number((await kvJson("POLICY_EVENTS_SNAPSHOTS", id))?.seq ?? 0) > storedSeq;
        if (!covered) await sleep(50);
      }
    }
    assert.ok(covered, `${label}: a snapshot of ${id} covers the command (seq ${storedSeq})`);
    let onPrevious = false;
    for (let i = 0; i < 20 && !onPrevious; i++) {
      const retry = await update(body);
      assert.deepEqual(retry.reply, original, `${label}: a retry answered by the ${retry.build} build after the snapshot gets the original reply`);
      onPrevious = retry.build === "previous";
    }
    assert.ok(onPrevious, `${label}: a retry answered by the previous release within 20 tries`);
    assert.equal((await readAllEvents(admin, "POLICY_EVENTS")).filter((e) => e.envelope.command_id === body.command_id).length, 1, `${label}: stored once`);
  }

  /** The same query through every client, repeatedly, until every answer is identical (projections caught up). */
  /**
   * Query timeouts tolerated while only the previous release runs (this tree's code is not running yet): a 0.9.0
   * instance once left a query unanswered for 15 s in CI (2026-12-03, passed on rerun). Each one is printed; more
   * than two fail the test. Wherever this tree runs, a timeout fails at once.
   */
  let previousOnlyTimeouts: number | null = null;

  async function queryOk(c: NatsConnection, subject: string, body: Json): Promise<Json> {
    for (;;) {
      try {
        return await callOk(c, subject, body);
      } catch (err) {
        if (previousOnlyTimeouts === null || !(err instanceof Error && err.name === "TimeoutError") || previousOnlyTimeouts >= 2) throw err;
        previousOnlyTimeouts++;
        console.log(`# the previous release (alone) did not answer ${subject} within 15 s (${previousOnlyTimeouts} of at most 2 tolerated); asking again`);
      }
    }
  }

  async function agreedAnswer(subject: string, body: Json, pick: (reply: Json) => unknown): Promise<unknown> {
    const deadline = Date.now() + 20_000;
    let answers: unknown[] = [];
    while (Date.now() < deadline) {
      answers = [];
      for (let round = 0; round < 4; round++) for (const c of clients) answers.push(pick(await queryOk(c, subject, body)));
      if (answers.every((a) => isDeepStrictEqual(a, answers[0]))) return answers[0];
      await sleep(250);
    }
    assert.fail(`${subject} ${JSON.stringify(body)}: instances disagree: ${JSON.stringify(answers).slice(0, 2000)}`);
  }

  async function checkAgreement(label: string): Promise<void> {
    for (const [id, version] of expected) {
      const got = (await agreedAnswer("policy.queries.get", { id }, (r) => r)) as Json;
      assert.equal(got.version, version, `${label}: ${id} version`);
      assert.equal(got.state.status, "Draft");
      assert.deepEqual(got.state.rules.map((r: Json) => r.rule_id), expectedRules.get(id), `${label}: ${id} has its created rule plus one per add_rule`);
      assert.equal(got.state.description, `${got.state.description.split(":")[0]}: version ${version - 1}`, `${label}: ${id} shows its last update`);
    }
    const listed = (await agreedAnswer("policy.queries.list", { aggregate_type: "Policy", limit: 500 }, (r) => r.items)) as Json[];
    assert.equal(listed.length, expected.size, `${label}: list has every policy`);
    for (const item of listed) assert.equal(item.version, expected.get(item.aggregate_id), `${label}: listed version of ${item.aggregate_id}`);
    // The stream: contiguous versions per aggregate, unique event ids, three current replicas.
    const events = await readAllEvents(admin, "POLICY_EVENTS");
    assert.equal(new Set(events.map((e) => e.envelope.event_id)).size, events.length, "event ids unique");
    for (const [id, version] of expected) {
      const versions = events.filter((e) => e.envelope.aggregate_id === id).map((e) => e.envelope.version);
      assert.deepEqual(versions, Array.from({ length: version }, (_, i) => i + 1), `${label}: versions of ${id}`);
    }
    const info = await streamInfo(admin, "POLICY_EVENTS");
    assert.equal(info.config.num_replicas, 3);
    for (const inst of instances) assert.ok(inst?.proc.running, `${label}: instance on node ${inst ? inst.node + 1 : "?"} runs`);
  }

  before(async () => {
    if (!prev.ok) throw new Error(`cannot build the previous release: ${prev.reason}`);
    cluster = await startCluster(3);
    for (const s of cluster.servers) clients.push(await connect({ servers: s.url }));
    admin = await connect({ servers: cluster.servers[0]!.url });
    // The previous release provisions the streams, as it did on every existing cluster.
    for (let node = 0; node < 3; node++) await startOn(node, "previous");
  });

  after(async () => {
    for (const c of [...clients, admin]) await c?.close().catch(() => undefined);
    for (const inst of instances) await inst?.proc.stop();
    await cluster?.stop();
  });

  test("the previous release alone: three instances serve and agree", async () => {
    await workload("previous x3");
    previousOnlyTimeouts = 0;
    try {
      await checkAgreement("previous x3");
    } finally {
      previousOnlyTimeouts = null;
    }
  });

  test("leaf 1 upgraded: the previous release and this tree serve side by side and agree", async () => {
    await replace(0, "current");
    await workload("mixed 1+2");
    await retryAcrossBuilds("stored by this tree, retried on the previous release", "current");
    await retryAcrossBuilds("stored by the previous release, retried on this tree", "previous");
    await retryOnPreviousAfterSnapshot("stored by this tree, snapshotted, retried on the previous release");
    await checkAgreement("mixed 1+2");
  });

  test("leaf 2 upgraded: still mixed, still agreeing", async () => {
    await replace(1, "current");
    await workload("mixed 2+1");
    await retryOnPreviousAfterSnapshot("two of this tree, stored, snapshotted, retried on the previous release");
    await checkAgreement("mixed 2+1");
  });

  test("leaf 3 upgraded: this tree alone reads everything the previous release wrote", async () => {
    await replace(2, "current");
    await workload("current x3");
    await checkAgreement("current x3");
  });

  test("rollback of leaf 1 to the previous release: it reads what this tree wrote, and they agree", async () => {
    await replace(0, "previous");
    await workload("rolled back 1");
    await checkAgreement("rolled back 1");
  });
});

test("the previous release builds, or there is none to build", (t) => {
  if (!prev.ok && prev.kind === "missing") {
    t.skip(`no previous release: ${prev.reason}`);
    return;
  }
  assert.ok(prev.ok, prev.ok ? "" : `the previous release does not build: ${prev.reason}`);
});
