import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import type { Composition, ConflictResolution, EnforcementLevel } from "../../src/domain/index.js";
import type { ComplianceStatus, PolicyEvaluation } from "../../src/domain/evaluation/evaluate.js";
import {
  ADHOC_COMPOSITION, composeSet, describeComposition, requiredCount,
  type SetComposition, type SetEvaluation, type SetMember,
} from "../../src/domain/evaluation/compose.js";

const AT = "2025-12-01T00:00:00Z";

function member(policy_id: string, status: ComplianceStatus, enforcement: EnforcementLevel = "Mandatory"): SetMember {
  const compliant = status === "Compliant" || status === "CompliantWithExemption";
  const result: PolicyEvaluation = {
    applicable: true,
    status,
    blocking: !compliant && (enforcement === "Mandatory" || enforcement === "Critical"),
    enforcement,
    rules: [],
    violations: [],
    policy_id,
    policy_version: 3,
    evaluated_at: AT,
  };
  return { policy_id, result };
}

function inactive(policy_id: string): SetMember {
  return {
    policy_id,
    result: { applicable: false, policy_id, policy_version: 2, status_of_policy: "Suspended", reason: `policy ${policy_id} is Suspended`, evaluated_at: AT },
  };
}

function set(composition: Composition, conflict_resolution: ConflictResolution = "MostRestrictive") {
  return { aggregate_id: "set-1", version: 4, composition, conflict_resolution };
}

function evaluated(result: SetComposition): SetEvaluation {
  assert.equal(result.applicable, true, JSON.stringify(result));
  return result as SetEvaluation;
}

const ok = (id: string, e?: EnforcementLevel) => member(id, "Compliant", e);
const exempt = (id: string, e?: EnforcementLevel) => member(id, "CompliantWithExemption", e);
const bad = (id: string, e?: EnforcementLevel) => member(id, "NonCompliant", e);
const partial = (id: string, e?: EnforcementLevel) => member(id, "PartiallyCompliant", e);

