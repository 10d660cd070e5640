// The read-model checkpoint's file format (support/checkpoint-file.ts): a file is trusted only when it is complete,
// its checksum matches, and it was written by this format and this build; anything else is a coded rejection.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CHECKPOINT_FORMAT,
  decodeCheckpoint,
  encodeCheckpoint,
  writeCheckpointFile,
  type CheckpointBody,
} from "../../src/support/checkpoint-file.js";

const HEADER = { build: "1.2.3", stream: "POLICY_EVENTS", streamCreated: "2026-12-02T10:00:00.000Z", firstSeq: 1, commandWindowMs: 1_200_000, seq: 42, eventId: "e-42" };
const BODY: CheckpointBody = {
  aggregates: [["p1", 40, { aggregate_type: "Policy", aggregate_id: "p1", name: "ünïcode ✓" }], ["x1", 42, { a: 1 }]],
  commands: [[1_700_000_000_000, "c1", 40], [1_700_000_000_500, "c2", 42]],
};

test("encode then decode gives back the header and body", () => {
  const result = decodeCheckpoint(encodeCheckpoint(HEADER, BODY), "1.2.3");
  assert.ok(result.ok, JSON.stringify(result));
  assert.equal(result.checkpoint.header.format, CHECKPOINT_FORMAT);
  assert.equal(result.checkpoint.header.seq, 42);
  assert.equal(result.checkpoint.header.eventId, "e-42");
  assert.equal(result.checkpoint.header.streamCreated, HEADER.streamCreated);
  assert.deepEqual(result.checkpoint.body, BODY);
});

test("a changed byte in the body is a checksum mismatch", () => {
  const text = encodeCheckpoint(HEADER, BODY).replace('"c1"', '"c9"');
  const result = decodeCheckpoint(text, "1.2.3");
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.code, "checkpoint_checksum_mismatch");
});

test("a truncated file is rejected at every length", () => {
  const text = encodeCheckpoint(HEADER, BODY);
  for (let length = 0; length < text.length; length++) {
    const result = decodeCheckpoint(text.slice(0, length), "1.2.3");
    assert.equal(result.ok, false, `accepted at length ${length}`);
  }
});

test("another build's checkpoint is rejected (its states may have another shape)", () => {
  const result = decodeCheckpoint(encodeCheckpoint(HEADER, BODY), "1.2.4");
  assert.equal(!result.ok && result.code, "checkpoint_build_mismatch");
});

test("another format is rejected", () => {
  const text = encodeCheckpoint(HEADER, BODY).replace(CHECKPOINT_FORMAT, "policy-service-read-model/0");
  const result = decodeCheckpoint(text, "1.2.3");
  assert.equal(!result.ok && result.code, "checkpoint_format_mismatch");
});

test("garbage and a header with missing fields are rejected, never thrown", () => {
  for (const text of ["", "\n", "not json\n{}\n", "{}\n{}\n", "null\n{}\n"]) {
    assert.equal(decodeCheckpoint(text, "1.2.3").ok, false, JSON.stringify(text));
  }
  const noSeq = encodeCheckpoint({ ...HEADER, seq: 0 }, BODY);
  assert.equal(decodeCheckpoint(noSeq, "1.2.3").ok, false);
});

test("the file is written atomically with mode 0600 and no temporary file is left", async () => {
  const dir = mkdtempSync(join(tmpdir(), "checkpoint-file-"));
  try {
    const path = join(dir, "read-model.checkpoint");
    writeFileSync(path, "old", { mode: 0o644 });
    const text = encodeCheckpoint(HEADER, BODY);
    await writeCheckpointFile(path, text);
    assert.equal(readFileSync(path, "utf8"), text);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir), ["read-model.checkpoint"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The checkpoint stores states as JSON: every state of every aggregate type must come back deep-equal (strict: no
// undefined-valued field, no Date, Map or Set lost), and evolve must go on from it exactly as from the original.
test("every domain state survives the checkpoint's JSON round trip, and evolve continues identically", async () => {
  const { evolve } = await import("../../src/domain/index.js");
  const { everyAggregateTypeLog } = await import("./domainHarness.js");
  const log = everyAggregateTypeLog();
  let checked = 0;
  for (const events of log.streams.values()) {
    for (let cut = 1; cut <= events.length; cut++) {
      let state: ReturnType<typeof evolve> | undefined;
      for (const event of events.slice(0, cut)) state = evolve(state, event);
      const text = encodeCheckpoint(HEADER, { aggregates: [["x", cut, state]], commands: [] });
      const decoded = decodeCheckpoint(text, HEADER.build);
      assert.ok(decoded.ok);
      let loaded = decoded.checkpoint.body.aggregates[0]![2] as typeof state;
      assert.deepStrictEqual(loaded, state);
      for (const event of events.slice(cut)) {
        state = evolve(state, event);
        loaded = evolve(loaded, event);
        assert.deepStrictEqual(loaded, state, `after ${event.event_type}`);
      }
      checked++;
    }
  }
  assert.ok(checked >= 10, `${checked} cuts`);
});

test("the sliced encoding is byte for byte the one-piece encoding, at every slice size", async () => {
  const { encodeCheckpointInSlices } = await import("../../src/support/checkpoint-file.js");
  const many: CheckpointBody = { aggregates: [], commands: BODY.commands };
  for (let i = 0; i < 25; i++) many.aggregates.push([`id-${i}`, i + 1, { n: i, s: "ü\n\"" }]);
  const whole = encodeCheckpoint(HEADER, many);
  for (const size of [1, 2, 7, 25, 100]) {
    const { parts } = await encodeCheckpointInSlices(HEADER, many, size);
    assert.equal(parts.join(""), whole, `slice size ${size}`);
  }
  const { parts } = await encodeCheckpointInSlices(HEADER, { aggregates: [], commands: [] });
  assert.equal(parts.join(""), encodeCheckpoint(HEADER, { aggregates: [], commands: [] }));
});
