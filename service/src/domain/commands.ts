// Command payloads: one strict zod schema per command, parsed once at the edge.
// Every id that can become a subject token is a UUID, lower-cased; every string and array is bounded;
// date-times are real RFC 3339 instants; `__proto__`/`constructor`/`prototype` keys are refused anywhere.
import { z } from "zod";
import type { AggregateType, DomainError } from "./types.js";
import { parseDateTime } from "./time.js";
import { ExemptionConditionSchema, RuleIdSchema, RuleInputSchema } from "./rules/schema.js";
import { describeIssues, PLAIN, summarizeIssues, type IssueDetail } from "./validationMessages.js";

export const LIMITS = {
  name: 200,
  text: 4000,
  actor: 200,
  tag: 64,
  tags: 32,
  rules: 100,
  setPolicies: 100,
  conditions: 32,
  correlationId: 128,
  retentionDays: 36_500,
  /** Raw JSON nesting and size, checked before any schema runs. */
  jsonDepth: 64,
  jsonNodes: 50_000,
} as const;

export const POLICY_TYPES = [
  "Regulatory", "Operational", "Security", "Privacy", "Compliance", "Governance",
  "Safety", "Quality", "Environmental", "Financial", "HR", "IT", "Retention",
] as const;
export type PolicyType = (typeof POLICY_TYPES)[number];

/** Ordered from weakest to strongest. */
export const ENFORCEMENT_LEVELS = ["Advisory", "Recommended", "Mandatory", "Critical"] as const;
export type EnforcementLevel = (typeof ENFORCEMENT_LEVELS)[number];

export const SCOPE_LEVELS = ["System", "Organization", "Department", "Project", "Team", "Individual"] as const;
export type ScopeLevel = (typeof SCOPE_LEVELS)[number];

export const EXEMPTION_SCOPE_LEVELS = ["Global", "Organization", "User", "Resource", "Operation"] as const;
export type ExemptionScopeLevel = (typeof EXEMPTION_SCOPE_LEVELS)[number];

export const CONFLICT_RESOLUTIONS = ["MostRestrictive", "LeastRestrictive", "FirstWins", "LastWins", "FailOnConflict"] as const;
export type ConflictResolution = (typeof CONFLICT_RESOLUTIONS)[number];

// ---------------------------------------------------------------- primitives

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// C0 controls and DEL; free text may still carry tab and newlines.
const CONTROL = /[\u0000-\u001f\u007f]/;
const CONTROL_EXCEPT_WHITESPACE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** A UUID (any version), normalised to lower case: safe as a subject token. */
export const UuidSchema = z
  .string()
  .max(36)
  .regex(UUID, "must be a UUID (8-4-4-4-12 hex digits)")
  .transform((s) => s.toLowerCase());

function boundedLine(max: number) {
  return z
    .string()
    .min(1)
    .max(max)
    .refine((s) => s.trim().length > 0, "must not be blank")
    .refine((s) => !CONTROL.test(s), "must not contain control characters");
}

function boundedText(max: number) {
  return z
    .string()
    .min(1)
    .max(max)
    .refine((s) => s.trim().length > 0, "must not be blank")
    .refine((s) => !CONTROL_EXCEPT_WHITESPACE.test(s), "must not contain control characters");
}

export const NameSchema = boundedLine(LIMITS.name);
export const TextSchema = boundedText(LIMITS.text);
export const ActorSchema = boundedLine(LIMITS.actor);

export const DateTimeSchema = z
  .string()
  .max(40)
  .refine((s) => parseDateTime(s) !== undefined, "must be an RFC 3339 date-time with offset, e.g. 2025-11-08T10:00:00Z");

/** "Organization", or one level with an identifier: {"Department": "finance"}. */
export const ScopeSchema = z.union(
  [
  z.enum(SCOPE_LEVELS),
  z
    .partialRecord(z.enum(SCOPE_LEVELS), boundedLine(LIMITS.name))
    .refine((o) => Object.keys(o).length === 1, "a scope object names exactly one level, e.g. {\"Department\": \"finance\"}"),
  ],
  { error: `must be one of ${SCOPE_LEVELS.join(", ")}, or one of them with an identifier, e.g. {"Department": "finance"}` },
);
export type Scope = ScopeLevel | Partial<Record<ScopeLevel, string>>;

