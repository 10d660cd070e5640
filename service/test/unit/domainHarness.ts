// Given/when/then over the pure domain with an in-memory event log (no NATS): what the app layer does,
// minus I/O. Events go through a JSON round trip as they would through JetStream.
import * as assert from "node:assert/strict";
import {
  COMMAND_ROUTES, decide, parseCommand, referencedIds, replay,
  type AggregateState, type CommandName, type Decision, type EventEnvelope, type NewEvent,
} from "../../src/domain/index.js";

export const NOW = "2026-01-15T12:00:00Z";

/** Deterministic UUIDs for tests: uuid(1) = "00000000-0000-4000-8000-000000000001". */
export function uuid(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;
}

export interface SendResult {
  decision: Decision;
  id: string;
  stored: EventEnvelope[];
}

export class EventLog {
  readonly streams = new Map<string, EventEnvelope[]>();
  private eventCounter = 0;
  private idCounter = 0x100000;

  events(id: string): EventEnvelope[] {
    return this.streams.get(id) ?? [];
  }

  state(id: string): AggregateState | undefined {
    return replay(this.events(id));
  }

  /** Parses, loads, decides and appends like the command handler; returns what was stored. */
  send(name: CommandName, payload: Record<string, unknown>, now: string = NOW): SendResult {
    const route = COMMAND_ROUTES[name];
    // Like the command handler: an id is injected only into a JSON object (an array stays what it is).
    const body: Record<string, unknown> = Array.isArray(payload) ? payload : { ...payload };
    if (!Array.isArray(body) && route.creates && body[route.idField] === undefined) body[route.idField] = uuid(++this.idCounter);
    const parsed = parseCommand(name, JSON.parse(JSON.stringify(body)));
    if (!parsed.ok) return { decision: { ok: false, error: parsed.error }, id: String(body[route.idField]), stored: [] };
    const id = (parsed.command.payload as unknown as Record<string, string>)[route.idField] as string;
    const refs = new Map<string, AggregateState | undefined>();
    for (const ref of referencedIds(parsed.command)) refs.set(ref, this.state(ref));
    const state = this.state(id);
    const decision = decide(state, parsed.command, { now, refs });
    if (!decision.ok) return { decision, id, stored: [] };
    const stored = decision.events.map((event, index) =>
      this.envelope(id, route.aggregateType, (state?.version ?? 0) + index + 1, event, now, parsed.meta),
    );
    this.streams.set(id, [...this.events(id), ...stored]);
    return { decision, id, stored };
  }

  /** Sends and asserts success with exactly the given event types. */
  ok(name: CommandName, payload: Record<string, unknown>, eventTypes: string[], now: string = NOW): SendResult {
    const result = this.send(name, payload, now);
    assert.ok(result.decision.ok, `${name} failed: ${JSON.stringify(!result.decision.ok && result.decision.error)}`);
    assert.deepEqual(result.stored.map((event) => event.event_type), eventTypes);
    return result;
  }

  /** Sends and asserts the error code, and that nothing was stored. */
  fails(name: CommandName, payload: Record<string, unknown>, code: string, now: string = NOW): SendResult {
    const before = JSON.stringify([...this.streams]);
    const result = this.send(name, payload, now);
    assert.equal(result.decision.ok, false, `${name} should fail with ${code} but stored ${JSON.stringify(result.stored)}`);
    if (!result.decision.ok) assert.equal(result.decision.error.code, code, result.decision.error.message);
    assert.equal(JSON.stringify([...this.streams]), before, "a refused command stores nothing");
    return result;
  }

  private envelope(
    id: string,
    aggregateType: EventEnvelope["aggregate_type"],
    version: number,
    event: NewEvent,
    now: string,
    meta: { command_id: string | null; correlation_id: string | null },
  ): EventEnvelope {
    const envelope: EventEnvelope = {
      event_id: uuid(++this.eventCounter),
      event_type: event.event_type,
      aggregate_type: aggregateType,
      aggregate_id: id,
      version,
      occurred_at: now,
      command_id: meta.command_id,
      correlation_id: meta.correlation_id,
      causation_id: meta.command_id,
      data: event.data,
    };
    // Stored as JSON in JetStream: whatever does not survive JSON must not matter.
    return JSON.parse(JSON.stringify(envelope)) as EventEnvelope;
  }
}

