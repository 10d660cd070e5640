// Queries over NATS against a real nats-server and the built service: get (now and as of a past moment),
// list (filters, paging), history (terminating, from the stream) and applicable.
import { before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { sleep } from "../helpers/nats.js";
import { call, callOk, policyBody as policy, singleNode, type Json as Reply } from "../helpers/client.js";

const node = singleNode();
// Each request here may take 10 s (the helpers' default is 15 s).
const req = async (subject: string, body: unknown) => (await call(node.nc, subject, body, 10_000)).reply;
const ok = (subject: string, body: unknown) => callOk(node.nc, subject, body, 10_000);

/** Polls until `check` returns a value (not undefined) or the deadline passes; returns the value. */
async function within<T>(ms: number, what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}

describe("policy.queries over NATS", () => {
  const policyId = randomUUID();
  const exemptionId = randomUUID();
  let beforeApprove = "";
  let afterApprove = "";

  before(async () => {
    await ok("policy.commands.create", { policy_id: policyId, ...policy({ scope: { Department: "finance" } }) });
    await sleep(30);
    beforeApprove = new Date().toISOString();
    await sleep(30);
    await ok("policy.commands.approve", { policy_id: policyId, approved_by: "compliance-officer", approval_date: "2025-11-08T10:00:00Z" });
    await sleep(30);
    afterApprove = new Date().toISOString();
    await sleep(30);
    await ok("policy.commands.activate", { policy_id: policyId, activated_by: "ops" });
    await ok("policy.commands.grant_exemption", {
      exemption_id: exemptionId, policy_id: policyId, entity_id: "legacy-system-7", reason: "Legacy system migration",
      granted_by: "data-officer", expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
  });

  test("get returns the current state and version of a policy and of an exemption", async () => {
    const current = await ok("policy.queries.get", { id: policyId });
    assert.equal(current.aggregate_type, "Policy");
    assert.equal(current.aggregate_id, policyId);
    assert.equal(current.version, 3);
    assert.equal(current.state.status, "Active");
    assert.equal(current.state.name, "Data Retention Policy");
    const exemption = await ok("policy.queries.get", { id: exemptionId });
    assert.equal(exemption.aggregate_type, "PolicyExemption");
    assert.equal(exemption.state.status, "Granted");
    assert.equal(exemption.state.policy_id, policyId);
  });

  test("get as of a past moment rebuilds the state from history", async () => {
    const draft = await ok("policy.queries.get", { id: policyId, at: beforeApprove });
    assert.equal(draft.state.status, "Draft");
    assert.equal(draft.version, 1);
    const approved = await ok("policy.queries.get", { id: policyId, at: afterApprove });
    assert.equal(approved.state.status, "Approved");
    assert.equal(approved.version, 2);
    const beforeCreation = await req("policy.queries.get", { id: policyId, at: "2000-01-01T00:00:00Z" });
    assert.equal(beforeCreation.ok, false);
    assert.equal(beforeCreation.error.code, "not_found");
  });

  test("get of an unknown id is not_found, a malformed payload validation_failed", async () => {
    const missing = await req("policy.queries.get", { id: randomUUID() });
    assert.equal(missing.error.code, "not_found");
    const bad = await req("policy.queries.get", { id: "not-a-uuid" });
    assert.equal(bad.error.code, "validation_failed");
    const extra = await req("policy.queries.get", { id: policyId, surprise: 1 });
    assert.equal(extra.error.code, "validation_failed");
  });

  test("history returns the events in order from the stream and terminates for unknown ids", async () => {
    const history = await ok("policy.queries.history", { id: policyId });
    assert.deepEqual(history.events.map((e: Reply) => e.event_type), ["created", "approved", "activated"]);
    assert.deepEqual(history.events.map((e: Reply) => e.version), [1, 2, 3]);
    for (const e of history.events) {
      assert.equal(e.subject, `events.policy.${policyId}.${e.event_type}`);
      assert.ok(Number.isInteger(e.seq) && e.seq > 0);
    }
    const started = Date.now();
    const unknown = await req("policy.queries.history", { id: randomUUID() });
    assert.equal(unknown.error.code, "not_found");
    assert.ok(Date.now() - started < 1000, "history of an aggregate without events must return at once");
  });

  test("list filters by status, type, scope and enforcement and pages with a cursor", async () => {
    const tag = randomUUID().slice(0, 8);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const created = await ok("policy.commands.create", policy({ name: `Paged ${tag} ${i}`, policy_type: "Security", enforcement: "Advisory", scope: "Team" }));
      ids.push(created.aggregate_id);
    }
    // Visible in the projection within a second of the write.
    await within(1000, "new policies listed", async () => {
      const r = await ok("policy.queries.list", { policy_type: "Security", enforcement: "Advisory", scope: "Team", limit: 500 });
      return r.items.length >= 5 ? r : undefined;
    });
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await ok("policy.queries.list", { type: "Security", status: "Draft", scope: "Team", limit: 2, ...(cursor ? { cursor } : {}) });
      assert.ok(page.items.length <= 2);
      for (const item of page.items) {
        assert.equal(item.state.status, "Draft");
        assert.equal(item.state.policy_type, "Security");
        seen.push(item.aggregate_id);
      }
      cursor = page.next_cursor ?? undefined;
      pages++;
    } while (cursor && pages < 10);
    assert.deepEqual([...seen].sort(), [...ids].sort());
    assert.equal(new Set(seen).size, seen.length, "no item on two pages");

    const active = await ok("policy.queries.list", { status: "Active", aggregate_type: "Policy" });
    assert.ok(active.items.some((i: Reply) => i.aggregate_id === policyId));
    assert.ok(active.items.every((i: Reply) => i.state.status === "Active"));
    const byDepartment = await ok("policy.queries.list", { scope: "Department" });
    assert.deepEqual(byDepartment.items.map((i: Reply) => i.aggregate_id), [policyId]);
    const exemptions = await ok("policy.queries.list", { aggregate_type: "PolicyExemption", policy_id: policyId });
    assert.deepEqual(exemptions.items.map((i: Reply) => i.aggregate_id), [exemptionId]);
    const tooMany = await req("policy.queries.list", { limit: 501 });
    assert.equal(tooMany.error.code, "validation_failed");
  });

  test("list pages stop before a reply would outgrow max_payload, and the cursor continues", async () => {
    const tag = `bulk-${randomUUID().slice(0, 8)}`;
    const big = "x".repeat(4000);
    const created = await Promise.all(Array.from({ length: 160 }, (_, i) =>
      ok("policy.commands.create", policy({ name: `Bulk ${i}`, description: big, scope: { Project: tag } }))));
    const ids = created.map((c) => c.aggregate_id as string);
    const lastSeq = Math.max(...created.map((c) => c.events[0].seq as number));
    await within(1000, "the projection has applied every create", async () => {
      const r = await ok("policy.queries.list", { scope: "Nowhere" });
      return r.projection_seq >= lastSeq ? r : undefined;
    });
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const msg = await node.nc.request("policy.queries.list", JSON.stringify({ scope: `Project:${tag}`, limit: 500, ...(cursor ? { cursor } : {}) }), { timeout: 10_000 });
      assert.ok(msg.data.byteLength < 1024 * 1024, `reply of ${msg.data.byteLength} bytes`);
      const page = msg.json<Reply>();
      assert.equal(page.ok, true);
      seen.push(...page.items.map((i: Reply) => i.aggregate_id));
      cursor = page.next_cursor ?? undefined;
      pages++;
    } while (cursor && pages < 20);
    assert.ok(pages >= 2, `160 policies of ~4 KB need more than one page (got ${pages})`);
    assert.deepEqual([...seen].sort(), [...ids].sort());
  });

  test("applicable lists active policies in force and the valid exemptions for an entity, now and in the past", async () => {
    const now = await within(1000, "activation visible", async () => {
      const r = await ok("policy.queries.applicable", { entity_id: "legacy-system-7" });
      return r.policies.some((p: Reply) => p.aggregate_id === policyId) ? r : undefined;
    });
    assert.deepEqual(now.exemptions.map((e: Reply) => e.aggregate_id), [exemptionId]);
    const other = await ok("policy.queries.applicable", { entity_id: "someone-else", scope: "Department" });
    assert.deepEqual(other.policies.map((p: Reply) => p.aggregate_id), [policyId]);
    assert.deepEqual(other.exemptions, []);
    const past = await ok("policy.queries.applicable", { entity_id: "legacy-system-7", at: afterApprove });
    assert.ok(!past.policies.some((p: Reply) => p.aggregate_id === policyId), "only Approved at that time, not in force");
    assert.deepEqual(past.exemptions, []);
  });
});
