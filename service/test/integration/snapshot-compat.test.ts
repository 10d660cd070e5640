// Snapshots across versions, black-box: during a rolling upgrade an instance meets snapshots that another version
// wrote in POLICY_EVENTS_SNAPSHOTS. One of another schema version (newer: a later release's state shape; older, or
// from before snapshots were versioned) must make this version replay the aggregate's events and reach the right
// state, never act on the foreign state. The test lets the service write real snapshots, replaces them in the KV
// bucket with ones whose schema version differs and whose state is deliberately wrong, and checks the loader that
// reads snapshots (EventStore.load, used at start-up and whenever the projection cannot follow) and a fresh
// instance's command decisions and query answers. A control case shows that the loader DOES read a snapshot of
// the current schema version (so the other cases really went through the snapshot path), while a caught-up
// instance's commands decide against its projection.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { Kvm, type KV } from "@nats-io/kv";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { EventStore } from "../../src/adapters/nats/event-store.js";
import type { Logger } from "../../src/support/logger.js";
import { startNatsServer, startService, sleep, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { call, callOk, policyBody, type Json } from "../helpers/client.js";

const BUCKET = "POLICY_EVENTS_SNAPSHOTS";
// A snapshot after every second event, so two commands give each aggregate a real one.
const SERVICE_ENV = { LOG_LEVEL: "info", SNAPSHOT_FREQUENCY: "2" };

type Forge = (snapshot: Json) => Json;
/** The wrong state every forged snapshot carries: an archived policy under another name (approve must then fail). */
const wrongState = (state: Json): Json => ({ ...state, status: "Archived", name: "FORGED BY THE TEST" });

const CASES: { name: string; forge: Forge; used: boolean }[] = [
  { name: "newer schema version (a later release's state shape)", used: false,
    forge: (s) => ({ ...s, schema_version: s.schema_version + 1, state: { ...wrongState(s.state), lifecycle: { phase: "Archived" }, shape: "next" } }) },
  { name: "older schema version", used: false, forge: (s) => ({ ...s, schema_version: s.schema_version - 1, state: wrongState(s.state) }) },
  { name: "older format without schema_version", used: false,
    forge: (s) => { const { schema_version: _dropped, ...rest } = s; return { ...rest, state: wrongState(s.state) }; } },
  { name: "control: the current schema version", used: true, forge: (s) => ({ ...s, state: wrongState(s.state) }) },
];

async function snapshotOf(kv: KV, aggregateId: string, timeoutMs = 15_000): Promise<{ key: string; snapshot: Json }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for await (const key of await kv.keys()) {
      const entry = await kv.get(key);
      if (!entry || entry.operation !== "PUT" || entry.length === 0) continue;
      const snapshot = JSON.parse(entry.string()) as Json;
      if (snapshot.aggregate_id === aggregateId || key.includes(aggregateId)) return { key, snapshot };
    }
    await sleep(100);
  }
  throw new Error(`the service wrote no snapshot of ${aggregateId} into ${BUCKET} within ${timeoutMs} ms (SNAPSHOT_FREQUENCY=2)`);
}

