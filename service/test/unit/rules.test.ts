import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import {
  CompiledPolicyCache, ERROR, FALSE, MISSING, TRUE, compileConditions, compileExpression, compileRule, evaluateRule,
  type Outcome,
} from "../../src/domain/rules/compile.js";
import {
  ExemptionConditionSchema, ExpressionSchema, LIMITS, RuleInputSchema, RuleSchema, parseRfc3339, type Expression, type Rule,
} from "../../src/domain/rules/schema.js";
import { parseDateTime } from "../../src/domain/time.js";

/** Validates through the schema first, as every stored rule was. */
function expr(raw: unknown): Expression {
  const parsed = ExpressionSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`test expression rejected: ${JSON.stringify(parsed.error.issues)}`);
  return parsed.data;
}

function outcome(raw: unknown, context: unknown): Outcome {
  return compileExpression(expr(raw)).test(context);
}

function rule(raw: Record<string, unknown>): Rule {
  const parsed = RuleSchema.safeParse({ rule_id: "r1", name: "rule one", severity: "High", ...raw });
  if (!parsed.success) throw new Error(`test rule rejected: ${JSON.stringify(parsed.error.issues)}`);
  return parsed.data;
}

describe("schema", () => {
  test("accepts every operator shape and defaults on_missing to violation", () => {
    const parsed = RuleInputSchema.parse({
      name: "all operators",
      severity: "Critical",
      expression: {
        op: "and",
        args: [
          { op: "equal", field: "a", value: { nested: [1, "x", null] } },
          { op: "not_equal", field: "a", value: null },
          { op: "greater_than", field: "n", value: 1 },
          { op: "greater_than_or_equal", field: "n", value: 1.5 },
          { op: "less_than", field: "t", value: "2025-01-01T00:00:00Z" },
          { op: "less_than_or_equal", field: "t", value: "2025-01-01T00:00:00+02:00" },
          { op: "in", field: "r", values: ["a", 1, true, null, [1]] },
          { op: "not_in", field: "r", values: [] },
          { op: "matches", field: "s", pattern: "^[a-z]+$" },
          { op: "starts_with", field: "s", value: "a" },
          { op: "ends_with", field: "s", value: "z" },
          { op: "contains", field: "s", value: "m" },
          { op: "exists", field: "x.y-z.0" },
          { op: "or", args: [{ op: "not_exists", field: "q" }] },
          { op: "not", arg: { op: "exists", field: "q" } },
        ],
      },
    });
    assert.equal(parsed.on_missing, "violation");
    assert.equal(parsed.rule_id, undefined);
  });

  const rejected: Array<[string, unknown]> = [
    ["unknown operator", { op: "regex", field: "a", pattern: "x" }],
    ["extra key", { op: "exists", field: "a", value: 1 }],
    ["__proto__ key", JSON.parse('{"op":"exists","field":"a","__proto__":{"x":1}}')],
    ["__proto__ segment", { op: "exists", field: "a.__proto__.b" }],
    ["__proto__ key inside a value", JSON.parse('{"op":"equal","field":"a","value":{"ok":{"__proto__":{"x":1}}}}')],
    ["constructor key inside an in-list value", { op: "in", field: "a", values: [{ constructor: 1 }] }],
    ["constructor segment", { op: "exists", field: "constructor" }],
    ["prototype segment", { op: "exists", field: "x.prototype" }],
    ["empty segment", { op: "exists", field: "a..b" }],
    ["bad segment character", { op: "exists", field: "a b" }],
    ["too many segments", { op: "exists", field: Array.from({ length: 17 }, () => "a").join(".") }],
    ["invalid regex", { op: "matches", field: "a", pattern: "(a" }],
    ["backreference (not RE2)", { op: "matches", field: "a", pattern: "(a)\\1" }],
    ["pattern too long", { op: "matches", field: "a", pattern: "a".repeat(LIMITS.pattern + 1) }],
    ["ordering on a plain string", { op: "greater_than", field: "a", value: "abc" }],
    ["ordering on a date without offset", { op: "greater_than", field: "a", value: "2025-01-01T00:00:00" }],
    ["ordering on null", { op: "less_than", field: "a", value: null }],
    ["starts_with a number", { op: "starts_with", field: "a", value: 1 }],
    ["in without values", { op: "in", field: "a", value: 1 }],
    ["and with no args", { op: "and", args: [] }],
    ["not with args", { op: "not", args: [{ op: "exists", field: "a" }] }],
  ];
  for (const [label, raw] of rejected) {
    test(`rejects ${label}`, () => {
      assert.equal(ExpressionSchema.safeParse(raw).success, false);
    });
  }

  test("rejects expressions nested deeper than the limit, and accepts the limit itself", () => {
    const nest = (levels: number): unknown => {
      let e: unknown = { op: "exists", field: "a" };
      for (let i = 1; i < levels; i++) e = { op: "not", arg: e };
      return e;
    };
    assert.equal(ExpressionSchema.safeParse(nest(LIMITS.expressionDepth)).success, true);
    const tooDeep = ExpressionSchema.safeParse(nest(LIMITS.expressionDepth + 1));
    assert.equal(tooDeep.success, false);
    assert.match(JSON.stringify(tooDeep.error?.issues), /levels deep/);
  });

  test("refuses hostile nesting before recursing (no stack overflow)", () => {
    let e: unknown = { op: "exists", field: "a" };
    for (let i = 0; i < 200_000; i++) e = { op: "not", arg: e };
    const result = ExpressionSchema.safeParse(e);
    assert.equal(result.success, false);
    assert.match(JSON.stringify(result.error?.issues), /too large/);
  });

  test("rejects too many operators", () => {
    const wide = { op: "and", args: Array.from({ length: 60 }, () => ({ op: "or", args: Array.from({ length: 5 }, () => ({ op: "exists", field: "a" })) })) };
    const result = ExpressionSchema.safeParse(wide);
    assert.equal(result.success, false);
    assert.match(JSON.stringify(result.error?.issues), /operators/);
  });

  test("rule fields are strict and bounded", () => {
    const base = { name: "n", severity: "Low", expression: { op: "exists", field: "a" } };
    assert.equal(RuleInputSchema.safeParse(base).success, true);
    assert.equal(RuleInputSchema.safeParse({ ...base, severity: "Severe" }).success, false);
    assert.equal(RuleInputSchema.safeParse({ ...base, on_missing: "ignore" }).success, false);
    assert.equal(RuleInputSchema.safeParse({ ...base, extra: 1 }).success, false);
    assert.equal(RuleInputSchema.safeParse({ ...base, name: " " }).success, false);
    assert.equal(RuleInputSchema.safeParse({ ...base, rule_id: "has space" }).success, false);
    assert.equal(RuleSchema.safeParse(base).success, false, "a stored rule needs its rule_id");
  });

  test("exemption conditions map onto rule operators", () => {
    assert.equal(ExemptionConditionSchema.safeParse({ field: "region", operator: "in", value: ["eu", "us"] }).success, true);
    assert.equal(ExemptionConditionSchema.safeParse({ field: "region", operator: "in", value: "eu" }).success, false);
    assert.equal(ExemptionConditionSchema.safeParse({ field: "host", operator: "matches", value: "(x" }).success, false);
    assert.equal(ExemptionConditionSchema.safeParse({ field: "host", operator: "exists" }).success, true);
    assert.equal(ExemptionConditionSchema.safeParse({ field: "host", operator: "exists", value: 1 }).success, false);
    assert.equal(ExemptionConditionSchema.safeParse({ field: "host", operator: "equal" }).success, false);
    assert.equal(ExemptionConditionSchema.safeParse({ field: "a.__proto__", operator: "equal", value: 1 }).success, false);
    assert.equal(ExemptionConditionSchema.safeParse(JSON.parse('{"field":"a","operator":"equal","value":{"__proto__":{"x":1}}}')).success, false);
  });
});

