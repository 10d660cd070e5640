// Evaluates one policy (as it stood at `at`) against a JSON context. Pure: `at` is an argument, not a clock.
//
// Status, precisely:
// - Compliant: every rule passed (a policy without rules is vacuously Compliant). Exemptions are not consulted.
// - CompliantWithExemption: some rules failed, and a valid exemption matches the request; every failure is
//   waived by it (exemptions cover the whole policy). The rules were still evaluated: the failures are
//   reported in `waived_violations` (and `violations` is empty), the exemption in `exemption_id`/`exemption_version`.
// - NonCompliant: some rules failed, no exemption matched, and either no rule passed or a failing rule has
//   severity High or Critical.
// - PartiallyCompliant: some rules failed, no exemption matched, at least one rule passed, and every failing
//   rule is Info, Low or Medium.
// - blocking = status is NonCompliant or PartiallyCompliant AND enforcement is Mandatory or Critical.
// A rule that could not be decided (`error: true`, see rules/compile.ts) is a failed rule like any other.
//
// Applicability: a policy applies only while Active and inside [effective_from, effective_until) at `at`
// (the domain's `policyInForceAt`); otherwise the result is `{applicable: false, reason, status_of_policy}`
// and no rule is evaluated, so the NATS layer answers `not_applicable`.
//
// Exemption matching (all must hold):
// 1. it is for this policy (`policy_id`), and the domain's `isExemptionValidAt(exemption, at)` holds
//    (Granted, valid_from <= at < expires_at: exactly at expires_at it is expired);
// 2. entity: its `entity_id` equals the request's entity, which is `opts.entityId` when given, else the
//    context's `entity_id`, else the context's `entity.id` (strings only). No entity in the request: no match;
// 3. scope: "Global" matches everything. Another level reads the context field(s) named in SCOPE_FIELDS
//    (the first path holding a string is used): `{"User": "alice"}` matches when that string is "alice";
//    a bare level (`"User"`) matches when the context names any value for it;
// 4. conditions: each `{field, operator, value}` holds as a rule expression would (TRUE; a missing field or
//    an undecidable comparison is no match).
// When several exemptions match, the one expiring last wins (ties: the smallest exemption id), so the result
// is the same whatever order the caller loads them in.
import { isExemptionValidAt, parseDateTime, policyInForceAt } from "../index.js";
import type { EnforcementLevel, ExemptionState, PolicyState, PolicyStatus } from "../index.js";
import { parseRfc3339, type Severity } from "../rules/schema.js";
import { TRUE, compileConditions, compilePolicy, evaluateRule } from "../rules/compile.js";
import type { CompiledExpression, CompiledPolicy, CompiledPolicyCache, RuleResult } from "../rules/compile.js";

export type ComplianceStatus = "Compliant" | "NonCompliant" | "CompliantWithExemption" | "PartiallyCompliant";

export interface Violation {
  rule_id: string;
  severity: Severity;
  /** The rule's `error_message`, else the reason it failed. */
  message: string;
  remediation?: string;
  /** The rule could not be decided (see RuleResult.error). */
  error?: true;
}

export interface EvaluationResult {
  applicable: true;
  status: ComplianceStatus;
  blocking: boolean;
  enforcement: EnforcementLevel;
  exemption_id?: string;
  exemption_version?: number;
  rules: RuleResult[];
  violations: Violation[];
  waived_violations?: Violation[];
  policy_id: string;
  policy_version: number;
  evaluated_at: string;
}

export interface NotApplicable {
  applicable: false;
  policy_id: string;
  policy_version: number;
  status_of_policy: PolicyStatus;
  reason: string;
  evaluated_at: string;
}

export type PolicyEvaluation = EvaluationResult | NotApplicable;

export interface EvaluateOptions {
  /** RFC 3339: the instant the policy is evaluated as of (the policy state passed in must be the one of that instant). */
  at: string;
  /** `at` in epoch ms when the caller already has it (e.g. from Date.now()), saving a parse; must denote `at`. */
  atMs?: number;
  /** Exemptions to consider (any policy; only valid, matching ones for this policy count), as they stood at `at`. */
  exemptions: readonly ExemptionState[];
  entityId?: string;
  cache?: CompiledPolicyCache;
  /** Reported as `evaluated_at`; defaults to `at`. */
  evaluatedAt?: string;
}

