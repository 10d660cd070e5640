// An in-memory event history for unit tests: commands go through the real parseCommand / decide / evolve.
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  EVENT_AGGREGATE, decide, parseCommand, referencedIds, replay,
  type AggregateState, type CommandName, type EventEnvelope, type ExemptionState, type PolicyState,
} from "../../src/domain/index.js";

/** An in-memory event history: commands go through the real parseCommand / decide / evolve. */
export class History {
  readonly events = new Map<string, EventEnvelope[]>();

  stateAt(id: string, at?: string): AggregateState | undefined {
    const all = this.events.get(id) ?? [];
    const cutoff = at === undefined ? Infinity : Date.parse(at);
    return replay(all.filter((e) => Date.parse(e.occurred_at) <= cutoff));
  }

  run(name: CommandName, payload: Record<string, unknown>, now: string): string {
    const parsed = parseCommand(name, payload);
    if (!parsed.ok) throw new Error(`${name} rejected: ${JSON.stringify(parsed.error)}`);
    const route = { policy_id: "policy_id", policy_set_id: "policy_set_id", exemption_id: "exemption_id" } as const;
    const idField = name.includes("exemption") ? route.exemption_id : name.includes("set") ? route.policy_set_id : route.policy_id;
    const id = (parsed.command.payload as unknown as Record<string, string>)[idField];
    if (id === undefined) throw new Error(`${name}: test payload needs ${idField}`);
    const refs = new Map(referencedIds(parsed.command).map((ref) => [ref, this.stateAt(ref)]));
    const current = this.stateAt(id);
    const decision = decide(current, parsed.command, { now, refs });
    if (!decision.ok) throw new Error(`${name} refused: ${JSON.stringify(decision.error)}`);
    const list = this.events.get(id) ?? [];
    let version = current?.version ?? 0;
    for (const event of decision.events) {
      list.push({
        event_id: randomUUID(),
        event_type: event.event_type,
        aggregate_type: EVENT_AGGREGATE[event.event_type],
        aggregate_id: id,
        version: ++version,
        occurred_at: now,
        command_id: null,
        correlation_id: null,
        causation_id: null,
        data: event.data,
      });
    }
    this.events.set(id, list);
    return id;
  }

  policy(id: string, at?: string): PolicyState {
    const state = this.stateAt(id, at);
    assert.equal(state?.aggregate_type, "Policy");
    return state as PolicyState;
  }

  exemption(id: string, at?: string): ExemptionState {
    const state = this.stateAt(id, at);
    assert.equal(state?.aggregate_type, "PolicyExemption");
    return state as ExemptionState;
  }
}
