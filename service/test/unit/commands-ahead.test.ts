// Commands queued on one aggregate of an instance are appended back to back: the next one decides against the state
// the previous one's acknowledged append left, with its ack's sequence as expectation, without waiting for the
// projection (docs/concurrency.md, step 9). Replies still wait for the projection (read-your-writes). The projection
// here is a stand-in that applies the stream only when told, and the store a stand-in stream with the server's
// expected-last-sequence check, so the order of events can be pinned down.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { KV } from "@nats-io/kv";
import type { PubAck } from "@nats-io/jetstream";
import { decide, evolve, parseCommand, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { CommandHandler, type CommandProjection } from "../../src/app/commands.js";
import { ConcurrencyError, type EventStore, type StoredEvent } from "../../src/adapters/nats/event-store.js";
import type { Reply } from "../../src/support/replies.js";
import { createPayload } from "./domainHarness.js";

const POLICY_ID = "550e8400-e29b-41d4-a716-446655440000";
const NOW = "2026-01-01T00:00:00.000Z";

function createdEnvelope(): EventEnvelope {
  const parsed = parseCommand("create", createPayload(POLICY_ID));
  assert.ok(parsed.ok);
  const decision = decide(undefined, parsed.command, { now: NOW, refs: new Map() });
  assert.ok(decision.ok);
  return {
    event_id: "0190a0a0-0000-7000-8000-000000000001", event_type: decision.events[0]!.event_type, aggregate_type: "Policy",
    aggregate_id: POLICY_ID, version: 1, occurred_at: NOW, command_id: null, correlation_id: null, causation_id: null, data: decision.events[0]!.data,
  };
}

/** A stream with the policy's creation at sequence 1, the server's expectation check, and a projection that trails it. */
function world(grouping: false | "atomic" | "chained" = false) {
  const atomicBatches = grouping === "atomic";
  const stream: StoredEvent[] = [{ seq: 1, subject: `events.policy.${POLICY_ID}.PolicyCreated`, envelope: createdEnvelope() }];
  /** The Nats-Msg-Id of each stored message ("" for none), as the server's Nats-Expected-Last-Msg-Id check sees it. */
  const msgIds: string[] = [""];
  const expectations: number[] = [];
  /** Events per append (a group of commands is one atomic batch, or one chain). */
  const batchSizes: number[] = [];
  /** The Nats-Msg-Ids of each chained append's messages. */
  const chains: string[][] = [];
  let beforeAppend: (() => void) | undefined;
  /** Called before link `i` of a chain reaches the stand-in server (another writer's message can come in between). */
  let beforeLink: ((i: number) => void) | undefined;
  const lastOf = (id: string) => stream.filter((e) => e.envelope.aggregate_id === id).at(-1)?.seq ?? 0;
  const store = {
    async lastSeqOf(id: string) { return lastOf(id); },
    async eventAt(seq: number) { return stream.find((e) => e.seq === seq) ?? null; },
    async append(id: string, expected: number, events: { envelope: EventEnvelope; msgId: string }[]): Promise<PubAck[]> {
      beforeAppend?.();
      expectations.push(expected);
      batchSizes.push(events.length);
      if (events.length > 1 && !atomicBatches) throw new Error("no atomic batches on this server");
      if (lastOf(id) !== expected) throw new ConcurrencyError(id, expected, new Error("wrong last sequence"));
      return events.map(({ envelope, msgId }) => {
        const seq = stream.length + 1;
        stream.push({ seq, subject: `events.policy.${id}.${envelope.event_type}`, envelope });
        msgIds.push(msgId);
        return { stream: "POLICY_EVENTS", seq, duplicate: false } as PubAck;
      });
    },
    // nats-server's rules (test/integration/chained-appends.test.ts checks them on a real one): the head is checked
    // against the aggregate's last sequence, each later link against the stream's last message id.
    async appendChained(id: string, expected: number, events: { envelope: EventEnvelope; msgId: string }[]) {
      beforeAppend?.();
      expectations.push(expected);
      batchSizes.push(events.length);
      chains.push(events.map((e) => e.msgId));
      const acks: PubAck[] = [];
      for (const [i, { envelope, msgId }] of events.entries()) {
        beforeLink?.(i);
        if (i === 0 ? lastOf(id) !== expected : msgIds.at(-1) !== events[i - 1]!.msgId) {
          const cause = new Error(i === 0 ? "wrong last sequence" : "wrong last msg ID");
          return { acks, stoppedBy: i === 0 ? new ConcurrencyError(id, expected, cause) : cause };
        }
        const seq = stream.length + 1;
        stream.push({ seq, subject: `events.policy.${id}.${envelope.event_type}`, envelope });
        msgIds.push(msgId);
        acks.push({ stream: "POLICY_EVENTS", seq, duplicate: false } as PubAck);
      }
      return { acks };
    },
    maybeSnapshot() {},
    // The stream has one replica (EventStore.checkReplicas): chains allowed.
    chainable: true,
  } as unknown as EventStore;

  // The projection: applies the stream up to `applied` only when release() is called.
  const known = new Map<string, { state: AggregateState; seq: number }>();
  const commandIndex = new Map<string, number[]>();
  const listeners = new Set<(state: AggregateState, event: EventEnvelope, seq: number) => void>();
  const seqWaiters = new Set<{ seq: number; resolve: (ok: boolean) => void }>();
  let applied = 0;
  function release(): void {
    for (const e of stream.filter((s) => s.seq > applied)) {
      applied = e.seq;
      const state = evolve(known.get(e.envelope.aggregate_id)?.state, e.envelope);
      known.set(e.envelope.aggregate_id, { state, seq: e.seq });
      if (e.envelope.command_id) commandIndex.set(e.envelope.command_id, [...(commandIndex.get(e.envelope.command_id) ?? []), e.seq]);
      for (const l of listeners) l(state, e.envelope, e.seq);
    }
    for (const w of seqWaiters) if (w.seq <= applied) { seqWaiters.delete(w); w.resolve(true); }
  }
  release();
  const projection = {
    caughtUp: true,
    get lastSeq() { return applied; },
    get: (id: string) => known.get(id),
    commandSeqs: (id: string) => commandIndex.get(id),
    onEvent(listener: (state: AggregateState, event: EventEnvelope, seq: number) => void) { listeners.add(listener); return () => listeners.delete(listener); },
    waitForSeq(seq: number, timeoutMs: number): Promise<boolean> {
      if (seq <= applied) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const waiter = { seq, resolve };
        seqWaiters.add(waiter);
        setTimeout(() => { if (seqWaiters.delete(waiter)) resolve(false); }, timeoutMs);
      });
    },
  } as unknown as CommandProjection;
  const records = new Map<string, string>();
  const commands = {
    async get() { return null; },
    async put(key: string, value: string) { records.set(key, value); return 1; },
  } as unknown as KV;
  const handler = new CommandHandler({ store, projection, commands, logger: pino({ level: "silent" }), atomicBatches, groupAppends: grouping || undefined });
  return {
    stream, msgIds, expectations, batchSizes, chains, handler, release,
    setBeforeAppend: (f: (() => void) | undefined) => { beforeAppend = f; },
    setBeforeLink: (f: ((i: number) => void) | undefined) => { beforeLink = f; },
    setChainable: (v: boolean) => { (store as { chainable: boolean }).chainable = v; },
    /** Another instance's update, decided on everything stored so far, stored next (as the server would store it). */
    appendForeign(eventId: string): void {
      const state = stream.reduce<AggregateState | undefined>((s, e) => evolve(s, e.envelope), undefined);
      const parsed = parseCommand("update", JSON.parse(update("foreign")));
      assert.ok(parsed.ok);
      const decision = decide(state, parsed.command, { now: NOW, refs: new Map() });
      assert.ok(decision.ok);
      const [event] = decision.events;
      stream.push({ seq: stream.length + 1, subject: "x", envelope: { ...stream[0]!.envelope, event_id: eventId, event_type: event!.event_type, version: state!.version + 1, data: event!.data } });
      msgIds.push(eventId);
    },
  };
}

