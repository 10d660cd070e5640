// The projection holds states without slots for their null fields (support/compact-state.ts, issue 12 memory).
// Replies must not show it: get and list answer byte for byte what they answered when the projection held the plain
// states of evolve() — rebuilt here by replaying the stream's events with the domain — for states with null fields
// and without, before a restart, after a restart from the read-model checkpoint, and after a full replay. The
// checkpoint file holds the plain states too.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { replay, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { startNatsServer, startService, type NatsServer, type ServiceLogLine, type ServiceProcess } from "../helpers/nats.js";
import { callOk, policyBody, readAllEvents } from "../helpers/client.js";

const STREAM = "POLICY_EVENTS";
let server: NatsServer;
let nc: NatsConnection;
let dir: string;
let checkpointPath: string;

before(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  dir = mkdtempSync(join(tmpdir(), "stored-states-it-"));
  checkpointPath = join(dir, "read-model.checkpoint");
});

after(async () => {
  await nc?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function run<T>(env: Record<string, string>, fn: (service: ServiceProcess) => Promise<T>): Promise<{ result: T; lines: ServiceLogLine[] }> {
  const service = startService({ NATS_URL: server.url, LOG_LEVEL: "info", AUDIT_ENABLED: "false", ...env });
  try {
    await service.ready(60_000);
    const result = await fn(service);
    const stopped = await service.stop();
    assert.equal(stopped.code, 0, "graceful stop");
    return { result, lines: service.lines };
  } finally {
    if (service.running) await service.kill();
  }
}

/** The reply's bytes as the service sent them. */
async function rawReply(subject: string, body: unknown): Promise<string> {
  return (await nc.request(subject, JSON.stringify(body), { timeout: 15_000 })).string();
}

/** Every aggregate's plain state (the domain's replay of its events): what the projection held before. */
async function plainStates(): Promise<Map<string, AggregateState>> {
  const byAggregate = new Map<string, EventEnvelope[]>();
  for (const { envelope } of await readAllEvents(nc, STREAM)) {
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
  const withCheckpoint = () => ({ READ_MODEL_CHECKPOINT: checkpointPath });
  let plain: Map<string, AggregateState>;

  test("get and list answer the bytes of the plain states, for states with and without null fields", async () => {
    await run(withCheckpoint(), async () => {
      const draft = (await callOk(nc, "create", policyBody({ name: "draft, nulls everywhere" }))).aggregate_id as string;
      const active = (await callOk(nc, "create", policyBody({ name: "active", scope: { Department: "finance" }, tags: ["pii"] }))).aggregate_id as string;
      await callOk(nc, "approve", { policy_id: active, approved_by: "compliance-officer" });
      await callOk(nc, "activate", { policy_id: active, activated_by: "ops" });
      // Every field set: created with owner and window, updated, approved with notes, suspended with a resume date,
      // revoked, archived with a retention period: no null field left.
      const full = (await callOk(nc, "create", policyBody({
        name: "no null field", owner: "platform-team", effective_from: "2025-01-01T00:00:00Z", effective_until: "2099-01-01T00:00:00Z",
      }))).aggregate_id as string;
      await callOk(nc, "update", { policy_id: full, updated_by: "ops", description: "changed once" });
      await callOk(nc, "approve", { policy_id: full, approved_by: "compliance-officer", notes: "reviewed" });
      await callOk(nc, "activate", { policy_id: full, activated_by: "ops" });
      await callOk(nc, "suspend", { policy_id: full, suspended_by: "ops", reason: "audit", expected_resume_date: "2099-01-01T00:00:00Z" });
      await callOk(nc, "revoke", { policy_id: full, revoked_by: "ops", reason: "replaced" });
      await callOk(nc, "archive", { policy_id: full, archived_by: "ops", retention_period_days: 365 });
      await callOk(nc, "grant_exemption", {
        exemption_id: randomUUID(), policy_id: active, entity_id: "crm", reason: "migration", granted_by: "data-officer",
        expires_at: "2099-01-01T00:00:00Z",
      });
      await callOk(nc, "create_set", { name: "set", description: "both", policies: [draft, active], composition: "All", conflict_resolution: "MostRestrictive" });
      plain = await plainStates();
      const fullState = plain.get(full) as unknown as Record<string, unknown>;
      assert.ok(Object.values(fullState).every((value) => value !== null), "one policy has no null field");
      assert.ok(Object.values(plain.get(draft) as unknown as Record<string, unknown>).filter((v) => v === null).length >= 15, "a draft has many");
      await compareReplies(plain, "before a restart");
    });
  });

  test("the checkpoint holds the plain states; after a restart from it, and after a full replay, the same bytes", async () => {
    const body = JSON.parse(readFileSync(checkpointPath, "utf8").split("\n")[1]!) as { aggregates: [string, number, unknown][] };
    assert.equal(body.aggregates.length, plain.size);
    for (const [id, , state] of body.aggregates) assert.equal(JSON.stringify(state), JSON.stringify(plain.get(id)), `checkpoint entry ${id}`);
    const restored = await run(withCheckpoint(), async () => compareReplies(plain, "after a restart from the checkpoint"));
    assert.ok(restored.lines.some((l) => l.msg === "read-model checkpoint used: replay from the next sequence"), "the checkpoint was used");
    await run({}, async () => compareReplies(plain, "after a full replay"));
  });
});
