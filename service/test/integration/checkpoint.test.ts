// The read-model checkpoint (READ_MODEL_CHECKPOINT, docs/operations.md): written at a graceful stop and every
// READ_MODEL_CHECKPOINT_INTERVAL_S while running, used at the next start only when it is this stream's, intact, this
// build's and its last event is still the one in the stream; otherwise a coded reason and a full replay. Either way
// the read side equals a full replay's, and exactly-once and exemption expiry hold across the restart (a crash too).
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { sleep, startService, type ServiceProcess, type ServiceLogLine } from "../helpers/nats.js";
import { checkpointNode } from "../helpers/checkpoint.js";
import { call, callOk, policyBody, readAllEvents, type Json } from "../helpers/client.js";

const STREAM = "POLICY_EVENTS";
const node = checkpointNode("checkpoint-it-");
const run = node.run;

const withCheckpoint = { READ_MODEL_CHECKPOINT: "" };
const written = (lines: ServiceLogLine[]) => lines.filter((l) => l.msg === "read-model checkpoint written");
const caughtUp = (lines: ServiceLogLine[]) => lines.find((l) => l.msg === "projection caught up");
const notUsed = (lines: ServiceLogLine[]) => lines.find((l) => l.msg === "read-model checkpoint not used: full replay");
const used = (lines: ServiceLogLine[]) => lines.find((l) => l.msg === "read-model checkpoint used: replay from the next sequence");

/** Every aggregate as the read side answers it (get by id), in id order. */
async function readSide(ids: string[]): Promise<Json[]> {
  const out: Json[] = [];
  for (const id of [...ids].sort()) out.push(await callOk(node.nc, "policy.queries.get", { id }));
  return out;
}

async function lastSeq(): Promise<number> {
  const jsm = await jetstreamManager(node.nc);
  return (await jsm.streams.info(STREAM)).state.last_seq;
}

function headerSeq(file: string): number {
  return (JSON.parse(readFileSync(file, "utf8").split("\n")[0]!) as Json).seq as number;
}

