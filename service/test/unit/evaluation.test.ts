import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { policyInForceAt, replay, type EnforcementLevel, type ExemptionState, type PolicyState } from "../../src/domain/index.js";
import { CompiledPolicyCache } from "../../src/domain/rules/compile.js";
import {
  evaluatePolicy, findMatchingExemption, scopeMatches, type EvaluationResult, type NotApplicable, type PolicyEvaluation,
} from "../../src/domain/evaluation/evaluate.js";
import { History } from "./history.js";

const T0 = "2025-11-01T09:00:00Z";
const T1 = "2025-11-02T09:00:00Z";
const T2 = "2025-11-03T09:00:00Z";
const NOW = "2025-12-01T12:00:00Z";

interface RuleSpec { rule_id: string; name?: string; severity?: string; expression: unknown; [key: string]: unknown }

function rules(...specs: RuleSpec[]): Array<Record<string, unknown>> {
  return specs.map((spec) => ({ name: spec.rule_id, severity: "Medium", ...spec }));
}

const AGE = { rule_id: "min-age", severity: "High", expression: { op: "greater_than_or_equal", field: "user.age", value: 18 } };
const REGION = { rule_id: "region", severity: "Low", expression: { op: "in", field: "region", values: ["eu", "us"] } };
const MFA = {
  rule_id: "mfa",
  severity: "Medium",
  expression: { op: "equal", field: "user.mfa", value: true },
  error_message: "multi-factor authentication is off",
  remediation_hint: "enable MFA in the identity provider",
};

/** A policy taken to Active (created T0, approved T1, activated T2). */
function activePolicy(
  history: History,
  opts: { rules: RuleSpec[]; enforcement?: EnforcementLevel; effective_from?: string; effective_until?: string },
): string {
  const id = randomUUID();
  history.run("create", {
    policy_id: id, name: "Access", description: "Access rules", policy_type: "Security",
    enforcement: opts.enforcement ?? "Mandatory", scope: "Organization", rules: rules(...opts.rules),
  }, T0);
  history.run("approve", { policy_id: id, approved_by: "officer" }, T1);
  const window: Record<string, string> = {};
  if (opts.effective_from !== undefined) window.effective_from = opts.effective_from;
  if (opts.effective_until !== undefined) window.effective_until = opts.effective_until;
  history.run("activate", { policy_id: id, activated_by: "officer", ...window }, T2);
  return id;
}

function applied(result: PolicyEvaluation): EvaluationResult {
  assert.equal(result.applicable, true, `expected an applicable result, got ${JSON.stringify(result)}`);
  return result as EvaluationResult;
}

function notApplied(result: PolicyEvaluation): NotApplicable {
  assert.equal(result.applicable, false, `expected a not-applicable result, got ${JSON.stringify(result)}`);
  return result as NotApplicable;
}

const ADULT_EU_MFA = { user: { age: 30, mfa: true }, region: "eu" };

