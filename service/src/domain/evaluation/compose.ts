// Combines the evaluations of a policy set's members into one result. Pure.
//
// Definitions:
// - A member is applicable when its evaluation applied (the policy was Active and in force at `at`);
//   members that did not apply are listed in `not_applicable` and take no part in the vote. With no
//   applicable member at all the set itself is not applicable.
// - A member complies when its status is Compliant or CompliantWithExemption (PartiallyCompliant does not).
// - Composition sets how many applicable members (n) must comply: All → n, Any → 1, Majority → ⌊n/2⌋+1
//   (a strict majority; a tie fails), AtLeast(k) → k (fails when fewer than k members apply). The set
//   complies when that many do.
// - A conflict is a disagreement: among applicable members some comply and some do not.
// - Conflict resolution decides the two things a vote does not: whether a conflict is acceptable at all,
//   and whose enforcement governs a failing set (so whether it blocks):
//     MostRestrictive   the strongest enforcement among the failing members governs;
//     LeastRestrictive  the weakest enforcement among the failing members governs;
//     FirstWins         the first failing member in set order governs;
//     LastWins          the last failing member in set order governs;
//     FailOnConflict    any conflict fails the set whatever the composition says, reports `conflict` with
//                       the disagreeing members, and the strongest failing enforcement governs (fail closed).
//   `deciding_policy_id` names the governing member. Ties between equal enforcement levels go to the
//   earlier member in set order. A set that fails with no failing member (AtLeast(k) with fewer than k
//   applicable members, all complying) picks the governing member from the applicable ones the same way.
// - Status: a complying set is Compliant, or CompliantWithExemption when the vote needed members that
//   comply only thanks to an exemption. A failing set is NonCompliant when no applicable member complies,
//   else PartiallyCompliant. blocking = the set fails AND the governing enforcement is Mandatory or Critical.
//   `enforcement` is the governing one for a failing set, the strongest applicable one for a complying set.
import type { Composition, ConflictResolution, EnforcementLevel } from "../index.js";
import { ENFORCEMENT_LEVELS } from "../index.js";
import type { ComplianceStatus, PolicyEvaluation } from "./evaluate.js";
import { BLOCKING_ENFORCEMENT, isCompliant } from "./evaluate.js";

export interface SetMember {
  policy_id: string;
  result: PolicyEvaluation;
}

/** What composition needs of a set; an ad-hoc list of policy ids uses ADHOC_COMPOSITION. */
export interface CompositionSpec {
  aggregate_id?: string;
  version?: number;
  composition: Composition;
  conflict_resolution: ConflictResolution;
}

/** check_compliance over a bare list of policy ids: every policy must comply, the strictest failure governs. */
export const ADHOC_COMPOSITION: CompositionSpec = { composition: "All", conflict_resolution: "MostRestrictive" };

export interface SetConflict {
  compliant: string[];
  non_compliant: string[];
}

export interface SetEvaluation {
  applicable: true;
  policy_set_id: string | null;
  policy_set_version: number | null;
  composition: Composition;
  conflict_resolution: ConflictResolution;
  status: ComplianceStatus;
  compliant: boolean;
  blocking: boolean;
  enforcement: EnforcementLevel;
  /** The member whose enforcement governs a failing set. */
  deciding_policy_id?: string;
  conflict?: SetConflict;
  /** Applicable members, how many comply, how many had to. */
  counts: { applicable: number; compliant: number; required: number; not_applicable: number };
  not_applicable: Array<{ policy_id: string; reason: string }>;
  members: SetMember[];
}

export interface SetNotApplicable {
  applicable: false;
  policy_set_id: string | null;
  policy_set_version: number | null;
  reason: string;
  not_applicable: Array<{ policy_id: string; reason: string }>;
  members: SetMember[];
}

export type SetComposition = SetEvaluation | SetNotApplicable;

const RANK: ReadonlyMap<EnforcementLevel, number> = new Map(ENFORCEMENT_LEVELS.map((level, index) => [level, index]));

function rank(level: EnforcementLevel): number {
  return RANK.get(level) ?? ENFORCEMENT_LEVELS.length;
}

export function requiredCount(composition: Composition, applicable: number): number {
  if (composition === "All") return applicable;
  if (composition === "Any") return 1;
  if (composition === "Majority") return Math.floor(applicable / 2) + 1;
  return composition.AtLeast;
}

