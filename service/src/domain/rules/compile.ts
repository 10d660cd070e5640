// Compiles a validated expression once into a tree of closures, so evaluating a rule does no
// parsing, path splitting or regex compilation, and allocates nothing while it passes.
//
// Semantics (one place, also quoted in the report):
// - Every node yields one of four outcomes: TRUE, FALSE, MISSING (a field the node reads is absent)
//   or ERROR (the values cannot be compared: mixed types, `matches` on an oversize input).
// - and/or/not use Kleene logic over the two "unknown" outcomes: `and` is FALSE if any argument is
//   FALSE, else unknown if any is unknown, else TRUE; `or` is TRUE if any argument is TRUE, else
//   unknown if any is, else FALSE; `not` swaps TRUE/FALSE and keeps unknown. When both unknowns meet,
//   ERROR wins over MISSING. So `not` can never turn "could not tell" into a pass.
// - A field path is split on "."; each segment reads an own property of an object (never the
//   prototype chain) or, on an array, a decimal index. `undefined` is missing; JSON `null` is present.
// - equal / not_equal / in / not_in: deep structural equality, type-strict (1 ≠ "1", no coercion);
//   at the top level two RFC 3339 date-time strings are equal when they denote the same instant.
//   not_equal is exactly not(equal); not_in is exactly not(in).
// - greater_than & co: numbers compare numerically; RFC 3339 date-times (the rule's value is one,
//   so the field must be one) compare as instants. Anything else is ERROR ("mixed types never compare").
// - starts_with / ends_with: strings only (else ERROR). contains: substring on strings (the value must
//   be a string), element by deep equality on arrays, ERROR on other types.
// - matches: re2js (linear time) search, unanchored like RegExp.test; anchor with ^…$ yourself.
//   An input longer than LIMITS.matchInput (64 KiB) is ERROR, never truncated: truncation would let
//   `^[a-z]+$` pass on a string whose disallowed tail it never read.
// - exists / not_exists test presence and never yield MISSING.
// - At rule level: MISSING resolves through `on_missing` (violation → failed; pass → passed;
//   error → failed with `error: true`); ERROR → failed with `error: true`. Failed rules are violations.
import { RE2JS } from "re2js";
import {
  LIMITS, conditionToExpression, parseRfc3339, type ExemptionCondition, type Expression, type JsonValue, type Rule,
} from "./schema.js";

export const TRUE = 1;
export const FALSE = 0;
export const MISSING = 2;
export const ERROR = 3;
export type Outcome = typeof TRUE | typeof FALSE | typeof MISSING | typeof ERROR;

const ABSENT: unique symbol = Symbol("absent");
type Resolved = unknown;

/** One compiled node: `test` is the allocation-free hot path, `explain` builds the human reason on demand. */
export interface CompiledExpression {
  readonly test: (context: unknown) => Outcome;
  /** Why the node did not yield TRUE (or, for a `not` argument, why it did). Called only off the hot path. */
  readonly explain: (context: unknown) => string;
  /** Short rendering of the expression for reasons, e.g. "`user.age` >= 18". */
  readonly text: string;
}

// ---------- field access ----------

const INDEX = /^(0|[1-9]\d{0,8})$/;

function compileAccessor(path: string): (context: unknown) => Resolved {
  const segments = path.split(".");
  const indexes = segments.map((s) => (INDEX.test(s) ? Number(s) : -1));
  const step = (current: unknown, i: number): Resolved => {
    if (current === null || typeof current !== "object") return ABSENT;
    const segment = segments[i] as string;
    if (Array.isArray(current)) {
      const index = indexes[i] as number;
      return index >= 0 && index < current.length ? current[index] : ABSENT;
    }
    return Object.hasOwn(current, segment) ? (current as Record<string, unknown>)[segment] : ABSENT;
  };
  if (segments.length === 1) {
    return (context) => {
      const value = step(context, 0);
      return value === undefined ? ABSENT : value;
    };
  }
  const last = segments.length;
  return (context) => {
    let current: unknown = context;
    for (let i = 0; i < last; i++) {
      current = step(current, i);
      if (current === ABSENT || current === undefined) return ABSENT;
    }
    return current;
  };
}

