// A stored command answers its retries from its event: the event carries the payload hash (Policy-Command-Sha256),
// so no idempotency record is written for it. Here the handler has no projection, so every command loads its
// aggregate from the stream (the path of an instance whose projection is still replaying at start-up), and the
// stream holds events of an earlier release too (no hash header; their writer kept a record instead).
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { KV } from "@nats-io/kv";
import type { PubAck } from "@nats-io/jetstream";
import { evolve, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { CommandHandler, type CommandProjection } from "../../src/app/commands.js";
import { canonicalJson } from "../../src/support/canonical-json.js";
import { ConcurrencyError, type EventStore, type EventToAppend, type StoredEvent } from "../../src/adapters/nats/event-store.js";
import { createHash } from "node:crypto";
import { createPayload } from "./domainHarness.js";

const POLICY_ID = "550e8400-e29b-41d4-a716-446655440000";

function world(successRecords?: () => boolean) {
  const stream: StoredEvent[] = [];
  /** Events per append (a group of commands is one atomic batch). */
  const batchSizes: number[] = [];
  const of = (id: string) => stream.filter((e) => e.envelope.aggregate_id === id);
  const store = {
    async lastSeqOf(id: string) { return of(id).at(-1)?.seq ?? 0; },
    async eventAt(seq: number) { return stream.find((e) => e.seq === seq) ?? null; },
    async readEvents(id: string, from: number, to: number) { return of(id).filter((e) => e.seq >= from && e.seq <= to); },
    async load(id: string) {
      const events = of(id);
      let state: AggregateState | undefined;
      for (const e of events) state = evolve(state, e.envelope);
      return { aggregateId: id, state, lastSeq: events.at(-1)?.seq ?? 0, version: state?.version ?? 0, snapshotSeq: 0, eventsRead: events.length, tail: events };
    },
    async append(id: string, expected: number, events: EventToAppend[]): Promise<PubAck[]> {
      batchSizes.push(events.length);
      if ((of(id).at(-1)?.seq ?? 0) !== expected) throw new ConcurrencyError(id, expected, new Error("wrong last sequence"));
      return events.map(({ envelope, commandHash }) => {
        const seq = stream.length + 1;
        stream.push({ seq, subject: `events.policy.${id}.${envelope.event_type}`, envelope, commandHash: commandHash ?? null });
        return { stream: "POLICY_EVENTS", seq, duplicate: false } as PubAck;
      });
    },
    maybeSnapshot() {},
  } as unknown as EventStore;
  const records = new Map<string, string>();
  const commands = {
    async get(key: string) {
      const value = records.get(key);
      return value === undefined ? null : { operation: "PUT", length: value.length, json: () => JSON.parse(value) };
    },
    async put(key: string, value: string) { records.set(key, value); return 1; },
  } as unknown as KV;
  const handler = new CommandHandler({ store, commands, logger: pino({ level: "silent" }), atomicBatches: false, ...(successRecords ? { successRecords } : {}) });
  return { stream, records, handler, store, commands, batchSizes };
}

const hash = (payload: unknown) => createHash("sha256").update(canonicalJson(payload)).digest("hex");

test("a stored command: its event has the payload hash, no record; a retry gets the same reply, another payload conflict", async () => {
  const { stream, records, handler } = world();
  assert.equal((await handler.execute("create", JSON.stringify(createPayload(POLICY_ID)))).ok, true);
  const update = { policy_id: POLICY_ID, updated_by: "ops", name: "renamed", command_id: "7d1c1f7e-3b1a-4c4e-9a43-0d3c5b2b9f10" };
  const first = await handler.execute("update", JSON.stringify(update));
  assert.equal(first.ok, true, JSON.stringify(first));
  assert.equal(stream.at(-1)!.commandHash, hash(update));
  assert.equal(records.size, 0, "no idempotency record for a stored command");
  const retry = await handler.execute("update", JSON.stringify(update));
  assert.equal(JSON.stringify(retry), JSON.stringify(first), "the same reply, byte for byte");
  const other = await handler.execute("update", JSON.stringify({ ...update, name: "something else" }));
  assert.ok(!other.ok && other.error.code === "conflict", JSON.stringify(other));
  assert.equal(stream.length, 2, "nothing stored by the retry or the reuse");
});

test("an event of an earlier release (no hash header): its record tells a reuse apart; without one, the original reply", async () => {
  const { stream, records, handler } = world();
  assert.equal((await handler.execute("create", JSON.stringify(createPayload(POLICY_ID)))).ok, true);
  const update = { policy_id: POLICY_ID, updated_by: "ops", name: "by an older instance", command_id: "0b7f3f0e-6a55-4f51-8c39-1c1c3a6c2d01" };
  const first = await handler.execute("update", JSON.stringify(update));
  assert.equal(first.ok, true);
  // As an earlier release stored it: no header, and the reply in the COMMANDS bucket.
  stream.at(-1)!.commandHash = null;
  const reused = await handler.execute("update", JSON.stringify({ ...update, name: "another payload" }));
  assert.equal(reused.ok, true, "without header and record the reuse cannot be told apart: the original reply (documented limit)");
  assert.deepEqual(reused, first);
  records.set(update.command_id, JSON.stringify({ payload_sha256: hash(update), reply: first }));
  const conflict = await handler.execute("update", JSON.stringify({ ...update, name: "another payload" }));
  assert.ok(!conflict.ok && conflict.error.code === "conflict", JSON.stringify(conflict));
  assert.deepEqual(await handler.execute("update", JSON.stringify(update)), first);
  assert.equal(stream.length, 2);
});

test("outcomes that store no event are remembered: a refusal and a no-op", async () => {
  const { stream, records, handler } = world();
  const approve = { policy_id: POLICY_ID, approved_by: "ops", command_id: "5f0f5a4e-2c1d-4b7e-8f3a-9e2d1c0b7a61" };
  const refused = await handler.execute("approve", JSON.stringify(approve));
  assert.ok(!refused.ok && refused.error.code === "not_found", JSON.stringify(refused));
  assert.ok(records.has(approve.command_id), "the refusal is recorded");
  assert.equal((await handler.execute("create", JSON.stringify(createPayload(POLICY_ID)))).ok, true);
  assert.deepEqual(await handler.execute("approve", JSON.stringify(approve)), refused, "the remembered refusal, not a new decision");
  assert.equal(stream.length, 1, "the approve never stored an event");

  const rename = { policy_id: POLICY_ID, updated_by: "ops", name: "same name" };
  assert.equal((await handler.execute("update", JSON.stringify(rename))).ok, true);
  const again = { ...rename, command_id: "c3b8e0d2-1f4a-4d6b-9a7e-2b5c8d0e1f32" };
  const noop = await handler.execute("update", JSON.stringify(again));
  assert.ok(noop.ok && noop.events.length === 0, JSON.stringify(noop));
  assert.ok(records.has(again.command_id), "the no-op is recorded");
});

/**
 * With a projection that applies the stream only when told and atomic batches on: commands queued on one aggregate
 * are appended as one batch (docs/concurrency.md, Grouped appends); each event must carry its own command's hash.
 */
test("a grouped append: each event carries its own command's payload hash; retries and reuses of each are told apart", async () => {
  // The store and bucket of world(), with a projection stand-in in front of them.
  const base = world();
  assert.equal((await base.handler.execute("create", JSON.stringify(createPayload(POLICY_ID)))).ok, true);
  const known = new Map<string, { state: AggregateState; seq: number }>();
  const index = new Map<string, number[]>();
  const listeners = new Set<(state: AggregateState, event: EventEnvelope, seq: number) => void>();
  const waiters = new Set<{ seq: number; resolve: (ok: boolean) => void }>();
  let applied = 0;
  const release = () => {
    for (const e of base.stream.filter((x) => x.seq > applied)) {
      applied = e.seq;
      const state = evolve(known.get(e.envelope.aggregate_id)?.state, e.envelope)!;
      known.set(e.envelope.aggregate_id, { state, seq: e.seq });
      if (e.envelope.command_id) index.set(e.envelope.command_id, [...(index.get(e.envelope.command_id) ?? []), e.seq]);
      for (const l of listeners) l(state, e.envelope, e.seq);
    }
    for (const w of waiters) if (w.seq <= applied) { waiters.delete(w); w.resolve(true); }
  };
  release();
  const projection = {
    caughtUp: true,
    get lastSeq() { return applied; },
    get: (id: string) => known.get(id),
    commandSeqs: (id: string) => index.get(id),
    onEvent(l: (state: AggregateState, event: EventEnvelope, seq: number) => void) { listeners.add(l); return () => listeners.delete(l); },
    waitForSeq(seq: number, timeoutMs: number) {
      if (seq <= applied) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const w = { seq, resolve };
        waiters.add(w);
        setTimeout(() => { if (waiters.delete(w)) resolve(false); }, timeoutMs);
      });
    },
  } as unknown as CommandProjection;
  const grouped = new CommandHandler({ store: base.store, commands: base.commands, projection, logger: pino({ level: "silent" }), atomicBatches: true, groupAppends: "atomic" });
  const bodies = [0, 1, 2, 3].map((i) => ({ policy_id: POLICY_ID, updated_by: "ops", name: `name ${i}`, command_id: `9a4f3c1e-0b2d-4e6f-8a1c-3d5e7f9b1c2${i}` }));
  const pending = bodies.map((b) => grouped.execute("update", JSON.stringify(b)));
  for (let i = 0; i < 200 && base.stream.length < 5; i++) await new Promise((r) => setTimeout(r, 2));
  release();
  const replies = await Promise.all(pending);
  assert.ok(replies.every((r) => r.ok), JSON.stringify(replies));
  assert.ok(base.batchSizes.some((n) => n > 1), `grouped into a batch: ${base.batchSizes.join(", ")}`);
  assert.deepEqual(base.stream.slice(1).map((e) => e.commandHash), bodies.map(hash), "each event has its own command's hash");
  // After the group: a retry of each gets its own reply, a reuse of each another payload is conflict.
  for (const [i, b] of bodies.entries()) {
    assert.deepEqual(await grouped.execute("update", JSON.stringify(b)), replies[i]);
    const reuse = await grouped.execute("update", JSON.stringify({ ...b, name: "reused" }));
    assert.ok(!reuse.ok && reuse.error.code === "conflict", JSON.stringify(reuse));
  }
  assert.equal(base.stream.length, 5);
  assert.equal(base.records.size, 0, "no records for stored commands");
});