/** Polls (bounded) until `condition` holds; false if it never does within `ms`. */
async function eventually(condition: () => boolean, ms = 1000): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until;) {
    if (condition()) return true;
    await new Promise((r) => setTimeout(r, 2));
  }
  return condition();
}

function track(promise: Promise<Reply>) {
  const t = { reply: undefined as Reply | undefined, promise };
  void promise.then((r) => { t.reply = r; });
  return t;
}

const update = (name: string, commandId?: string) => JSON.stringify({ policy_id: POLICY_ID, updated_by: "ops", name, ...(commandId ? { command_id: commandId } : {}) });

test("commands queued on one aggregate are appended back to back, before the projection has applied any of them", async () => {
  const w = world();
  const replies = ["a", "b", "c"].map((name) => track(w.handler.execute("update", update(name))));
  assert.ok(await eventually(() => w.stream.length === 4), `appends before the projection moved: ${w.expectations.join(", ")}`);
  assert.deepEqual(w.expectations, [1, 2, 3], "each expected the previous one's ack");
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(replies.every((t) => t.reply === undefined), "no reply before this instance's projection has the event");
  w.release();
  const done = await Promise.all(replies.map((t) => t.promise));
  assert.deepEqual(done.map((r) => r.ok && r.version), [2, 3, 4]);
  assert.deepEqual(w.stream.map((e) => e.envelope.version), [1, 2, 3, 4]);
  assert.equal(w.handler.counters.conflictRetries, 0);
});