describe("evaluatePolicy: status, violations, blocking", () => {
  test("all rules pass: Compliant, nothing blocking, one entry per rule", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [AGE, REGION, MFA] });
    const result = applied(evaluatePolicy(h.policy(id), ADULT_EU_MFA, { at: NOW, exemptions: [] }));
    assert.equal(result.status, "Compliant");
    assert.equal(result.blocking, false);
    assert.equal(result.enforcement, "Mandatory");
    assert.deepEqual(result.violations, []);
    assert.equal(result.waived_violations, undefined);
    assert.equal(result.exemption_id, undefined);
    assert.deepEqual(result.rules.map((r) => [r.rule_id, r.passed]), [["min-age", true], ["region", true], ["mfa", true]]);
    assert.equal(result.policy_id, id);
    assert.equal(result.policy_version, 3);
    assert.equal(result.evaluated_at, NOW);
  });

  test("a policy without rules is vacuously Compliant", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [] });
    assert.equal(applied(evaluatePolicy(h.policy(id), {}, { at: NOW, exemptions: [] })).status, "Compliant");
  });

  test("no rule passes: NonCompliant even when every failure is Low", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [{ ...REGION }, { rule_id: "tag", severity: "Info", expression: { op: "exists", field: "tag" } }] });
    const result = applied(evaluatePolicy(h.policy(id), { region: "apac" }, { at: NOW, exemptions: [] }));
    assert.equal(result.status, "NonCompliant");
    assert.equal(result.blocking, true);
    assert.equal(result.violations.length, 2);
  });

  test("some pass, only Info/Low/Medium fail: PartiallyCompliant", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [AGE, REGION, MFA] });
    const result = applied(evaluatePolicy(h.policy(id), { user: { age: 30, mfa: false }, region: "eu" }, { at: NOW, exemptions: [] }));
    assert.equal(result.status, "PartiallyCompliant");
    assert.equal(result.blocking, true, "Mandatory enforcement blocks any non-compliance");
    assert.deepEqual(result.violations, [
      { rule_id: "mfa", severity: "Medium", message: "multi-factor authentication is off", remediation: "enable MFA in the identity provider" },
    ]);
    const mfa = result.rules.find((r) => r.rule_id === "mfa");
    assert.deepEqual(mfa, { rule_id: "mfa", name: "mfa", passed: false, reason: "field `user.mfa` is false, expected true" });
  });

  test("a failing High or Critical rule makes it NonCompliant although others pass", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [AGE, REGION, MFA] });
    const result = applied(evaluatePolicy(h.policy(id), { user: { age: 15, mfa: true }, region: "eu" }, { at: NOW, exemptions: [] }));
    assert.equal(result.status, "NonCompliant");
    assert.deepEqual(result.violations, [{ rule_id: "min-age", severity: "High", message: "field `user.age` is 15, expected >= 18" }]);
  });

  for (const [enforcement, blocking] of [["Advisory", false], ["Recommended", false], ["Mandatory", true], ["Critical", true]] as const) {
    test(`blocking for ${enforcement} enforcement is ${blocking}`, () => {
      const h = new History();
      const id = activePolicy(h, { rules: [AGE], enforcement });
      const failing = applied(evaluatePolicy(h.policy(id), { user: { age: 1 } }, { at: NOW, exemptions: [] }));
      assert.equal(failing.enforcement, enforcement);
      assert.equal(failing.blocking, blocking);
      const passing = applied(evaluatePolicy(h.policy(id), { user: { age: 20 } }, { at: NOW, exemptions: [] }));
      assert.equal(passing.blocking, false);
    });
  }

  test("undecidable rules are violations flagged error: true; on_missing error too", () => {
    const h = new History();
    const id = activePolicy(h, {
      rules: [
        { ...AGE },
        { rule_id: "dept", severity: "Low", on_missing: "error", expression: { op: "equal", field: "user.department", value: "ops" } },
        { rule_id: "optional", severity: "Low", on_missing: "pass", expression: { op: "equal", field: "user.team", value: "x" } },
      ],
    });
    const result = applied(evaluatePolicy(h.policy(id), { user: { age: "thirty" } }, { at: NOW, exemptions: [] }));
    assert.equal(result.status, "NonCompliant");
    assert.deepEqual(result.violations, [
      { rule_id: "min-age", severity: "High", message: 'field `user.age` is "thirty" (string), cannot compare with the number 18', error: true },
      { rule_id: "dept", severity: "Low", message: "field `user.department` is missing (on_missing: error)", error: true },
    ]);
    assert.equal(result.rules.find((r) => r.rule_id === "optional")?.passed, true);
  });

  test("a non-object context is evaluated as one where every field is missing", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [AGE, { rule_id: "absent", severity: "Low", expression: { op: "not_exists", field: "x" } }] });
    for (const context of [null, 42, "text", [1, 2]]) {
      const result = applied(evaluatePolicy(h.policy(id), context, { at: NOW, exemptions: [] }));
      assert.equal(result.status, "NonCompliant", "a High rule failed");
      assert.equal(result.rules[0]?.reason, "field `user.age` is missing");
      assert.equal(result.rules[1]?.passed, true);
    }
  });

  test("an invalid `at` is a programming error, not a result", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [AGE] });
    assert.throws(() => evaluatePolicy(h.policy(id), {}, { at: "yesterday", exemptions: [] }), RangeError);
  });

  test("the cache compiles each (policy, version) once", () => {
    const h = new History();
    const id = activePolicy(h, { rules: [AGE] });
    const cache = new CompiledPolicyCache(8);
    const before = h.policy(id);
    evaluatePolicy(before, ADULT_EU_MFA, { at: NOW, exemptions: [], cache });
    evaluatePolicy(h.policy(id), ADULT_EU_MFA, { at: NOW, exemptions: [], cache });
    assert.equal(cache.size, 1);
    h.run("update_rule", { policy_id: id, rule_id: "min-age", rule: { ...AGE, expression: { ...AGE.expression, value: 40 }, name: "min-age" } }, "2025-11-20T00:00:00Z");
    const after = applied(evaluatePolicy(h.policy(id), ADULT_EU_MFA, { at: NOW, exemptions: [], cache }));
    assert.equal(cache.size, 2);
    assert.equal(after.status, "NonCompliant", "the new version's rule (>= 40) was compiled, not the cached old one");
  });
});

