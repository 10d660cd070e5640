// Example payloads, exported as data: docs/protocol.md is generated from them, and tests send them to a
// real service. VALID_EXAMPLES is one story, run in order against an empty stream; every public command
// appears at least once and the seed's payloads appear verbatim (the domain reference's grant, whose expires_at
// has passed, among the refused ones). INVALID_EXAMPLES run after it. Every date stays valid: future
// instants are in 2099.
import type { ErrorCode } from "../domain/types.js";
import type { CommandName } from "../domain/commands.js";
import { deriveRuleId } from "../domain/ruleIds.js";

export interface ValidExample {
  command: CommandName;
  title: string;
  payload: Record<string, unknown>;
  /** Copied byte for byte from the deployment guide / domain reference. */
  seed?: true;
  /** The event type the command stores. */
  event: string;
}

export interface InvalidExample {
  command: CommandName;
  title: string;
  expect: ErrorCode;
  /** The reply's `error.message`, exactly (documented, and checked against the domain and a real service). */
  message?: string;
  /** Copied byte for byte from the deployment guide / domain reference. */
  seed?: true;
  /** Sent as JSON.stringify(payload) unless `raw` is given. */
  payload?: Record<string, unknown>;
  /** Exact request body, for what a JS object cannot express (broken JSON, `__proto__` keys). */
  raw?: string;
}

/** The ids the story uses. */
export const EXAMPLE_IDS = {
  policy: "550e8400-e29b-41d4-a716-446655440000",
  secondPolicy: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f1a",
  policySet: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f2b",
  exemption: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
  scopedExemption: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f3c",
  entity: "6fa459ea-ee8a-3ca4-894e-db77e160355e",
  neverCreated: "00000000-0000-4000-8000-000000000000",
} as const;

const P = EXAMPLE_IDS.policy;
const Q = EXAMPLE_IDS.secondPolicy;

/** The deployment guide's create command (its `nats req policy.commands.create` payload). */
const SEED_CREATE = {
  policy_id: "550e8400-e29b-41d4-a716-446655440000",
  name: "Data Retention Policy",
  description: "All customer data must be retained for 7 years",
  policy_type: "Retention",
  enforcement: "Mandatory",
  scope: "Organization",
};

/**
 * The domain reference's grant_exemption payload. Its expires_at (2026-02-08) has passed, so the service refuses
 * it (an exemption that would never apply); the story grants the same exemption with a later expires_at.
 */
const SEED_GRANT = {
  exemption_id: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
  policy_id: "550e8400-e29b-41d4-a716-446655440000",
  entity_id: "6fa459ea-ee8a-3ca4-894e-db77e160355e",
  reason: "Legacy system migration",
  granted_by: "data-officer",
  expires_at: "2026-02-08T10:00:00Z",
};

const retentionRule = {
  rule_id: "retention-period",
  name: "Retention period is at least 7 years",
  description: "Customer records are kept for 2555 days or more",
  severity: "High",
  expression: { op: "greater_than_or_equal", field: "record.retention_days", value: 2555 },
  error_message: "Retention period is shorter than 7 years",
  remediation_hint: "Set retention_days to 2555 or more",
};
const { rule_id: _retentionRuleId, ...retentionRuleBody } = retentionRule;

/** The id the domain derives for the story's second add_rule: the 5th event of policy P, first rule of the command. */
export const DERIVED_RULE_ID = deriveRuleId(P, 5, 0);