describe("date-times", () => {
  test("the fast UTC path agrees with the domain's parseDateTime", () => {
    const fixed = [
      "2025-11-08T10:00:00Z", "2025-11-08T10:00:00.5Z", "2025-11-08T10:00:00.25Z", "2025-11-08T10:00:00.123Z",
      "2025-11-08T10:00:00.1234Z", "2024-02-29T00:00:00Z", "2025-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
      "2000-02-29T23:59:59Z", "2025-04-31T00:00:00Z", "2025-13-01T00:00:00Z", "2025-00-01T00:00:00Z",
      "2025-01-00T00:00:00Z", "2025-01-01T24:00:00Z", "2025-01-01T23:60:00Z", "2025-01-01T23:59:60Z",
      "0099-01-01T00:00:00Z", "0100-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "2025-01-01t00:00:00z",
      "2025-01-01T00:00:00.Z", "2025-01-01T00:00:00,5Z", "2025-01-01 00:00:00Z", "2025-1-01T00:00:00Z",
      "2025-01-01T00:00:00+00:00", "2025-01-01T00:00:00-05:30", "2025-01-01T00:00:00", "+2025-01-01T00:00:00Z",
      "2025-01-01T00:00:0aZ", "2025/01/01T00:00:00Z", "", "Z",
    ];
    const random: string[] = [];
    let seed = 42;
    const next = (max: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % max;
    };
    const pad = (value: number, width: number) => String(value).padStart(width, "0");
    for (let i = 0; i < 5000; i++) {
      const fraction = ["", `.${pad(next(10), 1)}`, `.${pad(next(100), 2)}`, `.${pad(next(1000), 3)}`][next(4)];
      random.push(`${pad(next(10_000), 4)}-${pad(next(14), 2)}-${pad(next(33), 2)}T${pad(next(26), 2)}:${pad(next(62), 2)}:${pad(next(62), 2)}${fraction}Z`);
    }
    for (const value of [...fixed, ...random]) assert.equal(parseRfc3339(value), parseDateTime(value), value);
  });
});