// ---------- values ----------

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value === "object" ? "object" : typeof value;
}

/** JSON rendering for reasons, cut to keep replies and audit events small. */
export function show(value: unknown, max = 80): string {
  let text: string;
  try {
    text = typeof value === "string" ? JSON.stringify(value.length > max ? value.slice(0, max) : value) : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const keysA = Object.keys(a);
  if (keysA.length !== Object.keys(b).length) return false;
  for (const key of keysA) {
    if (!Object.hasOwn(b, key) || !deepEqual((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key])) return false;
  }
  return true;
}

/** Equality as `equal` sees it: deep and type-strict, plus instant equality of two date-time strings. */
function makeEquals(expected: JsonValue): (actual: unknown) => boolean {
  if (typeof expected === "string") {
    const instant = parseRfc3339(expected);
    if (instant === undefined) return (actual) => actual === expected;
    return (actual) => actual === expected || (typeof actual === "string" && parseRfc3339(actual) === instant);
  }
  if (expected === null || typeof expected !== "object") return (actual) => actual === expected;
  return (actual) => deepEqual(actual, expected);
}

// ---------- leaves ----------

const ORDER_SYMBOL = { greater_than: ">", greater_than_or_equal: ">=", less_than: "<", less_than_or_equal: "<=" } as const;
type OrderOp = keyof typeof ORDER_SYMBOL;

function orderHolds(op: OrderOp, actual: number, expected: number): boolean {
  switch (op) {
    case "greater_than":
      return actual > expected;
    case "greater_than_or_equal":
      return actual >= expected;
    case "less_than":
      return actual < expected;
    case "less_than_or_equal":
      return actual <= expected;
  }
}

function leaf(
  field: string,
  text: string,
  check: (actual: unknown) => Outcome,
  why: (actual: unknown, outcome: Outcome) => string,
): CompiledExpression {
  const read = compileAccessor(field);
  return {
    text,
    test: (context) => {
      const actual = read(context);
      return actual === ABSENT ? MISSING : check(actual);
    },
    explain: (context) => {
      const actual = read(context);
      if (actual === ABSENT) return `field \`${field}\` is missing`;
      return why(actual, check(actual));
    },
  };
}

function is(actual: unknown, field: string): string {
  return `field \`${field}\` is ${show(actual)}`;
}

function compileLeaf(expression: Exclude<Expression, { op: "and" | "or" | "not" }>): CompiledExpression {
  const field = expression.field;
  switch (expression.op) {
    case "equal":
    case "not_equal": {
      const equals = makeEquals(expression.value);
      const wanted = expression.op === "equal";
      const symbol = wanted ? "==" : "!=";
      return leaf(
        field,
        `\`${field}\` ${symbol} ${show(expression.value)}`,
        (actual) => (equals(actual) === wanted ? TRUE : FALSE),
        (actual, outcome) =>
          outcome === TRUE ? `${is(actual, field)} (${symbol} ${show(expression.value)})`
            : wanted ? `${is(actual, field)}, expected ${show(expression.value)}`
            : `${is(actual, field)}, expected anything else`,
      );
    }
    case "greater_than":
    case "greater_than_or_equal":
    case "less_than":
    case "less_than_or_equal": {
      const op = expression.op;
      const symbol = ORDER_SYMBOL[op];
      const expectedValue = expression.value;
      const text = `\`${field}\` ${symbol} ${show(expectedValue)}`;
      if (typeof expectedValue === "number") {
        return leaf(
          field,
          text,
          (actual) => (typeof actual !== "number" ? ERROR : orderHolds(op, actual, expectedValue) ? TRUE : FALSE),
          (actual, outcome) =>
            outcome === ERROR ? `${is(actual, field)} (${typeName(actual)}), cannot compare with the number ${expectedValue}`
              : `${is(actual, field)}, expected ${symbol} ${expectedValue}`,
        );
      }
      const instant = parseRfc3339(expectedValue);
      if (instant === undefined) throw new RangeError(`ordering value must be a number or RFC 3339 date-time: ${show(expectedValue)}`);
      const instantOf = (actual: unknown): number | undefined => (typeof actual === "string" ? parseRfc3339(actual) : undefined);
      return leaf(
        field,
        text,
        (actual) => {
          const ms = instantOf(actual);
          return ms === undefined ? ERROR : orderHolds(op, ms, instant) ? TRUE : FALSE;
        },
        (actual, outcome) =>
          outcome === ERROR ? `${is(actual, field)}, not an RFC 3339 date-time to compare with ${expectedValue}`
            : `${is(actual, field)}, expected ${symbol} ${expectedValue}`,
      );
    }
    case "in":
    case "not_in": {
      const wanted = expression.op === "in";
      const scalars = new Set<unknown>();
      const instants = new Set<number>();
      const structured: JsonValue[] = [];
      for (const value of expression.values) {
        if (value !== null && typeof value === "object") structured.push(value);
        else {
          scalars.add(value);
          if (typeof value === "string") {
            const ms = parseRfc3339(value);
            if (ms !== undefined) instants.add(ms);
          }
        }
      }
      const member = (actual: unknown): boolean => {
        if (actual !== null && typeof actual === "object") {
          for (const candidate of structured) if (deepEqual(actual, candidate)) return true;
          return false;
        }
        if (scalars.has(actual)) return true;
        if (instants.size > 0 && typeof actual === "string") {
          const ms = parseRfc3339(actual);
          return ms !== undefined && instants.has(ms);
        }
        return false;
      };
      const list = show(expression.values);
      return leaf(
        field,
        `\`${field}\` ${wanted ? "in" : "not in"} ${list}`,
        (actual) => (member(actual) === wanted ? TRUE : FALSE),
        (actual, outcome) =>
          outcome === TRUE ? `${is(actual, field)} (${wanted ? "in" : "not in"} ${list})`
            : `${is(actual, field)}, expected ${wanted ? "one of" : "none of"} ${list}`,
      );
    }
    case "matches": {
      const pattern = expression.pattern;
      const regex = RE2JS.compile(pattern);
      return leaf(
        field,
        `\`${field}\` matches /${pattern}/`,
        (actual) => (typeof actual !== "string" || actual.length > LIMITS.matchInput ? ERROR : regex.test(actual) ? TRUE : FALSE),
        (actual, outcome) =>
          outcome !== ERROR ? `${is(actual, field)}, expected to match /${pattern}/`
            : typeof actual !== "string" ? `${is(actual, field)} (${typeName(actual)}), \`matches\` needs a string`
            : `field \`${field}\` is ${actual.length} characters long, over the ${LIMITS.matchInput} \`matches\` reads`,
      );
    }
    case "starts_with":
    case "ends_with": {
      const value = expression.value;
      const starts = expression.op === "starts_with";
      const verb = starts ? "starts with" : "ends with";
      return leaf(
        field,
        `\`${field}\` ${verb} ${show(value)}`,
        (actual) => (typeof actual !== "string" ? ERROR : (starts ? actual.startsWith(value) : actual.endsWith(value)) ? TRUE : FALSE),
        (actual, outcome) =>
          outcome === ERROR ? `${is(actual, field)} (${typeName(actual)}), \`${expression.op}\` needs a string`
            : `${is(actual, field)}, expected it to ${starts ? "start" : "end"} with ${show(value)}`,
      );
    }
    case "contains": {
      const value = expression.value;
      const equals = makeEquals(value);
      return leaf(
        field,
        `\`${field}\` contains ${show(value)}`,
        (actual) => {
          if (typeof actual === "string") return typeof value !== "string" ? ERROR : actual.includes(value) ? TRUE : FALSE;
          if (Array.isArray(actual)) {
            for (const element of actual) if (equals(element)) return TRUE;
            return FALSE;
          }
          return ERROR;
        },
        (actual, outcome) =>
          outcome !== ERROR ? `${is(actual, field)}, expected it to contain ${show(value)}`
            : `${is(actual, field)} (${typeName(actual)}), cannot look for ${show(value)} (${typeName(value)}) in it`,
      );
    }
    case "exists":
    case "not_exists": {
      const read = compileAccessor(field);
      const wanted = expression.op === "exists";
      return {
        text: `\`${field}\` ${wanted ? "exists" : "does not exist"}`,
        test: (context) => ((read(context) !== ABSENT) === wanted ? TRUE : FALSE),
        explain: (context) => {
          const actual = read(context);
          return actual === ABSENT ? `field \`${field}\` is missing` : `${is(actual, field)}, expected it to be absent`;
        },
      };
    }
  }
}

// ---------- combinators ----------

function isUnknown(outcome: Outcome): boolean {
  return outcome === MISSING || outcome === ERROR;
}

function compileAnd(args: CompiledExpression[]): CompiledExpression {
  const test = (context: unknown): Outcome => {
    let unknown: Outcome = TRUE;
    for (let i = 0; i < args.length; i++) {
      const outcome = (args[i] as CompiledExpression).test(context);
      if (outcome === FALSE) return FALSE;
      if (outcome === ERROR || (outcome === MISSING && unknown === TRUE)) unknown = outcome;
    }
    return unknown;
  };
  return {
    text: `(${args.map((a) => a.text).join(" and ")})`,
    test,
    explain: (context) => {
      const overall = test(context);
      // Report the argument that decided the outcome: the first FALSE, else the first with the same unknown.
      for (const arg of args) if (arg.test(context) === overall) return arg.explain(context);
      return "all conditions held";
    },
  };
}

function compileOr(args: CompiledExpression[]): CompiledExpression {
  const test = (context: unknown): Outcome => {
    let result: Outcome = FALSE;
    for (let i = 0; i < args.length; i++) {
      const outcome = (args[i] as CompiledExpression).test(context);
      if (outcome === TRUE) return TRUE;
      if (outcome === ERROR || (outcome === MISSING && result === FALSE)) result = outcome;
    }
    return result;
  };
  return {
    text: `(${args.map((a) => a.text).join(" or ")})`,
    test,
    explain: (context) => {
      const overall = test(context);
      if (overall === FALSE) return `none held: ${args.map((arg) => arg.explain(context)).join("; ")}`;
      for (const arg of args) if (arg.test(context) === overall) return arg.explain(context);
      return "a condition held";
    },
  };
}

function compileNot(arg: CompiledExpression): CompiledExpression {
  return {
    text: `not ${arg.text}`,
    test: (context) => {
      const outcome = arg.test(context);
      return outcome === TRUE ? FALSE : outcome === FALSE ? TRUE : outcome;
    },
    explain: (context) => {
      const outcome = arg.test(context);
      if (outcome === TRUE) return `expected not ${arg.text}, but it held: ${arg.explain(context)}`;
      return arg.explain(context);
    },
  };
}

/** Compiles a schema-validated expression. Throws RangeError on shapes the schema would have refused. */
export function compileExpression(expression: Expression): CompiledExpression {
  switch (expression.op) {
    case "and":
      return compileAnd(expression.args.map(compileExpression));
    case "or":
      return compileOr(expression.args.map(compileExpression));
    case "not":
      return compileNot(compileExpression(expression.arg));
    default:
      return compileLeaf(expression);
  }
}

// ---------- rules and policies ----------

export interface RuleResult {
  rule_id: string;
  name: string;
  passed: boolean;
  reason?: string;
  /** The rule could not be decided (mixed types, oversize input, or a missing field with on_missing "error"). */
  error?: true;
}

export interface CompiledRule {
  readonly rule: Rule;
  readonly expression: CompiledExpression;
  /** Passing result, built once so a passing rule allocates nothing. */
  readonly passResult: RuleResult;
}

export function compileRule(rule: Rule): CompiledRule {
  return {
    rule,
    expression: compileExpression(rule.expression),
    passResult: Object.freeze({ rule_id: rule.rule_id, name: rule.name, passed: true }),
  };
}

/** Evaluates one compiled rule; see the header for how MISSING and ERROR resolve. */
export function evaluateRule(compiled: CompiledRule, context: unknown): RuleResult {
  const outcome = compiled.expression.test(context);
  if (outcome === TRUE) return compiled.passResult;
  const { rule } = compiled;
  if (outcome === MISSING) {
    const onMissing = rule.on_missing ?? "violation";
    if (onMissing === "pass") return compiled.passResult;
    const reason = compiled.expression.explain(context);
    return onMissing === "error"
      ? { rule_id: rule.rule_id, name: rule.name, passed: false, error: true, reason: `${reason} (on_missing: error)` }
      : { rule_id: rule.rule_id, name: rule.name, passed: false, reason };
  }
  const reason = compiled.expression.explain(context);
  return outcome === ERROR
    ? { rule_id: rule.rule_id, name: rule.name, passed: false, error: true, reason }
    : { rule_id: rule.rule_id, name: rule.name, passed: false, reason };
}

/** A policy's effective window as stored: RFC 3339 bounds, null for unbounded. */
export interface EffectiveWindow {
  effective_from: string | null;
  effective_until: string | null;
}

export interface CompiledPolicy {
  readonly id: string;
  readonly version: number;
  readonly rules: readonly CompiledRule[];
  /** The effective window in epoch ms, parsed once: [from, until); ±Infinity when unbounded. */
  readonly effectiveFromMs: number;
  readonly effectiveUntilMs: number;
}

function boundMs(value: string | null | undefined, unbounded: number): number {
  if (value === null || value === undefined) return unbounded;
  const ms = parseRfc3339(value);
  if (ms === undefined) throw new RangeError(`effective window bound is not an RFC 3339 date-time: ${show(value)}`);
  return ms;
}

export function compilePolicy(id: string, version: number, rules: readonly Rule[], window?: EffectiveWindow): CompiledPolicy {
  return {
    id,
    version,
    rules: rules.map(compileRule),
    effectiveFromMs: boundMs(window?.effective_from, -Infinity),
    effectiveUntilMs: boundMs(window?.effective_until, Infinity),
  };
}

/** Map with a size bound; the least recently used entry goes first. */
class LruMap<V> {
  readonly #entries = new Map<string, V>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  getOrCreate(key: string, create: () => V): V {
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      // Re-insert so Map order is recency order; eviction then takes the first key.
      this.#entries.delete(key);
      this.#entries.set(key, hit);
      return hit;
    }
    const value = create();
    this.#entries.set(key, value);
    if (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    return value;
  }

  clear(): void {
    this.#entries.clear();
  }
}

