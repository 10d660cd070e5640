// Rule and expression JSON, validated once at the edge (create / add_rule / update_rule,
// exemption conditions). Everything downstream (compile, evaluate) trusts these shapes.
import { z } from "zod";
import { RE2JS } from "re2js";
import { parseDateTime } from "../time.js";

export const LIMITS = {
  /** Nesting of and/or/not; a leaf at the top level has depth 1. */
  expressionDepth: 16,
  /** Expression nodes (operators) in one rule. */
  expressionNodes: 256,
  /** Any JSON node inside one expression, values included: bounds the work of parsing and comparing. */
  jsonNodes: 4096,
  /** Raw JSON nesting, checked before the recursive schema runs so hostile input cannot exhaust the stack. */
  jsonDepth: 48,
  inValues: 1024,
  stringValue: 4096,
  pattern: 512,
  fieldPath: 256,
  fieldSegments: 16,
  andOrArgs: 64,
  /** `matches` looks at most at this many UTF-16 code units of the input (64 KiB). */
  matchInput: 65_536,
} as const;

export const SEVERITIES = ["Info", "Low", "Medium", "High", "Critical"] as const;
export type Severity = (typeof SEVERITIES)[number];
export const ON_MISSING = ["violation", "pass", "error"] as const;
export type OnMissing = (typeof ON_MISSING)[number];

const FORBIDDEN_SEGMENTS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);
const SEGMENT = /^[A-Za-z0-9_-]{1,64}$/;

/** Dotted path into the context: `user.age`, `resource.tags.0`. */
export const FieldPathSchema = z
  .string()
  .min(1)
  .max(LIMITS.fieldPath)
  .superRefine((path, ctx) => {
    const segments = path.split(".");
    if (segments.length > LIMITS.fieldSegments) {
      ctx.addIssue({ code: "custom", message: `field path has more than ${LIMITS.fieldSegments} segments` });
      return;
    }
    for (const segment of segments) {
      if (!SEGMENT.test(segment)) {
        ctx.addIssue({ code: "custom", message: `field path segment ${JSON.stringify(segment)} must match [A-Za-z0-9_-]{1,64}` });
        return;
      }
      if (FORBIDDEN_SEGMENTS.has(segment)) {
        ctx.addIssue({ code: "custom", message: `field path segment "${segment}" is not allowed` });
        return;
      }
    }
  });

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function digitsAt(s: string, start: number, count: number): number {
  let value = 0;
  for (let i = start; i < start + count; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value;
}

/**
 * Epoch milliseconds of an RFC 3339 date-time string, or undefined. The common UTC shape
 * `YYYY-MM-DDTHH:MM:SS[.f{1,3}]Z` (years 100-9999) is read without a regex or Date.parse, since rules
 * compare context date-times on every evaluation; everything else goes to the domain's `parseDateTime`,
 * which stays the one definition (a unit test checks the two agree).
 */
export function parseRfc3339(value: string): number | undefined {
  const n = value.length;
  if (n < 20 || n > 24 || value.charCodeAt(n - 1) !== 90 /* Z */) return parseDateTime(value);
  if (value.charCodeAt(4) !== 45 || value.charCodeAt(7) !== 45 || value.charCodeAt(10) !== 84 /* T */
    || value.charCodeAt(13) !== 58 || value.charCodeAt(16) !== 58) return parseDateTime(value);
  const year = digitsAt(value, 0, 4);
  const month = digitsAt(value, 5, 2);
  const day = digitsAt(value, 8, 2);
  const hour = digitsAt(value, 11, 2);
  const minute = digitsAt(value, 14, 2);
  const second = digitsAt(value, 17, 2);
  let millis = 0;
  if (n > 20) {
    if (n === 21 || value.charCodeAt(19) !== 46 /* . */) return parseDateTime(value);
    const fraction = digitsAt(value, 20, n - 21);
    if (fraction < 0) return parseDateTime(value);
    millis = n === 22 ? fraction * 100 : n === 23 ? fraction * 10 : fraction;
  } else if (n !== 20) return parseDateTime(value);
  if (year < 100 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59) {
    return parseDateTime(value);
  }
  const leap = month === 2 && ((year % 4 === 0 && year % 100 !== 0) || year % 400 === 0);
  if (day > (DAYS_IN_MONTH[month - 1] as number) + (leap ? 1 : 0)) return undefined;
  return Date.UTC(year, month - 1, day, hour, minute, second, millis);
}

const JsonScalarSchema = z.union([z.null(), z.boolean(), z.number().finite(), z.string().max(LIMITS.stringValue)]);
type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
const JsonValueSchema: z.ZodType<JsonValue> = z.lazy(() =>
  z.union([
    JsonScalarSchema,
    z.array(JsonValueSchema),
    // Prototype keys inside values are refused by the raw pre-walk in ExpressionSchema.
    z.record(z.string().max(256), JsonValueSchema),
  ]),
);

const OrderedValueSchema = z.union([
  z.number().finite(),
  z.string().refine((s) => parseRfc3339(s) !== undefined, { message: "ordering compares numbers or RFC 3339 date-times" }),
]);

const PatternSchema = z
  .string()
  .max(LIMITS.pattern)
  .superRefine((pattern, ctx) => {
    try {
      RE2JS.compile(pattern);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: `invalid regular expression: ${(error as Error).message}` });
    }
  });