describe("evaluatePolicy: not applicable", () => {
  test("Draft, Approved, Suspended, Revoked and Archived policies do not apply, saying why", () => {
    const h = new History();
    const id = randomUUID();
    h.run("create", { policy_id: id, name: "P", description: "d", policy_type: "Security", enforcement: "Critical", scope: "Organization", rules: rules(AGE) }, T0);
    const draft = notApplied(evaluatePolicy(h.policy(id), {}, { at: NOW, exemptions: [] }));
    assert.equal(draft.status_of_policy, "Draft");
    assert.equal(draft.policy_version, 1);
    assert.match(draft.reason, /is Draft, not Active/);
    h.run("approve", { policy_id: id, approved_by: "o" }, T1);
    assert.equal(notApplied(evaluatePolicy(h.policy(id), {}, { at: NOW, exemptions: [] })).status_of_policy, "Approved");
    h.run("activate", { policy_id: id, activated_by: "o" }, T2);
    h.run("suspend", { policy_id: id, suspended_by: "o", reason: "audit" }, "2025-11-10T00:00:00Z");
    assert.equal(notApplied(evaluatePolicy(h.policy(id), {}, { at: NOW, exemptions: [] })).status_of_policy, "Suspended");
    h.run("revoke", { policy_id: id, revoked_by: "o", reason: "replaced" }, "2025-11-11T00:00:00Z");
    assert.equal(notApplied(evaluatePolicy(h.policy(id), {}, { at: NOW, exemptions: [] })).status_of_policy, "Revoked");
    h.run("archive", { policy_id: id, archived_by: "o" }, "2025-11-12T00:00:00Z");
    const archived = notApplied(evaluatePolicy(h.policy(id), {}, { at: NOW, exemptions: [] }));
    assert.equal(archived.status_of_policy, "Archived");
    assert.equal(archived.evaluated_at, NOW);
  });

  test("the effective window is [effective_from, effective_until)", () => {
    const h = new History();
    const from = "2025-12-01T00:00:00Z";
    const until = "2026-01-01T00:00:00Z";
    const id = activePolicy(h, { rules: [AGE], effective_from: from, effective_until: until });
    const policy = h.policy(id);
    const before = notApplied(evaluatePolicy(policy, ADULT_EU_MFA, { at: "2025-11-30T23:59:59.999Z", exemptions: [] }));
    assert.equal(before.status_of_policy, "Active");
    assert.match(before.reason, /takes effect at 2025-12-01T00:00:00Z/);
    assert.equal(applied(evaluatePolicy(policy, ADULT_EU_MFA, { at: from, exemptions: [] })).status, "Compliant");
    assert.equal(applied(evaluatePolicy(policy, ADULT_EU_MFA, { at: "2025-12-31T23:59:59.999Z", exemptions: [] })).status, "Compliant");
    const after = notApplied(evaluatePolicy(policy, ADULT_EU_MFA, { at: until, exemptions: [] }));
    assert.match(after.reason, /stopped being effective at 2026-01-01T00:00:00Z/);
  });

  test("applicability agrees with the domain's policyInForceAt around every boundary, cached or not", () => {
    const h = new History();
    const from = "2025-12-01T00:00:00Z";
    const until = "2026-01-01T00:00:00+01:00";
    const id = activePolicy(h, { rules: [AGE], effective_from: from, effective_until: until });
    h.run("suspend", { policy_id: id, suspended_by: "o", reason: "r" }, "2025-11-20T00:00:00Z");
    const cache = new CompiledPolicyCache();
    const instants = [T0, T2, from, until, "2025-11-30T23:59:59.999Z", "2025-12-31T22:59:59.999Z", "2025-12-31T23:00:00Z", NOW, "2030-01-01T00:00:00Z"];
    for (const version of [3, 4]) {
      const policy = replay((h.events.get(id) ?? []).slice(0, version)) as PolicyState;
      for (const at of instants) {
        for (const opts of [{ at, exemptions: [] }, { at, exemptions: [], cache }, { at, atMs: Date.parse(at), exemptions: [], cache }]) {
          assert.equal(evaluatePolicy(policy, ADULT_EU_MFA, opts).applicable, policyInForceAt(policy, at), `v${version} at ${at}`);
        }
      }
    }
  });
});

