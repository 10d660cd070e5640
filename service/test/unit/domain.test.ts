// Given events / when command / then events or error: every command in every state of its aggregate.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import type { CommandName, ExemptionState, PolicySetState, PolicyState } from "../../src/domain/index.js";
import { decide } from "../../src/domain/index.js";
import { expiryProblem } from "../../src/domain/exemption.js";
import { EventLog, NOW, POLICY_STATES, createPayload, givenPolicy, rule, uuid, type PolicyStatusName } from "./domainHarness.js";

const P = uuid(1);

/** The "when" of each policy command, valid in shape; whether it is allowed depends on the state. */
const POLICY_COMMANDS: [CommandName, Record<string, unknown>][] = [
  ["create", createPayload(P)],
  ["update", { policy_id: P, updated_by: "editor", name: "Renamed Policy" }],
  ["approve", { policy_id: P, approved_by: "officer" }],
  ["activate", { policy_id: P, activated_by: "officer" }],
  ["suspend", { policy_id: P, suspended_by: "officer", reason: "review" }],
  ["revoke", { policy_id: P, revoked_by: "officer", reason: "superseded" }],
  ["archive", { policy_id: P, archived_by: "officer" }],
  ["add_rule", { policy_id: P, rule: rule("r3") }],
  ["update_rule", { policy_id: P, rule_id: "r1", rule: rule(undefined, "Renamed rule") }],
  ["remove_rule", { policy_id: P, rule_id: "r1" }],
  ["reorder_rules", { policy_id: P, rule_ids: ["r2", "r1"] }],
];

const IT = "invalid_transition";
const EDIT_OK = { update: "updated", add_rule: "rule_added", update_rule: "rule_updated", remove_rule: "rule_removed", reorder_rules: "rules_reordered" };
const EDIT_FROZEN = { update: IT, add_rule: IT, update_rule: IT, remove_rule: IT, reorder_rules: IT };

/** Expected outcome: an event type (success) or an error code. */
const POLICY_TABLE: Record<PolicyStatusName | "none", Record<string, string>> = {
  none: {
    create: "created", update: "not_found", approve: "not_found", activate: "not_found", suspend: "not_found",
    revoke: "not_found", archive: "not_found", add_rule: "not_found", update_rule: "not_found", remove_rule: "not_found",
    reorder_rules: "not_found",
  },
  Draft: { create: "already_exists", approve: "approved", activate: IT, suspend: IT, revoke: IT, archive: IT, ...EDIT_OK },
  Approved: { create: "already_exists", approve: IT, activate: "activated", suspend: IT, revoke: IT, archive: IT, ...EDIT_OK },
  Active: { create: "already_exists", approve: IT, activate: IT, suspend: "suspended", revoke: "revoked", archive: IT, ...EDIT_OK },
  Suspended: {
    create: "already_exists", approve: IT, activate: "activated", suspend: IT, revoke: "revoked", archive: "archived", ...EDIT_OK,
  },
  Revoked: { create: "already_exists", approve: IT, activate: IT, suspend: IT, revoke: IT, archive: "archived", ...EDIT_FROZEN },
  Archived: { create: "already_exists", approve: IT, activate: IT, suspend: IT, revoke: IT, archive: IT, ...EDIT_FROZEN },
};

const EVENT_TYPES = new Set([
  "created", "updated", "approved", "activated", "suspended", "revoked", "archived",
  "rule_added", "rule_updated", "rule_removed", "rules_reordered",
]);
const STATUS_AFTER: Record<string, string> = {
  approved: "Approved", activated: "Active", suspended: "Suspended", revoked: "Revoked", archived: "Archived",
};

describe("Policy: every command in every state", () => {
  for (const status of ["none", ...POLICY_STATES] as const) {
    describe(`given a policy ${status === "none" ? "that does not exist" : `in ${status}`}`, () => {
      for (const [name, payload] of POLICY_COMMANDS) {
        const expected = POLICY_TABLE[status][name];
        assert.ok(expected !== undefined, `table covers ${status}/${name}`);
        test(`when ${name} then ${expected}`, () => {
          const log = new EventLog();
          if (status !== "none") givenPolicy(log, P, status);
          const before = log.state(P) as PolicyState | undefined;
          if (EVENT_TYPES.has(expected)) {
            const { stored } = log.ok(name, payload, [expected]);
            const after = log.state(P) as PolicyState;
            assert.equal(after.version, (before?.version ?? 0) + 1);
            assert.equal(stored[0]?.version, after.version);
            const nextStatus = STATUS_AFTER[expected] ?? before?.status ?? "Draft";
            assert.equal(after.status, nextStatus);
          } else {
            log.fails(name, payload, expected);
          }
        });
      }
    });
  }
});