export const VALID_EXAMPLES: readonly ValidExample[] = [
  {
    command: "create",
    title: "Create a policy (the deployment guide's test command)",
    seed: true,
    event: "created",
    payload: SEED_CREATE,
  },
  {
    command: "create",
    title: "Create a policy with every optional field: rules, a scope with an identifier, an effective window, tags, owner",
    event: "created",
    payload: {
      policy_id: Q,
      name: "Finance Access Control",
      description: "Only finance staff may read ledger exports",
      policy_type: "Security",
      enforcement: "Critical",
      scope: { Department: "finance" },
      rules: [
        {
          name: "Requester is in finance",
          severity: "Critical",
          expression: {
            op: "and",
            args: [
              { op: "equal", field: "user.department", value: "finance" },
              { op: "exists", field: "user.employee_id" },
            ],
          },
        },
      ],
      effective_from: "2025-01-01T00:00:00Z",
      effective_until: "2099-01-01T00:00:00Z",
      tags: ["sox", "ledger"],
      owner: "finance-security",
      command_id: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f4d",
      correlation_id: "onboarding-2025-11",
    },
  },
  {
    command: "approve",
    title: "Approve a draft (the domain reference's example)",
    seed: true,
    event: "approved",
    payload: { policy_id: "550e8400-e29b-41d4-a716-446655440000", approved_by: "compliance-officer", approval_date: "2025-11-08T10:00:00Z" },
  },
  { command: "activate", title: "Activate an approved policy", event: "activated", payload: { policy_id: P, activated_by: "compliance-officer" } },
  { command: "add_rule", title: "Add a rule with a caller-chosen id", event: "rule_added", payload: { policy_id: P, rule: retentionRule } },
  {
    command: "add_rule",
    title: "Add a rule without an id (the domain derives a stable UUID)",
    event: "rule_added",
    payload: {
      policy_id: P,
      rule: {
        name: "Legal hold is respected",
        severity: "Critical",
        expression: { op: "not", arg: { op: "equal", field: "record.legal_hold", value: true } },
        on_missing: "pass",
      },
    },
  },
  {
    command: "update_rule",
    title: "Replace a rule (the whole rule is sent; its id stays)",
    event: "rule_updated",
    payload: { policy_id: P, rule_id: "retention-period", rule: { ...retentionRuleBody, severity: "Critical" } },
  },
  {
    command: "add_rule",
    title: "Add a third rule",
    event: "rule_added",
    payload: {
      policy_id: P,
      rule: {
        rule_id: "region-allowed",
        name: "Data stays in approved regions",
        severity: "Medium",
        expression: { op: "in", field: "record.region", values: ["eu-west-1", "eu-central-1"] },
      },
    },
  },
  {
    command: "reorder_rules",
    title: "Reorder rules: rule_ids must list every rule exactly once",
    event: "rules_reordered",
    payload: { policy_id: P, rule_ids: ["region-allowed", "retention-period", DERIVED_RULE_ID] },
  },
  { command: "remove_rule", title: "Remove a rule", event: "rule_removed", payload: { policy_id: P, rule_id: "region-allowed" } },
  {
    command: "update",
    title: "Change fields (at least one); the event lists each change with old and new value",
    event: "updated",
    payload: { policy_id: P, updated_by: "compliance-officer", description: "Customer data is retained for 7 years, then deleted", tags: ["gdpr"] },
  },
  {
    command: "create_set",
    title: "Create a policy set (every listed policy must exist)",
    event: "set_created",
    payload: {
      policy_set_id: EXAMPLE_IDS.policySet,
      name: "Customer Data Baseline",
      description: "Policies every customer-data system must satisfy",
      policies: [P, Q],
      composition: { AtLeast: 1 },
      conflict_resolution: "MostRestrictive",
    },
  },
  { command: "remove_from_set", title: "Remove a policy from a set", event: "removed_from_set", payload: { policy_set_id: EXAMPLE_IDS.policySet, policy_id: Q } },
  { command: "add_to_set", title: "Add a policy to a set (appended at the end)", event: "added_to_set", payload: { policy_set_id: EXAMPLE_IDS.policySet, policy_id: Q } },
  {
    command: "grant_exemption",
    title: "Grant an exemption on an Active policy (the domain reference's example, with an expires_at still ahead)",
    event: "exemption_granted",
    payload: { ...SEED_GRANT, expires_at: "2099-02-08T10:00:00Z" },
  },
  {
    command: "grant_exemption",
    title: "Grant a scoped, conditional exemption with every optional field",
    event: "exemption_granted",
    payload: {
      exemption_id: EXAMPLE_IDS.scopedExemption,
      policy_id: P,
      entity_id: "billing-archive",
      reason: "Archive is being migrated to cold storage",
      justification: "Migration finishes before the next audit",
      risk_acceptance: "CISO accepted the residual risk on 2025-11-01",
      granted_by: "data-officer",
      valid_from: "2025-11-01T00:00:00Z",
      expires_at: "2099-12-31T23:59:59Z",
      scope: { Resource: "billing-archive" },
      conditions: [
        { field: "record.region", operator: "in", value: ["eu-west-1"] },
        { field: "record.migrating", operator: "equal", value: true },
      ],
    },
  },
  {
    command: "revoke_exemption",
    title: "Revoke an exemption",
    event: "exemption_revoked",
    payload: { exemption_id: EXAMPLE_IDS.scopedExemption, revoked_by: "data-officer", reason: "Migration finished early" },
  },
  {
    command: "suspend",
    title: "Suspend an active policy",
    event: "suspended",
    payload: { policy_id: P, suspended_by: "compliance-officer", reason: "Under legal review", expected_resume_date: "2099-01-01T00:00:00Z" },
  },
  { command: "activate", title: "Resume a suspended policy (activate)", event: "activated", payload: { policy_id: P, activated_by: "compliance-officer" } },
  { command: "revoke", title: "Revoke a policy", event: "revoked", payload: { policy_id: P, revoked_by: "compliance-officer", reason: "Superseded by the 2026 retention policy" } },
  { command: "archive", title: "Archive a revoked policy", event: "archived", payload: { policy_id: P, archived_by: "records-manager", retention_period_days: 2555 } },
];

