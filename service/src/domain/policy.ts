// The Policy aggregate: its lifecycle and its rules.
//
//   command        allowed from              to         notes
//   create         (no events yet)           Draft      an existing id is already_exists
//   approve        Draft                     Approved   approved_at = approval_date ?? now
//   activate       Approved, Suspended       Active     from Suspended it resumes; the event carries the
//                                                       effective window (effective_from defaults to the
//                                                       policy's, else now; a window already over is refused)
//   suspend        Active                    Suspended
//   revoke         Active, Suspended         Revoked
//   archive        Suspended, Revoked        Archived   ("Suspended/Revoked → Archived" in the lifecycle)
//   update, add_rule, update_rule, remove_rule, reorder_rules:
//                  Draft, Approved, Active, Suspended (status unchanged); Revoked and Archived are frozen.
//                  Every change is an event with old and new values, so edits of an Active policy are audited.
//                  A command that changes nothing (same values, same order) succeeds with no event.
// Everything else is invalid_transition and stores nothing.
//
// Rule ids: the caller's `rule_id` (slug or UUID) when given, else a name-based UUID derived from
// (policy id, version of the new event, index in the command): pure, so every replay and every instance agrees.
// update_rule replaces the whole rule (send every field; omitted optional fields are removed).
import type { Rule } from "./rules/schema.js";
import type { CommandOf, EnforcementLevel, PolicyType, Scope, UpdatableField } from "./commands.js";
import { LIMITS, UPDATABLE_FIELDS } from "./commands.js";
import { accept, reject } from "./types.js";
import type { Decision, EventEnvelope, FieldChange } from "./types.js";
import { deriveRuleId } from "./ruleIds.js";
import { parseDateTime, toMillis } from "./time.js";

// ================================================================ Events

export interface PolicyCreatedData {
  name: string;
  description: string;
  policy_type: PolicyType;
  enforcement: EnforcementLevel;
  scope: Scope;
  rules: Rule[];
  effective_from: string | null;
  effective_until: string | null;
  tags: string[];
  owner: string | null;
  created_at: string;
}
/** `changes` lists every changed field with its old and new value; the new values are repeated at the top level. */
export interface PolicyUpdatedData extends Partial<Pick<PolicyState, UpdatableField>> {
  updated_by: string;
  updated_at: string;
  changes: FieldChange[];
}
export interface PolicyApprovedData { approved_by: string; approved_at: string; notes: string | null }
export interface PolicyActivatedData {
  activated_by: string;
  activated_at: string;
  effective_from: string;
  effective_until: string | null;
  /** true when the activation resumed a suspended policy. */
  resumed: boolean;
}
export interface PolicySuspendedData {
  suspended_by: string;
  suspended_at: string;
  reason: string;
  expected_resume_date: string | null;
}
export interface PolicyRevokedData { revoked_by: string; revoked_at: string; reason: string }
export interface PolicyArchivedData { archived_by: string; archived_at: string; retention_period_days: number | null }
export interface RuleAddedData { rule: Rule; position: number }
export interface RuleUpdatedData { rule_id: string; rule: Rule; previous: Rule }
export interface RuleRemovedData { rule_id: string; rule: Rule }
export interface RulesReorderedData { rule_ids: string[]; previous_rule_ids: string[] }

// ================================================================ State

export const POLICY_STATUSES = ["Draft", "Approved", "Active", "Suspended", "Revoked", "Archived"] as const;
export type PolicyStatus = (typeof POLICY_STATUSES)[number];

/** `update` and the rule commands work until a policy is revoked; Revoked and Archived policies are frozen. */
export const EDITABLE_STATUSES: readonly PolicyStatus[] = ["Draft", "Approved", "Active", "Suspended"];

/** Every field of the created event, as later events change them, plus what the other events record. */
export interface PolicyState extends PolicyCreatedData {
  aggregate_type: "Policy";
  aggregate_id: string;
  version: number;
  status: PolicyStatus;
  updated_at: string;
  updated_by: string | null;
  approved_by: string | null;
  approved_at: string | null;
  approval_notes: string | null;
  activated_by: string | null;
  activated_at: string | null;
  suspended_by: string | null;
  suspended_at: string | null;
  suspension_reason: string | null;
  expected_resume_date: string | null;
  revoked_by: string | null;
  revoked_at: string | null;
  revocation_reason: string | null;
  archived_by: string | null;
  archived_at: string | null;
  retention_period_days: number | null;
}

// ================================================================ Evolve