describe("Policy: event contents", () => {
  test("created carries every field, including rules with their ids", () => {
    const log = new EventLog();
    const { stored } = log.ok(
      "create",
      createPayload(P, {
        scope: { Department: "finance" },
        rules: [rule("r1"), rule(undefined, "Derived")],
        effective_from: "2026-01-01T00:00:00Z",
        effective_until: "2027-01-01T00:00:00Z",
        tags: ["gdpr"],
        owner: "records",
      }),
      ["created"],
    );
    const data = stored[0]?.data as Record<string, unknown>;
    assert.deepEqual(Object.keys(data).sort(), [
      "created_at", "description", "effective_from", "effective_until", "enforcement", "name", "owner", "policy_type",
      "rules", "scope", "tags",
    ]);
    assert.deepEqual(data.scope, { Department: "finance" });
    const rules = data.rules as { rule_id: string; on_missing: string }[];
    assert.equal(rules[0]?.rule_id, "r1");
    assert.match(rules[1]?.rule_id ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(rules[1]?.on_missing, "violation", "rule defaults are stored, not re-derived on replay");
    assert.equal(data.created_at, NOW);
  });

  test("derived rule ids are deterministic: the same command on the same state yields the same id", () => {
    const a = new EventLog();
    const b = new EventLog();
    for (const log of [a, b]) givenPolicy(log, P, "Draft");
    const ra = a.ok("add_rule", { policy_id: P, rule: rule(undefined) }, ["rule_added"]);
    const rb = b.ok("add_rule", { policy_id: P, rule: rule(undefined) }, ["rule_added"]);
    assert.deepEqual(ra.stored[0]?.data, rb.stored[0]?.data);
    // A second derived rule on the same policy gets a different id (the version differs).
    const rc = a.ok("add_rule", { policy_id: P, rule: rule(undefined) }, ["rule_added"]);
    assert.notEqual((rc.stored[0]?.data.rule as { rule_id: string }).rule_id, (ra.stored[0]?.data.rule as { rule_id: string }).rule_id);
  });

  test("updated lists each change with old and new, repeats new values, and skips unchanged fields", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    const { stored } = log.ok(
      "update",
      { policy_id: P, updated_by: "editor", name: "Data Retention Policy", enforcement: "Critical", scope: { Team: "records" } },
      ["updated"],
    );
    assert.deepEqual(stored[0]?.data, {
      updated_by: "editor",
      updated_at: NOW,
      changes: [
        { field: "enforcement", old: "Mandatory", new: "Critical" },
        { field: "scope", old: "Organization", new: { Team: "records" } },
      ],
      enforcement: "Critical",
      scope: { Team: "records" },
    });
    // Repeating the same update changes nothing and stores nothing.
    log.ok("update", { policy_id: P, updated_by: "editor", enforcement: "Critical" }, []);
  });

  test("update may clear the effective window with null, and refuses a window that ends before it starts", () => {
    const log = new EventLog();
    log.ok("create", createPayload(P, { effective_from: "2026-01-01T00:00:00Z", effective_until: "2026-06-01T00:00:00Z" }), ["created"]);
    log.fails("update", { policy_id: P, updated_by: "e", effective_from: "2026-07-01T00:00:00Z" }, "validation_failed");
    log.ok("update", { policy_id: P, updated_by: "e", effective_until: null }, ["updated"]);
    assert.equal((log.state(P) as PolicyState).effective_until, null);
  });

  test("approve records approval_date (or now) and notes", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Draft");
    const { stored } = log.ok("approve", { policy_id: P, approved_by: "compliance-officer", approval_date: "2025-11-08T10:00:00Z", notes: "ok" }, ["approved"]);
    assert.deepEqual(stored[0]?.data, { approved_by: "compliance-officer", approved_at: "2025-11-08T10:00:00Z", notes: "ok" });
    const other = new EventLog();
    givenPolicy(other, P, "Draft");
    assert.equal(other.ok("approve", { policy_id: P, approved_by: "x" }, ["approved"]).stored[0]?.data.approved_at, NOW);
  });

  test("activate carries the effective window; resume keeps the original effective_from", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Approved");
    const first = log.ok("activate", { policy_id: P, activated_by: "o", effective_until: "2027-01-01T00:00:00Z" }, ["activated"]);
    assert.deepEqual(first.stored[0]?.data, {
      activated_by: "o", activated_at: NOW, effective_from: NOW, effective_until: "2027-01-01T00:00:00Z", resumed: false,
    });
    log.ok("suspend", { policy_id: P, suspended_by: "o", reason: "r", expected_resume_date: "2026-02-01T00:00:00Z" }, ["suspended"]);
    const suspended = log.state(P) as PolicyState;
    assert.equal(suspended.suspension_reason, "r");
    assert.equal(suspended.expected_resume_date, "2026-02-01T00:00:00Z");
    const later = "2026-01-20T00:00:00Z";
    const resumed = log.ok("activate", { policy_id: P, activated_by: "o" }, ["activated"], later);
    assert.deepEqual(resumed.stored[0]?.data, {
      activated_by: "o", activated_at: later, effective_from: NOW, effective_until: "2027-01-01T00:00:00Z", resumed: true,
    });
    const active = log.state(P) as PolicyState;
    assert.equal(active.status, "Active");
    assert.equal(active.suspension_reason, null, "resuming clears the suspension");
  });

  test("activate refuses a window that has already ended, suspend refuses a resume date in the past", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Approved");
    log.fails("activate", { policy_id: P, activated_by: "o", effective_until: "2026-01-01T00:00:00Z" }, "validation_failed");
    log.ok("activate", { policy_id: P, activated_by: "o" }, ["activated"]);
    log.fails("suspend", { policy_id: P, suspended_by: "o", reason: "r", expected_resume_date: "2025-01-01T00:00:00Z" }, "validation_failed");
  });

  test("revoke and archive record who, when, why", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    log.ok("revoke", { policy_id: P, revoked_by: "ciso", reason: "breach" }, ["revoked"]);
    log.ok("archive", { policy_id: P, archived_by: "records", retention_period_days: 2555 }, ["archived"]);
    const state = log.state(P) as PolicyState;
    assert.deepEqual(
      [state.revoked_by, state.revoked_at, state.revocation_reason, state.archived_by, state.archived_at, state.retention_period_days],
      ["ciso", NOW, "breach", "records", NOW, 2555],
    );
  });

  test("rule commands: duplicates, unknown ids, non-permutations and no-ops", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Draft");
    log.fails("add_rule", { policy_id: P, rule: rule("r1") }, "already_exists");
    log.fails("update_rule", { policy_id: P, rule_id: "nope", rule: rule(undefined) }, "not_found");
    log.fails("update_rule", { policy_id: P, rule_id: "r1", rule: rule("r2") }, "validation_failed");
    log.fails("remove_rule", { policy_id: P, rule_id: "nope" }, "not_found");
    log.fails("reorder_rules", { policy_id: P, rule_ids: ["r1"] }, "validation_failed");
    log.fails("reorder_rules", { policy_id: P, rule_ids: ["r1", "r3"] }, "validation_failed");
    log.fails("reorder_rules", { policy_id: P, rule_ids: ["r1", "r1"] }, "validation_failed");
    log.ok("reorder_rules", { policy_id: P, rule_ids: ["r1", "r2"] }, []);
    log.ok("update_rule", { policy_id: P, rule_id: "r1", rule: rule("r1") }, []);
    log.ok("remove_rule", { policy_id: P, rule_id: "r1" }, ["rule_removed"]);
    log.ok("add_rule", { policy_id: P, rule: rule("r1") }, ["rule_added"]);
    assert.deepEqual((log.state(P) as PolicyState).rules.map((r) => r.rule_id), ["r2", "r1"]);
  });

  test("an id that belongs to another aggregate type is not found (and cannot be created again)", () => {
    const log = new EventLog();
    const S = uuid(50);
    log.ok("create_set", { policy_set_id: S, name: "S", description: "d", policies: [], composition: "All", conflict_resolution: "FirstWins" }, ["set_created"]);
    log.fails("approve", { policy_id: S, approved_by: "o" }, "not_found");
    log.fails("create", createPayload(S), "already_exists");
  });
});