describe("read-model checkpoint", () => {
  const ids: string[] = [];
  let storedReply: Json;
  let storedCommand: Json;

  test("written at a graceful stop (mode 0600), used at the next start: replay starts after it, same read side", async () => {
    withCheckpoint.READ_MODEL_CHECKPOINT = node.path;
    const first = await run(withCheckpoint, async () => {
      for (let i = 0; i < 30; i++) ids.push((await callOk(node.nc, "create", policyBody({ name: `checkpointed ${i}` }))).aggregate_id);
      storedCommand = { policy_id: ids[0], updated_by: "ops", name: "renamed once", command_id: randomUUID() };
      storedReply = await callOk(node.nc, "update", storedCommand);
      return readSide(ids);
    });
    assert.ok(first.lines.some((l) => l.msg === "read-model checkpoint written"), "written at the stop");
    assert.equal(statSync(node.path).mode & 0o777, 0o600);
    const seqAtStop = await lastSeq();
    const header = JSON.parse(readFileSync(node.path, "utf8").split("\n")[0]!) as Json;
    assert.equal(header.seq, seqAtStop);

    const second = await run(withCheckpoint, async () => readSide(ids));
    assert.equal(used(second.lines)?.seq, seqAtStop, `used at the recorded sequence (${JSON.stringify(notUsed(second.lines))})`);
    assert.equal(caughtUp(second.lines)?.seq, seqAtStop, "nothing replayed before it");
    assert.deepEqual(second.result, first.result);

    // A full replay (the checkpoint off) gives the same read side.
    const full = await run({}, async () => readSide(ids));
    assert.equal(used(full.lines), undefined);
    assert.deepEqual(full.result, first.result);
  });

  test("exactly once across a restart with a checkpoint: a retry of a command stored before it gets the original reply", async () => {
    const { result } = await run(withCheckpoint, async (service) => {
      assert.ok(used(service.lines), "the checkpoint was used");
      return call(node.nc, "update", storedCommand);
    });
    assert.equal(result.reply.ok, true, JSON.stringify(result.reply));
    assert.equal(result.reply.version, storedReply.version);
    assert.deepEqual(result.reply.events, storedReply.events);
    const stored = (await readAllEvents(node.nc, STREAM)).filter((e) => e.envelope.command_id === storedCommand.command_id);
    assert.equal(stored.length, 1, "stored once");
  });

  test("stale (the stream grew while it was off): used, and the rest is replayed", async () => {
    const before = JSON.parse(readFileSync(node.path, "utf8").split("\n")[0]!) as Json;
    // Another instance without a checkpoint appends more.
    await run({}, async () => {
      for (let i = 0; i < 5; i++) ids.push((await callOk(node.nc, "create", policyBody({ name: `later ${i}` }))).aggregate_id);
    });
    const seqNow = await lastSeq();
    assert.ok(seqNow > before.seq);
    const resumed = await run(withCheckpoint, async () => readSide(ids));
    assert.equal(used(resumed.lines)?.seq, before.seq);
    assert.equal(caughtUp(resumed.lines)?.seq, seqNow);
    const full = await run({}, async () => readSide(ids));
    assert.deepEqual(resumed.result, full.result);
  });

  async function rejectedWith(code: string, mutate: (text: string) => string): Promise<void> {
    const original = readFileSync(node.path, "utf8");
    writeFileSync(node.path, mutate(original), { mode: 0o600 });
    const seq = await lastSeq();
    const { result, lines } = await run(withCheckpoint, async () => readSide(ids));
    assert.equal(notUsed(lines)?.code, code, JSON.stringify(notUsed(lines)));
    assert.equal(used(lines), undefined);
    assert.equal(caughtUp(lines)?.seq, seq, "full replay");
    const full = await run({}, async () => readSide(ids));
    assert.deepEqual(result, full.result);
  }

  test("corrupt (a changed byte in the body): checksum mismatch, full replay", async () => {
    await rejectedWith("checkpoint_checksum_mismatch", (text) => text.replace("checkpointed 1", "checkpointed 9"));
  });

  test("truncated: full replay", async () => {
    await rejectedWith("checkpoint_truncated", (text) => text.slice(0, Math.floor(text.length / 2)));
  });

  test("another build's: full replay", async () => {
    await rejectedWith("checkpoint_build_mismatch", (text) => text.replace(/"build":"[^"]*"/, '"build":"0.0.1-older"'));
  });

  test("another format version: full replay", async () => {
    await rejectedWith("checkpoint_format_mismatch", (text) => text.replace(/"format":"[^"]*"/, '"format":"policy-service-read-model/0"'));
  });

  test("another stream name: full replay", async () => {
    await rejectedWith("checkpoint_other_stream", (text) => text.replace(/"stream":"[^"]*"/, '"stream":"OTHER_EVENTS"'));
  });

  test("the event at its sequence differs: full replay", async () => {
    await rejectedWith("checkpoint_event_differs", (text) => text.replace(/"eventId":"[^"]*"/, `"eventId":"${randomUUID()}"`));
  });

  test("the event at its sequence is gone (a sequence past the stream): full replay", async () => {
    const seq = await lastSeq();
    // The checksum covers the body only, so a header naming a later sequence passes every other check.
    await rejectedWith("checkpoint_event_gone", (text) => text.replace(/"seq":\d+/, `"seq":${seq + 1000}`));
  });

  test("a command-id window longer than the checkpoint's: full replay (its index may lack entries)", async () => {
    await rejectedWith("checkpoint_window_shorter", (text) => text.replace(/"commandWindowMs":\d+/, '"commandWindowMs":1000'));
  });

  test("events removed from the stream's start since it was written (its first sequence now higher): full replay", async () => {
    // The event stream denies purges and deletes (a real purge is refused: checked here), so only its max_age (365
    // days) removes events; the checkpoint standing for a stream that started earlier is the header's firstSeq.
    const jsm = await jetstreamManager(node.nc);
    await assert.rejects(jsm.streams.purge(STREAM, { seq: 2 }), /purge not permitted/);
    const firstSeq = (await jsm.streams.info(STREAM)).state.first_seq;
    await rejectedWith("checkpoint_stream_trimmed", (text) => text.replace(/"firstSeq":\d+/, `"firstSeq":${firstSeq - 1}`));
  });

  test("the stream recreated under the same name: full replay, never the old state", async () => {
    const jsm = await jetstreamManager(node.nc);
    await run(withCheckpoint, async () => undefined); // a fresh, valid checkpoint
    await jsm.streams.delete(STREAM);
    const { lines, result } = await run(withCheckpoint, async () => call(node.nc, "policy.queries.get", { id: ids[0] }));
    assert.equal(notUsed(lines)?.code, "checkpoint_stream_recreated", JSON.stringify(notUsed(lines)));
    assert.equal(result.reply.ok, false, "the old stream's policy is not in the new read side");
    ids.length = 0;
  });

  test("an exemption loaded from a checkpoint still expires", async () => {
    const expiresInMs = 12_000;
    const { result: exemption } = await run(withCheckpoint, async () => {
      const policyId = (await callOk(node.nc, "create", policyBody({ name: "expiry across a checkpoint" }))).aggregate_id;
      await callOk(node.nc, "policy.commands.approve", { policy_id: policyId, approved_by: "ciso" });
      await callOk(node.nc, "policy.commands.activate", { policy_id: policyId, activated_by: "ops" });
      const exemptionId = randomUUID();
      const expiresAt = Date.now() + expiresInMs;
      await callOk(node.nc, "policy.commands.grant_exemption", {
        exemption_id: exemptionId, policy_id: policyId, entity_id: "team-a", reason: "across a restart",
        granted_by: "tester", expires_at: new Date(expiresAt).toISOString(),
      });
      return { exemptionId, expiresAt };
    });
    await run(withCheckpoint, async (service) => {
      assert.ok(used(service.lines), "the checkpoint was used");
      const deadline = exemption.expiresAt + 10_000;
      while (Date.now() < deadline) {
        const events = (await readAllEvents(node.nc, STREAM)).filter((e) => e.envelope.aggregate_id === exemption.exemptionId);
        if (events.some((e) => e.envelope.event_type === "exemption_expired")) return;
        await sleep(250);
      }
      assert.fail("the exemption did not expire within 10 s of expires_at");
    });
  });

  test("written every READ_MODEL_CHECKPOINT_INTERVAL_S while running; after a SIGKILL the next start uses the last one and replays only the tail", { timeout: 120_000 }, async () => {
    const intervalS = 2;
    // A file of its own, absent at the start: whatever is in it was written while the instance ran (it never stops gracefully).
    const periodicPath = join(node.dir, "periodic.checkpoint");
    rmSync(periodicPath, { force: true });
    const env = { READ_MODEL_CHECKPOINT: periodicPath, READ_MODEL_CHECKPOINT_INTERVAL_S: String(intervalS) };
    const periodicIds: string[] = [];
    const create = async (name: string) => { periodicIds.push((await callOk(node.nc, "create", policyBody({ name }))).aggregate_id); };
    /** The first periodic write that covers everything stored so far (the timer writes only when there is something new). */
    const periodicWriteAtLeast = async (service: ServiceProcess, seq: number) =>
      service.waitForLog((l) => l.msg === "read-model checkpoint written" && l.reason === "periodic" && (l.seq as number) >= seq, intervalS * 1000 * 4 + 5000);

    const crashed = startService({ NATS_URL: node.server.url, LOG_LEVEL: "info", AUDIT_ENABLED: "false", ...env });
    let killedAt: { seq: number; checkpointSeq: number; lastPeriodic: ServiceLogLine };
    try {
      await crashed.ready(60_000);
      for (let i = 0; i < 10; i++) await create(`periodic ${i}`);
      const firstWrite = await periodicWriteAtLeast(crashed, await lastSeq());
      assert.equal(headerSeq(periodicPath), firstWrite.seq, "the file holds what the periodic write logged");
      assert.equal(statSync(periodicPath).mode & 0o777, 0o600);

      // More commands: the file is rewritten, its sequence advances.
      for (let i = 0; i < 5; i++) await create(`periodic later ${i}`);
      await callOk(node.nc, "update", { policy_id: periodicIds[0], updated_by: "ops", name: "renamed after the first periodic write", command_id: randomUUID() });
      const secondWrite = await periodicWriteAtLeast(crashed, await lastSeq());
      assert.ok((secondWrite.seq as number) > (firstWrite.seq as number), "the sequence advanced");
      assert.equal(headerSeq(periodicPath), secondWrite.seq);
      const apartMs = Date.parse(secondWrite.time as string) - Date.parse(firstWrite.time as string);
      assert.ok(apartMs >= intervalS * 1000 - 250, `periodic writes ${apartMs} ms apart, the interval is ${intervalS} s`);

      // The tail: stored after the last periodic write, then the process dies at once (well within one interval).
      for (let i = 0; i < 3; i++) await create(`tail ${i}`);
      const seqAtKill = await lastSeq();
      await crashed.kill();
      assert.equal((await crashed.exited()).signal, "SIGKILL");
      const lastPeriodic = written(crashed.lines).at(-1)!;
      killedAt = { seq: seqAtKill, checkpointSeq: headerSeq(periodicPath), lastPeriodic };
    } finally {
      if (crashed.running) await crashed.kill();
    }
    assert.ok(written(crashed.lines).every((l) => l.reason === "periodic"), "no write but the periodic ones");
    assert.equal(killedAt.checkpointSeq, killedAt.lastPeriodic.seq, "the file is the last periodic write");
    assert.ok(killedAt.checkpointSeq < killedAt.seq, `a tail after the checkpoint (checkpoint ${killedAt.checkpointSeq}, stream ${killedAt.seq})`);

    const restarted = await run(env, async () => readSide(periodicIds));
    assert.equal(used(restarted.lines)?.seq, killedAt.checkpointSeq, `the periodic checkpoint was used (${JSON.stringify(notUsed(restarted.lines))})`);
    assert.equal(caughtUp(restarted.lines)?.seq, killedAt.seq);
    assert.equal(caughtUp(restarted.lines)?.replayed, killedAt.seq - killedAt.checkpointSeq, "only the tail replayed");

    const full = await run({}, async () => readSide(periodicIds));
    assert.equal(used(full.lines), undefined);
    const jsm = await jetstreamManager(node.nc);
    assert.equal(caughtUp(full.lines)?.replayed, (await jsm.streams.info(STREAM)).state.messages, "a full replay replays every event");
    assert.deepEqual(restarted.result, full.result);
    assert.equal(restarted.result.length, 18);
  });
});
