// Replay rebuilds every field, and state from (snapshot at any version, through JSON) + tail events equals
// state from full replay, for a few hundred random command sequences (seeded, so failures reproduce).
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import {
  EVENT_TYPES, SNAPSHOT_SCHEMA_VERSION, decide, evolve, isExemptionValidAt, parseCommand, policyInForceAt, referencedIds, replay,
  type AggregateState, type CommandName, type EventEnvelope, type ExemptionState, type PolicySetState, type PolicyState,
} from "../../src/domain/index.js";
import { EventLog, NOW, createPayload, rule, uuid } from "./domainHarness.js";

const P = uuid(1);
const Q = uuid(2);
const S = uuid(10);
const E = uuid(20);

function roundTrip<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

describe("replay rebuilds every field", () => {
  test("a policy through its whole life", () => {
    const log = new EventLog();
    const t = (day: number) => `2026-01-${String(day).padStart(2, "0")}T09:00:00Z`;
    log.ok("create", createPayload(P, {
      scope: { Department: "finance" },
      rules: [rule("r1"), { ...rule("r2"), description: "second", error_message: "bad", remediation_hint: "fix", on_missing: "pass" }],
      effective_from: "2026-01-01T00:00:00Z",
      tags: ["a", "b"],
      owner: "records",
    }), ["created"], t(1));
    log.ok("update", { policy_id: P, updated_by: "editor", name: "Renamed", policy_type: "Privacy" }, ["updated"], t(2));
    log.ok("approve", { policy_id: P, approved_by: "officer", approval_date: "2026-01-02T12:00:00Z", notes: "fine" }, ["approved"], t(3));
    log.ok("activate", { policy_id: P, activated_by: "officer", effective_until: "2027-01-01T00:00:00Z" }, ["activated"], t(4));
    log.ok("add_rule", { policy_id: P, rule: rule("r3") }, ["rule_added"], t(5));
    log.ok("update_rule", { policy_id: P, rule_id: "r1", rule: { ...rule(undefined, "Rule one v2"), severity: "Critical" } }, ["rule_updated"], t(6));
    log.ok("reorder_rules", { policy_id: P, rule_ids: ["r3", "r2", "r1"] }, ["rules_reordered"], t(7));
    log.ok("remove_rule", { policy_id: P, rule_id: "r2" }, ["rule_removed"], t(8));
    log.ok("suspend", { policy_id: P, suspended_by: "ciso", reason: "audit", expected_resume_date: "2026-03-01T00:00:00Z" }, ["suspended"], t(9));
    log.ok("revoke", { policy_id: P, revoked_by: "ciso", reason: "breach" }, ["revoked"], t(10));
    log.ok("archive", { policy_id: P, archived_by: "records", retention_period_days: 30 }, ["archived"], t(11));

    const expression = { op: "equal", field: "record.flag", value: true };
    const expected: PolicyState = {
      aggregate_type: "Policy",
      aggregate_id: P,
      version: 11,
      status: "Archived",
      name: "Renamed",
      description: "All customer data must be retained for 7 years",
      policy_type: "Privacy",
      enforcement: "Mandatory",
      scope: { Department: "finance" },
      rules: [
        { rule_id: "r3", name: "Rule r3", severity: "High", expression, on_missing: "violation" },
        { rule_id: "r1", name: "Rule one v2", severity: "Critical", expression, on_missing: "violation" },
      ] as PolicyState["rules"],
      effective_from: "2026-01-01T00:00:00Z",
      effective_until: "2027-01-01T00:00:00Z",
      tags: ["a", "b"],
      owner: "records",
      created_at: t(1),
      updated_at: t(11),
      updated_by: "editor",
      approved_by: "officer",
      approved_at: "2026-01-02T12:00:00Z",
      approval_notes: "fine",
      activated_by: "officer",
      activated_at: t(4),
      suspended_by: "ciso",
      suspended_at: t(9),
      suspension_reason: "audit",
      expected_resume_date: "2026-03-01T00:00:00Z",
      revoked_by: "ciso",
      revoked_at: t(10),
      revocation_reason: "breach",
      archived_by: "records",
      archived_at: t(11),
      retention_period_days: 30,
    };
    assert.deepStrictEqual(replay(log.events(P)), expected);
    // Intermediate: the rule fields that only r2 had survive until r2 is removed.
    const afterReorder = replay(log.events(P).slice(0, 7)) as PolicyState;
    assert.deepStrictEqual(afterReorder.rules[1], {
      rule_id: "r2", name: "Rule r2", severity: "High", expression, description: "second", error_message: "bad", remediation_hint: "fix", on_missing: "pass",
    });
  });

  test("a policy set keeps its composition, conflict resolution and order", () => {
    const log = new EventLog();
    log.ok("create", createPayload(P), ["created"]);
    log.ok("create", createPayload(Q), ["created"]);
    log.ok("create_set", { policy_set_id: S, name: "Set", description: "D", policies: [Q], composition: { AtLeast: 1 }, conflict_resolution: "FailOnConflict" }, ["set_created"]);
    log.ok("add_to_set", { policy_set_id: S, policy_id: P }, ["added_to_set"]);
    log.ok("remove_from_set", { policy_set_id: S, policy_id: Q }, ["removed_from_set"]);
    log.ok("add_to_set", { policy_set_id: S, policy_id: Q }, ["added_to_set"]);
    const expected: PolicySetState = {
      aggregate_type: "PolicySet", aggregate_id: S, version: 4, name: "Set", description: "D", policies: [P, Q],
      composition: { AtLeast: 1 }, conflict_resolution: "FailOnConflict", created_at: NOW, updated_at: NOW,
    };
    assert.deepStrictEqual(replay(log.events(S)), expected);
  });

  test("an exemption keeps scope, conditions, justification and risk acceptance", () => {
    const log = new EventLog();
    log.ok("create", createPayload(P), ["created"]);
    log.ok("approve", { policy_id: P, approved_by: "o" }, ["approved"]);
    log.ok("activate", { policy_id: P, activated_by: "o" }, ["activated"]);
    const conditions = [
      { field: "record.region", operator: "in", value: ["eu-west-1"] },
      { field: "user.id", operator: "exists" },
    ];
    log.ok("grant_exemption", {
      exemption_id: E, policy_id: P, entity_id: "Billing-Archive", reason: "migration", justification: "why", risk_acceptance: "accepted",
      granted_by: "dpo", valid_from: "2026-01-10T00:00:00Z", expires_at: "2026-02-01T00:00:00Z", scope: { Resource: "billing" }, conditions,
    }, ["exemption_granted"]);
    log.ok("revoke_exemption", { exemption_id: E, revoked_by: "dpo", reason: "done" }, ["exemption_revoked"], "2026-01-20T00:00:00Z");
    const expected: ExemptionState = {
      aggregate_type: "PolicyExemption", aggregate_id: E, version: 2, status: "Revoked", policy_id: P, entity_id: "Billing-Archive",
      reason: "migration", justification: "why", risk_acceptance: "accepted", granted_by: "dpo", granted_at: NOW,
      valid_from: "2026-01-10T00:00:00Z", expires_at: "2026-02-01T00:00:00Z", scope: { Resource: "billing" },
      conditions: conditions as ExemptionState["conditions"], revoked_by: "dpo", revoked_at: "2026-01-20T00:00:00Z", revocation_reason: "done",
      expired_at: null, updated_at: "2026-01-20T00:00:00Z",
    };
    assert.deepStrictEqual(replay(log.events(E)), expected);
  });

  test("evolve refuses events that cannot follow the state (gaps, foreign ids, wrong aggregate type)", () => {
    const log = new EventLog();
    log.ok("create", createPayload(P), ["created"]);
    log.ok("approve", { policy_id: P, approved_by: "o" }, ["approved"]);
    const [created, approved] = log.events(P) as [EventEnvelope, EventEnvelope];
    assert.throws(() => replay([approved]), /version 2/);
    assert.throws(() => replay([created, created]), /does not follow/);
    assert.throws(() => evolve(replay([created]), { ...approved, aggregate_id: Q }), /applied to state of/);
    assert.throws(() => replay([{ ...created, aggregate_type: "PolicySet" }]), /not a PolicySet event/);
    assert.equal(replay([]), undefined);
  });
});