/**
 * Compiled policies (and exemption conditions) keyed by `${id}@${version}`: a version never changes once
 * written, so entries never go stale, only cold. Bounded per kind; least recently used goes first.
 */
export class CompiledPolicyCache {
  readonly maxEntries: number;
  readonly #policies: LruMap<CompiledPolicy>;
  readonly #conditions: LruMap<CompiledExpression>;

  constructor(maxEntries = 1024) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError("maxEntries must be a positive integer");
    this.maxEntries = maxEntries;
    this.#policies = new LruMap(maxEntries);
    this.#conditions = new LruMap(maxEntries);
  }

  /** Compiled policies held (exemption conditions are counted separately). */
  get size(): number {
    return this.#policies.size;
  }

  /** The compiled form of `rules` (and `window`) at (id, version), compiling on first use. */
  get(id: string, version: number, rules: readonly Rule[], window?: EffectiveWindow): CompiledPolicy {
    return this.#policies.getOrCreate(`${id}@${version}`, () => compilePolicy(id, version, rules, window));
  }

  /** The compiled conjunction of an exemption's conditions at (id, version). */
  getConditions(id: string, version: number, conditions: readonly ExemptionCondition[]): CompiledExpression {
    return this.#conditions.getOrCreate(`${id}@${version}`, () => compileConditions(conditions));
  }

  clear(): void {
    this.#policies.clear();
    this.#conditions.clear();
  }
}

/** Exemption conditions as one expression: all must hold (an empty list always holds). */
export function compileConditions(conditions: readonly ExemptionCondition[]): CompiledExpression {
  if (conditions.length === 0) return { text: "no conditions", test: () => TRUE, explain: () => "no conditions" };
  return compileExpression({ op: "and", args: conditions.map(conditionToExpression) });
}