export function evolvePolicy(state: PolicyState | undefined, event: EventEnvelope): PolicyState {
  const base = { aggregate_id: event.aggregate_id, version: event.version, updated_at: event.occurred_at };
  if (event.event_type === "created") {
    const d = event.data as unknown as PolicyCreatedData;
    return {
      aggregate_type: "Policy",
      ...base,
      status: "Draft",
      name: d.name,
      description: d.description,
      policy_type: d.policy_type,
      enforcement: d.enforcement,
      scope: d.scope,
      rules: d.rules,
      effective_from: d.effective_from,
      effective_until: d.effective_until,
      tags: d.tags,
      owner: d.owner,
      created_at: d.created_at,
      updated_by: null,
      approved_by: null,
      approved_at: null,
      approval_notes: null,
      activated_by: null,
      activated_at: null,
      suspended_by: null,
      suspended_at: null,
      suspension_reason: null,
      expected_resume_date: null,
      revoked_by: null,
      revoked_at: null,
      revocation_reason: null,
      archived_by: null,
      archived_at: null,
      retention_period_days: null,
    };
  }
  if (state === undefined) throw new Error(`policy ${event.aggregate_id}: ${event.event_type} before created`);
  switch (event.event_type) {
    case "updated": {
      const d = event.data as unknown as PolicyUpdatedData;
      const next: PolicyState = { ...state, ...base, updated_by: d.updated_by };
      for (const change of d.changes) (next as unknown as Record<string, unknown>)[change.field] = change.new;
      return next;
    }
    case "approved": {
      const d = event.data as unknown as PolicyApprovedData;
      return { ...state, ...base, status: "Approved", approved_by: d.approved_by, approved_at: d.approved_at, approval_notes: d.notes };
    }
    case "activated": {
      const d = event.data as unknown as PolicyActivatedData;
      return {
        ...state,
        ...base,
        status: "Active",
        activated_by: d.activated_by,
        activated_at: d.activated_at,
        effective_from: d.effective_from,
        effective_until: d.effective_until,
        suspended_by: null,
        suspended_at: null,
        suspension_reason: null,
        expected_resume_date: null,
      };
    }
    case "suspended": {
      const d = event.data as unknown as PolicySuspendedData;
      return {
        ...state,
        ...base,
        status: "Suspended",
        suspended_by: d.suspended_by,
        suspended_at: d.suspended_at,
        suspension_reason: d.reason,
        expected_resume_date: d.expected_resume_date,
      };
    }
    case "revoked": {
      const d = event.data as unknown as PolicyRevokedData;
      return { ...state, ...base, status: "Revoked", revoked_by: d.revoked_by, revoked_at: d.revoked_at, revocation_reason: d.reason };
    }
    case "archived": {
      const d = event.data as unknown as PolicyArchivedData;
      return {
        ...state,
        ...base,
        status: "Archived",
        archived_by: d.archived_by,
        archived_at: d.archived_at,
        retention_period_days: d.retention_period_days,
      };
    }
    case "rule_added": {
      const d = event.data as unknown as RuleAddedData;
      const rules = [...state.rules];
      rules.splice(d.position, 0, d.rule);
      return { ...state, ...base, rules };
    }
    case "rule_updated": {
      const d = event.data as unknown as RuleUpdatedData;
      return { ...state, ...base, rules: state.rules.map((rule) => (rule.rule_id === d.rule_id ? d.rule : rule)) };
    }
    case "rule_removed": {
      const d = event.data as unknown as RuleRemovedData;
      return { ...state, ...base, rules: state.rules.filter((rule) => rule.rule_id !== d.rule_id) };
    }
    case "rules_reordered": {
      const d = event.data as unknown as RulesReorderedData;
      const byId = new Map(state.rules.map((rule) => [rule.rule_id, rule]));
      return { ...state, ...base, rules: d.rule_ids.flatMap((id) => byId.get(id) ?? []) };
    }
    default:
      // An event of another aggregate type never reaches here (index.ts routes by aggregate_type).
      return state;
  }
}

// ================================================================ Decide

type PolicyCommand = CommandOf<
  | "create" | "update" | "approve" | "activate" | "suspend" | "revoke" | "archive"
  | "add_rule" | "update_rule" | "remove_rule" | "reorder_rules"
>;