describe("read-side helpers", () => {
  test("policyInForceAt: Active and inside [effective_from, effective_until)", () => {
    const log = new EventLog();
    log.ok("create", createPayload(P, { effective_from: "2026-02-01T00:00:00Z", effective_until: "2026-03-01T00:00:00Z" }), ["created"]);
    assert.equal(policyInForceAt(log.state(P) as PolicyState, "2026-02-15T00:00:00Z"), false, "Draft is not in force");
    log.ok("approve", { policy_id: P, approved_by: "o" }, ["approved"]);
    log.ok("activate", { policy_id: P, activated_by: "o" }, ["activated"]);
    const active = log.state(P) as PolicyState;
    assert.equal(policyInForceAt(active, "2026-01-31T23:59:59Z"), false);
    assert.equal(policyInForceAt(active, "2026-02-01T00:00:00Z"), true);
    assert.equal(policyInForceAt(active, "2026-02-01T01:00:00+01:00"), true);
    assert.equal(policyInForceAt(active, Date.parse("2026-02-28T23:59:59Z")), true);
    assert.equal(policyInForceAt(active, "2026-03-01T00:00:00Z"), false);
    assert.equal(policyInForceAt(active, "not a date"), false);
  });
  test("isExemptionValidAt: Granted and inside [valid_from, expires_at)", () => {
    const log = new EventLog();
    log.ok("create", createPayload(P), ["created"]);
    log.ok("approve", { policy_id: P, approved_by: "o" }, ["approved"]);
    log.ok("activate", { policy_id: P, activated_by: "o" }, ["activated"]);
    log.ok("grant_exemption", { exemption_id: E, policy_id: P, entity_id: "x", reason: "r", granted_by: "g", valid_from: "2026-02-01T00:00:00Z", expires_at: "2026-03-01T00:00:00Z" }, ["exemption_granted"]);
    const granted = log.state(E) as ExemptionState;
    assert.equal(isExemptionValidAt(granted, "2026-01-31T23:59:59.999Z"), false);
    assert.equal(isExemptionValidAt(granted, "2026-02-01T00:00:00Z"), true);
    assert.equal(isExemptionValidAt(granted, "2026-02-28T23:59:59.999Z"), true);
    assert.equal(isExemptionValidAt(granted, "2026-03-01T00:00:00Z"), false, "expired at expires_at, even before the expiry event");
    log.ok("revoke_exemption", { exemption_id: E, revoked_by: "g", reason: "r" }, ["exemption_revoked"]);
    assert.equal(isExemptionValidAt(log.state(E) as ExemptionState, "2026-02-15T00:00:00Z"), false, "revoked");
  });
});