test("an event of another writer after an own append: the carried state is dropped, the command loses the race and decides again", async () => {
  const w = world();
  // Right after this instance's first append, another instance appends version 3 on top of it.
  w.setBeforeAppend(() => {
    if (w.stream.length !== 2) return;
    w.setBeforeAppend(undefined);
    w.appendForeign("0190a0a0-0000-7000-8000-0000000000ff");
  });
  const first = track(w.handler.execute("update", update("a")));
  const second = track(w.handler.execute("update", update("b")));
  assert.ok(await eventually(() => w.expectations.length >= 2));
  w.release();
  assert.ok(await eventually(() => w.stream.length === 4));
  w.release();
  const [r1, r2] = await Promise.all([first.promise, second.promise]);
  assert.ok(r1.ok && r1.version === 2, JSON.stringify(r1));
  assert.ok(r2.ok && r2.version === 4, JSON.stringify(r2));
  // Lost once against the carried state (expected 2 while the stream was at 3), then decided against the projection.
  assert.deepEqual(w.expectations, [1, 2, 3]);
  assert.deepEqual(w.stream.map((e) => e.envelope.version), [1, 2, 3, 4]);
  assert.equal(w.handler.counters.conflictRetries, 1);
});

test("a refusal decided on the carried state waits for the projection and is confirmed against the stream", async () => {
  const w = world();
  const approve = JSON.stringify({ policy_id: POLICY_ID, approved_by: "ops" });
  const first = track(w.handler.execute("approve", approve));
  const second = track(w.handler.execute("approve", approve));
  assert.ok(await eventually(() => w.stream.length === 2));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(second.reply, undefined, "not refused before the projection shows the state it was refused on");
  w.release();
  const [r1, r2] = await Promise.all([first.promise, second.promise]);
  assert.ok(r1.ok && r1.version === 2, JSON.stringify(r1));
  assert.ok(!r2.ok && r2.error.code === "invalid_transition", JSON.stringify(r2));
  assert.equal(w.stream.length, 2, "the refusal wrote nothing");
});