function compositionName(composition: Composition): string {
  return typeof composition === "string" ? composition : `AtLeast(${composition.AtLeast})`;
}

/** `members` in set order (FirstWins / LastWins depend on it). */
export function composeSet(set: CompositionSpec, members: readonly SetMember[]): SetComposition {
  const setId = set.aggregate_id ?? null;
  const setVersion = set.version ?? null;
  const notApplicable: Array<{ policy_id: string; reason: string }> = [];
  const complying: SetMember[] = [];
  const failing: SetMember[] = [];
  let plainCompliant = 0;
  let strongestApplicable: EnforcementLevel | undefined;
  for (const member of members) {
    const result = member.result;
    if (!result.applicable) {
      notApplicable.push({ policy_id: member.policy_id, reason: result.reason });
      continue;
    }
    if (strongestApplicable === undefined || rank(result.enforcement) > rank(strongestApplicable)) strongestApplicable = result.enforcement;
    if (isCompliant(result)) {
      complying.push(member);
      if (result.status === "Compliant") plainCompliant++;
    } else {
      failing.push(member);
    }
  }

  const applicable = complying.length + failing.length;
  if (applicable === 0 || strongestApplicable === undefined) {
    return {
      applicable: false,
      policy_set_id: setId,
      policy_set_version: setVersion,
      reason: members.length === 0 ? "the set has no member policies" : "no member policy applies",
      not_applicable: notApplicable,
      members: [...members],
    };
  }

  const required = requiredCount(set.composition, applicable);
  const conflict = complying.length > 0 && failing.length > 0;
  const strategy = set.conflict_resolution;
  const compliant = complying.length >= required && !(conflict && strategy === "FailOnConflict");

  const common = {
    applicable: true as const,
    policy_set_id: setId,
    policy_set_version: setVersion,
    composition: set.composition,
    conflict_resolution: strategy,
    counts: { applicable, compliant: complying.length, required, not_applicable: notApplicable.length },
    not_applicable: notApplicable,
    members: [...members],
  };
  const conflictReport: SetConflict | undefined = conflict
    ? { compliant: complying.map((m) => m.policy_id), non_compliant: failing.map((m) => m.policy_id) }
    : undefined;

  if (compliant) {
    const status: ComplianceStatus = plainCompliant >= required ? "Compliant" : "CompliantWithExemption";
    return {
      ...common,
      status,
      compliant: true,
      blocking: false,
      enforcement: strongestApplicable,
      ...(conflictReport !== undefined ? { conflict: conflictReport } : {}),
    };
  }

  // A set can fail with no failing member (AtLeast(k) with fewer than k applicable): then the
  // complying members are the pool the strategy picks from.
  const deciding = governingMember(strategy, failing.length > 0 ? failing : complying);
  const enforcement = (deciding.result as { enforcement: EnforcementLevel }).enforcement;
  return {
    ...common,
    status: complying.length === 0 ? "NonCompliant" : "PartiallyCompliant",
    compliant: false,
    blocking: BLOCKING_ENFORCEMENT.has(enforcement),
    enforcement,
    deciding_policy_id: deciding.policy_id,
    ...(conflictReport !== undefined ? { conflict: conflictReport } : {}),
  };
}

/** The member whose enforcement governs, per the conflict resolution (`pool` is non-empty, in set order). */
function governingMember(strategy: ConflictResolution, pool: readonly SetMember[]): SetMember {
  const enforcementOf = (member: SetMember): number => rank((member.result as { enforcement: EnforcementLevel }).enforcement);
  switch (strategy) {
    case "FirstWins":
      return pool[0]!;
    case "LastWins":
      return pool[pool.length - 1]!;
    case "LeastRestrictive":
      return pool.reduce((best, member) => (enforcementOf(member) < enforcementOf(best) ? member : best));
    case "MostRestrictive":
    case "FailOnConflict":
      return pool.reduce((best, member) => (enforcementOf(member) > enforcementOf(best) ? member : best));
  }
}

/** One line for logs and replies, e.g. "Majority: 2 of 3 applicable members comply (2 required)". */
export function describeComposition(result: SetEvaluation): string {
  const { counts } = result;
  return `${compositionName(result.composition)}: ${counts.compliant} of ${counts.applicable} applicable members comply (${counts.required} required)`;
}