describe("operators", () => {
  test("equal / not_equal on scalars is type-strict", () => {
    assert.equal(outcome({ op: "equal", field: "a", value: 1 }, { a: 1 }), TRUE);
    assert.equal(outcome({ op: "equal", field: "a", value: 1 }, { a: "1" }), FALSE);
    assert.equal(outcome({ op: "equal", field: "a", value: 1 }, { a: 1.0 }), TRUE);
    assert.equal(outcome({ op: "equal", field: "a", value: true }, { a: true }), TRUE);
    assert.equal(outcome({ op: "equal", field: "a", value: null }, { a: null }), TRUE);
    assert.equal(outcome({ op: "equal", field: "a", value: null }, { a: 0 }), FALSE);
    assert.equal(outcome({ op: "not_equal", field: "a", value: "x" }, { a: "y" }), TRUE);
    assert.equal(outcome({ op: "not_equal", field: "a", value: "x" }, { a: "x" }), FALSE);
    assert.equal(outcome({ op: "not_equal", field: "a", value: 1 }, { a: "1" }), TRUE);
  });

  test("equal is deep for arrays and objects, key order irrelevant", () => {
    const value = { k: [1, { z: null, y: "s" }], j: true };
    assert.equal(outcome({ op: "equal", field: "a", value }, { a: { j: true, k: [1, { y: "s", z: null }] } }), TRUE);
    assert.equal(outcome({ op: "equal", field: "a", value }, { a: { j: true, k: [1, { y: "s" }] } }), FALSE);
    assert.equal(outcome({ op: "equal", field: "a", value }, { a: { j: true, k: [{ y: "s", z: null }, 1] } }), FALSE);
    assert.equal(outcome({ op: "equal", field: "a", value: [1, 2] }, { a: [1, 2] }), TRUE);
    assert.equal(outcome({ op: "equal", field: "a", value: [1, 2] }, { a: [1, 2, 3] }), FALSE);
    assert.equal(outcome({ op: "equal", field: "a", value: [] }, { a: {} }), FALSE);
    assert.equal(outcome({ op: "not_equal", field: "a", value: [1] }, { a: [1] }), FALSE);
  });

  test("equal treats two date-times naming the same instant as equal", () => {
    assert.equal(outcome({ op: "equal", field: "t", value: "2025-11-08T10:00:00Z" }, { t: "2025-11-08T12:00:00+02:00" }), TRUE);
    assert.equal(outcome({ op: "equal", field: "t", value: "2025-11-08T10:00:00Z" }, { t: "2025-11-08T10:00:00.000Z" }), TRUE);
    assert.equal(outcome({ op: "equal", field: "t", value: "2025-11-08T10:00:00Z" }, { t: "2025-11-08T10:00:01Z" }), FALSE);
  });

  test("ordering on numbers, integers and floats alike", () => {
    const ops = [
      ["greater_than", 18, [[19, TRUE], [18, FALSE], [17.5, FALSE]]],
      ["greater_than_or_equal", 18, [[18, TRUE], [18.0001, TRUE], [17.999, FALSE]]],
      ["less_than", 0.5, [[0.4, TRUE], [0.5, FALSE], [-1e9, TRUE]]],
      ["less_than_or_equal", -3, [[-3, TRUE], [-2, FALSE]]],
    ] as const;
    for (const [op, value, cases] of ops) {
      for (const [actual, expected] of cases) {
        assert.equal(outcome({ op, field: "n", value }, { n: actual }), expected, `${actual} ${op} ${value}`);
      }
    }
  });

  test("ordering on RFC 3339 date-times compares instants across offsets", () => {
    const cutoff = "2025-11-08T10:00:00Z";
    assert.equal(outcome({ op: "less_than", field: "t", value: cutoff }, { t: "2025-11-08T09:59:59.999Z" }), TRUE);
    assert.equal(outcome({ op: "less_than", field: "t", value: cutoff }, { t: "2025-11-08T10:00:00Z" }), FALSE);
    // 11:30+02:00 is 09:30Z: earlier, although it sorts later as text.
    assert.equal(outcome({ op: "less_than", field: "t", value: cutoff }, { t: "2025-11-08T11:30:00+02:00" }), TRUE);
    assert.equal(outcome({ op: "greater_than_or_equal", field: "t", value: cutoff }, { t: "2025-11-08T05:00:00-05:00" }), TRUE);
    assert.equal(outcome({ op: "greater_than", field: "t", value: cutoff }, { t: "2025-11-08T10:00:00.001Z" }), TRUE);
  });

  test("mixed types never compare: ordering yields ERROR", () => {
    assert.equal(outcome({ op: "greater_than", field: "n", value: 18 }, { n: "19" }), ERROR);
    assert.equal(outcome({ op: "greater_than", field: "n", value: 18 }, { n: null }), ERROR);
    assert.equal(outcome({ op: "greater_than", field: "n", value: 18 }, { n: [19] }), ERROR);
    assert.equal(outcome({ op: "less_than", field: "t", value: "2025-01-01T00:00:00Z" }, { t: 1 }), ERROR);
    assert.equal(outcome({ op: "less_than", field: "t", value: "2025-01-01T00:00:00Z" }, { t: "2024-12-31" }), ERROR);
    assert.equal(outcome({ op: "less_than", field: "t", value: "2025-01-01T00:00:00Z" }, { t: "yesterday" }), ERROR);
  });

  test("in / not_in with scalars, structured values and date-times", () => {
    const roles = { op: "in", field: "role", values: ["admin", "auditor", 7, null, false] };
    assert.equal(outcome(roles, { role: "admin" }), TRUE);
    assert.equal(outcome(roles, { role: 7 }), TRUE);
    assert.equal(outcome(roles, { role: "7" }), FALSE);
    assert.equal(outcome(roles, { role: null }), TRUE);
    assert.equal(outcome(roles, { role: false }), TRUE);
    assert.equal(outcome(roles, { role: "guest" }), FALSE);
    assert.equal(outcome({ op: "in", field: "p", values: [{ a: 1 }, [1, 2]] }, { p: [1, 2] }), TRUE);
    assert.equal(outcome({ op: "in", field: "p", values: [{ a: 1 }, [1, 2]] }, { p: { a: 1 } }), TRUE);
    assert.equal(outcome({ op: "in", field: "p", values: [{ a: 1 }] }, { p: { a: 2 } }), FALSE);
    assert.equal(outcome({ op: "in", field: "t", values: ["2025-01-01T00:00:00Z"] }, { t: "2025-01-01T01:00:00+01:00" }), TRUE);
    assert.equal(outcome({ op: "not_in", field: "role", values: ["root"] }, { role: "user" }), TRUE);
    assert.equal(outcome({ op: "not_in", field: "role", values: ["root"] }, { role: "root" }), FALSE);
    assert.equal(outcome({ op: "in", field: "role", values: [] }, { role: "x" }), FALSE);
  });

  test("contains on strings (substring) and arrays (element, deep equality)", () => {
    assert.equal(outcome({ op: "contains", field: "s", value: "ret" }, { s: "secret" }), TRUE);
    assert.equal(outcome({ op: "contains", field: "s", value: "RET" }, { s: "secret" }), FALSE);
    assert.equal(outcome({ op: "contains", field: "s", value: "" }, { s: "x" }), TRUE);
    assert.equal(outcome({ op: "contains", field: "s", value: 1 }, { s: "1" }), ERROR);
    assert.equal(outcome({ op: "contains", field: "tags", value: "pii" }, { tags: ["public", "pii"] }), TRUE);
    assert.equal(outcome({ op: "contains", field: "tags", value: "pi" }, { tags: ["public", "pii"] }), FALSE);
    assert.equal(outcome({ op: "contains", field: "xs", value: { k: [1] } }, { xs: [{ k: [1] }, 2] }), TRUE);
    assert.equal(outcome({ op: "contains", field: "xs", value: 2 }, { xs: [{ k: [1] }, "2"] }), FALSE);
    assert.equal(outcome({ op: "contains", field: "xs", value: "a" }, { xs: { a: 1 } }), ERROR);
    assert.equal(outcome({ op: "contains", field: "xs", value: "1" }, { xs: 1 }), ERROR);
  });

  test("starts_with / ends_with on strings only", () => {
    assert.equal(outcome({ op: "starts_with", field: "h", value: "prod-" }, { h: "prod-db-1" }), TRUE);
    assert.equal(outcome({ op: "starts_with", field: "h", value: "prod-" }, { h: "dev-db-1" }), FALSE);
    assert.equal(outcome({ op: "ends_with", field: "h", value: ".internal" }, { h: "db.internal" }), TRUE);
    assert.equal(outcome({ op: "ends_with", field: "h", value: ".internal" }, { h: "db.internal.com" }), FALSE);
    assert.equal(outcome({ op: "starts_with", field: "h", value: "1" }, { h: 12 }), ERROR);
    assert.equal(outcome({ op: "ends_with", field: "h", value: "x" }, { h: ["x"] }), ERROR);
  });

  test("matches searches (unanchored) with RE2 syntax", () => {
    assert.equal(outcome({ op: "matches", field: "e", pattern: "@example\\.com$" }, { e: "a@example.com" }), TRUE);
    assert.equal(outcome({ op: "matches", field: "e", pattern: "@example\\.com$" }, { e: "a@example.com.evil" }), FALSE);
    assert.equal(outcome({ op: "matches", field: "e", pattern: "^[a-z]+$" }, { e: "abc" }), TRUE);
    assert.equal(outcome({ op: "matches", field: "e", pattern: "^[a-z]+$" }, { e: "abc1" }), FALSE);
    assert.equal(outcome({ op: "matches", field: "e", pattern: "(?i)^ADMIN" }, { e: "admin-x" }), TRUE);
    assert.equal(outcome({ op: "matches", field: "e", pattern: "x" }, { e: 1 }), ERROR);
  });

  test("hostile regular expressions run in linear time", () => {
    const hostile: Array<[string, string]> = [
      ["(a+)+$", `${"a".repeat(50_000)}!`],
      ["(a|a)*b", "a".repeat(50_000)],
      ["^(a|aa)+$", `${"a".repeat(50_000)}b`],
      ["(x+x+)+y", "x".repeat(50_000)],
      ["(.*a){20}", "a".repeat(20_000)],
    ];
    for (const [pattern, input] of hostile) {
      const compiled = compileExpression(expr({ op: "matches", field: "s", pattern }));
      compiled.test({ s: "warm" });
      const started = process.hrtime.bigint();
      const result = compiled.test({ s: input });
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      assert.ok(result === TRUE || result === FALSE);
      assert.ok(elapsedMs < 100, `${pattern} took ${elapsedMs.toFixed(1)} ms on ${input.length} characters`);
    }
  });

  test("matches refuses inputs over the cap instead of truncating them", () => {
    const compiled = compileExpression(expr({ op: "matches", field: "s", pattern: "^[a-z]+$" }));
    const atCap = "a".repeat(LIMITS.matchInput);
    assert.equal(compiled.test({ s: atCap }), TRUE);
    // Truncation would read only the "a"s and pass; the tail "!" must not be skipped.
    assert.equal(compiled.test({ s: `${atCap}!` }), ERROR);
    assert.match(compiled.explain({ s: `${atCap}!` }), /65537 characters long/);
    // ERROR survives negation: `not matches` cannot pass on an input it never read.
    const negated = compileExpression(expr({ op: "not", arg: { op: "matches", field: "s", pattern: "evil" } }));
    assert.equal(negated.test({ s: `${"a".repeat(LIMITS.matchInput)}evil` }), ERROR);
  });

  test("exists / not_exists: null is present, undefined and absent are missing", () => {
    assert.equal(outcome({ op: "exists", field: "a" }, { a: null }), TRUE);
    assert.equal(outcome({ op: "exists", field: "a" }, { a: 0 }), TRUE);
    assert.equal(outcome({ op: "exists", field: "a" }, {}), FALSE);
    assert.equal(outcome({ op: "not_exists", field: "a" }, {}), TRUE);
    assert.equal(outcome({ op: "not_exists", field: "a.b" }, { a: 1 }), TRUE);
    assert.equal(outcome({ op: "not_exists", field: "a" }, { a: false }), FALSE);
    assert.equal(outcome({ op: "exists", field: "a" }, null), FALSE);
    assert.equal(outcome({ op: "exists", field: "a" }, "not an object"), FALSE);
  });

  test("nested paths, array indexes, and no prototype lookups", () => {
    const context = { user: { profile: { age: 42, roles: ["a", "b"] } }, list: [{ id: "x" }, { id: "y" }] };
    assert.equal(outcome({ op: "equal", field: "user.profile.age", value: 42 }, context), TRUE);
    assert.equal(outcome({ op: "equal", field: "user.profile.roles.1", value: "b" }, context), TRUE);
    assert.equal(outcome({ op: "equal", field: "list.1.id", value: "y" }, context), TRUE);
    assert.equal(outcome({ op: "exists", field: "list.2" }, context), FALSE);
    assert.equal(outcome({ op: "exists", field: "list.01" }, context), FALSE);
    assert.equal(outcome({ op: "exists", field: "list.length" }, context), FALSE);
    assert.equal(outcome({ op: "exists", field: "user.toString" }, context), FALSE);
    assert.equal(outcome({ op: "exists", field: "user.hasOwnProperty" }, context), FALSE);
    assert.equal(outcome({ op: "exists", field: "user.profile.age.value" }, context), FALSE);
    assert.equal(outcome({ op: "equal", field: "user.missing.deeper", value: 1 }, context), MISSING);
    // Keys with dashes and digits are plain keys on objects.
    assert.equal(outcome({ op: "equal", field: "h.x-y.0", value: 1 }, { h: { "x-y": { "0": 1 } } }), TRUE);
  });

  test("and / or / not follow Kleene logic over MISSING and ERROR", () => {
    const t = { op: "exists", field: "t" };
    const f = { op: "exists", field: "nope" };
    const m = { op: "equal", field: "nope", value: 1 };
    const e = { op: "greater_than", field: "t", value: 1 };
    const ctx = { t: "text" };
    assert.equal(outcome({ op: "and", args: [t, t] }, ctx), TRUE);
    assert.equal(outcome({ op: "and", args: [t, f] }, ctx), FALSE);
    assert.equal(outcome({ op: "and", args: [m, f] }, ctx), FALSE);
    assert.equal(outcome({ op: "and", args: [t, m] }, ctx), MISSING);
    assert.equal(outcome({ op: "and", args: [m, e] }, ctx), ERROR);
    assert.equal(outcome({ op: "or", args: [f, t] }, ctx), TRUE);
    assert.equal(outcome({ op: "or", args: [m, t] }, ctx), TRUE);
    assert.equal(outcome({ op: "or", args: [f, f] }, ctx), FALSE);
    assert.equal(outcome({ op: "or", args: [f, m] }, ctx), MISSING);
    assert.equal(outcome({ op: "or", args: [e, m] }, ctx), ERROR);
    assert.equal(outcome({ op: "not", arg: t }, ctx), FALSE);
    assert.equal(outcome({ op: "not", arg: f }, ctx), TRUE);
    assert.equal(outcome({ op: "not", arg: m }, ctx), MISSING);
    assert.equal(outcome({ op: "not", arg: e }, ctx), ERROR);
  });
});

