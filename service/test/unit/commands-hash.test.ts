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
import { CommandHandler, canonicalJson } from "../../src/app/commands.js";
import { ConcurrencyError, type EventStore, type EventToAppend, type StoredEvent } from "../../src/adapters/nats/event-store.js";
import { createHash } from "node:crypto";
import { createPayload } from "./domainHarness.js";

const POLICY_ID = "550e8400-e29b-41d4-a716-446655440000";

function world() {
  const stream: StoredEvent[] = [];
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
  const handler = new CommandHandler({ store, commands, logger: pino({ level: "silent" }), atomicBatches: false });
  return { stream, records, handler };
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