describe("evaluatePolicy: exemptions", () => {
  const ENTITY = "legacy-crm";
  const EXPIRES = "2026-02-08T10:00:00Z";

  function setup(grant: Record<string, unknown> = {}, policyRules: RuleSpec[] = [AGE, REGION]) {
    const h = new History();
    const policyId = activePolicy(h, { rules: policyRules });
    const exemptionId = randomUUID();
    h.run("grant_exemption", {
      exemption_id: exemptionId, policy_id: policyId, entity_id: ENTITY, reason: "Legacy system migration",
      granted_by: "data-officer", expires_at: EXPIRES, ...grant,
    }, "2025-11-05T00:00:00Z");
    return { h, policyId, exemptionId };
  }

  const FAILING = { user: { age: 12 }, region: "eu" };

  test("a valid matching exemption waives the failures, which are still evaluated and reported", () => {
    const { h, policyId, exemptionId } = setup();
    const result = applied(evaluatePolicy(h.policy(policyId), FAILING, { at: NOW, exemptions: [h.exemption(exemptionId)], entityId: ENTITY }));
    assert.equal(result.status, "CompliantWithExemption");
    assert.equal(result.blocking, false);
    assert.equal(result.exemption_id, exemptionId);
    assert.equal(result.exemption_version, 1);
    assert.deepEqual(result.violations, []);
    assert.deepEqual(result.waived_violations, [{ rule_id: "min-age", severity: "High", message: "field `user.age` is 12, expected >= 18" }]);
    assert.deepEqual(result.rules.map((r) => r.passed), [false, true]);
  });

  test("a compliant request does not use the exemption", () => {
    const { h, policyId, exemptionId } = setup();
    const result = applied(evaluatePolicy(h.policy(policyId), ADULT_EU_MFA, { at: NOW, exemptions: [h.exemption(exemptionId)], entityId: ENTITY }));
    assert.equal(result.status, "Compliant");
    assert.equal(result.exemption_id, undefined);
  });

  test("entity comes from opts.entityId, else context.entity_id, else context.entity.id", () => {
    const { h, policyId, exemptionId } = setup();
    const exemptions = [h.exemption(exemptionId)];
    const policy = h.policy(policyId);
    const status = (context: unknown, entityId?: string) =>
      applied(evaluatePolicy(policy, context, { at: NOW, exemptions, ...(entityId !== undefined ? { entityId } : {}) })).status;
    assert.equal(status({ ...FAILING, entity_id: ENTITY }), "CompliantWithExemption");
    assert.equal(status({ ...FAILING, entity: { id: ENTITY } }), "CompliantWithExemption");
    assert.equal(status({ ...FAILING, entity_id: "someone-else" }), "NonCompliant");
    assert.equal(status({ ...FAILING, entity_id: "someone-else" }, ENTITY), "CompliantWithExemption", "opts.entityId wins");
    assert.equal(status({ ...FAILING, entity_id: ENTITY }, "someone-else"), "NonCompliant", "opts.entityId wins");
    assert.equal(status(FAILING), "NonCompliant", "no entity, no exemption");
    assert.equal(status({ ...FAILING, entity_id: 42 }), "NonCompliant", "entity ids are strings");
  });

  test("an exemption for another policy does not apply", () => {
    const { h, exemptionId } = setup();
    const other = activePolicy(h, { rules: [AGE] });
    const result = applied(evaluatePolicy(h.policy(other), FAILING, { at: NOW, exemptions: [h.exemption(exemptionId)], entityId: ENTITY }));
    assert.equal(result.status, "NonCompliant");
  });

  test("expiry boundary: valid until just before expires_at, expired exactly at it", () => {
    const { h, policyId, exemptionId } = setup();
    const opts = { exemptions: [h.exemption(exemptionId)], entityId: ENTITY };
    const policy = h.policy(policyId);
    assert.equal(applied(evaluatePolicy(policy, FAILING, { ...opts, at: "2026-02-08T09:59:59.999Z" })).status, "CompliantWithExemption");
    assert.equal(applied(evaluatePolicy(policy, FAILING, { ...opts, at: EXPIRES })).status, "NonCompliant");
    assert.equal(applied(evaluatePolicy(policy, FAILING, { ...opts, at: "2026-02-08T11:00:00+01:00" })).status, "NonCompliant", "same instant, other offset");
  });

  test("not valid before valid_from", () => {
    const { h, policyId, exemptionId } = setup({ valid_from: "2025-12-24T00:00:00Z" });
    const opts = { exemptions: [h.exemption(exemptionId)], entityId: ENTITY };
    assert.equal(applied(evaluatePolicy(h.policy(policyId), FAILING, { ...opts, at: "2025-12-23T23:59:59Z" })).status, "NonCompliant");
    assert.equal(applied(evaluatePolicy(h.policy(policyId), FAILING, { ...opts, at: "2025-12-24T00:00:00Z" })).status, "CompliantWithExemption");
  });

  test("revoked and expired exemptions do not apply", () => {
    const { h, policyId, exemptionId } = setup();
    h.run("revoke_exemption", { exemption_id: exemptionId, revoked_by: "officer", reason: "migration done" }, "2025-11-20T00:00:00Z");
    const revoked = h.exemption(exemptionId);
    assert.equal(revoked.status, "Revoked");
    assert.equal(applied(evaluatePolicy(h.policy(policyId), FAILING, { at: NOW, exemptions: [revoked], entityId: ENTITY })).status, "NonCompliant");

    const second = setup();
    second.h.run("expire_exemption", { exemption_id: second.exemptionId }, EXPIRES);
    const expired = second.h.exemption(second.exemptionId);
    assert.equal(expired.status, "Expired");
    // Even asked about an earlier instant, an Expired state never applies: callers pass the state as of `at`.
    assert.equal(
      applied(evaluatePolicy(second.h.policy(second.policyId), FAILING, { at: NOW, exemptions: [expired], entityId: ENTITY })).status,
      "NonCompliant",
    );
  });

  const scopeCases: Array<[string, unknown, Array<[unknown, boolean]>]> = [
    ["Global", "Global", [[{}, true], [{ user_id: "x" }, true]]],
    ["User value", { User: "alice" }, [
      [{ user_id: "alice" }, true], [{ user: { id: "alice" } }, true], [{ user: "alice" }, true],
      [{ user_id: "bob" }, false], [{}, false], [{ user: { id: 7 } }, false],
    ]],
    ["Organization value", { Organization: "acme" }, [
      [{ organization_id: "acme" }, true], [{ organization: { id: "acme" } }, true], [{ organization: "acme" }, true],
      [{ organization_id: "globex" }, false], [{ user_id: "acme" }, false],
    ]],
    ["Resource value", { Resource: "db-1" }, [
      [{ resource_id: "db-1" }, true], [{ resource: { id: "db-1" } }, true], [{ resource: { id: "db-2" } }, false],
    ]],
    ["Operation value", { Operation: "export" }, [
      [{ operation: "export" }, true], [{ action: "export" }, true], [{ action: "delete" }, false], [{}, false],
    ]],
    ["bare level", "User", [[{ user_id: "anyone" }, true], [{ organization_id: "acme" }, false]]],
  ];
  for (const [label, scope, cases] of scopeCases) {
    test(`scope ${label}`, () => {
      for (const [context, expected] of cases) {
        assert.equal(scopeMatches(scope as ExemptionState["scope"], context), expected, `${JSON.stringify(scope)} on ${JSON.stringify(context)}`);
      }
      const { h, policyId, exemptionId } = setup({ scope });
      for (const [context, expected] of cases) {
        const result = applied(evaluatePolicy(h.policy(policyId), { ...FAILING, ...(context as object) }, {
          at: NOW, exemptions: [h.exemption(exemptionId)], entityId: ENTITY,
        }));
        assert.equal(result.status, expected ? "CompliantWithExemption" : "NonCompliant", JSON.stringify(context));
      }
    });
  }

  test("the first context path holding a string decides the scope value", () => {
    assert.equal(scopeMatches({ User: "alice" }, { user_id: "bob", user: { id: "alice" } }), false);
    assert.equal(scopeMatches({ User: "alice" }, { user_id: 5, user: { id: "alice" } }), true);
  });

  test("conditions: every one must hold; a missing field or type clash is no match", () => {
    const { h, policyId, exemptionId } = setup({
      conditions: [
        { field: "system.name", operator: "starts_with", value: "legacy-" },
        { field: "region", operator: "in", value: ["eu"] },
        { field: "request.at", operator: "less_than", value: "2026-01-01T00:00:00Z" },
        { field: "ticket", operator: "matches", value: "^CHG-[0-9]+$" },
      ],
    });
    const exemptions = [h.exemption(exemptionId)];
    const policy = h.policy(policyId);
    const ok = { ...FAILING, system: { name: "legacy-crm" }, request: { at: "2025-12-01T00:00:00Z" }, ticket: "CHG-1234" };
    const status = (context: unknown) => applied(evaluatePolicy(policy, context, { at: NOW, exemptions, entityId: ENTITY })).status;
    assert.equal(status(ok), "CompliantWithExemption");
    assert.equal(status({ ...ok, system: { name: "modern-crm" } }), "NonCompliant");
    assert.equal(status({ ...ok, region: "us" }), "NonCompliant");
    assert.equal(status({ ...ok, request: { at: "2026-01-01T00:00:00Z" } }), "NonCompliant");
    assert.equal(status({ ...ok, ticket: "CHG-12x" }), "NonCompliant");
    assert.equal(status({ ...ok, ticket: undefined }), "NonCompliant", "missing field");
    assert.equal(status({ ...ok, ticket: 1234 }), "NonCompliant", "type clash");
  });

  test("conditions with every operator", () => {
    const context = { n: 5, s: "alpha-beta", tags: ["x", "y"], flag: true, t: "2025-06-01T00:00:00Z" };
    const cases: Array<[Record<string, unknown>, boolean]> = [
      [{ field: "flag", operator: "equal", value: true }, true],
      [{ field: "flag", operator: "not_equal", value: true }, false],
      [{ field: "n", operator: "greater_than", value: 4 }, true],
      [{ field: "n", operator: "greater_than_or_equal", value: 6 }, false],
      [{ field: "n", operator: "less_than", value: 6 }, true],
      [{ field: "t", operator: "less_than_or_equal", value: "2025-06-01T00:00:00Z" }, true],
      [{ field: "n", operator: "in", value: [1, 5] }, true],
      [{ field: "n", operator: "not_in", value: [1, 5] }, false],
      [{ field: "s", operator: "matches", value: "-beta$" }, true],
      [{ field: "s", operator: "starts_with", value: "beta" }, false],
      [{ field: "s", operator: "ends_with", value: "beta" }, true],
      [{ field: "tags", operator: "contains", value: "y" }, true],
      [{ field: "gone", operator: "exists" }, false],
      [{ field: "gone", operator: "not_exists" }, true],
    ];
    for (const [condition, expected] of cases) {
      const { h, policyId, exemptionId } = setup({ conditions: [condition] });
      const result = applied(evaluatePolicy(h.policy(policyId), { ...FAILING, ...context }, {
        at: NOW, exemptions: [h.exemption(exemptionId)], entityId: ENTITY,
      }));
      assert.equal(result.status, expected ? "CompliantWithExemption" : "NonCompliant", JSON.stringify(condition));
    }
  });

  test("of several matching exemptions the one expiring last wins, whatever the order", () => {
    const { h, policyId, exemptionId } = setup();
    const later = randomUUID();
    h.run("grant_exemption", {
      exemption_id: later, policy_id: policyId, entity_id: ENTITY, reason: "extended", granted_by: "officer", expires_at: "2026-06-01T00:00:00Z",
    }, "2025-11-06T00:00:00Z");
    const all = [h.exemption(exemptionId), h.exemption(later)];
    const atMs = Date.parse(NOW);
    assert.equal(findMatchingExemption(policyId, FAILING, atMs, all, ENTITY)?.aggregate_id, later);
    assert.equal(findMatchingExemption(policyId, FAILING, atMs, [...all].reverse(), ENTITY)?.aggregate_id, later);
    // After the first expires only the later one is valid anyway.
    assert.equal(findMatchingExemption(policyId, FAILING, Date.parse("2026-03-01T00:00:00Z"), all, ENTITY)?.aggregate_id, later);
    assert.equal(findMatchingExemption(policyId, FAILING, Date.parse("2026-06-01T00:00:00Z"), all, ENTITY), undefined);
  });

  test("exemption conditions are compiled once per (exemption, version) with a cache", () => {
    const { h, policyId, exemptionId } = setup({ conditions: [{ field: "region", operator: "equal", value: "eu" }] });
    const cache = new CompiledPolicyCache();
    const opts = { at: NOW, exemptions: [h.exemption(exemptionId)], entityId: ENTITY, cache };
    assert.equal(applied(evaluatePolicy(h.policy(policyId), FAILING, opts)).status, "CompliantWithExemption");
    assert.equal(applied(evaluatePolicy(h.policy(policyId), { ...FAILING, region: "us" }, opts)).status, "NonCompliant");
  });
});

