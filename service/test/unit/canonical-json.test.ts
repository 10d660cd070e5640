// One canonical JSON (support/canonical-json.ts) replaced two: the command path's (app/commands.ts, whose output the
// payload hashes stored by 0.9.x in events and idempotency records depend on) and the audit's one-pass rewrite
// (adapters/nats/audit.ts, the context hash). Both earlier implementations are kept here, verbatim, as references:
// on every value JSON.parse can return (the only input either caller hashes) the merged one must give both their
// bytes; the stored hashes of 0.9.x payloads are pinned.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { canonicalJson } from "../../src/support/canonical-json.js";
import { contextHash } from "../../src/adapters/nats/audit.js";

/** app/commands.ts before the merge, verbatim: the payload hash of 0.9.x. */
function commandPathCanonical(value: unknown): string {
  const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
  if (Array.isArray(value)) return `[${value.map(commandPathCanonical).join(",")}]`;
  if (isPlainObject(value)) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${commandPathCanonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** The audit's implementation before its one-pass rewrite: the sorted JSON.stringify, undefined members skipped. */
function sortedStringify(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map((v) => sortedStringify(v)).join(",")}]`;
  const parts: string[] = [];
  for (const key of Object.keys(value as Record<string, unknown>).sort()) {
    const v = (value as Record<string, unknown>)[key];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(key)}:${sortedStringify(v)}`);
  }
  return `{${parts.join(",")}}`;
}

