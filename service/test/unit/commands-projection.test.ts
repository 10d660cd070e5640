// Commands decide against the instance's projection, which may trail the stream. A refusal writes nothing, so no
// expected-sequence check guards it: it must be confirmed against the stream leader's last sequence first. The lag
// cannot be provoked reliably against a real server (on loopback the projection is always there first, see
// command-path.test.ts), so the projection and the store are stand-ins here that trail on purpose.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { KV } from "@nats-io/kv";
import type { PubAck } from "@nats-io/jetstream";
import { decide, evolve, parseCommand, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { CommandHandler, type CommandProjection } from "../../src/app/commands.js";
import type { EventStore, LoadedAggregate } from "../../src/adapters/nats/event-store.js";
import { createPayload } from "./domainHarness.js";

const POLICY_ID = "550e8400-e29b-41d4-a716-446655440000";
const NOW = "2026-01-01T00:00:00.000Z";

function draftPolicy(): AggregateState {
  const parsed = parseCommand("create", createPayload(POLICY_ID));
  assert.ok(parsed.ok);
  const decision = decide(undefined, parsed.command, { now: NOW, refs: new Map() });
  assert.ok(decision.ok);
  const envelope: EventEnvelope = {
    event_id: "0190a0a0-0000-7000-8000-000000000001", event_type: decision.events[0]!.event_type, aggregate_type: "Policy",
    aggregate_id: POLICY_ID, version: 1, occurred_at: NOW, command_id: null, correlation_id: null, causation_id: null, data: decision.events[0]!.data,
  };
  return evolve(undefined, envelope)!;
}

/** A projection that has not applied the policy's creation (stream sequence 5) until asked to wait for it. */
function trailingProjection(catchesUp: boolean) {
  const known = new Map<string, { state: AggregateState; seq: number }>();
  let lastSeq = 4;
  const projection = {
    caughtUp: true,
    get lastSeq() { return lastSeq; },
    get: (id: string) => known.get(id),
    commandSeqs: () => undefined,
    onEvent: () => () => true,
    async waitForSeq(seq: number) {
      if (seq <= lastSeq) return true;
      if (!catchesUp) return false;
      if (seq >= 5 && !known.has(POLICY_ID)) known.set(POLICY_ID, { state: draftPolicy(), seq: 5 });
      lastSeq = Math.max(lastSeq, seq);
      return true;
    },
  };
  return projection as unknown as CommandProjection;
}

function storeWithPolicyAt5(appends: number[], loads: { count: number }) {
  return {
    async lastSeqOf() { return 5; },
    async load(): Promise<LoadedAggregate> {
      loads.count++;
      return { aggregateId: POLICY_ID, state: draftPolicy(), lastSeq: 5, version: 1, snapshotSeq: 0, eventsRead: 1, tail: [] };
    },
    async append(_id: string, expected: number): Promise<PubAck[]> {
      appends.push(expected);
      return [{ stream: "POLICY_EVENTS", seq: 6, duplicate: false } as PubAck];
    },
    maybeSnapshot() {},
  } as unknown as EventStore;
}

for (const catchesUp of [true, false]) {
  test(`a not_found decided against a trailing projection is confirmed with the stream and decided again (${catchesUp ? "projection catches up" : "projection stuck: loaded from the stream"})`, async () => {
    const appends: number[] = [];
    const loads = { count: 0 };
    const handler = new CommandHandler({
      store: storeWithPolicyAt5(appends, loads), projection: trailingProjection(catchesUp), commands: {} as KV,
      logger: pino({ level: "silent" }), atomicBatches: false,
    });
    const reply = await handler.execute("approve", JSON.stringify({ policy_id: POLICY_ID, approved_by: "ops" }));
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.ok(reply.ok && reply.version === 2);
    assert.deepEqual(appends, [5], "appended once, against the policy's real last sequence");
    assert.equal(loads.count, catchesUp ? 0 : 1);
  });
}
