// Chained group appends (R1 streams, docs/concurrency.md "Grouped appends"): consecutive commands on one aggregate
// are written as plain publishes sent back to back, the first with the aggregate's expectation, each later one with
// Nats-Expected-Last-Msg-Id naming the one before it. What makes that safe is the server's behaviour, so this checks
// it on a real nats-server (one node, R1 file stream): a chain is stored whole and in order; a stale head stores
// nothing and is a conflict; a message of anyone else arriving between two links stops the chain there (only a
// prefix is stored, never a link after a gap); two instances racing chains on one aggregate leave every version once.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiError, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { EventEnvelope } from "../../src/domain/index.js";
import { ConcurrencyError, EventStore } from "../../src/adapters/nats/event-store.js";
import { silentLogger, updatedEvents } from "../helpers/events.js";
import { startCluster, startNatsServer, type NatsCluster, type NatsServer } from "../helpers/nats.js";

const STREAM = "POLICY_EVENTS";
const events = (aggregateId: string, fromVersion: number, count: number) => updatedEvents(aggregateId, fromVersion, count, "event ids");

/**
 * `nc`, except that just before the request carrying link number `link` (0-based) of the next chain, `interpose`
 * publishes on the same connection: it reaches the server between the two links, as another writer's message can.
 */
function interposing(nc: NatsConnection): { nc: NatsConnection; before(link: number, interpose: (nc: NatsConnection) => void): void } {
  let pending: { link: number; interpose: (nc: NatsConnection) => void } | undefined;
  let index = 0;
  const proxy = new Proxy(nc, {
    get(target, prop, receiver) {
      if (prop !== "request") return Reflect.get(target, prop, receiver) as unknown;
      return (...args: Parameters<NatsConnection["request"]>) => {
        const opts = args[2];
        if (!opts?.headers?.get("Nats-Expected-Last-Msg-Id")) index = 0;
        if (pending && index === pending.link) {
          pending.interpose(target);
          pending = undefined;
        }
        index++;
        return target.request(...args);
      };
    },
  });
  return { nc: proxy, before(link, interpose) { pending = { link, interpose }; } };
}