/** "Global" (the default), or one level with a value: {"User": "alice"}. */
export const ExemptionScopeSchema = z.union(
  [
  z.enum(EXEMPTION_SCOPE_LEVELS),
  z
    .partialRecord(z.enum(EXEMPTION_SCOPE_LEVELS), boundedLine(LIMITS.name))
    .refine((o) => Object.keys(o).length === 1, "a scope object names exactly one level, e.g. {\"User\": \"alice\"}"),
  ],
  { error: `must be one of ${EXEMPTION_SCOPE_LEVELS.join(", ")}, or one of them with a value, e.g. {"User": "alice"}` },
);
export type ExemptionScope = ExemptionScopeLevel | Partial<Record<ExemptionScopeLevel, string>>;

export const CompositionSchema = z.union(
  [z.enum(["All", "Any", "Majority"]), z.strictObject({ AtLeast: z.number().int().min(1).max(LIMITS.setPolicies) })],
  { error: `must be "All", "Any", "Majority" or {"AtLeast": n} with 1 <= n <= ${LIMITS.setPolicies}` },
);
export type Composition = z.output<typeof CompositionSchema>;

/**
 * Who or what is exempted: an opaque identifier (a UUID, "billing-archive", "user:alice"), stored and compared
 * exactly as given. It never becomes a subject token, so it is not restricted to UUIDs.
 */
export const EntityIdSchema = boundedLine(LIMITS.actor);

const TagSchema = boundedLine(LIMITS.tag);
const TagsSchema = z
  .array(TagSchema)
  .max(LIMITS.tags)
  .refine((tags) => new Set(tags).size === tags.length, "must not repeat");

function uniqueIds<T extends z.ZodType<string>>(item: T, max: number) {
  return z
    .array(item)
    .max(max)
    .refine((ids) => new Set(ids).size === ids.length, "must not repeat");
}

const meta = {
  command_id: UuidSchema.optional(),
  correlation_id: z
    .string()
    .min(1)
    .max(LIMITS.correlationId)
    .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces")
    .optional(),
};

function windowIsOrdered(
  value: { effective_from?: string | null | undefined; effective_until?: string | null | undefined },
  ctx: z.RefinementCtx,
): void {
  const from = value.effective_from == null ? undefined : parseDateTime(value.effective_from);
  const until = value.effective_until == null ? undefined : parseDateTime(value.effective_until);
  if (from !== undefined && until !== undefined && until <= from) {
    ctx.addIssue({ code: "custom", path: ["effective_until"], message: "must be after effective_from" });
  }
}

// ---------------------------------------------------------------- command schemas

const PolicyRulesSchema = z
  .array(RuleInputSchema)
  .max(LIMITS.rules)
  .superRefine((rules, ctx) => {
    const seen = new Set<string>();
    rules.forEach((rule, index) => {
      if (rule.rule_id === undefined) return;
      if (seen.has(rule.rule_id)) ctx.addIssue({ code: "custom", path: [index, "rule_id"], message: "must not repeat (another rule has this rule_id)" });
      seen.add(rule.rule_id);
    });
  });

const CreateSchema = z
  .strictObject({
    policy_id: UuidSchema.optional(),
    name: NameSchema,
    description: TextSchema,
    policy_type: z.enum(POLICY_TYPES),
    enforcement: z.enum(ENFORCEMENT_LEVELS),
    scope: ScopeSchema,
    rules: PolicyRulesSchema.optional(),
    effective_from: DateTimeSchema.optional(),
    effective_until: DateTimeSchema.optional(),
    tags: TagsSchema.optional(),
    owner: ActorSchema.optional(),
    ...meta,
  })
  .superRefine(windowIsOrdered);

/** The policy fields `update` may change (rules have their own commands; status has the lifecycle commands). */
export const UPDATABLE_FIELDS = [
  "name", "description", "policy_type", "enforcement", "scope", "effective_from", "effective_until", "tags", "owner",
] as const;
export type UpdatableField = (typeof UPDATABLE_FIELDS)[number];