export type ComparisonOp = "equal" | "not_equal";
export type OrderingOp = "greater_than" | "greater_than_or_equal" | "less_than" | "less_than_or_equal";
export type StringOp = "starts_with" | "ends_with";

export type Expression =
  | { op: ComparisonOp; field: string; value: JsonValue }
  | { op: OrderingOp; field: string; value: number | string }
  | { op: "in" | "not_in"; field: string; values: JsonValue[] }
  | { op: "matches"; field: string; pattern: string }
  | { op: StringOp; field: string; value: string }
  | { op: "contains"; field: string; value: JsonValue }
  | { op: "exists" | "not_exists"; field: string }
  | { op: "and" | "or"; args: Expression[] }
  | { op: "not"; arg: Expression };
export type { JsonValue };

const ExpressionNodeSchema: z.ZodType<Expression> = z.lazy(() =>
  z.discriminatedUnion("op", [
    z.strictObject({ op: z.enum(["equal", "not_equal"]), field: FieldPathSchema, value: JsonValueSchema }),
    z.strictObject({
      op: z.enum(["greater_than", "greater_than_or_equal", "less_than", "less_than_or_equal"]),
      field: FieldPathSchema,
      value: OrderedValueSchema,
    }),
    z.strictObject({ op: z.enum(["in", "not_in"]), field: FieldPathSchema, values: z.array(JsonValueSchema).max(LIMITS.inValues) }),
    z.strictObject({ op: z.literal("matches"), field: FieldPathSchema, pattern: PatternSchema }),
    z.strictObject({ op: z.enum(["starts_with", "ends_with"]), field: FieldPathSchema, value: z.string().max(LIMITS.stringValue) }),
    z.strictObject({ op: z.literal("contains"), field: FieldPathSchema, value: JsonValueSchema }),
    z.strictObject({ op: z.enum(["exists", "not_exists"]), field: FieldPathSchema }),
    z.strictObject({ op: z.enum(["and", "or"]), args: z.array(ExpressionNodeSchema).min(1).max(LIMITS.andOrArgs) }),
    z.strictObject({ op: z.literal("not"), arg: ExpressionNodeSchema }),
  ]),
);

/**
 * Bounded walk of raw JSON before any schema runs: why it is refused (deeper than `maxDepth`, more than
 * `maxNodes` nodes, or a key that could reach a prototype: zod would silently drop `__proto__`), or undefined.
 */
function rawJsonProblem(value: unknown, maxDepth: number, maxNodes: number): string | undefined {
  let nodes = 0;
  const walk = (v: unknown, depth: number): string | undefined => {
    if (++nodes > maxNodes || depth > maxDepth) {
      return `expression is too large (at most ${maxNodes} JSON nodes nested ${maxDepth} deep)`;
    }
    if (v === null || typeof v !== "object") return undefined;
    if (Array.isArray(v)) {
      for (const child of v) {
        const problem = walk(child, depth + 1);
        if (problem !== undefined) return problem;
      }
      return undefined;
    }
    for (const key of Object.keys(v)) {
      if (FORBIDDEN_SEGMENTS.has(key)) return `key "${key}" is not allowed`;
      const problem = walk((v as Record<string, unknown>)[key], depth + 1);
      if (problem !== undefined) return problem;
    }
    return undefined;
  };
  return walk(value, 1);
}

function expressionShape(expression: Expression): { depth: number; nodes: number } {
  switch (expression.op) {
    case "and":
    case "or": {
      let depth = 0;
      let nodes = 1;
      for (const arg of expression.args) {
        const shape = expressionShape(arg);
        depth = Math.max(depth, shape.depth);
        nodes += shape.nodes;
      }
      return { depth: depth + 1, nodes };
    }
    case "not": {
      const shape = expressionShape(expression.arg);
      return { depth: shape.depth + 1, nodes: shape.nodes + 1 };
    }
    default:
      return { depth: 1, nodes: 1 };
  }
}