function generator(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

/** A deterministic pseudo-random JS value (objects with shuffled keys, unicode, numbers, nesting, undefined). */
function randomValue(next: () => number, depth: number): unknown {
  const pick = Math.floor(next() * (depth > 3 ? 6 : 8));
  switch (pick) {
    case 0: return null;
    case 1: return next() < 0.5;
    case 2: return Math.floor(next() * 2e6) - 1e6 + (next() < 0.3 ? 0.25 : 0);
    case 3: return ["", "a", "é\u0000\"\\", "10", "Z", "ünï", "\ud83d\ude00"][Math.floor(next() * 7)];
    case 4: return undefined;
    case 5: return "x".repeat(Math.floor(next() * 5));
    case 6: return Array.from({ length: Math.floor(next() * 4) }, () => randomValue(next, depth + 1));
    default: {
      const out: Record<string, unknown> = {};
      const keys = ["b", "a", "10", "9", "é", "A", "_", "aa", "", "constructor"];
      for (let i = 0, n = Math.floor(next() * 6); i < n; i++) out[keys[Math.floor(next() * keys.length)]!] = randomValue(next, depth + 1);
      return out;
    }
  }
}

const NUMBER_TEXTS = ["0", "-0", "1", "-1", "0.1", "1e21", "1E-7", "123456789012345678901234567890", "2.5e+3", "-0.0", "9007199254740993", "1.7976931348623157e308"];
const STRING_TEXTS = ['""', '"a"', '"\\u00e9"', '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"', '"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\u0000"', '"10"', '"\u2028"'];
const KEY_TEXTS = ['""', '"a"', '"b"', '"A"', '"10"', '"9"', '"01"', '"-1"', '"4294967295"', '"4294967294"', '"__proto__"', '"constructor"', '"\\u00e9"', '"\\ud800"', '"é"', '"aa"', '"\\"q"', '"a\\\\b"', '"\\n"', '"\\u0000"'];

/** A deterministic pseudo-random JSON text, as a client could send it: what JSON.parse hands both callers. */
function randomJsonText(next: () => number, depth: number): string {
  const any = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!;
  const pick = Math.floor(next() * (depth > 4 ? 5 : 7));
  switch (pick) {
    case 0: return any(["null", "true", "false"]);
    case 1: case 2: return any(NUMBER_TEXTS);
    case 3: case 4: return any(STRING_TEXTS);
    case 5: return `[${Array.from({ length: Math.floor(next() * 4) }, () => randomJsonText(next, depth + 1)).join(" , ")}]`;
    default: {
      // Repeated keys too: JSON.parse keeps the last, in the place of the first.
      const members = Array.from({ length: Math.floor(next() * 7) }, () => `${any(KEY_TEXTS)}:${randomJsonText(next, depth + 1)}`);
      return `{${members.join(",")}}`;
    }
  }
}

describe("canonical JSON", () => {
  test("on 20,000 random JSON texts, parsed: the bytes of both implementations it replaced", () => {
    const next = generator(20261207);
    for (let i = 0; i < 20_000; i++) {
      const text = randomJsonText(next, 0);
      const value: unknown = JSON.parse(text);
      const merged = canonicalJson(value);
      assert.equal(merged, commandPathCanonical(value), text);
      assert.equal(merged, sortedStringify(value), text);
      // The same value, up to the sign of a zero (JSON writes -0 as 0).
      assert.deepEqual(JSON.parse(merged), JSON.parse(JSON.stringify(value)), `still the same value: ${text}`);
    }
  });

  test("on 5,000 random values with undefined members: the audit's earlier output; through JSON, the command path's", () => {
    const next = generator(42);
    for (let i = 0; i < 5000; i++) {
      const value = randomValue(next, 0);
      assert.equal(canonicalJson(value), sortedStringify(value), JSON.stringify(value));
      const parsed: unknown = JSON.parse(JSON.stringify(value) ?? "null");
      assert.equal(canonicalJson(parsed), commandPathCanonical(parsed), JSON.stringify(value));
    }
  });

  test("the payload hashes 0.9.x stored stay the same (Policy-Command-Sha256, idempotency records)", () => {
    const sha256 = (text: string) => createHash("sha256").update(canonicalJson(JSON.parse(text))).digest("hex");
    // Computed with the command path's implementation of 0.9.x (commandPathCanonical above).
    assert.equal(
      sha256('{"policy_id":"550e8400-e29b-41d4-a716-446655440000","updated_by":"ops","name":"renamed","command_id":"7d1c1f7e-3b1a-4c4e-9a43-0d3c5b2b9f10"}'),
      "a3476e3fefea97fb42ceb2d7d531ade21ed40d3940fce2ac175906376a70dad3",
    );
    assert.equal(
      sha256('{"z":{"10":1,"9":[true,null,-0,1e21,0.1],"é":"\\u00e9\\ud800"},"a":"\\"quoted\\"","":[],"__proto__":{"x":1}}'),
      "68f16cf597cc3a6a77d6aec8c042cc850bf6250012e3e4a4f60efc622c72b57b",
    );
  });

  test("where the two earlier implementations differed (never on parsed JSON): undefined members and array holes", () => {
    // The command path wrote an undefined member as null and dropped holes from the text; no parsed payload has either.
    assert.equal(canonicalJson({ b: undefined, a: 1 }), '{"a":1}');
    assert.equal(commandPathCanonical({ b: undefined, a: 1 }), '{"a":1,"b":null}');
    // eslint-disable-next-line no-sparse-arrays
    const holey = [1, , 2];
    assert.equal(canonicalJson(holey), "[1,null,2]");
    assert.equal(commandPathCanonical(holey), "[1,,2]");
  });

  test("key order does not matter; the context hash is sha256 hex of the canonical JSON", () => {
    const a = { user: { name: "ann", mfa: false }, action: "read", list: [{ z: 1, y: [2, { b: 1, a: 2 }] }] };
    const b = { list: [{ y: [2, { a: 2, b: 1 }], z: 1 }], action: "read", user: { mfa: false, name: "ann" } };
    assert.equal(canonicalJson(a), '{"action":"read","list":[{"y":[2,{"a":2,"b":1}],"z":1}],"user":{"mfa":false,"name":"ann"}}');
    assert.equal(contextHash(a), contextHash(b));
    assert.equal(contextHash(a), createHash("sha256").update(canonicalJson(a)).digest("hex"));
    assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: "1" }));
  });
});