const UpdateSchema = z
  .strictObject({
    policy_id: UuidSchema,
    updated_by: ActorSchema,
    name: NameSchema.optional(),
    description: TextSchema.optional(),
    policy_type: z.enum(POLICY_TYPES).optional(),
    enforcement: z.enum(ENFORCEMENT_LEVELS).optional(),
    scope: ScopeSchema.optional(),
    // null clears the bound.
    effective_from: DateTimeSchema.nullable().optional(),
    effective_until: DateTimeSchema.nullable().optional(),
    tags: TagsSchema.optional(),
    owner: ActorSchema.nullable().optional(),
    ...meta,
  })
  .superRefine((value, ctx) => {
    if (!UPDATABLE_FIELDS.some((field) => value[field] !== undefined)) {
      ctx.addIssue({ code: "custom", path: [], message: `needs at least one of: ${UPDATABLE_FIELDS.join(", ")}` });
    }
    windowIsOrdered(value, ctx);
  });

const ApproveSchema = z.strictObject({
  policy_id: UuidSchema,
  approved_by: ActorSchema,
  approval_date: DateTimeSchema.optional(),
  notes: TextSchema.optional(),
  ...meta,
});

const ActivateSchema = z
  .strictObject({
    policy_id: UuidSchema,
    activated_by: ActorSchema,
    effective_from: DateTimeSchema.optional(),
    effective_until: DateTimeSchema.optional(),
    ...meta,
  })
  .superRefine(windowIsOrdered);

const SuspendSchema = z.strictObject({
  policy_id: UuidSchema,
  suspended_by: ActorSchema,
  reason: TextSchema,
  expected_resume_date: DateTimeSchema.optional(),
  ...meta,
});

const RevokeSchema = z.strictObject({ policy_id: UuidSchema, revoked_by: ActorSchema, reason: TextSchema, ...meta });

const ArchiveSchema = z.strictObject({
  policy_id: UuidSchema,
  archived_by: ActorSchema,
  retention_period_days: z.number().int().min(1).max(LIMITS.retentionDays).optional(),
  ...meta,
});

const AddRuleSchema = z.strictObject({ policy_id: UuidSchema, rule: RuleInputSchema, ...meta });

/** Replaces the whole rule; `rule.rule_id`, when given, must equal `rule_id` (renaming a rule is remove + add). */
const UpdateRuleSchema = z
  .strictObject({ policy_id: UuidSchema, rule_id: RuleIdSchema, rule: RuleInputSchema, ...meta })
  .superRefine((value, ctx) => {
    if (value.rule.rule_id !== undefined && value.rule.rule_id !== value.rule_id) {
      ctx.addIssue({ code: "custom", path: ["rule", "rule_id"], message: "must equal rule_id" });
    }
  });

const RemoveRuleSchema = z.strictObject({ policy_id: UuidSchema, rule_id: RuleIdSchema, ...meta });

const ReorderRulesSchema = z.strictObject({
  policy_id: UuidSchema,
  rule_ids: uniqueIds(RuleIdSchema, LIMITS.rules).min(1),
  ...meta,
});

const CreateSetSchema = z
  .strictObject({
    policy_set_id: UuidSchema.optional(),
    name: NameSchema,
    description: TextSchema,
    policies: uniqueIds(UuidSchema, LIMITS.setPolicies),
    composition: CompositionSchema,
    conflict_resolution: z.enum(CONFLICT_RESOLUTIONS),
    ...meta,
  })
  .superRefine((value, ctx) => {
    if (typeof value.composition === "object" && value.composition.AtLeast > value.policies.length) {
      ctx.addIssue({
        code: "custom",
        path: ["composition", "AtLeast"],
        message: `must be at most the number of policies (AtLeast ${value.composition.AtLeast}, the set has ${value.policies.length})`,
      });
    }
  });

const AddToSetSchema = z.strictObject({ policy_set_id: UuidSchema, policy_id: UuidSchema, ...meta });
const RemoveFromSetSchema = z.strictObject({ policy_set_id: UuidSchema, policy_id: UuidSchema, ...meta });