describe("evaluatePolicy: as of a past moment", () => {
  test("replays the policy and exemption histories to what stood at `at`", () => {
    const h = new History();
    const policyId = activePolicy(h, { rules: [AGE], enforcement: "Advisory" }); // v3, Active from T2
    const context = { user: { age: 19 }, entity_id: "svc-a" };
    h.run("update_rule", {
      policy_id: policyId, rule_id: "min-age", rule: { ...AGE, name: "min-age", expression: { ...AGE.expression, value: 21 } },
    }, "2025-11-10T00:00:00Z"); // v4
    h.run("suspend", { policy_id: policyId, suspended_by: "o", reason: "review" }, "2025-11-15T00:00:00Z"); // v5
    h.run("activate", { policy_id: policyId, activated_by: "o" }, "2025-11-20T00:00:00Z"); // v6: resumed
    h.run("update", { policy_id: policyId, updated_by: "o", enforcement: "Critical" }, "2025-11-25T00:00:00Z"); // v7
    const exemptionId = randomUUID();
    h.run("grant_exemption", {
      exemption_id: exemptionId, policy_id: policyId, entity_id: "svc-a", reason: "r", granted_by: "o", expires_at: "2026-01-01T00:00:00Z",
    }, "2025-11-26T00:00:00Z");
    h.run("revoke_exemption", { exemption_id: exemptionId, revoked_by: "o", reason: "no longer needed" }, "2025-11-28T00:00:00Z");

    const asOf = (at: string): PolicyEvaluation => {
      const exemption = h.stateAt(exemptionId, at) as ExemptionState | undefined;
      return evaluatePolicy(h.policy(policyId, at), context, { at, exemptions: exemption === undefined ? [] : [exemption] });
    };

    const approved = notApplied(asOf("2025-11-02T12:00:00Z"));
    assert.equal(approved.status_of_policy, "Approved");
    assert.equal(approved.policy_version, 2);

    const firstRule = applied(asOf("2025-11-05T00:00:00Z"));
    assert.equal(firstRule.policy_version, 3);
    assert.equal(firstRule.status, "Compliant", "19 >= 18 under the first rule");

    const stricterRule = applied(asOf("2025-11-12T00:00:00Z"));
    assert.equal(stricterRule.policy_version, 4);
    assert.equal(stricterRule.status, "NonCompliant", "19 < 21 under the updated rule");
    assert.equal(stricterRule.blocking, false, "still Advisory");

    const suspended = notApplied(asOf("2025-11-16T00:00:00Z"));
    assert.equal(suspended.status_of_policy, "Suspended");
    assert.equal(suspended.policy_version, 5);

    const resumed = applied(asOf("2025-11-21T00:00:00Z"));
    assert.equal(resumed.policy_version, 6);
    assert.equal(resumed.blocking, false);

    const critical = applied(asOf("2025-11-25T12:00:00Z"));
    assert.equal(critical.policy_version, 7);
    assert.equal(critical.enforcement, "Critical");
    assert.equal(critical.blocking, true);

    const exempted = applied(asOf("2025-11-27T00:00:00Z"));
    assert.equal(exempted.status, "CompliantWithExemption");
    assert.equal(exempted.exemption_id, exemptionId);

    const afterRevocation = applied(asOf("2025-11-29T00:00:00Z"));
    assert.equal(afterRevocation.status, "NonCompliant");
    assert.equal(afterRevocation.blocking, true);
  });
});