describe("composition", () => {
  test("required counts", () => {
    assert.equal(requiredCount("All", 5), 5);
    assert.equal(requiredCount("Any", 5), 1);
    assert.equal(requiredCount("Majority", 5), 3);
    assert.equal(requiredCount("Majority", 4), 3);
    assert.equal(requiredCount("Majority", 1), 1);
    assert.equal(requiredCount({ AtLeast: 2 }, 5), 2);
  });

  test("All: every applicable member must comply", () => {
    const pass = evaluated(composeSet(set("All"), [ok("a"), ok("b"), ok("c")]));
    assert.equal(pass.status, "Compliant");
    assert.equal(pass.compliant, true);
    assert.equal(pass.blocking, false);
    assert.equal(pass.conflict, undefined);
    assert.equal(pass.policy_set_id, "set-1");
    assert.equal(pass.policy_set_version, 4);
    const fail = evaluated(composeSet(set("All"), [ok("a"), bad("b"), ok("c")]));
    assert.equal(fail.compliant, false);
    assert.equal(fail.status, "PartiallyCompliant");
    assert.equal(fail.blocking, true);
    assert.equal(fail.deciding_policy_id, "b");
    assert.deepEqual(fail.counts, { applicable: 3, compliant: 2, required: 3, not_applicable: 0 });
    assert.deepEqual(fail.conflict, { compliant: ["a", "c"], non_compliant: ["b"] });
  });

  test("Any: one complying member is enough", () => {
    assert.equal(evaluated(composeSet(set("Any"), [bad("a"), ok("b"), bad("c")])).compliant, true);
    const none = evaluated(composeSet(set("Any"), [bad("a"), partial("b")]));
    assert.equal(none.compliant, false);
    assert.equal(none.status, "NonCompliant", "no member complies");
  });

  test("Majority: strictly more than half; a tie fails", () => {
    assert.equal(evaluated(composeSet(set("Majority"), [ok("a"), ok("b"), bad("c")])).compliant, true);
    assert.equal(evaluated(composeSet(set("Majority"), [ok("a"), bad("b"), bad("c")])).compliant, false);
    const tie = evaluated(composeSet(set("Majority"), [ok("a"), ok("b"), bad("c"), bad("d")]));
    assert.equal(tie.compliant, false);
    assert.equal(tie.counts.required, 3);
    assert.match(describeComposition(tie), /^Majority: 2 of 4 applicable members comply \(3 required\)$/);
  });

  test("AtLeast(n): n complying members; fewer applicable members than n fails", () => {
    assert.equal(evaluated(composeSet(set({ AtLeast: 2 }), [ok("a"), bad("b"), ok("c")])).compliant, true);
    assert.equal(evaluated(composeSet(set({ AtLeast: 2 }), [ok("a"), bad("b"), bad("c")])).compliant, false);
    const short = evaluated(composeSet(set({ AtLeast: 2 }), [ok("a"), inactive("b"), inactive("c")]));
    assert.equal(short.compliant, false, "only one member applies, two must comply");
    assert.equal(short.counts.applicable, 1);
    assert.match(describeComposition(short), /AtLeast\(2\): 1 of 1/);
    assert.equal(short.status, "PartiallyCompliant");
    assert.equal(short.deciding_policy_id, "a", "with no failing member the applicable ones govern");
    assert.equal(short.blocking, true);
  });

  test("PartiallyCompliant members do not comply", () => {
    assert.equal(evaluated(composeSet(set("All"), [ok("a"), partial("b")])).compliant, false);
  });

  test("not-applicable members are reported and excluded from the vote", () => {
    const result = evaluated(composeSet(set("All"), [ok("a"), inactive("b"), ok("c")]));
    assert.equal(result.compliant, true, "the suspended member does not count against All");
    assert.deepEqual(result.not_applicable, [{ policy_id: "b", reason: "policy b is Suspended" }]);
    assert.deepEqual(result.counts, { applicable: 2, compliant: 2, required: 2, not_applicable: 1 });
    assert.equal(result.members.length, 3, "every member's own result is returned");
  });

  test("no applicable member: the set is not applicable", () => {
    const result = composeSet(set("Any"), [inactive("a"), inactive("b")]);
    assert.equal(result.applicable, false);
    if (!result.applicable) {
      assert.equal(result.reason, "no member policy applies");
      assert.equal(result.not_applicable.length, 2);
    }
    const empty = composeSet(set("All"), []);
    assert.equal(empty.applicable, false);
    if (!empty.applicable) assert.equal(empty.reason, "the set has no member policies");
  });

  test("CompliantWithExemption when the vote needed exempted members", () => {
    assert.equal(evaluated(composeSet(set("All"), [ok("a"), exempt("b")])).status, "CompliantWithExemption");
    assert.equal(evaluated(composeSet(set("Any"), [ok("a"), exempt("b")])).status, "Compliant", "a alone satisfies Any");
    assert.equal(evaluated(composeSet(set({ AtLeast: 2 }), [ok("a"), exempt("b"), ok("c")])).status, "Compliant");
    assert.equal(evaluated(composeSet(set({ AtLeast: 3 }), [ok("a"), exempt("b"), ok("c")])).status, "CompliantWithExemption");
  });

  test("a complying set reports the strongest applicable enforcement and never blocks", () => {
    const result = evaluated(composeSet(set("Any"), [ok("a", "Advisory"), bad("b", "Critical")]));
    assert.equal(result.compliant, true);
    assert.equal(result.blocking, false);
    assert.equal(result.enforcement, "Critical");
    assert.deepEqual(result.conflict, { compliant: ["a"], non_compliant: ["b"] });
  });

  test("ad-hoc policy lists compose as All with MostRestrictive", () => {
    const result = evaluated(composeSet(ADHOC_COMPOSITION, [ok("a"), bad("b", "Advisory"), bad("c", "Critical")]));
    assert.equal(result.policy_set_id, null);
    assert.equal(result.composition, "All");
    assert.equal(result.deciding_policy_id, "c");
    assert.equal(result.blocking, true);
  });
});