test("while an older build may serve the stream (the gate says so), a stored command writes its record too; a retry writes the one its first attempt stored without", async () => {
  let olderPeer = true;
  const { stream, records, handler } = world(() => olderPeer);
  assert.equal((await handler.execute("create", JSON.stringify(createPayload(POLICY_ID)))).ok, true);
  const update = { policy_id: POLICY_ID, updated_by: "ops", name: "during the roll", command_id: "9a4e1c2b-7d3f-4e5a-8b6c-0d1e2f3a4b51" };
  const first = await handler.execute("update", JSON.stringify(update));
  assert.equal(first.ok, true, JSON.stringify(first));
  assert.deepEqual(JSON.parse(records.get(update.command_id)!), { payload_sha256: hash(update), reply: first }, "the record 0.9.0 looks up");
  assert.equal(stream.at(-1)!.commandHash, hash(update), "and the header");

  olderPeer = false;
  const later = { ...update, name: "after the roll", command_id: "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c52" };
  const stored = await handler.execute("update", JSON.stringify(later));
  assert.equal(stored.ok, true);
  assert.equal(records.has(later.command_id), false, "no older peer: no record");
  // An older instance appears (a rollback): a retry of that command, answered here, writes the missing record.
  olderPeer = true;
  assert.deepEqual(await handler.execute("update", JSON.stringify(later)), stored);
  assert.deepEqual(JSON.parse(records.get(later.command_id)!), { payload_sha256: hash(later), reply: stored });
  // A reuse with another payload writes nothing (the record keeps the first payload's hash).
  const reuse = await handler.execute("update", JSON.stringify({ ...later, name: "another payload" }));
  assert.ok(!reuse.ok && reuse.error.code === "conflict", JSON.stringify(reuse));
  assert.equal(JSON.parse(records.get(later.command_id)!).payload_sha256, hash(later));
  assert.equal(stream.length, 3, "nothing stored twice");
});

test("a retry of an event without the hash header (an older build stored it and kept its record) writes no record", async () => {
  const { stream, records, handler } = world(() => true);
  assert.equal((await handler.execute("create", JSON.stringify(createPayload(POLICY_ID)))).ok, true);
  const update = { policy_id: POLICY_ID, updated_by: "ops", name: "older", command_id: "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e63" };
  const first = await handler.execute("update", JSON.stringify(update));
  stream.at(-1)!.commandHash = null;
  records.clear(); // its record expired or was never readable: the retry cannot tell which payload the event was for
  assert.deepEqual(await handler.execute("update", JSON.stringify(update)), first);
  assert.equal(records.size, 0, "no record with a hash the event does not confirm");
});