describe("rules: reasons and on_missing", () => {
  test("a passing rule reports no reason and reuses one frozen result", () => {
    const compiled = compileRule(rule({ expression: { op: "greater_than_or_equal", field: "user.age", value: 18 } }));
    const first = evaluateRule(compiled, { user: { age: 30 } });
    assert.deepEqual(first, { rule_id: "r1", name: "rule one", passed: true });
    assert.equal(evaluateRule(compiled, { user: { age: 18 } }), first);
    assert.ok(Object.isFrozen(first));
  });

  test("failure reasons name the field, its value and what was expected", () => {
    const cases: Array<[unknown, unknown, string]> = [
      [{ op: "greater_than_or_equal", field: "user.age", value: 18 }, { user: { age: 15 } }, "field `user.age` is 15, expected >= 18"],
      [{ op: "equal", field: "region", value: "eu" }, { region: "us" }, 'field `region` is "us", expected "eu"'],
      [{ op: "not_equal", field: "region", value: "eu" }, { region: "eu" }, 'field `region` is "eu", expected anything else'],
      [{ op: "in", field: "role", values: ["admin"] }, { role: "guest" }, 'field `role` is "guest", expected one of ["admin"]'],
      [{ op: "not_in", field: "role", values: ["root"] }, { role: "root" }, 'field `role` is "root", expected none of ["root"]'],
      [{ op: "greater_than", field: "n", value: 1 }, { n: "2" }, 'field `n` is "2" (string), cannot compare with the number 1'],
      [{ op: "matches", field: "e", pattern: "^a" }, { e: "b" }, 'field `e` is "b", expected to match /^a/'],
      [{ op: "starts_with", field: "h", value: "p" }, { h: "q" }, 'field `h` is "q", expected it to start with "p"'],
      [{ op: "contains", field: "tags", value: "pii" }, { tags: [] }, 'field `tags` is [], expected it to contain "pii"'],
      [{ op: "exists", field: "x" }, {}, "field `x` is missing"],
      [{ op: "not_exists", field: "x" }, { x: 1 }, "field `x` is 1, expected it to be absent"],
      [
        { op: "not", arg: { op: "equal", field: "role", value: "guest" } },
        { role: "guest" },
        'expected not `role` == "guest", but it held: field `role` is "guest" (== "guest")',
      ],
      [
        { op: "and", args: [{ op: "exists", field: "a" }, { op: "less_than", field: "a", value: 3 }] },
        { a: 5 },
        "field `a` is 5, expected < 3",
      ],
      [
        { op: "or", args: [{ op: "equal", field: "a", value: 1 }, { op: "equal", field: "b", value: 2 }] },
        { a: 0, b: 0 },
        "none held: field `a` is 0, expected 1; field `b` is 0, expected 2",
      ],
    ];
    for (const [expression, context, reason] of cases) {
      const result = evaluateRule(compileRule(rule({ expression })), context);
      assert.equal(result.passed, false, JSON.stringify(expression));
      assert.equal(result.reason, reason);
    }
  });

  test("long values are cut in reasons", () => {
    const result = evaluateRule(compileRule(rule({ expression: { op: "equal", field: "s", value: "x" } })), { s: "y".repeat(10_000) });
    assert.ok((result.reason ?? "").length < 200, result.reason);
  });

  test("missing field × on_missing", () => {
    const expression = { op: "greater_than_or_equal", field: "user.age", value: 18 };
    const violation = evaluateRule(compileRule(rule({ expression })), { user: {} });
    assert.deepEqual(violation, { rule_id: "r1", name: "rule one", passed: false, reason: "field `user.age` is missing" });

    const explicitViolation = evaluateRule(compileRule(rule({ expression, on_missing: "violation" })), {});
    assert.equal(explicitViolation.passed, false);
    assert.equal(explicitViolation.error, undefined);

    const pass = evaluateRule(compileRule(rule({ expression, on_missing: "pass" })), {});
    assert.deepEqual(pass, { rule_id: "r1", name: "rule one", passed: true });

    const error = evaluateRule(compileRule(rule({ expression, on_missing: "error" })), {});
    assert.deepEqual(error, {
      rule_id: "r1", name: "rule one", passed: false, error: true, reason: "field `user.age` is missing (on_missing: error)",
    });

    // on_missing does not touch present fields.
    assert.equal(evaluateRule(compileRule(rule({ expression, on_missing: "pass" })), { user: { age: 3 } }).passed, false);
  });

  test("exists / not_exists never trigger on_missing", () => {
    const exists = compileRule(rule({ expression: { op: "exists", field: "a" }, on_missing: "pass" }));
    assert.equal(evaluateRule(exists, {}).passed, false);
    const notExists = compileRule(rule({ expression: { op: "not_exists", field: "a" }, on_missing: "error" }));
    assert.deepEqual(evaluateRule(notExists, {}), { rule_id: "r1", name: "rule one", passed: true });
  });

  test("on_missing applies to a missing field inside not", () => {
    const negated = { op: "not", arg: { op: "equal", field: "role", value: "guest" } };
    assert.equal(evaluateRule(compileRule(rule({ expression: negated })), {}).passed, false);
    assert.equal(evaluateRule(compileRule(rule({ expression: negated, on_missing: "pass" })), {}).passed, true);
  });

  test("type errors fail the rule with error: true whatever on_missing says", () => {
    const result = evaluateRule(compileRule(rule({ expression: { op: "less_than", field: "n", value: 5 }, on_missing: "pass" })), { n: "3" });
    assert.equal(result.passed, false);
    assert.equal(result.error, true);
  });
});