describe("snapshots written by another schema version", () => {
  let server: NatsServer;
  let service: ServiceProcess | undefined;
  let nc: NatsConnection;
  let loader: EventStore;
  const ids = new Map<string, string>();

  before(async () => {
    server = await startNatsServer();
    // 1. This version writes real snapshots: create + update = 2 events per policy.
    const writer = startService({ NATS_URL: server.url, ...SERVICE_ENV });
    await writer.ready();
    nc = await connect({ servers: server.url });
    for (const c of CASES) {
      const id = randomUUID();
      ids.set(c.name, id);
      await callOk(nc, "create", policyBody({ policy_id: id, name: "Snapshot compatibility" }));
      await callOk(nc, "update", { policy_id: id, updated_by: "editor", description: "Second event, so a snapshot is due" });
    }
    const kv = await new Kvm(nc).open(BUCKET);
    const found = new Map<string, { key: string; snapshot: Json }>();
    for (const c of CASES) found.set(c.name, await snapshotOf(kv, ids.get(c.name)!));
    await writer.stop();
    // 2. Replace them with forged ones, as another version's instance would have left them.
    for (const c of CASES) {
      const { key, snapshot } = found.get(c.name)!;
      assert.equal(typeof snapshot.schema_version, "number", "this version's snapshots carry a numeric schema_version");
      assert.equal(snapshot.state?.status, "Draft", "the real snapshot holds the real state");
      await kv.put(key, JSON.stringify(c.forge(snapshot)));
    }
    // The loader (EventStore.load: start-up, and a projection that cannot follow) reads snapshots; once its
    // projection has caught up, a command decides against the projection. Both are checked below.
    const quiet = { warn() {}, info() {}, debug() {}, error() {} } as unknown as Logger;
    loader = new EventStore({ js: jetstream(nc), nc, jsm: await jetstreamManager(nc), snapshots: kv, streamName: "POLICY_EVENTS", snapshotFrequency: 2, logger: quiet });
    // 3. A fresh instance (nothing cached) meets them.
    service = startService({ NATS_URL: server.url, ...SERVICE_ENV });
    await service.ready();
  });

  after(async () => {
    await nc?.close();
    await service?.stop();
    await server?.stop();
  });

  for (const c of CASES.filter((x) => !x.used)) {
    test(`${c.name}: ignored; the aggregate is replayed and commands act on the real state`, async () => {
      const id = ids.get(c.name)!;
      const loaded = await loader.load(id);
      assert.equal(loaded.snapshotSeq, 0, "the loader did not use the snapshot (full replay)");
      assert.equal(loaded.version, 2);
      assert.equal((loaded.state as unknown as Json).status, "Draft", "the loader's state is the real one, not the forged Archived");
      const approved = await call(nc, "approve", { policy_id: id, approved_by: "officer", approval_date: "2025-11-08T10:00:00Z" });
      assert.equal(approved.reply.ok, true, `approve of a Draft policy (the forged snapshot says Archived): ${JSON.stringify(approved.reply)}`);
      assert.equal(approved.reply.version, 3, "version follows the two real events");
      const got = await callOk(nc, "policy.queries.get", { id });
      assert.equal(got.version, 3);
      assert.equal(got.state.status, "Approved");
      assert.equal(got.state.name, "Snapshot compatibility", "the forged name never reaches the state");
      assert.equal(got.state.description, "Second event, so a snapshot is due");
      const history = await callOk(nc, "policy.queries.history", { id });
      assert.deepEqual(history.events.map((e: Json) => e.event_type ?? e.type), ["created", "updated", "approved"]);
      // The next command also sees the real state (Approved → Active is allowed; from Archived nothing is).
      const activated = await callOk(nc, "activate", { policy_id: id, activated_by: "officer" });
      assert.equal(activated.version, 4);
      assert.equal(service!.running, true, "the service keeps serving");
    });
  }

  test("control: a forged snapshot of the current schema version is read (so the cases above went through the snapshot path)", async () => {
    const id = ids.get(CASES.find((x) => x.used)!.name)!;
    const loaded = await loader.load(id);
    assert.ok(loaded.snapshotSeq > 0, `the loader did not read the current-schema snapshot in ${BUCKET}, so this test no longer exercises snapshots`);
    assert.equal((loaded.state as unknown as Json).status, "Archived", "the loader continued from the (forged) current-schema snapshot");
    // A caught-up instance decides against its projection (a replay of the stream), so even a forged
    // current-schema snapshot does not reach its commands.
    const approved = await call(nc, "approve", { policy_id: id, approved_by: "officer", approval_date: "2025-11-08T10:00:00Z" });
    assert.equal(approved.reply.ok, true, `approve decided on the real Draft state: ${JSON.stringify(approved.reply)}`);
  });
});
