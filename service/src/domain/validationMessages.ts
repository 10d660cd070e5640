// Validation messages in plain words: the one mapping of zod issues to what a caller reads in `validation_failed`.
// zod's own wording ("Invalid input: expected string, received undefined") names the library's types; ours names
// the field and says what it needs ("description is required", "name must be at most 200 characters").
// Used as the per-parse error map, so a message a schema states itself ("must be a UUID …") still wins.
import type { z } from "zod";

export interface IssueDetail {
  path: string;
  message: string;
}

type RawIssue = z.core.$ZodRawIssue;

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "string": return "a string";
    case "number": return Number.isFinite(value) ? `the number ${value as number}` : "a number";
    case "boolean": return value ? "true" : "false";
    case "object": return "an object";
    default: return typeof value;
  }
}

const EXPECTED: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "true or false",
  object: "a JSON object",
  record: "a JSON object",
  array: "an array",
  tuple: "an array",
  null: "null",
};

function quoted(values: readonly unknown[]): string {
  return values.map((v) => (typeof v === "string" ? v : JSON.stringify(v))).join(", ");
}

function plural(n: number | bigint, one: string, many: string): string {
  return `${n} ${n === 1 || n === 1n ? one : many}`;
}

function tooBig(issue: RawIssue & { code: "too_big" }): string {
  const max = issue.maximum as number;
  const exact = issue.exact === true;
  switch (issue.origin) {
    case "string":
      return exact ? `must be exactly ${plural(max, "character", "characters")}` : `must be at most ${plural(max, "character", "characters")}`;
    case "array":
    case "set":
      return exact ? `must have exactly ${plural(max, "item", "items")}` : `must have at most ${plural(max, "item", "items")}`;
    default:
      return issue.inclusive === false ? `must be less than ${max}` : `must be at most ${max}`;
  }
}

function tooSmall(issue: RawIssue & { code: "too_small" }): string {
  const min = issue.minimum as number;
  const exact = issue.exact === true;
  switch (issue.origin) {
    case "string":
      if (min === 1 && !exact) return "must not be empty";
      return exact ? `must be exactly ${plural(min, "character", "characters")}` : `must be at least ${plural(min, "character", "characters")}`;
    case "array":
    case "set":
      if (min === 1 && !exact) return "must not be empty";
      return exact ? `must have exactly ${plural(min, "item", "items")}` : `must have at least ${plural(min, "item", "items")}`;
    default:
      return issue.inclusive === false ? `must be greater than ${min}` : `must be at least ${min}`;
  }
}

interface SchemaDef {
  shape?: Record<string, unknown>;
  keyType?: { _zod?: { values?: ReadonlySet<unknown> } };
}

/** The fields an object (or a record with enumerated keys) accepts, for "unknown field" messages; undefined when unknown. */
function knownFields(issue: RawIssue): string[] | undefined {
  const def = (issue.inst as { _zod?: { def?: SchemaDef } } | undefined)?._zod?.def;
  if (def?.shape !== undefined) return Object.keys(def.shape);
  const keys = def?.keyType?._zod?.values;
  return keys === undefined ? undefined : [...keys].map(String);
}

/**
 * zod's per-parse error map: a predicate in plain words ("is required", "must be a string"). `describeIssues`
 * puts the field's name in front. Returns undefined (zod's fallback) for nothing: every issue code is covered.
 */
export function plainError(issue: RawIssue): string {
  if (issue.input === undefined && issue.code !== "unrecognized_keys" && issue.code !== "custom") return "is required";
  switch (issue.code) {
    case "invalid_type": {
      if (issue.expected === "int" && typeof issue.input === "number") return `must be a whole number, not ${issue.input}`;
      const expected = EXPECTED[issue.expected] ?? issue.expected;
      return `must be ${expected}, not ${kindOf(issue.input)}`;
    }
    case "invalid_value":
      return issue.values.length === 1 ? `must be ${quoted(issue.values)}` : `must be one of ${quoted(issue.values)}`;
    case "too_big":
      return tooBig(issue);
    case "too_small":
      return tooSmall(issue);
    case "invalid_format":
      if (issue.format === "datetime") return "must be an RFC 3339 date-time with offset, e.g. 2025-11-08T10:00:00Z";
      if (issue.format === "uuid" || issue.format === "guid") return "must be a UUID (8-4-4-4-12 hex digits)";
      if (issue.format === "regex" && issue.pattern !== undefined) return `must match ${issue.pattern}`;
      return `must be a valid ${issue.format}`;
    case "not_multiple_of":
      return `must be a multiple of ${issue.divisor}`;
    case "unrecognized_keys": {
      const known = knownFields(issue);
      const names = issue.keys.join(", ");
      const which = issue.keys.length === 1 ? `has an unknown field ${names}` : `has unknown fields ${names}`;
      return known === undefined ? which : `${which}; the fields are: ${known.join(", ")}`;
    }
    case "invalid_union":
      // A discriminated union (a rule expression's `op`) names its choices; a plain union cannot say more.
      if ("options" in issue && Array.isArray(issue.options) && issue.options.length > 0) return `must be one of ${quoted(issue.options)}`;
      return "does not match any of the accepted forms";
    case "invalid_key":
      return "has a key that is not allowed";
    case "invalid_element":
      return "has an element that is not allowed";
    case "custom":
    default:
      return "is not valid";
  }
}

/** The parse options that make every zod message plain: `schema.safeParse(value, PLAIN)`. */
export const PLAIN = { error: plainError } as const;

// A message that is a predicate ("must …", "is …") reads as a sentence after the field's name; any other message
// (a sentence a schema wrote itself, e.g. "expression nests 70 levels deep") is shown after "field: ".
const PREDICATE = /^(is|are|must|needs|has|have|takes|does)\b/;

/** `{path, message}` for each issue, the message naming the field ("payload" for the request as a whole). */
export function describeIssues(error: z.ZodError): IssueDetail[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String).join(".");
    const field = path === "" ? "payload" : path;
    return { path, message: PREDICATE.test(issue.message) ? `${field} ${issue.message}` : `${field}: ${issue.message}` };
  });
}

/** One line for a reply's `message`: the first issue, and how many more `details` lists. */
export function summarizeIssues(details: readonly IssueDetail[]): string {
  const first = details[0];
  if (first === undefined) return "invalid payload";
  return details.length > 1 ? `${first.message} (and ${details.length - 1} more)` : first.message;
}