describe("CompiledPolicyCache", () => {
  const rules = [rule({ expression: { op: "exists", field: "a" } })];

  test("compiles once per (id, version)", () => {
    const cache = new CompiledPolicyCache(4);
    const first = cache.get("p", 1, rules);
    assert.equal(cache.get("p", 1, rules), first);
    assert.notEqual(cache.get("p", 2, rules), first);
    assert.equal(cache.size, 2);
    assert.equal(first.id, "p");
    assert.equal(first.version, 1);
    assert.equal(first.rules.length, 1);
  });

  test("is bounded and evicts the least recently used entry", () => {
    const cache = new CompiledPolicyCache(2);
    const a = cache.get("a", 1, rules);
    cache.get("b", 1, rules);
    assert.equal(cache.get("a", 1, rules), a); // a is now the most recent
    cache.get("c", 1, rules); // evicts b
    assert.equal(cache.size, 2);
    assert.equal(cache.get("a", 1, rules), a);
    const b = cache.get("b", 1, rules);
    assert.equal(cache.get("b", 1, rules), b);
    assert.equal(cache.size, 2);
    assert.throws(() => new CompiledPolicyCache(0), RangeError);
  });

  test("compiles exemption conditions as a conjunction; none always holds", () => {
    const cache = new CompiledPolicyCache();
    const conditions = cache.getConditions("x", 1, [
      { field: "region", operator: "in", value: ["eu"] },
      { field: "system", operator: "starts_with", value: "legacy-" },
    ]);
    assert.equal(cache.getConditions("x", 1, []), conditions, "cached by (id, version)");
    assert.equal(conditions.test({ region: "eu", system: "legacy-crm" }), TRUE);
    assert.equal(conditions.test({ region: "us", system: "legacy-crm" }), FALSE);
    assert.equal(conditions.test({ region: "eu" }), MISSING);
    assert.equal(compileConditions([]).test({}), TRUE);
  });
});