test("a retry of a command_id queued behind its first attempt gets the original reply, stored once", async () => {
  const w = world();
  const commandId = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
  const other = track(w.handler.execute("update", update("x")));
  const first = track(w.handler.execute("update", update("a", commandId)));
  const retry = track(w.handler.execute("update", update("a", commandId)));
  assert.ok(await eventually(() => w.stream.length === 3));
  w.release();
  const [, r1, r2] = await Promise.all([other.promise, first.promise, retry.promise]);
  assert.deepEqual(r2, r1);
  assert.equal(w.stream.filter((e) => e.envelope.command_id === commandId).length, 1);
  assert.equal(w.handler.counters.duplicates, 1);
});

test("with atomic batches, the commands waiting behind one are decided on the state it leaves and appended with it, once", async () => {
  const w = world("atomic");
  const replies = ["a", "b", "c", "d", "e"].map((name, i) => track(w.handler.execute("update", update(name, `7d444840-9dc0-11d1-b245-5ffdce74fa0${i}`))));
  assert.ok(await eventually(() => w.stream.length === 6));
  assert.deepEqual(w.batchSizes, [5], "one atomic batch for the five commands");
  assert.deepEqual(w.expectations, [1]);
  w.release();
  const done = await Promise.all(replies.map((t) => t.promise));
  assert.deepEqual(done.map((r) => r.ok && r.version), [2, 3, 4, 5, 6]);
  assert.deepEqual(done.map((r) => r.ok && r.events[0]!.seq), [2, 3, 4, 5, 6], "each reply names its own event");
  assert.deepEqual(w.stream.map((e) => e.envelope.command_id), [null, ...[0, 1, 2, 3, 4].map((i) => `7d444840-9dc0-11d1-b245-5ffdce74fa0${i}`)]);
});

test("a group stops at a refusal (confirmed on its own) and at a second attempt of a command_id in it", async () => {
  const w = world("atomic");
  const commandId = "7d444840-9dc0-11d1-b245-5ffdce74fad3";
  // Every command carries a command_id, so all of them pass the (asynchronous) record lookup and queue in this order.
  const approve = (n: number) => JSON.stringify({ policy_id: POLICY_ID, approved_by: "ops", command_id: `7d444840-9dc0-11d1-b245-5ffdce74fae${n}` });
  const first = track(w.handler.execute("update", update("a", commandId)));
  const retry = track(w.handler.execute("update", update("a", commandId)));
  const approved = track(w.handler.execute("approve", approve(1)));
  const again = track(w.handler.execute("approve", approve(2)));
  assert.ok(await eventually(() => w.stream.length === 3));
  w.release();
  const [r1, r2, r3, r4] = await Promise.all([first.promise, retry.promise, approved.promise, again.promise]);
  assert.deepEqual(r2, r1, "the retry got the original reply");
  assert.ok(r3.ok && r3.version === 3, JSON.stringify(r3));
  assert.ok(!r4.ok && r4.error.code === "invalid_transition", JSON.stringify(r4));
  assert.equal(w.stream.filter((e) => e.envelope.command_id === commandId).length, 1);
  assert.deepEqual(w.stream.map((e) => e.envelope.version), [1, 2, 3]);
  // The retry stopped the first group (it ran alone and found its first attempt), the refusal the second.
  assert.deepEqual(w.batchSizes, [1, 1]);
});

test("a group that loses the race: every command of it runs again on its own and is stored once", async () => {
  const w = world("atomic");
  w.setBeforeAppend(() => {
    w.setBeforeAppend(undefined);
    // Another instance appends version 2 first.
    w.appendForeign("0190a0a0-0000-7000-8000-0000000000fe");
  });
  const replies = ["a", "b", "c"].map((name) => track(w.handler.execute("update", update(name))));
  assert.ok(await eventually(() => w.expectations.length >= 1));
  w.release();
  assert.ok(await eventually(() => w.stream.length === 5), `appends: ${w.batchSizes.join(", ")}`);
  w.release();
  const done = await Promise.all(replies.map((t) => t.promise));
  assert.ok(done.every((r) => r.ok), JSON.stringify(done));
  assert.deepEqual(w.batchSizes[0], 3, "first the three as one batch");
  assert.deepEqual(w.stream.map((e) => e.envelope.version), [1, 2, 3, 4, 5]);
  assert.deepEqual(done.map((r) => r.ok && r.version).sort(), [3, 4, 5]);
});