describe("conflict resolution", () => {
  // Set order: a (complies), b Advisory, c Critical, d Recommended, e Mandatory; all b..e fail.
  const members = [ok("a", "Critical"), bad("b", "Advisory"), bad("c", "Critical"), bad("d", "Recommended"), bad("e", "Mandatory")];

  const cases: Array<[ConflictResolution, string, EnforcementLevel, boolean]> = [
    ["MostRestrictive", "c", "Critical", true],
    ["LeastRestrictive", "b", "Advisory", false],
    ["FirstWins", "b", "Advisory", false],
    ["LastWins", "e", "Mandatory", true],
    ["FailOnConflict", "c", "Critical", true],
  ];
  for (const [strategy, deciding, enforcement, blocking] of cases) {
    test(`${strategy}: ${deciding} governs a failing set (${enforcement}, blocking ${blocking})`, () => {
      const result = evaluated(composeSet(set("All", strategy), members));
      assert.equal(result.compliant, false);
      assert.equal(result.status, "PartiallyCompliant");
      assert.equal(result.deciding_policy_id, deciding);
      assert.equal(result.enforcement, enforcement);
      assert.equal(result.blocking, blocking);
      assert.deepEqual(result.conflict, { compliant: ["a"], non_compliant: ["b", "c", "d", "e"] });
    });
  }

  test("ties on enforcement go to the earlier member", () => {
    const tied = [bad("x", "Mandatory"), bad("y", "Mandatory"), bad("z", "Advisory"), bad("w", "Advisory")];
    assert.equal(evaluated(composeSet(set("All", "MostRestrictive"), tied)).deciding_policy_id, "x");
    assert.equal(evaluated(composeSet(set("All", "LeastRestrictive"), tied)).deciding_policy_id, "z");
  });

  test("FirstWins / LastWins follow set order, skipping complying and not-applicable members", () => {
    const ordered = [inactive("p"), ok("q"), bad("r", "Recommended"), ok("s"), bad("t", "Critical"), inactive("u")];
    assert.equal(evaluated(composeSet(set("All", "FirstWins"), ordered)).deciding_policy_id, "r");
    assert.equal(evaluated(composeSet(set("All", "LastWins"), ordered)).deciding_policy_id, "t");
  });

  test("FailOnConflict fails a disagreeing set that the composition would pass", () => {
    const disagreeing = [ok("a"), bad("b", "Advisory"), ok("c")];
    assert.equal(evaluated(composeSet(set("Any", "MostRestrictive"), disagreeing)).compliant, true);
    const result = evaluated(composeSet(set("Any", "FailOnConflict"), disagreeing));
    assert.equal(result.compliant, false);
    assert.equal(result.status, "PartiallyCompliant");
    assert.deepEqual(result.conflict, { compliant: ["a", "c"], non_compliant: ["b"] });
    assert.equal(result.deciding_policy_id, "b");
    assert.equal(result.blocking, false, "the only failing member is Advisory");
  });

  test("FailOnConflict without disagreement follows the composition", () => {
    const agreeing = evaluated(composeSet(set("All", "FailOnConflict"), [ok("a"), exempt("b"), inactive("c")]));
    assert.equal(agreeing.compliant, true);
    assert.equal(agreeing.conflict, undefined);
    const allFail = evaluated(composeSet(set("Any", "FailOnConflict"), [bad("a", "Advisory"), bad("b", "Critical")]));
    assert.equal(allFail.compliant, false);
    assert.equal(allFail.status, "NonCompliant");
    assert.equal(allFail.conflict, undefined);
    assert.equal(allFail.deciding_policy_id, "b");
  });
});