function transitionError(state: PolicyState, command: string, allowed: readonly PolicyStatus[]): Decision {
  return reject(
    "invalid_transition",
    `cannot ${command} policy ${state.aggregate_id} while it is ${state.status} (allowed from: ${allowed.join(", ")})`,
    { status: state.status, allowed_from: allowed },
  );
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

export function decidePolicy(state: PolicyState | undefined, command: PolicyCommand, now: string): Decision {
  if (command.name === "create") {
    const p = command.payload;
    if (state !== undefined) return reject("already_exists", `policy ${p.policy_id} already exists`);
    const rules: Rule[] = (p.rules ?? []).map((rule, index) => ({ ...rule, rule_id: rule.rule_id ?? deriveRuleId(p.policy_id, 1, index) }));
    if (new Set(rules.map((rule) => rule.rule_id)).size !== rules.length) {
      return reject("validation_failed", "rule ids must be unique within a policy", [{ path: "rules", message: "rule_id repeats" }]);
    }
    const data: PolicyCreatedData = {
      name: p.name,
      description: p.description,
      policy_type: p.policy_type,
      enforcement: p.enforcement,
      scope: p.scope,
      rules,
      effective_from: p.effective_from ?? null,
      effective_until: p.effective_until ?? null,
      tags: p.tags ?? [],
      owner: p.owner ?? null,
      created_at: now,
    };
    return accept({ event_type: "created", data: { ...data } });
  }
  if (state === undefined) return reject("not_found", `policy ${command.payload.policy_id} not found`);

  switch (command.name) {
    case "update": {
      if (!EDITABLE_STATUSES.includes(state.status)) return transitionError(state, "update", EDITABLE_STATUSES);
      const p = command.payload;
      const changes: FieldChange[] = [];
      const values: Record<string, unknown> = {};
      for (const field of UPDATABLE_FIELDS) {
        const next = p[field];
        if (next === undefined || sameJson(next, state[field])) continue;
        changes.push({ field, old: state[field], new: next });
        values[field] = next;
      }
      const from = "effective_from" in values ? (values.effective_from as string | null) : state.effective_from;
      const until = "effective_until" in values ? (values.effective_until as string | null) : state.effective_until;
      if (from !== null && until !== null && toMillis(until) <= toMillis(from)) {
        return reject("validation_failed", "effective_until must be after effective_from", [
          { path: "effective_until", message: `must be after effective_from (${from})` },
        ]);
      }
      // Nothing differs: an idempotent no-op, not an error.
      if (changes.length === 0) return accept();
      return accept({ event_type: "updated", data: { updated_by: p.updated_by, updated_at: now, changes, ...values } });
    }
    case "approve": {
      if (state.status !== "Draft") return transitionError(state, "approve", ["Draft"]);
      const p = command.payload;
      const data: PolicyApprovedData = { approved_by: p.approved_by, approved_at: p.approval_date ?? now, notes: p.notes ?? null };
      return accept({ event_type: "approved", data: { ...data } });
    }
    case "activate": {
      const allowed: PolicyStatus[] = ["Approved", "Suspended"];
      if (!allowed.includes(state.status)) return transitionError(state, "activate", allowed);
      const p = command.payload;
      const from = p.effective_from ?? state.effective_from ?? now;
      const until = p.effective_until ?? state.effective_until;
      if (until !== null && toMillis(until) <= toMillis(from)) {
        return reject("validation_failed", "effective_until must be after effective_from", [
          { path: "effective_until", message: `must be after effective_from (${from})` },
        ]);
      }
      if (until !== null && toMillis(until) <= toMillis(now)) {
        return reject("validation_failed", "effective_until is in the past: the policy could never be in force", [
          { path: "effective_until", message: `must be after now (${now})` },
        ]);
      }
      const data: PolicyActivatedData = {
        activated_by: p.activated_by,
        activated_at: now,
        effective_from: from,
        effective_until: until,
        resumed: state.status === "Suspended",
      };
      return accept({ event_type: "activated", data: { ...data } });
    }
    case "suspend": {
      if (state.status !== "Active") return transitionError(state, "suspend", ["Active"]);
      const p = command.payload;
      if (p.expected_resume_date !== undefined && toMillis(p.expected_resume_date) <= toMillis(now)) {
        return reject("validation_failed", "expected_resume_date must be in the future", [
          { path: "expected_resume_date", message: `must be after now (${now})` },
        ]);
      }
      const data: PolicySuspendedData = {
        suspended_by: p.suspended_by,
        suspended_at: now,
        reason: p.reason,
        expected_resume_date: p.expected_resume_date ?? null,
      };
      return accept({ event_type: "suspended", data: { ...data } });
    }
    case "revoke": {
      const allowed: PolicyStatus[] = ["Active", "Suspended"];
      if (!allowed.includes(state.status)) return transitionError(state, "revoke", allowed);
      const p = command.payload;
      const data: PolicyRevokedData = { revoked_by: p.revoked_by, revoked_at: now, reason: p.reason };
      return accept({ event_type: "revoked", data: { ...data } });
    }
    case "archive": {
      const allowed: PolicyStatus[] = ["Suspended", "Revoked"];
      if (!allowed.includes(state.status)) return transitionError(state, "archive", allowed);
      const p = command.payload;
      const data: PolicyArchivedData = { archived_by: p.archived_by, archived_at: now, retention_period_days: p.retention_period_days ?? null };
      return accept({ event_type: "archived", data: { ...data } });
    }
    case "add_rule": {
      if (!EDITABLE_STATUSES.includes(state.status)) return transitionError(state, "add a rule to", EDITABLE_STATUSES);
      if (state.rules.length >= LIMITS.rules) {
        return reject("validation_failed", `policy ${state.aggregate_id} already has ${LIMITS.rules} rules`, [
          { path: "rule", message: `a policy holds at most ${LIMITS.rules} rules` },
        ]);
      }
      const input = command.payload.rule;
      const rule: Rule = { ...input, rule_id: input.rule_id ?? deriveRuleId(state.aggregate_id, state.version + 1, 0) };
      if (state.rules.some((existing) => existing.rule_id === rule.rule_id)) {
        return reject("already_exists", `rule ${rule.rule_id} already exists in policy ${state.aggregate_id}`);
      }
      const data: RuleAddedData = { rule, position: state.rules.length };
      return accept({ event_type: "rule_added", data: { ...data } });
    }
    case "update_rule": {
      if (!EDITABLE_STATUSES.includes(state.status)) return transitionError(state, "update a rule of", EDITABLE_STATUSES);
      const { rule_id, rule: input } = command.payload;
      const previous = state.rules.find((rule) => rule.rule_id === rule_id);
      if (previous === undefined) return reject("not_found", `rule ${rule_id} not found in policy ${state.aggregate_id}`);
      const rule: Rule = { ...input, rule_id };
      if (sameJson(rule, previous)) return accept();
      const data: RuleUpdatedData = { rule_id, rule, previous };
      return accept({ event_type: "rule_updated", data: { ...data } });
    }
    case "remove_rule": {
      if (!EDITABLE_STATUSES.includes(state.status)) return transitionError(state, "remove a rule from", EDITABLE_STATUSES);
      const { rule_id } = command.payload;
      const rule = state.rules.find((existing) => existing.rule_id === rule_id);
      if (rule === undefined) return reject("not_found", `rule ${rule_id} not found in policy ${state.aggregate_id}`);
      const data: RuleRemovedData = { rule_id, rule };
      return accept({ event_type: "rule_removed", data: { ...data } });
    }
    case "reorder_rules": {
      if (!EDITABLE_STATUSES.includes(state.status)) return transitionError(state, "reorder the rules of", EDITABLE_STATUSES);
      const { rule_ids } = command.payload;
      const current = state.rules.map((rule) => rule.rule_id);
      const isPermutation = rule_ids.length === current.length && rule_ids.every((id) => current.includes(id));
      if (!isPermutation) {
        return reject("validation_failed", "rule_ids must list every rule of the policy exactly once", [
          { path: "rule_ids", message: `expected a permutation of [${current.join(", ")}]` },
        ]);
      }
      if (sameJson(rule_ids, current)) return accept();
      const data: RulesReorderedData = { rule_ids, previous_rule_ids: current };
      return accept({ event_type: "rules_reordered", data: { ...data } });
    }
    default: {
      const exhaustive: never = command;
      return reject("internal", `unhandled policy command ${JSON.stringify(exhaustive)}`);
    }
  }
}

/** Key-order-independent JSON form, so an unchanged rule in a different key order is not a change. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, canonical((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}

// ================================================================ Queries

/** Active, and `at` inside [effective_from, effective_until). */
export function policyInForceAt(policy: PolicyState, at: string | number): boolean {
  if (policy.status !== "Active") return false;
  const when = typeof at === "number" ? at : parseDateTime(at);
  if (when === undefined) return false;
  if (policy.effective_from !== null && when < toMillis(policy.effective_from)) return false;
  if (policy.effective_until !== null && when >= toMillis(policy.effective_until)) return false;
  return true;
}