test("chained (R1), the commands waiting behind one are decided on the state it leaves and appended with it as one chain, once", async () => {
  const w = world("chained");
  const ids = [0, 1, 2, 3, 4].map((i) => `7d444840-9dc0-11d1-b245-5ffdce74fb0${i}`);
  const replies = ["a", "b", "c", "d", "e"].map((name, i) => track(w.handler.execute("update", update(name, ids[i]))));
  assert.ok(await eventually(() => w.stream.length === 6));
  assert.deepEqual(w.batchSizes, [5], "one chain for the five commands");
  assert.deepEqual(w.expectations, [1]);
  // The head keeps its command_id's id (a re-send deduplicates); each follower's is its event id, named by the next link.
  assert.equal(w.chains[0]![0], `${ids[0]}:0:1`);
  assert.deepEqual(w.chains[0]!.slice(1), w.stream.slice(2).map((e) => e.envelope.event_id));
  w.release();
  const done = await Promise.all(replies.map((t) => t.promise));
  assert.deepEqual(done.map((r) => r.ok && r.version), [2, 3, 4, 5, 6]);
  assert.deepEqual(done.map((r) => r.ok && r.events[0]!.seq), [2, 3, 4, 5, 6], "each reply names its own event");
  assert.deepEqual(w.stream.map((e) => e.envelope.command_id), [null, ...ids]);
  assert.equal(w.handler.counters.chainBreaks, 0);
});

test("chained, another writer's event between two links: the stored prefix answers, the rest runs again on its own, each once", async () => {
  const w = world("chained");
  w.setBeforeLink((i) => {
    if (i !== 2) return;
    w.setBeforeLink(undefined);
    // Another instance, whose projection saw link 1 (version 3), appends version 4 on top of it.
    w.appendForeign("0190a0a0-0000-7000-8000-0000000000fd");
  });
  const names = ["a", "b", "c", "d"];
  const replies = names.map((name) => track(w.handler.execute("update", update(name))));
  assert.ok(await eventually(() => w.stream.length >= 4));
  w.release();
  assert.ok(await eventually(() => w.stream.length === 6), `appends: ${w.batchSizes.join(", ")}`);
  w.release();
  const done = await Promise.all(replies.map((t) => t.promise));
  assert.ok(done.every((r) => r.ok), JSON.stringify(done));
  assert.equal(w.batchSizes[0], 4, "first the four as one chain");
  assert.deepEqual(w.stream.map((e) => e.envelope.version), [1, 2, 3, 4, 5, 6], "contiguous: the rest was decided after the foreign event");
  assert.deepEqual(done.map((r) => r.ok && r.version), [2, 3, 5, 6]);
  for (const name of names) assert.equal(w.stream.filter((e) => (e.envelope.data as { name?: string }).name === name).length, 1, `${name} stored once`);
  assert.equal(w.handler.counters.chainBreaks, 1);
});

test("chained, but the stream was last found replicated (EventStore.chainable false): one publish per command", async () => {
  const w = world("chained");
  w.setChainable(false);
  const replies = ["a", "b", "c", "d"].map((name) => track(w.handler.execute("update", update(name))));
  assert.ok(await eventually(() => w.stream.length === 5));
  w.release();
  const done = await Promise.all(replies.map((t) => t.promise));
  assert.deepEqual(done.map((r) => r.ok && r.version), [2, 3, 4, 5]);
  assert.deepEqual(w.batchSizes, [1, 1, 1, 1]);
  assert.deepEqual(w.chains, [], "no chain");
});