const GrantExemptionSchema = z
  .strictObject({
    exemption_id: UuidSchema.optional(),
    policy_id: UuidSchema,
    entity_id: EntityIdSchema,
    reason: TextSchema,
    granted_by: ActorSchema,
    expires_at: DateTimeSchema,
    justification: TextSchema.optional(),
    risk_acceptance: TextSchema.optional(),
    valid_from: DateTimeSchema.optional(),
    scope: ExemptionScopeSchema.optional(),
    conditions: z.array(ExemptionConditionSchema).max(LIMITS.conditions).optional(),
    ...meta,
  })
  .superRefine((value, ctx) => {
    if (value.valid_from === undefined) return;
    const from = parseDateTime(value.valid_from);
    const until = parseDateTime(value.expires_at);
    if (from !== undefined && until !== undefined && until <= from) {
      ctx.addIssue({ code: "custom", path: ["expires_at"], message: "must be after valid_from" });
    }
  });

const RevokeExemptionSchema = z.strictObject({
  exemption_id: UuidSchema,
  revoked_by: ActorSchema,
  reason: TextSchema,
  ...meta,
});

const ExpireExemptionSchema = z.strictObject({ exemption_id: UuidSchema, ...meta });

export const COMMAND_SCHEMAS = {
  create: CreateSchema,
  update: UpdateSchema,
  approve: ApproveSchema,
  activate: ActivateSchema,
  suspend: SuspendSchema,
  revoke: RevokeSchema,
  archive: ArchiveSchema,
  add_rule: AddRuleSchema,
  update_rule: UpdateRuleSchema,
  remove_rule: RemoveRuleSchema,
  reorder_rules: ReorderRulesSchema,
  create_set: CreateSetSchema,
  add_to_set: AddToSetSchema,
  remove_from_set: RemoveFromSetSchema,
  grant_exemption: GrantExemptionSchema,
  revoke_exemption: RevokeExemptionSchema,
  expire_exemption: ExpireExemptionSchema,
} as const;

export type CommandName = keyof typeof COMMAND_SCHEMAS;
export const COMMAND_NAMES = Object.keys(COMMAND_SCHEMAS) as CommandName[];

/** Every command served on `policy.commands.<name>`; expire_exemption is internal (the expiry sweeper's). */
export const PUBLIC_COMMANDS: readonly CommandName[] = COMMAND_NAMES.filter((name) => name !== "expire_exemption");

export interface CommandRoute {
  aggregateType: AggregateType;
  idField: "policy_id" | "policy_set_id" | "exemption_id";
  /** The command starts a new aggregate; its id is optional in the payload (the app injects a UUIDv7). */
  creates: boolean;
}

const policyCommand: CommandRoute = { aggregateType: "Policy", idField: "policy_id", creates: false };
const setCommand: CommandRoute = { aggregateType: "PolicySet", idField: "policy_set_id", creates: false };
const exemptionCommand: CommandRoute = { aggregateType: "PolicyExemption", idField: "exemption_id", creates: false };

export const COMMAND_ROUTES: Record<CommandName, CommandRoute> = {
  create: { ...policyCommand, creates: true },
  update: policyCommand,
  approve: policyCommand,
  activate: policyCommand,
  suspend: policyCommand,
  revoke: policyCommand,
  archive: policyCommand,
  add_rule: policyCommand,
  update_rule: policyCommand,
  remove_rule: policyCommand,
  reorder_rules: policyCommand,
  create_set: { ...setCommand, creates: true },
  add_to_set: setCommand,
  remove_from_set: setCommand,
  grant_exemption: { ...exemptionCommand, creates: true },
  revoke_exemption: exemptionCommand,
  expire_exemption: exemptionCommand,
};

// ---------------------------------------------------------------- parsed commands

type Meta = "command_id" | "correlation_id";
type Parsed<K extends CommandName> = z.output<(typeof COMMAND_SCHEMAS)[K]>;
/** The parsed payload without the meta fields, with the aggregate id always present. */
type Payload<K extends CommandName, Id extends string> = Omit<Parsed<K>, Meta | Id> & { [F in Id]: string };

export interface CommandPayloads {
  create: Payload<"create", "policy_id">;
  update: Payload<"update", "policy_id">;
  approve: Payload<"approve", "policy_id">;
  activate: Payload<"activate", "policy_id">;
  suspend: Payload<"suspend", "policy_id">;
  revoke: Payload<"revoke", "policy_id">;
  archive: Payload<"archive", "policy_id">;
  add_rule: Payload<"add_rule", "policy_id">;
  update_rule: Payload<"update_rule", "policy_id">;
  remove_rule: Payload<"remove_rule", "policy_id">;
  reorder_rules: Payload<"reorder_rules", "policy_id">;
  create_set: Payload<"create_set", "policy_set_id">;
  add_to_set: Payload<"add_to_set", "policy_set_id">;
  remove_from_set: Payload<"remove_from_set", "policy_set_id">;
  grant_exemption: Payload<"grant_exemption", "exemption_id">;
  revoke_exemption: Payload<"revoke_exemption", "exemption_id">;
  expire_exemption: Payload<"expire_exemption", "exemption_id">;
}