describe("chained appends on a real R1 stream: only a prefix of a chain is ever stored", () => {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  let rivalNc: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  let store: EventStore | undefined;
  let rival: EventStore | undefined;
  let seam: ReturnType<typeof interposing> | undefined;

  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    jsm = await jetstreamManager(nc, { timeout: 15_000 });
    await jsm.streams.add({ name: STREAM, subjects: ["events.policy.>"], num_replicas: 1, duplicate_window: 120_000_000_000 });
    const snapshots = await new Kvm(nc).create("POLICY_SNAPSHOTS_CHAIN_TEST", { history: 1 });
    const common = { snapshots, streamName: STREAM, snapshotFrequency: 1000, logger: silentLogger };
    seam = interposing(nc);
    store = new EventStore({ ...common, js: jetstream(nc), nc: seam.nc, jsm });
    rivalNc = await connect({ servers: server.url });
    rival = new EventStore({ ...common, js: jetstream(rivalNc), nc: rivalNc, jsm: await jetstreamManager(rivalNc) });
  });
  after(async () => {
    await rivalNc?.close();
    await nc?.close();
    await server?.stop();
  });

  /** The aggregate's stored events, in stream order. */
  async function storedOf(id: string): Promise<EventEnvelope[]> {
    const last = (await jsm!.streams.info(STREAM)).state.last_seq;
    const out: EventEnvelope[] = [];
    for (let seq = 1; seq <= last; seq++) {
      const m = await jsm!.streams.getMessage(STREAM, { seq }).catch(() => null);
      if (m && m.subject.startsWith(`events.policy.${id}.`)) out.push(m.json<EventEnvelope>());
    }
    return out;
  }
  const versionsOf = async (id: string) => (await storedOf(id)).map((e) => e.version);

  test("a chain is stored whole, in order, at consecutive sequences, each link after the one before it", async () => {
    const id = randomUUID();
    const [first] = await store!.append(id, 0, events(id, 1, 1), false);
    const chain = events(id, 2, 5);
    const { acks, stoppedBy } = await store!.appendChained(id, first!.seq, chain);
    assert.equal(stoppedBy, undefined);
    assert.deepEqual(acks.map((a) => a.seq), [1, 2, 3, 4, 5].map((i) => first!.seq + i));
    assert.deepEqual(await versionsOf(id), [1, 2, 3, 4, 5, 6]);
    const second = await jsm!.streams.getMessage(STREAM, { seq: first!.seq + 2 });
    assert.equal(second!.header.get("Nats-Msg-Id"), chain[1]!.msgId, "stored with its own id, which the next link names");
  });

  test("a stale head stores nothing and is a conflict", async () => {
    const id = randomUUID();
    const [first] = await store!.append(id, 0, events(id, 1, 1), false);
    await rival!.append(id, first!.seq, events(id, 2, 1), false);
    const lastBefore = (await jsm!.streams.info(STREAM)).state.last_seq;
    const { acks, stoppedBy } = await store!.appendChained(id, first!.seq, events(id, 2, 4));
    assert.deepEqual(acks, []);
    assert.ok(stoppedBy instanceof ConcurrencyError, `a conflict, not ${String(stoppedBy)}`);
    assert.equal((await jsm!.streams.info(STREAM)).state.last_seq, lastBefore, "no link of the refused chain is stored");
    assert.deepEqual(await versionsOf(id), [1, 2]);
  });

  for (const where of ["on the same aggregate", "on another aggregate"] as const) {
    test(`another writer's message between two links (${where}) stops the chain there: the links after it are refused`, async () => {
      const id = randomUUID();
      const [first] = await store!.append(id, 0, events(id, 1, 1), false);
      const foreignId = where === "on the same aggregate" ? id : randomUUID();
      const foreign = events(foreignId, where === "on the same aggregate" ? 3 : 1, 1)[0]!.envelope;
      // A writer without any expectation: the worst case the chain has to stop for.
      seam!.before(2, (raw) => raw.publish(`events.policy.${foreignId}.updated`, JSON.stringify(foreign)));
      const chain = events(id, 2, 5);
      const { acks, stoppedBy } = await store!.appendChained(id, first!.seq, chain);
      assert.equal(acks.length, 2, "the two links before the foreign message are stored");
      assert.ok(stoppedBy instanceof JetStreamApiError && !(stoppedBy instanceof ConcurrencyError), `the third link names a message that is not the last: ${String(stoppedBy)}`);
      assert.match(String((stoppedBy as JetStreamApiError).message), /last msg ?id/i);
      const expected = [chain[0]!, chain[1]!].map((e) => e.envelope.event_id);
      const stored = (await storedOf(id)).map((e) => e.event_id).slice(1);
      // Links 3-5 each name the link before them, which is not stored: none of them is.
      assert.deepEqual(stored, where === "on the same aggregate" ? [...expected, foreign.event_id] : expected, "a prefix of the chain, then only the foreign event");
    });
  }

  test("two instances race chains on one aggregate, 20 rounds: each round one head wins, versions stay contiguous", async () => {
    const id = randomUUID();
    let last = (await store!.append(id, 0, events(id, 1, 1), false))[0]!.seq;
    let version = 1;
    for (let round = 0; round < 20; round++) {
      const [mine, theirs] = await Promise.all([
        store!.appendChained(id, last, events(id, version + 1, 3)),
        rival!.appendChained(id, last, events(id, version + 1, 2)),
      ]);
      const winners = [mine, theirs].filter((r) => r.acks.length > 0);
      assert.equal(winners.length, 1, `round ${round}: exactly one head stored (${mine.acks.length}, ${theirs.acks.length})`);
      const loser = [mine, theirs].find((r) => r.acks.length === 0)!;
      assert.ok(loser.stoppedBy instanceof ConcurrencyError, `round ${round}: the loser's head is a conflict, not ${String(loser.stoppedBy)}`);
      version += winners[0]!.acks.length;
      last = winners[0]!.acks.at(-1)!.seq;
    }
    assert.deepEqual(await versionsOf(id), Array.from({ length: version }, (_, i) => i + 1), "versions 1, 2, 3… each once");
  });
});

describe("chains only while the stream has one replica (three clustered nodes)", () => {
  let cluster: NatsCluster | undefined;
  let nc: NatsConnection | undefined;
  after(async () => {
    await nc?.close();
    await cluster?.stop();
  });

  test("checkReplicas finds R1 chainable, R3 not; watchReplicas follows a change within its interval", async () => {
    cluster = await startCluster(3);
    nc = await connect({ servers: cluster.servers[0]!.url });
    const jsm = await jetstreamManager(nc, { timeout: 15_000 });
    await jsm.streams.add({ name: STREAM, subjects: ["events.policy.>"], num_replicas: 1 });
    const snapshots = await new Kvm(nc).create("POLICY_SNAPSHOTS_CHAIN_GUARD", { history: 1 });
    const store = new EventStore({ snapshots, streamName: STREAM, snapshotFrequency: 1000, logger: silentLogger, js: jetstream(nc), nc, jsm });
    assert.equal(store.chainable, false, "unknown until checked");
    await store.checkReplicas();
    assert.equal(store.chainable, true, "one replica");
    const stop = store.watchReplicas(200);
    try {
      const info = await jsm.streams.info(STREAM);
      await jsm.streams.update(STREAM, { ...info.config, num_replicas: 3 });
      const until = Date.now() + 5000;
      while (store.chainable && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      assert.equal(store.chainable, false, "scaled to three replicas: no more chains");
    } finally {
      stop();
    }
    await store.checkReplicas();
    assert.equal(store.chainable, false);
  });
});
