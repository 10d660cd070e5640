// The bounded retry after lost append races: a command that keeps losing surfaces as `conflict` only after
// MAX_CONFLICT_RETRIES + 1 attempts, reloading the aggregate before each one. A real race that loses nine times in a
// row cannot be provoked reliably against a server, so the event store is replaced here by one that always loses.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { KV } from "@nats-io/kv";
import { decide, evolve, parseCommand, type EventEnvelope } from "../../src/domain/index.js";
import { CommandHandler, MAX_CONFLICT_RETRIES } from "../../src/app/commands.js";
import { ConcurrencyError, type EventStore, type LoadedAggregate } from "../../src/adapters/nats/event-store.js";
import { createPayload } from "./domainHarness.js";

const POLICY_ID = "550e8400-e29b-41d4-a716-446655440000";
const NOW = "2026-01-01T00:00:00.000Z";

function createdPolicy() {
  const parsed = parseCommand("create", createPayload(POLICY_ID));
  assert.ok(parsed.ok);
  const decision = decide(undefined, parsed.command, { now: NOW, refs: new Map() });
  assert.ok(decision.ok);
  const event = decision.events[0]!;
  const envelope: EventEnvelope = {
    event_id: "0190a0a0-0000-7000-8000-000000000001", event_type: event.event_type, aggregate_type: "Policy",
    aggregate_id: POLICY_ID, version: 1, occurred_at: NOW, command_id: null, correlation_id: null, causation_id: null, data: event.data,
  };
  return evolve(undefined, envelope);
}

test("a command that loses every append race replies conflict after MAX_CONFLICT_RETRIES + 1 attempts", async () => {
  const state = createdPolicy();
  let loads = 0;
  const expectations: number[] = [];
  const alwaysLosing = {
    // Another writer moves the aggregate on between every load and append.
    async load(): Promise<LoadedAggregate> {
      loads++;
      return { aggregateId: POLICY_ID, state, lastSeq: 10 + loads, version: 1, snapshotSeq: 0, eventsRead: 1, tail: [] };
    },
    async append(aggregateId: string, expectedLastSeq: number): Promise<never> {
      expectations.push(expectedLastSeq);
      throw new ConcurrencyError(aggregateId, expectedLastSeq, new Error("wrong last sequence"));
    },
  } as unknown as EventStore;
  const handler = new CommandHandler({ store: alwaysLosing, commands: {} as KV, logger: pino({ level: "silent" }), atomicBatches: false });

  const reply = await handler.execute("update", JSON.stringify({ policy_id: POLICY_ID, updated_by: "ops", name: "Renamed" }));

  assert.equal(reply.ok, false);
  assert.ok(!reply.ok && reply.error.code === "conflict", JSON.stringify(reply));
  assert.equal(expectations.length, MAX_CONFLICT_RETRIES + 1);
  // Each attempt appended against the sequence it had just loaded: a reload, never a blind re-send.
  assert.deepEqual(expectations, Array.from({ length: MAX_CONFLICT_RETRIES + 1 }, (_, i) => 11 + i));
  assert.equal(handler.counters.conflicts, 1);
  assert.equal(handler.counters.conflictRetries, MAX_CONFLICT_RETRIES + 1);
});