/** A validated command: `name` discriminates, `payload` is the parsed JSON without command_id/correlation_id. */
export type Command = { [K in CommandName]: { name: K; payload: CommandPayloads[K] } }[CommandName];
export type CommandOf<K extends CommandName> = Extract<Command, { name: K }>;

export interface CommandMeta {
  command_id: string | null;
  correlation_id: string | null;
}

export type ParseResult = { ok: true; command: Command; meta: CommandMeta } | { ok: false; error: DomainError };

export type { IssueDetail } from "../domain/validationMessages.js";

const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);

/** Walks raw JSON once: refuses prototype-polluting keys, absurd nesting and absurd size before zod sees it. */
function hostileShape(value: unknown): IssueDetail | undefined {
  let nodes = 0;
  const walk = (v: unknown, path: (string | number)[]): IssueDetail | undefined => {
    if (++nodes > LIMITS.jsonNodes) return { path: "", message: `payload has more than ${LIMITS.jsonNodes} JSON values` };
    if (path.length > LIMITS.jsonDepth) return { path: path.join("."), message: `payload nests deeper than ${LIMITS.jsonDepth}` };
    if (v === null || typeof v !== "object") return undefined;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const found = walk(v[i], [...path, i]);
        if (found) return found;
      }
      return undefined;
    }
    for (const key of Object.keys(v)) {
      if (FORBIDDEN_KEYS.has(key)) return { path: [...path, key].join("."), message: `key "${key}" is not allowed` };
      const found = walk((v as Record<string, unknown>)[key], [...path, key]);
      if (found) return found;
    }
    return undefined;
  };
  return walk(value, []);
}

/** Each issue in plain words, naming its field (src/domain/validationMessages.ts). */
export const issueDetails = describeIssues;

function validationFailed(message: string, details: IssueDetail[]): { ok: false; error: DomainError } {
  return { ok: false, error: { code: "validation_failed", message, details } };
}

/**
 * Validates a raw JSON value for `name`. For commands that create an aggregate, the app injects the
 * generated id before calling this; a payload that still lacks it is refused.
 */
export function parseCommand(name: CommandName, payload: unknown): ParseResult {
  const schema = Object.hasOwn(COMMAND_SCHEMAS, name) ? COMMAND_SCHEMAS[name] : undefined;
  if (schema === undefined) {
    return validationFailed(`unknown command ${JSON.stringify(name)}`, [{ path: "", message: `unknown command; the commands are: ${COMMAND_NAMES.join(", ")}` }]);
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    return validationFailed(`${name}: payload must be a JSON object`, [{ path: "", message: "payload must be a JSON object" }]);
  }
  const hostile = hostileShape(payload);
  if (hostile !== undefined) return validationFailed(`${name}: ${hostile.message}`, [hostile]);
  const result = schema.safeParse(payload, PLAIN);
  if (!result.success) {
    const details = issueDetails(result.error);
    return validationFailed(`${name}: ${summarizeIssues(details)}`, details);
  }
  const { command_id, correlation_id, ...fields } = result.data as Record<string, unknown> & {
    command_id?: string;
    correlation_id?: string;
  };
  const idField = COMMAND_ROUTES[name].idField;
  if (typeof fields[idField] !== "string") {
    return validationFailed(`${name}: ${idField} is required`, [{ path: idField, message: `${idField} is required` }]);
  }
  return {
    ok: true,
    command: { name, payload: fields } as Command,
    meta: { command_id: command_id ?? null, correlation_id: correlation_id ?? null },
  };
}

/** The id of the aggregate a command addresses. */
export function aggregateIdOf(command: Command): string {
  return (command.payload as unknown as Record<string, string>)[COMMAND_ROUTES[command.name].idField] as string;
}