export const ExpressionSchema: z.ZodType<Expression> = z
  .unknown()
  .superRefine((raw, ctx) => {
    const problem = rawJsonProblem(raw, LIMITS.jsonDepth, LIMITS.jsonNodes);
    if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem });
  })
  .pipe(ExpressionNodeSchema)
  .superRefine((expression, ctx) => {
    const shape = expressionShape(expression);
    if (shape.depth > LIMITS.expressionDepth) {
      ctx.addIssue({ code: "custom", message: `expression nests ${shape.depth} levels deep (at most ${LIMITS.expressionDepth})` });
    }
    if (shape.nodes > LIMITS.expressionNodes) {
      ctx.addIssue({ code: "custom", message: `expression has ${shape.nodes} operators (at most ${LIMITS.expressionNodes})` });
    }
  });

/** Rule ids are caller-chosen slugs or UUIDs; the domain assigns one when the payload has none. */
export const RuleIdSchema = z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, "rule_id must be 1-128 characters of [A-Za-z0-9_.:-]");

const ruleFields = {
  rule_id: RuleIdSchema.optional(),
  name: z.string().trim().min(1).max(200),
  description: z.string().max(2000).optional(),
  severity: z.enum(SEVERITIES),
  expression: ExpressionSchema,
  error_message: z.string().max(1000).optional(),
  remediation_hint: z.string().max(2000).optional(),
  on_missing: z.enum(ON_MISSING).default("violation"),
};

/** A rule as it arrives in create / add_rule / update_rule; `on_missing` defaults to "violation". */
export const RuleInputSchema = z.strictObject(ruleFields);
export type RuleInput = z.output<typeof RuleInputSchema>;

/** A rule as stored on the policy: the id is always present. */
export const RuleSchema = z.strictObject({ ...ruleFields, rule_id: RuleIdSchema });
export type Rule = z.output<typeof RuleSchema>;

// Exemption conditions: `{field, operator, value}` with the rule operators on a single field.
export const CONDITION_OPERATORS = [
  "equal", "not_equal", "greater_than", "greater_than_or_equal", "less_than", "less_than_or_equal",
  "in", "not_in", "matches", "starts_with", "ends_with", "contains", "exists", "not_exists",
] as const;
export type ConditionOperator = (typeof CONDITION_OPERATORS)[number];
export interface ExemptionCondition { field: string; operator: ConditionOperator; value?: JsonValue }

/** The rule expression a condition stands for: `in`/`not_in` take `value` as the list, `matches` as the pattern. */
export function conditionToExpression(condition: ExemptionCondition): Expression {
  const { field, operator, value } = condition;
  switch (operator) {
    case "in":
    case "not_in":
      return { op: operator, field, values: value as JsonValue[] };
    case "matches":
      return { op: operator, field, pattern: value as string };
    case "exists":
    case "not_exists":
      return { op: operator, field };
    case "starts_with":
    case "ends_with":
      return { op: operator, field, value: value as string };
    case "greater_than":
    case "greater_than_or_equal":
    case "less_than":
    case "less_than_or_equal":
      return { op: operator, field, value: value as number | string };
    default:
      return { op: operator, field, value: value ?? null };
  }
}

export const ExemptionConditionSchema = z
  .unknown()
  .superRefine((raw, ctx) => {
    const problem = rawJsonProblem(raw, LIMITS.jsonDepth, LIMITS.jsonNodes);
    if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem.replace("expression", "condition") });
  })
  .pipe(z.strictObject({ field: FieldPathSchema, operator: z.enum(CONDITION_OPERATORS), value: JsonValueSchema.optional() }))
  .superRefine((condition, ctx) => {
    const needsValue = condition.operator !== "exists" && condition.operator !== "not_exists";
    if (needsValue && condition.value === undefined) {
      ctx.addIssue({ code: "custom", path: ["value"], message: `operator ${condition.operator} needs a value` });
      return;
    }
    if (!needsValue && condition.value !== undefined) {
      ctx.addIssue({ code: "custom", path: ["value"], message: `operator ${condition.operator} takes no value` });
      return;
    }
    const result = ExpressionSchema.safeParse(conditionToExpression(condition as ExemptionCondition));
    if (!result.success) {
      for (const issue of result.error.issues) {
        ctx.addIssue({ code: "custom", path: ["value", ...issue.path.slice(1)], message: issue.message });
      }
    }
  });