export const BLOCKING_ENFORCEMENT: ReadonlySet<EnforcementLevel> = new Set(["Mandatory", "Critical"]);
const GRAVE_SEVERITIES: ReadonlySet<Severity> = new Set(["High", "Critical"]);

/** Context paths that carry each exemption scope level, in the order they are tried. */
export const SCOPE_FIELDS: Readonly<Record<"Organization" | "User" | "Resource" | "Operation", readonly (readonly string[])[]>> = {
  Organization: [["organization_id"], ["organization", "id"], ["organization"]],
  User: [["user_id"], ["user", "id"], ["user"]],
  Resource: [["resource_id"], ["resource", "id"], ["resource"]],
  Operation: [["operation"], ["action"]],
};

function readPath(context: unknown, path: readonly string[]): unknown {
  let current = context;
  for (const key of path) {
    if (current === null || typeof current !== "object" || Array.isArray(current) || !Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

function firstString(context: unknown, paths: readonly (readonly string[])[]): string | undefined {
  for (const path of paths) {
    const value = readPath(context, path);
    if (typeof value === "string") return value;
  }
  return undefined;
}

/** The entity the request is about: opts.entityId, else context.entity_id, else context.entity.id. */
export function requestEntity(context: unknown, entityId?: string): string | undefined {
  return entityId ?? firstString(context, [["entity_id"], ["entity", "id"]]);
}

export function scopeMatches(scope: ExemptionState["scope"], context: unknown): boolean {
  if (scope === "Global") return true;
  if (typeof scope === "string") return firstString(context, SCOPE_FIELDS[scope]) !== undefined;
  for (const [level, wanted] of Object.entries(scope)) {
    if (level === "Global") continue;
    const paths = SCOPE_FIELDS[level as keyof typeof SCOPE_FIELDS];
    if (paths === undefined || firstString(context, paths) !== wanted) return false;
  }
  return true;
}

function conditionsOf(exemption: ExemptionState, cache: CompiledPolicyCache | undefined): CompiledExpression {
  return cache !== undefined
    ? cache.getConditions(exemption.aggregate_id, exemption.version, exemption.conditions)
    : compileConditions(exemption.conditions);
}

/** The exemption that waives this policy's failures for this request at `atMs`, if any (see header). */
export function findMatchingExemption(
  policyId: string,
  context: unknown,
  atMs: number,
  exemptions: readonly ExemptionState[],
  entityId: string | undefined,
  cache?: CompiledPolicyCache,
): ExemptionState | undefined {
  const entity = requestEntity(context, entityId);
  if (entity === undefined) return undefined;
  let best: ExemptionState | undefined;
  for (const exemption of exemptions) {
    if (exemption.policy_id !== policyId || exemption.entity_id !== entity) continue;
    if (!isExemptionValidAt(exemption, atMs)) continue;
    if (!scopeMatches(exemption.scope, context)) continue;
    if (conditionsOf(exemption, cache).test(context) !== TRUE) continue;
    if (best === undefined) {
      best = exemption;
      continue;
    }
    // Only several matches need the tie-break, so the common single match parses nothing more.
    const expiry = parseRfc3339(exemption.expires_at) ?? -Infinity;
    const bestExpiry = parseRfc3339(best.expires_at) ?? -Infinity;
    if (expiry > bestExpiry || (expiry === bestExpiry && exemption.aggregate_id < best.aggregate_id)) best = exemption;
  }
  return best;
}

/** Why a policy does not apply at `atMs`, or undefined when it is in force. */
export function notInForceReason(policy: PolicyState, atMs: number, at: string): string | undefined {
  if (policyInForceAt(policy, atMs)) return undefined;
  if (policy.status !== "Active") return `policy ${policy.aggregate_id} is ${policy.status}, not Active, at ${at}`;
  if (policy.effective_from !== null && atMs < (parseDateTime(policy.effective_from) ?? -Infinity)) {
    return `policy ${policy.aggregate_id} takes effect at ${policy.effective_from}, after ${at}`;
  }
  if (policy.effective_until !== null) {
    return `policy ${policy.aggregate_id} stopped being effective at ${policy.effective_until}, not after ${at}`;
  }
  return `policy ${policy.aggregate_id} is not in force at ${at}`;
}

function compiledFor(policy: PolicyState, cache: CompiledPolicyCache | undefined): CompiledPolicy {
  return cache !== undefined
    ? cache.get(policy.aggregate_id, policy.version, policy.rules, policy)
    : compilePolicy(policy.aggregate_id, policy.version, policy.rules, policy);
}

export function evaluatePolicy(policy: PolicyState, context: unknown, opts: EvaluateOptions): PolicyEvaluation {
  const atMs = opts.atMs ?? parseDateTime(opts.at);
  if (atMs === undefined) throw new RangeError(`evaluatePolicy: at is not an RFC 3339 date-time: ${JSON.stringify(opts.at)}`);
  const evaluatedAt = opts.evaluatedAt ?? opts.at;
  const compiled = compiledFor(policy, opts.cache);
  // Same test as the domain's policyInForceAt, on bounds parsed once per (policy, version); the
  // domain function still words the reason and has the last say on the slow path.
  const inForce = policy.status === "Active" && atMs >= compiled.effectiveFromMs && atMs < compiled.effectiveUntilMs;
  const notInForce = inForce ? undefined : notInForceReason(policy, atMs, opts.at);
  if (notInForce !== undefined) {
    return {
      applicable: false,
      policy_id: policy.aggregate_id,
      policy_version: policy.version,
      status_of_policy: policy.status,
      reason: notInForce,
      evaluated_at: evaluatedAt,
    };
  }

  const rules: RuleResult[] = new Array<RuleResult>(compiled.rules.length);
  let violations: Violation[] | undefined;
  let passed = 0;
  let grave = false;
  for (let i = 0; i < compiled.rules.length; i++) {
    const compiledRule = compiled.rules[i]!;
    const result = evaluateRule(compiledRule, context);
    rules[i] = result;
    if (result.passed) {
      passed++;
      continue;
    }
    const rule = compiledRule.rule;
    const violation: Violation = { rule_id: rule.rule_id, severity: rule.severity, message: rule.error_message ?? result.reason ?? `rule ${rule.name} failed` };
    if (rule.remediation_hint !== undefined) violation.remediation = rule.remediation_hint;
    if (result.error === true) violation.error = true;
    (violations ??= []).push(violation);
    if (GRAVE_SEVERITIES.has(rule.severity)) grave = true;
  }

  let status: ComplianceStatus = "Compliant";
  let blocking = false;
  let exemption: ExemptionState | undefined;
  if (violations !== undefined) {
    exemption = findMatchingExemption(policy.aggregate_id, context, atMs, opts.exemptions, opts.entityId, opts.cache);
    if (exemption !== undefined) status = "CompliantWithExemption";
    else {
      status = passed === 0 || grave ? "NonCompliant" : "PartiallyCompliant";
      blocking = BLOCKING_ENFORCEMENT.has(policy.enforcement);
    }
  }
  // One literal per shape keeps the hot path to a single allocation with a stable hidden class.
  if (exemption === undefined) {
    return {
      applicable: true,
      status,
      blocking,
      enforcement: policy.enforcement,
      rules,
      violations: violations ?? [],
      policy_id: policy.aggregate_id,
      policy_version: policy.version,
      evaluated_at: evaluatedAt,
    };
  }
  return {
    applicable: true,
    status,
    blocking,
    enforcement: policy.enforcement,
    exemption_id: exemption.aggregate_id,
    exemption_version: exemption.version,
    rules,
    violations: [],
    waived_violations: violations ?? [],
    policy_id: policy.aggregate_id,
    policy_version: policy.version,
    evaluated_at: evaluatedAt,
  };
}

/** Compliant for composition purposes: every failure (if any) is waived. */
export function isCompliant(result: EvaluationResult): boolean {
  return result.status === "Compliant" || result.status === "CompliantWithExemption";
}
