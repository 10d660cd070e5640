// The one mapping of zod issues to plain words (issue 13 item 9): each kind of issue, the field named in front,
// a schema's own message kept, and the command/query parsers using it.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { z } from "zod";
import { describeIssues, PLAIN, summarizeIssues } from "../../src/domain/validationMessages.js";
import { parseCommand } from "../../src/domain/index.js";
import { parsePlain, validationError } from "../../src/app/queries.js";

/** The plain messages a schema gives for a value. */
function messages(schema: z.ZodType, value: unknown): string[] {
  const result = schema.safeParse(value, PLAIN);
  assert.equal(result.success, false, `${JSON.stringify(value)} should be refused`);
  return describeIssues(result.error!).map((d) => d.message);
}

const ZOD_WORDING = /Invalid input|expected (string|record|object|number|array)|received|Too (big|small)|Unrecognized key/i;

describe("plain-language validation messages", () => {
  const Shape = z.strictObject({
    name: z.string().min(1).max(5),
    level: z.enum(["Low", "High"]),
    count: z.number().int().min(1).max(10),
    ratio: z.number().gt(0).lt(1).optional(),
    items: z.array(z.string()).min(1).max(2).optional(),
    context: z.record(z.string(), z.unknown()).optional(),
    kind: z.literal("fixed").optional(),
    code: z.string().regex(/^[a-z]+$/).optional(),
    step: z.number().multipleOf(5).optional(),
    flag: z.boolean().optional(),
  });
  const valid = { name: "abc", level: "Low", count: 3 };

  test("a missing field is required", () => {
    assert.deepEqual(messages(Shape, { level: "Low", count: 3 }), ["name is required"]);
    assert.deepEqual(messages(Shape, { name: "a", count: 3 }), ["level is required"]);
  });
  test("a wrong type says what it must be and what it is", () => {
    assert.deepEqual(messages(Shape, { ...valid, name: 5 }), ["name must be a string, not the number 5"]);
    assert.deepEqual(messages(Shape, { ...valid, name: null }), ["name must be a string, not null"]);
    assert.deepEqual(messages(Shape, { ...valid, count: "3" }), ["count must be a number, not a string"]);
    assert.deepEqual(messages(Shape, { ...valid, count: 2.5 }), ["count must be a whole number, not 2.5"]);
    assert.deepEqual(messages(Shape, { ...valid, items: "a" }), ["items must be an array, not a string"]);
    assert.deepEqual(messages(Shape, { ...valid, context: [] }), ["context must be a JSON object, not an array"]);
    assert.deepEqual(messages(Shape, { ...valid, flag: "yes" }), ["flag must be true or false, not a string"]);
    assert.deepEqual(messages(Shape, "text"), ["payload must be a JSON object, not a string"]);
  });
  test("an enum or literal lists what it accepts", () => {
    assert.deepEqual(messages(Shape, { ...valid, level: "Medium" }), ["level must be one of Low, High"]);
    assert.deepEqual(messages(Shape, { ...valid, kind: "other" }), ["kind must be fixed"]);
  });
  test("bounds: characters, items, numbers (inclusive and exclusive)", () => {
    assert.deepEqual(messages(Shape, { ...valid, name: "" }), ["name must not be empty"]);
    assert.deepEqual(messages(Shape, { ...valid, name: "abcdef" }), ["name must be at most 5 characters"]);
    assert.deepEqual(messages(Shape, { ...valid, items: [] }), ["items must not be empty"]);
    assert.deepEqual(messages(Shape, { ...valid, items: ["a", "b", "c"] }), ["items must have at most 2 items"]);
    assert.deepEqual(messages(Shape, { ...valid, count: 0 }), ["count must be at least 1"]);
    assert.deepEqual(messages(Shape, { ...valid, count: 11 }), ["count must be at most 10"]);
    assert.deepEqual(messages(Shape, { ...valid, ratio: 0 }), ["ratio must be greater than 0"]);
    assert.deepEqual(messages(Shape, { ...valid, ratio: 1 }), ["ratio must be less than 1"]);
    assert.deepEqual(messages(z.string().min(3), "ab"), ["payload must be at least 3 characters"]);
    assert.deepEqual(messages(z.array(z.number()).min(2), [1]), ["payload must have at least 2 items"]);
  });
  test("formats, multiples, unknown fields", () => {
    assert.deepEqual(messages(Shape, { ...valid, code: "A1" }), ["code must match /^[a-z]+$/"]);
    assert.deepEqual(messages(Shape, { ...valid, step: 7 }), ["step must be a multiple of 5"]);
    assert.deepEqual(messages(Shape, { ...valid, extra: 1 }), [
      "payload has an unknown field extra; the fields are: name, level, count, ratio, items, context, kind, code, step, flag",
    ]);
    assert.deepEqual(messages(Shape, { ...valid, a: 1, b: 2 })[0]?.startsWith("payload has unknown fields a, b;"), true);
    assert.deepEqual(messages(z.object({ scope: z.partialRecord(z.enum(["User", "Resource"]), z.string()) }), { scope: { Nope: "x" } }), [
      "scope has an unknown field Nope; the fields are: User, Resource",
    ]);
    assert.deepEqual(messages(z.iso.datetime(), "yesterday"), ["payload must be an RFC 3339 date-time with offset, e.g. 2025-11-08T10:00:00Z"]);
    assert.deepEqual(messages(z.uuid(), "x"), ["payload must be a UUID (8-4-4-4-12 hex digits)"]);
  });
  test("unions: a discriminated union lists its choices, a plain one says no form matched", () => {
    const Op = z.discriminatedUnion("op", [z.object({ op: z.literal("a") }), z.object({ op: z.literal("b") })]);
    assert.deepEqual(messages(z.object({ e: Op }), { e: { op: "c" } }), ["e.op must be one of a, b"]);
    assert.deepEqual(messages(z.object({ u: z.union([z.string(), z.number()]) }), { u: true }), ["u does not match any of the accepted forms"]);
  });
  test("nested paths are named in full; a schema's own message wins, predicate or sentence", () => {
    const Nested = z.object({ rules: z.array(z.object({ id: z.string() })) });
    assert.deepEqual(messages(Nested, { rules: [{ id: "x" }, {}] }), ["rules.1.id is required"]);
    assert.deepEqual(messages(z.object({ id: z.string().regex(/^x$/, "must be x") }), { id: "y" }), ["id must be x"]);
    const Sentence = z.object({ e: z.string().refine(() => false, "expression nests too deep") });
    assert.deepEqual(messages(Sentence, { e: "x" }), ["e: expression nests too deep"]);
    assert.deepEqual(messages(z.string().refine(() => false), "x"), ["payload is not valid"]);
  });
  test("summaries: the first issue and how many more", () => {
    assert.equal(summarizeIssues([]), "invalid payload");
    assert.equal(summarizeIssues([{ path: "a", message: "a is required" }]), "a is required");
    assert.equal(summarizeIssues([{ path: "a", message: "a is required" }, { path: "b", message: "b is required" }]), "a is required (and 1 more)");
  });

  test("commands use it: the issue's reported symptoms read as plain words", () => {
    const missing = parseCommand("create", { policy_id: "00000000-0000-4000-8000-000000000001", name: "n", policy_type: "IT", enforcement: "Advisory", scope: "Team" });
    assert.ok(!missing.ok);
    assert.equal(missing.error.message, "create: description is required");
    assert.deepEqual(missing.error.details, [{ path: "description", message: "description is required" }]);
    const all = parseCommand("create", { policy_id: "00000000-0000-4000-8000-000000000001", name: 1, description: "", policy_type: "X", enforcement: "Y", scope: "Z" });
    assert.ok(!all.ok);
    for (const detail of all.error.details as { message: string }[]) assert.doesNotMatch(detail.message, ZOD_WORDING);
  });
  test("queries and evaluation use it: a missing context is required, not \"expected record\"", () => {
    const Context = z.strictObject({ context: z.record(z.string(), z.unknown()) });
    const parsed = parsePlain(Context, {});
    assert.equal(parsed.success, false);
    const reply = validationError(parsed.error!);
    assert.equal(reply.error.code, "validation_failed");
    assert.equal(reply.error.message, "context is required");
    assert.deepEqual(reply.error.details, [{ path: "context", message: "context is required" }]);
  });
});
