// Grouped appends (docs/concurrency.md): several events of one aggregate written as one atomic batch carry the
// aggregate's expectation on EVERY message, not only the first. With it on the first only, nats-server 2.14.9 stopped
// guarding the aggregate once that message was applied, and scripts/faults stored two events with one version at R3.
// The window itself is too short to hit on demand, so this checks, on real servers (one node, and three clustered
// with an R3 stream), what the fix relies on: every stored message of a batch carries the expectation, the server
// checks each against the state before the batch (so the batch is accepted), a stale batch stores nothing and is a
// conflict, and two instances racing batches on one aggregate leave contiguous versions.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { EventEnvelope } from "../../src/domain/index.js";
import { ConcurrencyError, EventStore, aggregateFilter } from "../../src/adapters/nats/event-store.js";
import { untilProvisioned } from "../../src/support/transient.js";
import { silentLogger, updatedEvents } from "../helpers/events.js";
import { startCluster, startNatsServer, type NatsCluster, type NatsServer } from "../helpers/nats.js";

const STREAM = "POLICY_EVENTS";
const events = (aggregateId: string, fromVersion: number, count: number) => updatedEvents(aggregateId, fromVersion, count, "none");

for (const topology of ["one node, R1", "three nodes, R3"] as const) {
  describe(`grouped appends (${topology}): the expectation on every message of the batch`, () => {
    let server: NatsServer | undefined;
    let cluster: NatsCluster | undefined;
    let nc: NatsConnection | undefined;
    let jsm: JetStreamManager | undefined;
    let store: EventStore | undefined;
    let rival: EventStore | undefined;
    let rivalNc: NatsConnection | undefined;
    before(async () => {
      let url: string;
      if (topology === "three nodes, R3") {
        cluster = await startCluster(3);
        url = cluster.servers[0]!.url;
      } else {
        server = await startNatsServer();
        url = server.url;
      }
      nc = await connect({ servers: url });
      jsm = await jetstreamManager(nc, { timeout: 15_000 });
      const replicas = topology === "three nodes, R3" ? 3 : 1;
      await jsm.streams.add({ name: STREAM, subjects: ["events.policy.>"], num_replicas: replicas, allow_atomic: true });
      const snapshots = await new Kvm(nc).create("POLICY_SNAPSHOTS_BATCH_TEST", { history: 1, replicas });
      const common = { snapshots, streamName: STREAM, snapshotFrequency: 1000, logger: silentLogger };
      store = new EventStore({ ...common, js: jetstream(nc), nc, jsm });
      // A second instance: its own connection, to another node when clustered.
      rivalNc = await connect({ servers: cluster ? cluster.servers[1]!.url : url });
      rival = new EventStore({ ...common, js: jetstream(rivalNc), nc: rivalNc, jsm: await jetstreamManager(rivalNc, { timeout: 15_000 }) });
      // A new R3 stream can answer a first publish with "no responders" while its leader is elected or its interest
      // reaches the other nodes (CI saw it: "jetstream is not enabled"): wait, as the service does, until both
      // connections can publish to it (a probe aggregate of its own, which the tests below never read).
      for (const conn of [nc, rivalNc]) {
        await untilProvisioned(() => jetstream(conn).publish(`events.policy.${randomUUID()}.probe`, "{}"), silentLogger, `stream ${STREAM}`);
      }
    });
    after(async () => {
      await rivalNc?.close();
      await nc?.close();
      await server?.stop();
      await cluster?.stop();
    });

    test("every stored message of a batch carries the expectation; a stale batch stores nothing", async () => {
      const id = randomUUID();
      const [first] = await store!.append(id, 0, events(id, 1, 1), true);
      const before = first!.seq;
      const acks = await store!.append(id, before, events(id, 2, 4), true);
      assert.deepEqual(acks.map((a) => a.seq), [before + 1, before + 2, before + 3, before + 4], "four events, in order");
      for (const { seq } of acks) {
        const stored = await jsm!.streams.getMessage(STREAM, { seq });
        assert.ok(stored, `message ${seq} stored`);
        assert.equal(stored.header?.get("Nats-Expected-Last-Subject-Sequence"), String(before),
          `message ${seq - before} of 4 expects the aggregate's last sequence before the batch`);
        assert.equal(stored.header?.get("Nats-Expected-Last-Subject-Sequence-Subject"), aggregateFilter(id),
          `message ${seq - before} of 4 names the aggregate's filter`);
        assert.equal(stored.json<EventEnvelope>().version, seq - before + 1);
      }

      const messagesBefore = (await jsm!.streams.info(STREAM)).state.messages;
      await assert.rejects(store!.append(id, before, events(id, 2, 3), true), ConcurrencyError, "a batch expecting a stale sequence is refused as a conflict");
      assert.equal(await store!.lastSeqOf(id), before + 4, "the aggregate is as the accepted batch left it");
      assert.equal((await jsm!.streams.info(STREAM)).state.messages, messagesBefore, "no message of the refused batch is stored");
    });

    test("two instances append batches to one aggregate at once, 20 rounds: one wins each round, the other is told it conflicted, versions stay contiguous", async () => {
      const id = randomUUID();
      let last = (await store!.append(id, 0, events(id, 1, 1), true))[0]!.seq;
      let version = 1;
      for (let round = 0; round < 20; round++) {
        const outcomes = await Promise.allSettled([
          store!.append(id, last, events(id, version + 1, 3), true),
          rival!.append(id, last, events(id, version + 1, 2), true),
        ]);
        const won = outcomes.filter((o) => o.status === "fulfilled");
        assert.equal(won.length, 1, `round ${round}: exactly one batch stored (${outcomes.map((o) => o.status).join(", ")})`);
        for (const o of outcomes) if (o.status === "rejected") assert.ok(o.reason instanceof ConcurrencyError, `round ${round}: the loser is a conflict, not ${String(o.reason)}`);
        const acks = won[0]!.value;
        version += acks.length;
        last = acks.at(-1)!.seq;
      }
      // Every message from the stream leader (STREAM.MSG.GET), not readAllEvents' direct gets, which a follower that
      // has not applied the last batch yet may answer at R3.
      const stored: number[] = [];
      for (let seq = 1; seq <= last; seq++) {
        const m = await jsm!.streams.getMessage(STREAM, { seq });
        if (m && m.subject.startsWith(`events.policy.${id}.`)) stored.push(m.json<EventEnvelope>().version);
      }
      assert.deepEqual(stored, Array.from({ length: version }, (_, i) => i + 1), "versions 1, 2, 3… each once");
    });
  });
}
