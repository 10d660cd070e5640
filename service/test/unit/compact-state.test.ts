// The read side's leaner representation of states (support/compact-state.ts): the same values as evolve() returns,
// fewer copies. A compacted state must stay deep-equal to the plain one after every event, and stay usable by evolve.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { evolve, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { StateCompactor } from "../../src/support/compact-state.js";
import { createPayload, EventLog, everyAggregateTypeLog, rule, uuid } from "./domainHarness.js";

/** Folds events with and without compaction; asserts equality after every event; returns the compacted states. */
function foldBoth(compactor: StateCompactor, events: EventEnvelope[]): AggregateState | undefined {
  let plain: AggregateState | undefined;
  let compact: AggregateState | undefined;
  for (const event of events) {
    plain = evolve(plain, event);
    // A JSON copy: compaction must not depend on sharing objects with the plain fold.
    compact = compactor.compact(evolve(compact, JSON.parse(JSON.stringify(event)) as EventEnvelope), compact);
    assert.deepEqual(compact, plain, `after ${event.event_type} v${event.version}`);
  }
  return compact;
}

test("a compacted state is deep-equal to evolve()'s after every event of every aggregate type", () => {
  const log = everyAggregateTypeLog();
  const compactor = new StateCompactor();
  assert.ok(log.streams.size >= 5);
  for (const events of log.streams.values()) assert.ok(foldBoth(compactor, events));
});

test("empty lists point at one frozen empty array, and evolve still adds to them", () => {
  const log = new EventLog();
  log.ok("create", createPayload(uuid(1)), ["created"]);
  log.ok("create", createPayload(uuid(2)), ["created"]);
  const compactor = new StateCompactor();
  const a = foldBoth(compactor, log.events(uuid(1))) as unknown as { rules: unknown[]; tags: unknown[] };
  const b = foldBoth(compactor, log.events(uuid(2))) as unknown as { rules: unknown[]; tags: unknown[] };
  assert.equal(a.rules, b.rules, "one empty rules array for both");
  assert.equal(a.tags, b.rules, "and the same for tags");
  assert.ok(Object.isFrozen(a.rules));
  log.ok("add_rule", { policy_id: uuid(1), rule: rule("r1") }, ["rule_added"]);
  const added = foldBoth(compactor, log.events(uuid(1))) as unknown as { rules: { rule_id: string }[] };
  assert.deepEqual(added.rules.map((r) => r.rule_id), ["r1"]);
  assert.equal(b.rules.length, 0, "the shared empty array is untouched");
});

test("the table of shared values is bounded, and repeated values are counted once", () => {
  const compactor = new StateCompactor();
  const log = new EventLog();
  for (let i = 1; i <= 3; i++) log.ok("create", createPayload(uuid(i), { owner: "platform-team" }), ["created"]);
  for (const events of log.streams.values()) foldBoth(compactor, events);
  // policy_type, enforcement, scope, status, owner: each once although three policies carry them.
  assert.equal(compactor.sharedValues, 5);
  const many = new StateCompactor();
  const base = log.events(uuid(1))[0]!;
  for (let i = 0; i < 60_000; i++) {
    const event = { ...base, data: { ...base.data, owner: `owner-${i}` } } as EventEnvelope;
    many.compact(evolve(undefined, event), undefined);
  }
  assert.ok(many.sharedValues <= 50_000, `${many.sharedValues} shared values`);
});