// ---------------------------------------------------------------- property: snapshot + tail == full replay

/** mulberry32: a tiny seeded PRNG, so every run is reproducible from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POLICIES = [uuid(1), uuid(2)];
const SETS = [uuid(10), uuid(11)];
const EXEMPTIONS = [uuid(20), uuid(21), uuid(22)];
const RULE_IDS = ["r1", "r2", "r3", "r4"];

function randomCommand(random: () => number, log: EventLog, now: number): [CommandName, Record<string, unknown>] {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const maybe = <T>(value: T): T | undefined => (random() < 0.5 ? value : undefined);
  const policy_id = pick(POLICIES);
  const later = (days: number) => new Date(now + days * 86_400_000).toISOString();
  const existingRules = ((log.state(policy_id) as PolicyState | undefined)?.rules ?? []).map((r) => r.rule_id);
  const shuffled = [...existingRules].sort(() => random() - 0.5);
  // Weighted towards the lifecycle, so sequences get far enough to exercise exemptions and archiving.
  const name = pick([
    "create", "update", "approve", "approve", "activate", "activate", "activate", "suspend", "revoke", "archive",
    "add_rule", "update_rule", "remove_rule", "reorder_rules", "create_set", "add_to_set", "remove_from_set",
    "grant_exemption", "grant_exemption", "grant_exemption", "revoke_exemption", "revoke_exemption",
    "expire_exemption", "expire_exemption",
  ] as const);
  const rid = random() < 0.8 && existingRules.length > 0 ? pick(existingRules) : pick(RULE_IDS);
  const payloads: Record<CommandName, () => Record<string, unknown>> = {
    create: () => createPayload(policy_id, {
      scope: pick(["Organization", { Team: "t1" }, { Department: "d" }]),
      rules: [rule(maybe("r1")), rule("r2")],
      tags: maybe(["x"]),
      owner: maybe("owner"),
      effective_from: maybe(later(-1)),
    }),
    update: () => ({
      policy_id,
      updated_by: "u",
      name: maybe(pick(["A", "B"])),
      enforcement: pick(["Advisory", "Critical"]),
      scope: maybe(pick(["Team", { Project: "p" }])),
      effective_until: maybe(pick([null, later(30)])),
      owner: maybe(null),
    }),
    approve: () => ({ policy_id, approved_by: "a", notes: maybe("n"), approval_date: maybe(later(0)) }),
    activate: () => ({ policy_id, activated_by: "a", effective_until: maybe(later(60)) }),
    suspend: () => ({ policy_id, suspended_by: "s", reason: "r", expected_resume_date: maybe(later(5)) }),
    revoke: () => ({ policy_id, revoked_by: "r", reason: "r" }),
    archive: () => ({ policy_id, archived_by: "a", retention_period_days: maybe(10) }),
    add_rule: () => ({ policy_id, rule: { ...rule(maybe(pick(RULE_IDS))), on_missing: pick(["pass", "error", "violation"]) } }),
    update_rule: () => ({ policy_id, rule_id: rid, rule: { ...rule(undefined, pick(["v1", "v2"])), severity: pick(["Low", "Critical"]) } }),
    remove_rule: () => ({ policy_id, rule_id: rid }),
    reorder_rules: () => ({ policy_id, rule_ids: shuffled.length > 0 ? shuffled : ["r1"] }),
    create_set: () => ({
      policy_set_id: pick(SETS), name: "S", description: "D", policies: POLICIES.filter(() => random() < 0.5),
      composition: pick(["All", "Any", "Majority"]), conflict_resolution: pick(["FirstWins", "MostRestrictive"]),
    }),
    add_to_set: () => ({ policy_set_id: pick(SETS), policy_id }),
    remove_from_set: () => ({ policy_set_id: pick(SETS), policy_id }),
    grant_exemption: () => ({
      exemption_id: pick(EXEMPTIONS), policy_id, entity_id: pick(["e1", uuid(99)]), reason: "r", granted_by: "g",
      expires_at: later(pick([1, 2, 10])), scope: maybe({ User: "alice" }), justification: maybe("j"),
      conditions: maybe([{ field: "a.b", operator: "equal", value: 1 }]),
    }),
    revoke_exemption: () => ({ exemption_id: pick(EXEMPTIONS), revoked_by: "r", reason: "r" }),
    expire_exemption: () => ({ exemption_id: pick(EXEMPTIONS) }),
  };
  const payload = payloads[name]();
  for (const key of Object.keys(payload)) if (payload[key] === undefined) delete payload[key];
  return [name, payload];
}

describe("property: snapshot at any version + tail events == full replay", () => {
  test("300 random command sequences (seeded)", () => {
    const seen = new Map<string, number>();
    let snapshotsChecked = 0;
    let decisionsCompared = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const random = prng(seed);
      const log = new EventLog();
      let now = Date.parse("2026-01-01T00:00:00Z");
      const steps = 10 + Math.floor(random() * 50);
      for (let step = 0; step < steps; step++) {
        now += Math.floor(random() * 2 * 86_400_000);
        const [name, payload] = randomCommand(random, log, now);
        const result = log.send(name, payload, new Date(now).toISOString());
        if (!result.decision.ok) assert.equal(result.stored.length, 0, "a refusal stores nothing");
        for (const event of result.stored) seen.set(event.event_type, (seen.get(event.event_type) ?? 0) + 1);
      }
      const probe = randomCommand(random, log, now);
      for (const [id, events] of log.streams) {
        assert.deepEqual(events.map((e) => e.version), events.map((_, i) => i + 1), `seed ${seed}: versions of ${id} are 1..n`);
        const full = replay(events) as AggregateState;
        assert.deepStrictEqual(roundTrip(full), full, `seed ${seed}: state of ${id} survives JSON unchanged`);
        for (let k = 0; k <= events.length; k++) {
          // A stored snapshot: state + version + schema version, kept as JSON.
          const stored = roundTrip({ schema_version: SNAPSHOT_SCHEMA_VERSION, version: k, state: replay(events.slice(0, k)) ?? null });
          const restored = replay(events.slice(k), stored.state ?? undefined);
          assert.deepStrictEqual(restored, full, `seed ${seed}: ${id} from snapshot at version ${k}`);
          snapshotsChecked++;
        }
        // The same next command decides the same way on a restored state as on the fully replayed one.
        const parsed = parseCommand(probe[0], probe[1]);
        if (!parsed.ok) continue;
        const refs = new Map(referencedIds(parsed.command).map((ref) => [ref, log.state(ref)] as const));
        const ctx = { now: new Date(now).toISOString(), refs };
        const cut = Math.floor(events.length / 2);
        const snapshot = replay(events.slice(0, cut));
        const fromSnapshot = replay(events.slice(cut), snapshot === undefined ? undefined : roundTrip(snapshot));
        assert.deepStrictEqual(decide(fromSnapshot, parsed.command, ctx), decide(full, parsed.command, ctx));
        decisionsCompared++;
      }
    }
    // Guard against a vacuous property: the random sequences reached every event type.
    console.log(`property: ${snapshotsChecked} snapshots, ${decisionsCompared} decisions, events ${JSON.stringify(Object.fromEntries(seen))}`);
    for (const type of EVENT_TYPES) assert.ok((seen.get(type) ?? 0) > 0, `random sequences produced ${type} (saw ${JSON.stringify([...seen])})`);
    assert.ok(snapshotsChecked > 1500, `checked ${snapshotsChecked} snapshots`);
    assert.ok(decisionsCompared > 300, `compared ${decisionsCompared} decisions`);
  });
});