export const INVALID_EXAMPLES: readonly InvalidExample[] = [
  { command: "create", title: "Body is not JSON", expect: "invalid_json", message: "payload is not valid UTF-8 JSON", raw: '{"name": "Data Retention Policy",' },
  { command: "create", title: "Body is JSON but not an object", expect: "validation_failed", message: "create: payload must be a JSON object", raw: '["not", "an", "object"]' },
  {
    command: "create",
    title: "Missing required fields",
    expect: "validation_failed",
    message: "create: description is required (and 3 more)",
    payload: { name: "Incomplete" },
  },
  {
    command: "create",
    title: "Unknown field",
    expect: "validation_failed",
    message: "create: payload has an unknown field priority; the fields are: policy_id, name, description, policy_type, enforcement, scope, rules, effective_from, effective_until, tags, owner, command_id, correlation_id",
    payload: { name: "X", description: "Y", policy_type: "Security", enforcement: "Advisory", scope: "Team", priority: 1 },
  },
  {
    command: "create",
    title: "Unknown enum value",
    expect: "validation_failed",
    message: "create: policy_type must be one of Regulatory, Operational, Security, Privacy, Compliance, Governance, Safety, Quality, Environmental, Financial, HR, IT, Retention",
    payload: { name: "X", description: "Y", policy_type: "Astrology", enforcement: "Advisory", scope: "Team" },
  },
  {
    command: "approve",
    title: "Id that is not a UUID (subject wildcards must never reach a subject)",
    expect: "validation_failed",
    message: "approve: policy_id must be a UUID (8-4-4-4-12 hex digits)",
    payload: { policy_id: "550e8400.*.>", approved_by: "compliance-officer" },
  },
  {
    command: "create",
    title: "Oversized name (more than 200 characters)",
    expect: "validation_failed",
    message: "create: name must be at most 200 characters",
    payload: { name: "x".repeat(201), description: "Y", policy_type: "Security", enforcement: "Advisory", scope: "Team" },
  },
  {
    command: "create",
    title: "Prototype-polluting key",
    expect: "validation_failed",
    message: 'create: key "__proto__" is not allowed',
    raw: '{"__proto__":{"admin":true},"name":"X","description":"Y","policy_type":"Security","enforcement":"Advisory","scope":"Team"}',
  },
  {
    command: "approve",
    title: "Invalid date (February 30th)",
    expect: "validation_failed",
    message: "approve: approval_date must be an RFC 3339 date-time with offset, e.g. 2025-11-08T10:00:00Z",
    payload: { policy_id: EXAMPLE_IDS.secondPolicy, approved_by: "compliance-officer", approval_date: "2025-02-30T10:00:00Z" },
  },
  {
    command: "activate",
    title: "effective_until before effective_from",
    expect: "validation_failed",
    message: "activate: effective_until must be after effective_from",
    payload: {
      policy_id: EXAMPLE_IDS.secondPolicy,
      activated_by: "compliance-officer",
      effective_from: "2026-01-01T00:00:00Z",
      effective_until: "2025-01-01T00:00:00Z",
    },
  },
  {
    command: "update",
    title: "Update without any field to change",
    expect: "validation_failed",
    message: "update: payload needs at least one of: name, description, policy_type, enforcement, scope, effective_from, effective_until, tags, owner",
    payload: { policy_id: EXAMPLE_IDS.secondPolicy, updated_by: "compliance-officer" },
  },
  {
    command: "approve",
    title: "Policy that does not exist",
    expect: "not_found",
    payload: { policy_id: EXAMPLE_IDS.neverCreated, approved_by: "compliance-officer" },
  },
  {
    command: "create",
    title: "Create with an id that already exists",
    expect: "already_exists",
    payload: SEED_CREATE,
  },
  {
    command: "approve",
    title: "Approve an archived policy",
    expect: "invalid_transition",
    payload: { policy_id: EXAMPLE_IDS.policy, approved_by: "compliance-officer" },
  },
  {
    command: "grant_exemption",
    title: "Exemption on a policy that is not Active (still Draft)",
    expect: "invalid_transition",
    payload: {
      policy_id: EXAMPLE_IDS.secondPolicy,
      entity_id: "ledger-export",
      reason: "Quarter close",
      granted_by: "data-officer",
      expires_at: "2099-01-01T00:00:00Z",
    },
  },
  {
    command: "grant_exemption",
    title: "The domain reference's grant, whose expires_at has passed: an exemption that would never apply is refused",
    seed: true,
    expect: "validation_failed",
    message: "grant_exemption: expires_at must be in the future (2026-02-08T10:00:00Z has passed): an exemption that has already expired would never apply",
    payload: SEED_GRANT,
  },
  {
    command: "grant_exemption",
    title: "Exemption whose expires_at is not after its valid_from",
    expect: "validation_failed",
    message: "grant_exemption: expires_at must be after valid_from",
    payload: {
      policy_id: P,
      entity_id: "ledger-export",
      reason: "Quarter close",
      granted_by: "data-officer",
      valid_from: "2099-03-01T00:00:00Z",
      expires_at: "2099-01-01T00:00:00Z",
    },
  },
  {
    command: "revoke_exemption",
    title: "Revoke an exemption twice",
    expect: "invalid_transition",
    payload: { exemption_id: EXAMPLE_IDS.scopedExemption, revoked_by: "data-officer", reason: "again" },
  },
];

/** The exact bytes an example sends. */
export function exampleBody(example: ValidExample | InvalidExample): string {
  if ("raw" in example && example.raw !== undefined) return example.raw;
  return JSON.stringify(example.payload);
}
