// The projection holds states without slots for their null fields (support/compact-state.ts, issue 12 memory).
// Replies must not show it: get and list answer byte for byte what they answered when the projection held the plain
// states of evolve() — rebuilt here by replaying the stream's events with the domain — for states with null fields
// and without, before a restart, after a restart from the read-model checkpoint, and after a full replay. The
// checkpoint file holds the plain states too.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { replay, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { checkpointNode } from "../helpers/checkpoint.js";
import { callOk, policyBody, readAllEvents } from "../helpers/client.js";

const STREAM = "POLICY_EVENTS";
const node = checkpointNode("stored-states-it-");
const run = node.run;

/** The reply's bytes as the service sent them. */
async function rawReply(subject: string, body: unknown): Promise<string> {
  return (await node.nc.request(subject, JSON.stringify(body), { timeout: 15_000 })).string();
}

/** Every aggregate's plain state (the domain's replay of its events): what the projection held before. */
async function plainStates(): Promise<Map<string, AggregateState>> {
  const byAggregate = new Map<string, EventEnvelope[]>();
  for (const { envelope } of await readAllEvents(node.nc, STREAM)) {
    const event = envelope as unknown as EventEnvelope;
    const events = byAggregate.get(event.aggregate_id) ?? [];
    events.push(event);
    byAggregate.set(event.aggregate_id, events);
  }
  return new Map([...byAggregate].map(([id, events]) => [id, replay(events)!]));
}

const view = (state: AggregateState) => ({ aggregate_type: state.aggregate_type, aggregate_id: state.aggregate_id, version: state.version, state });

/** get of every aggregate and list (all, policies only) as the service answers them, with the bytes expected. */
async function compareReplies(plain: Map<string, AggregateState>, when: string): Promise<void> {
  for (const [id, state] of plain) {
    assert.equal(await rawReply("policy.queries.get", { id }), JSON.stringify({ ok: true, ...view(state) }), `get ${id} ${when}`);
  }
  const inIdOrder = [...plain.values()].sort((a, b) => (a.aggregate_id < b.aggregate_id ? -1 : 1));
  for (const query of [{}, { aggregate_type: "Policy" }]) {
    const raw = await rawReply("policy.queries.list", query);
    const { projection_seq } = JSON.parse(raw) as { projection_seq: number };
    const items = inIdOrder.filter((s) => query.aggregate_type === undefined || s.aggregate_type === query.aggregate_type).map(view);
    assert.equal(raw, JSON.stringify({ ok: true, items, next_cursor: null, projection_seq }), `list ${JSON.stringify(query)} ${when}`);
  }
}

describe("stored states (no slots for null fields)", () => {
  const withCheckpoint = () => ({ READ_MODEL_CHECKPOINT: node.path });
  let plain: Map<string, AggregateState>;

  test("get and list answer the bytes of the plain states, for states with and without null fields", async () => {
    await run(withCheckpoint(), async () => {
      const draft = (await callOk(node.nc, "create", policyBody({ name: "draft, nulls everywhere" }))).aggregate_id as string;
      const active = (await callOk(node.nc, "create", policyBody({ name: "active", scope: { Department: "finance" }, tags: ["pii"] }))).aggregate_id as string;
      await callOk(node.nc, "approve", { policy_id: active, approved_by: "compliance-officer" });
      await callOk(node.nc, "activate", { policy_id: active, activated_by: "ops" });
      // Every field set: created with owner and window, updated, approved with notes, suspended with a resume date,
      // revoked, archived with a retention period: no null field left.
      const full = (await callOk(node.nc, "create", policyBody({
        name: "no null field", owner: "platform-team", effective_from: "2025-01-01T00:00:00Z", effective_until: "2099-01-01T00:00:00Z",
      }))).aggregate_id as string;
      await callOk(node.nc, "update", { policy_id: full, updated_by: "ops", description: "changed once" });
      await callOk(node.nc, "approve", { policy_id: full, approved_by: "compliance-officer", notes: "reviewed" });
      await callOk(node.nc, "activate", { policy_id: full, activated_by: "ops" });
      await callOk(node.nc, "suspend", { policy_id: full, suspended_by: "ops", reason: "audit", expected_resume_date: "2099-01-01T00:00:00Z" });
      await callOk(node.nc, "revoke", { policy_id: full, revoked_by: "ops", reason: "replaced" });
      await callOk(node.nc, "archive", { policy_id: full, archived_by: "ops", retention_period_days: 365 });
      await callOk(node.nc, "grant_exemption", {
        exemption_id: randomUUID(), policy_id: active, entity_id: "crm", reason: "migration", granted_by: "data-officer",
        expires_at: "2099-01-01T00:00:00Z",
      });
      await callOk(node.nc, "create_set", { name: "set", description: "both", policies: [draft, active], composition: "All", conflict_resolution: "MostRestrictive" });
      plain = await plainStates();
      const fullState = plain.get(full) as unknown as Record<string, unknown>;
      assert.ok(Object.values(fullState).every((value) => value !== null), "one policy has no null field");
      assert.ok(Object.values(plain.get(draft) as unknown as Record<string, unknown>).filter((v) => v === null).length >= 15, "a draft has many");
      await compareReplies(plain, "before a restart");
    });
  });

  test("the checkpoint holds the plain states; after a restart from it, and after a full replay, the same bytes", async () => {
    const body = JSON.parse(readFileSync(node.path, "utf8").split("\n")[1]!) as { aggregates: [string, number, unknown][] };
    assert.equal(body.aggregates.length, plain.size);
    for (const [id, , state] of body.aggregates) assert.equal(JSON.stringify(state), JSON.stringify(plain.get(id)), `checkpoint entry ${id}`);
    const restored = await run(withCheckpoint(), async () => compareReplies(plain, "after a restart from the checkpoint"));
    assert.ok(restored.lines.some((l) => l.msg === "read-model checkpoint used: replay from the next sequence"), "the checkpoint was used");
    await run({}, async () => compareReplies(plain, "after a full replay"));
  });
});