describe("PolicySet: every command in every state", () => {
  const S = uuid(10);
  const Q = uuid(2);
  const createSet = { policy_set_id: S, name: "Baseline", description: "Every system", policies: [P], composition: "All", conflict_resolution: "MostRestrictive" };

  function given(log: EventLog, setExists: boolean): void {
    givenPolicy(log, P, "Active");
    log.ok("create", createPayload(Q), ["created"]);
    if (setExists) log.ok("create_set", createSet, ["set_created"]);
  }

  test("create_set on a new id stores every field", () => {
    const log = new EventLog();
    given(log, false);
    const payload = { ...createSet, policies: [Q, P], composition: { AtLeast: 2 }, conflict_resolution: "FailOnConflict" };
    const { stored } = log.ok("create_set", payload, ["set_created"]);
    assert.deepEqual(stored[0]?.data, {
      name: "Baseline", description: "Every system", policies: [Q, P], composition: { AtLeast: 2 }, conflict_resolution: "FailOnConflict", created_at: NOW,
    });
    const state = log.state(S) as PolicySetState;
    assert.deepEqual([state.policies, state.composition, state.conflict_resolution], [[Q, P], { AtLeast: 2 }, "FailOnConflict"]);
  });
  test("create_set: already_exists, missing member, archived member, AtLeast beyond the member count", () => {
    const log = new EventLog();
    given(log, true);
    log.fails("create_set", createSet, "already_exists");
    log.fails("create_set", { ...createSet, policy_set_id: uuid(11), policies: [uuid(99)] }, "not_found");
    log.fails("create_set", { ...createSet, policy_set_id: uuid(11), composition: { AtLeast: 2 } }, "validation_failed");
    const A = uuid(3);
    givenPolicy(log, A, "Archived");
    log.fails("create_set", { ...createSet, policy_set_id: uuid(11), policies: [A] }, "invalid_transition");
  });
  test("add_to_set / remove_from_set on a missing set are not_found", () => {
    const log = new EventLog();
    given(log, false);
    log.fails("add_to_set", { policy_set_id: S, policy_id: Q }, "not_found");
    log.fails("remove_from_set", { policy_set_id: S, policy_id: P }, "not_found");
  });
  test("add_to_set appends; a member twice is already_exists; a missing policy is not_found", () => {
    const log = new EventLog();
    given(log, true);
    log.ok("add_to_set", { policy_set_id: S, policy_id: Q }, ["added_to_set"]);
    assert.deepEqual((log.state(S) as PolicySetState).policies, [P, Q]);
    log.fails("add_to_set", { policy_set_id: S, policy_id: Q }, "already_exists");
    log.fails("add_to_set", { policy_set_id: S, policy_id: uuid(99) }, "not_found");
  });
  test("remove_from_set removes a member; a non-member is not_found; AtLeast n is never undercut", () => {
    const log = new EventLog();
    given(log, true);
    log.fails("remove_from_set", { policy_set_id: S, policy_id: Q }, "not_found");
    log.ok("remove_from_set", { policy_set_id: S, policy_id: P }, ["removed_from_set"]);
    assert.deepEqual((log.state(S) as PolicySetState).policies, []);
    const T = uuid(12);
    log.ok("create_set", { ...createSet, policy_set_id: T, policies: [P, Q], composition: { AtLeast: 2 } }, ["set_created"]);
    log.fails("remove_from_set", { policy_set_id: T, policy_id: P }, "invalid_transition");
  });
});

