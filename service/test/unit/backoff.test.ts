// Backoff: capped, jittered within bounds; UUIDv7 shape. (Canonical JSON: canonical-json.test.ts.)
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { backoffDelay } from "../../src/support/backoff.js";
import { uuidv7 } from "../../src/support/ids.js";

test("backoff doubles up to the cap", () => {
  const noJitter = { initialMs: 100, maxMs: 1000, jitter: 0 };
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, noJitter)), [100, 200, 400, 800, 1000, 1000]);
});

test("full jitter stays within [0, cap] and spreads", () => {
  const opts = { initialMs: 10, maxMs: 250 };
  const delays = Array.from({ length: 500 }, (_, i) => backoffDelay(i % 8, opts));
  assert.ok(delays.every((d) => d >= 0 && d <= 250));
  assert.ok(new Set(delays).size > 20, "jittered");
  assert.equal(backoffDelay(3, opts, () => 0), 0);
  assert.equal(backoffDelay(3, opts, () => 1), 80);
});

test("uuidv7: version 7, RFC variant, time-ordered", () => {
  const a = uuidv7(1_700_000_000_000);
  const b = uuidv7(1_700_000_000_001);
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(a.slice(0, 13) < b.slice(0, 13));
  assert.equal(parseInt(a.replace(/-/g, "").slice(0, 12), 16), 1_700_000_000_000);
  // The random part differs from id to id, also within one millisecond.
  const many = Array.from({ length: 10_000 }, () => uuidv7(1_700_000_000_000));
  assert.equal(new Set(many).size, many.length);
  assert.ok(many.every((id) => /^018bcfe5-6800-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)));
  const now = Date.now();
  assert.ok(Math.abs(parseInt(uuidv7().replace(/-/g, "").slice(0, 12), 16) - now) < 60_000, "defaults to the current time");
});