// ---------------------------------------------------------------- payload builders

export function rule(ruleId: string | undefined, name = `Rule ${ruleId ?? "derived"}`): Record<string, unknown> {
  return {
    ...(ruleId === undefined ? {} : { rule_id: ruleId }),
    name,
    severity: "High",
    expression: { op: "equal", field: "record.flag", value: true },
  };
}

export function createPayload(policyId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    policy_id: policyId,
    name: "Data Retention Policy",
    description: "All customer data must be retained for 7 years",
    policy_type: "Retention",
    enforcement: "Mandatory",
    scope: "Organization",
    ...extra,
  };
}

export const POLICY_STATES = ["Draft", "Approved", "Active", "Suspended", "Revoked", "Archived"] as const;
export type PolicyStatusName = (typeof POLICY_STATES)[number];

/** Creates a policy with rules r1 and r2 and drives it to `status`. */
export function givenPolicy(log: EventLog, policyId: string, status: PolicyStatusName): void {
  log.ok("create", createPayload(policyId, { rules: [rule("r1"), rule("r2")] }), ["created"]);
  const path: Record<PolicyStatusName, [CommandName, Record<string, unknown>][]> = {
    Draft: [],
    Approved: [["approve", { approved_by: "officer" }]],
    Active: [["approve", { approved_by: "officer" }], ["activate", { activated_by: "officer" }]],
    Suspended: [
      ["approve", { approved_by: "officer" }],
      ["activate", { activated_by: "officer" }],
      ["suspend", { suspended_by: "officer", reason: "review" }],
    ],
    Revoked: [
      ["approve", { approved_by: "officer" }],
      ["activate", { activated_by: "officer" }],
      ["revoke", { revoked_by: "officer", reason: "superseded" }],
    ],
    Archived: [
      ["approve", { approved_by: "officer" }],
      ["activate", { activated_by: "officer" }],
      ["revoke", { revoked_by: "officer", reason: "superseded" }],
      ["archive", { archived_by: "officer" }],
    ],
  };
  for (const [name, payload] of path[status]) {
    const result = log.send(name, { policy_id: policyId, ...payload });
    assert.ok(result.decision.ok, `given ${status}: ${name} failed`);
  }
  assert.equal((log.state(policyId) as { status: string }).status, status);
}

/**
 * One log with an aggregate of every type in several states: two policies (one edited, with a rule added and
 * suspended, one archived), a fresh one, a granted then revoked exemption, a policy set. For tests that must hold for
 * every state shape the domain makes (compaction, the checkpoint's JSON round trip).
 */
export function everyAggregateTypeLog(): EventLog {
  const log = new EventLog();
  givenPolicy(log, uuid(1), "Active");
  log.ok("update", { policy_id: uuid(1), updated_by: "editor", name: "Renamed", tags: ["pii", "gdpr"] }, ["updated"]);
  log.ok("add_rule", { policy_id: uuid(1), rule: rule("r3") }, ["rule_added"]);
  givenPolicy(log, uuid(2), "Archived");
  log.ok("create", createPayload(uuid(3)), ["created"]);
  log.ok("grant_exemption", {
    exemption_id: uuid(4), policy_id: uuid(1), entity_id: "team-a", reason: "migration", granted_by: "officer",
    expires_at: "2027-01-01T00:00:00Z",
  }, ["exemption_granted"]);
  log.ok("revoke_exemption", { exemption_id: uuid(4), revoked_by: "officer", reason: "done" }, ["exemption_revoked"]);
  log.ok("suspend", { policy_id: uuid(1), suspended_by: "officer", reason: "review" }, ["suspended"]);
  log.ok("create_set", { policy_set_id: uuid(5), name: "Baseline", description: "Baseline set", policies: [uuid(1)], composition: "All", conflict_resolution: "FirstWins" }, ["set_created"]);
  return log;
}