describe("PolicyExemption: every command in every state", () => {
  const E = uuid(20);
  const grant = { exemption_id: E, policy_id: P, entity_id: uuid(30), reason: "Legacy system migration", granted_by: "data-officer", expires_at: "2026-02-08T10:00:00Z" };
  const revoke = { exemption_id: E, revoked_by: "data-officer", reason: "done" };
  const expire = { exemption_id: E };
  const AFTER = "2026-02-08T10:00:00Z";

  for (const status of POLICY_STATES) {
    test(`grant_exemption on a ${status} policy: ${status === "Active" ? "exemption_granted" : "invalid_transition"}`, () => {
      const log = new EventLog();
      givenPolicy(log, P, status);
      if (status === "Active") log.ok("grant_exemption", grant, ["exemption_granted"]);
      else log.fails("grant_exemption", grant, "invalid_transition");
    });
  }
  test("grant_exemption on a missing policy is not_found", () => {
    log0().fails("grant_exemption", grant, "not_found");
  });
  test("exemption_granted carries every field; defaults are explicit", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    const { stored } = log.ok("grant_exemption", grant, ["exemption_granted"]);
    assert.deepEqual(stored[0]?.data, {
      policy_id: P, entity_id: uuid(30), reason: "Legacy system migration", justification: null, risk_acceptance: null,
      granted_by: "data-officer", granted_at: NOW, valid_from: NOW, expires_at: "2026-02-08T10:00:00Z", scope: "Global", conditions: [],
    });
  });
  // Issue 13 item 8: an exemption that had already expired was accepted (ok:true, then at once Expired).
  test("a grant whose expires_at has passed is refused with validation_failed, naming the field, and stores nothing", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    const { decision } = log.fails("grant_exemption", { ...grant, expires_at: "2025-12-01T00:00:00Z" }, "validation_failed");
    assert.ok(!decision.ok);
    assert.equal(
      decision.error.message,
      "grant_exemption: expires_at must be in the future (2025-12-01T00:00:00Z has passed): an exemption that has already expired would never apply",
    );
    assert.deepEqual(decision.error.details, [{ path: "expires_at", message: decision.error.message.replace("grant_exemption: ", "") }]);
    assert.equal(log.state(E), undefined);
  });
  test("expires_at exactly now is refused (the window would be empty); one millisecond later is granted", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    log.fails("grant_exemption", { ...grant, expires_at: NOW }, "validation_failed");
    const later = new Date(Date.parse(NOW) + 1).toISOString();
    log.ok("grant_exemption", { ...grant, expires_at: later }, ["exemption_granted"]);
    assert.equal((log.state(E) as ExemptionState).valid_from, NOW);
  });
  test("the clock is the command's now: the same grant is refused after expires_at and accepted before it", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    log.fails("grant_exemption", grant, "validation_failed", "2026-02-08T10:00:00.001Z");
    log.ok("grant_exemption", grant, ["exemption_granted"], "2026-02-08T09:59:59.999Z");
  });
  test("an expired grant is refused before its policy or its id is looked at (validation comes first)", () => {
    log0().fails("grant_exemption", { ...grant, expires_at: "2025-12-01T00:00:00Z" }, "validation_failed");
    const log = given("Granted");
    log.fails("grant_exemption", { ...grant, expires_at: "2025-12-01T00:00:00Z" }, "validation_failed");
  });
  test("decide itself refuses expires_at not after valid_from (the schema does too; the domain does not rely on it)", () => {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    const command = { name: "grant_exemption" as const, payload: { ...grant, valid_from: "2099-03-01T00:00:00Z", expires_at: "2099-03-01T00:00:00Z" } };
    const decision = decide(undefined, command, { now: NOW, refs: new Map([[P, log.state(P)]]) });
    assert.ok(!decision.ok);
    assert.equal(decision.error.code, "validation_failed");
    assert.match(decision.error.message, /expires_at must be after valid_from/);
    assert.equal(expiryProblem("2099-03-01T00:00:01Z", "2099-03-01T00:00:00Z", NOW), undefined);
    assert.match(expiryProblem("2026-01-15T11:00:00Z", undefined, NOW) ?? "", /must be in the future/);
  });

  function log0(): EventLog {
    return new EventLog();
  }
  function given(status: "none" | "Granted" | "Revoked" | "Expired"): EventLog {
    const log = new EventLog();
    givenPolicy(log, P, "Active");
    if (status === "none") return log;
    log.ok("grant_exemption", grant, ["exemption_granted"]);
    if (status === "Revoked") log.ok("revoke_exemption", revoke, ["exemption_revoked"]);
    if (status === "Expired") log.ok("expire_exemption", expire, ["exemption_expired"], AFTER);
    return log;
  }

  const table: [string, "none" | "Granted" | "Revoked" | "Expired", (log: EventLog) => void][] = [
    ["grant again", "Granted", (log) => log.fails("grant_exemption", grant, "already_exists")],
    ["revoke missing", "none", (log) => log.fails("revoke_exemption", revoke, "not_found")],
    ["expire missing", "none", (log) => log.fails("expire_exemption", expire, "not_found")],
    ["revoke Granted", "Granted", (log) => log.ok("revoke_exemption", revoke, ["exemption_revoked"])],
    ["revoke Revoked", "Revoked", (log) => log.fails("revoke_exemption", revoke, "invalid_transition")],
    ["revoke Expired", "Expired", (log) => log.fails("revoke_exemption", revoke, "invalid_transition")],
    ["expire Granted before expires_at: no event", "Granted", (log) => log.ok("expire_exemption", expire, [], "2026-02-08T09:59:59.999Z")],
    ["expire Granted at expires_at: exemption_expired", "Granted", (log) => log.ok("expire_exemption", expire, ["exemption_expired"], AFTER)],
    ["expire Revoked: no event", "Revoked", (log) => log.ok("expire_exemption", expire, [], AFTER)],
    ["expire Expired again: no event (exactly once)", "Expired", (log) => log.ok("expire_exemption", expire, [], "2026-03-01T00:00:00Z")],
  ];
  for (const [title, status, run] of table) test(title, () => run(given(status)));

  test("revoked and expired exemptions keep every grant field and record the ending", () => {
    const revoked = given("Revoked").state(E) as ExemptionState;
    assert.deepEqual([revoked.status, revoked.revoked_by, revoked.revocation_reason, revoked.entity_id], ["Revoked", "data-officer", "done", uuid(30)]);
    const expired = given("Expired").state(E) as ExemptionState;
    assert.deepEqual([expired.status, expired.expired_at, expired.expires_at], ["Expired", AFTER, "2026-02-08T10:00:00Z"]);
  });
});
