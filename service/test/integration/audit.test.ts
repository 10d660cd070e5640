// Decision audit over NATS: the audit stream's settings and each audit event's contents
// (evaluation id, context hash, result, duration, exact versions of every policy and exemption used); AUDIT_ENABLED=false.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { sleep } from "../helpers/nats.js";
import { call, callOk, singleNode, type Json as Reply } from "../helpers/client.js";

const DAY_NS = 24 * 60 * 60 * 1e9;

// Written independently of the service's implementation: sorted keys at every level, no whitespace.
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Reply)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// Each request here may take 10 s (the helpers' default is 15 s).
const ok = (nc: NatsConnection, subject: string, body: unknown) => callOk(nc, subject, body, 10_000);

async function activePolicy(nc: NatsConnection): Promise<string> {
  const created = await ok(nc, "policy.commands.create", {
    name: "Audited policy", description: "audit test", policy_type: "Security", enforcement: "Critical", scope: "Organization",
    rules: [{ rule_id: "mfa", name: "MFA", severity: "Critical", expression: { op: "equal", field: "user.mfa", value: true } }],
  });
  const id = created.aggregate_id as string;
  await ok(nc, "policy.commands.approve", { policy_id: id, approved_by: "ciso" });
  await ok(nc, "policy.commands.activate", { policy_id: id, activated_by: "ops" });
  return id;
}

async function evaluateWhenVisible(nc: NatsConnection, body: Reply, until: (r: Reply) => boolean): Promise<Reply> {
  const deadline = Date.now() + 1500;
  for (;;) {
    const { reply } = await call(nc, "policy.commands.evaluate", body, 10_000);
    if (until(reply) || Date.now() > deadline) return reply;
    await sleep(25);
  }
}

/** All audit events on `subject` in `stream`, waiting up to `ms` for at least `min` of them. */
async function auditEvents(jsm: JetStreamManager, stream: string, subject: string, min: number, ms = 3000): Promise<Reply[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const out: Reply[] = [];
    const info = await jsm.streams.info(stream);
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      // Each message carries the events of one subject recorded within a few milliseconds.
      if (m && m.subject === subject) {
        const batch = m.json<Reply>();
        assert.equal(batch.schema_version, 1);
        out.push(...(batch.events as Reply[]));
      }
    }
    if (out.length >= min || Date.now() > deadline) return out;
    await sleep(50);
  }
}

describe("decision audit (enabled by default)", () => {
  const node = singleNode();

  test("the audit stream has its own name, subjects, retention and replicas", async () => {
    const jsm = await jetstreamManager(node.nc);
    const info = await jsm.streams.info("POLICY_AUDIT");
    assert.deepEqual(info.config.subjects, ["audit.policy.>"]);
    assert.equal(info.config.storage, "file");
    assert.equal(info.config.max_age, 90 * DAY_NS);
    assert.equal(info.config.num_replicas, 1);
  });

  test("each evaluation publishes one audit event with hash, result, duration and the versions used", async () => {
    const jsm = await jetstreamManager(node.nc);
    const policyId = await activePolicy(node.nc);
    const failing = { user: { mfa: false, name: "ann" }, action: "read" };
    const violation = await evaluateWhenVisible(node.nc, { policy_id: policyId, context: failing, requester: "gateway", purpose: "login" }, (r) => r.ok === true);
    assert.equal(violation.result.status, "NonCompliant");
    const violations = await auditEvents(jsm, "POLICY_AUDIT", `audit.policy.${policyId}.violation_detected`, 1);
    assert.equal(violations.length, 1, "exactly one audit event for one evaluation");
    const event = violations[0]!;
    assert.equal(event.type, "violation_detected");
    assert.match(event.evaluation_id, /^[0-9a-f-]{36}$/);
    assert.equal(event.context_hash, createHash("sha256").update(canonical(failing)).digest("hex"));
    // Key order does not change the hash.
    assert.equal(event.context_hash, createHash("sha256").update(canonical({ action: "read", user: { name: "ann", mfa: false } })).digest("hex"));
    assert.equal(event.status, "NonCompliant");
    assert.equal(event.result.status, "NonCompliant");
    assert.equal(event.requester, "gateway");
    assert.equal(event.purpose, "login");
    assert.ok(Number.isFinite(event.duration_us) && event.duration_us >= 0);
    assert.deepEqual(event.policies, [{ id: policyId, version: 3 }]);
    assert.deepEqual(event.exemptions, []);

    const exemptionId = randomUUID();
    await ok(node.nc, "policy.commands.grant_exemption", {
      exemption_id: exemptionId, policy_id: policyId, entity_id: "svc-batch", reason: "batch job without MFA",
      granted_by: "ciso", expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    const waived = await evaluateWhenVisible(node.nc, { policy_id: policyId, context: failing, entity_id: "svc-batch" },
      (r) => r.result?.status === "CompliantWithExemption");
    assert.equal(waived.result.status, "CompliantWithExemption");
    const passedEvents = await auditEvents(jsm, "POLICY_AUDIT", `audit.policy.${policyId}.compliance_passed`, 1);
    assert.equal(passedEvents.length, 1, "exactly one audit event for one evaluation");
    const passed = passedEvents[0]!;
    assert.equal(passed.status, "CompliantWithExemption");
    assert.equal(passed.entity_id, "svc-batch");
    assert.deepEqual(passed.policies, [{ id: policyId, version: 3 }]);
    assert.deepEqual(passed.exemptions, [{ id: exemptionId, version: 1 }]);
    assert.notEqual(passed.evaluation_id, event.evaluation_id);
  });
});

describe("decision audit: the record's result is the reply's", () => {
  const node = singleNode();

  test("an ok evaluate reply and its stored event carry the same result, the same bytes (the event's with applicable first)", async () => {
    const jsm = await jetstreamManager(node.nc);
    const policyId = await activePolicy(node.nc);
    await evaluateWhenVisible(node.nc, { policy_id: policyId, context: { user: { mfa: true } } }, (r) => r.ok === true);
    const subject = `audit.policy.${policyId}.violation_detected`;
    const before = (await auditEvents(jsm, "POLICY_AUDIT", subject, 0, 0)).length;
    // Text that JSON escapes, so a second serialisation that differed in the least would show.
    const context = { user: { mfa: false, name: "ann \"the\" admin \u00fc\u0000\u2028" }, region: "eu" };
    const msg = await node.nc.request("policy.commands.evaluate", JSON.stringify({ policy_id: policyId, context, requester: "r", purpose: "p" }), { timeout: 10_000 });
    const replyText = msg.string();
    const reply = JSON.parse(replyText) as Reply;
    assert.equal(reply.ok, true, replyText);
    assert.equal(reply.result.status, "NonCompliant");
    const evaluationId = reply.result.evaluation_id as string;
    const events = (await auditEvents(jsm, "POLICY_AUDIT", subject, before + 1)).slice(before);
    assert.equal(events.length, 1, "one event for the one evaluation");
    const event = events[0]!;
    assert.equal(event.evaluation_id, evaluationId);
    const { evaluation_id: _id, ...replyResult } = reply.result as Reply;
    assert.deepEqual(event.result, { applicable: true, ...replyResult });
    assert.deepEqual(Object.keys(event.result), ["applicable", ...Object.keys(replyResult)], "same key order");
    // The bytes: the reply is {"ok":true,"result":{"evaluation_id":…,REST}; the stored message holds "result":{"applicable":true,REST.
    const prefix = `{"ok":true,"result":{"evaluation_id":${JSON.stringify(evaluationId)},`;
    assert.ok(replyText.startsWith(prefix) && replyText.endsWith("}}"), replyText);
    const rest = replyText.slice(prefix.length, -1);
    const info = await jsm.streams.info("POLICY_AUDIT");
    let storedText: string | undefined;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && storedText === undefined; seq++) {
      const m = await jsm.streams.getMessage("POLICY_AUDIT", { seq });
      if (m?.subject === subject && m.string().includes(`"evaluation_id":${JSON.stringify(evaluationId)},`)) storedText = m.string();
    }
    assert.ok(storedText !== undefined, "the stored message that holds the event");
    assert.ok(storedText.includes(`"result":{"applicable":true,${rest},"duration_us":`), `${rest} not in ${storedText}`);
  });
});

describe("decision audit at load", () => {
  const node = singleNode();

  test("64 evaluations in flight, 3,000 in all: every reply's evaluation has exactly one audit event, with its context's hash", async () => {
    const jsm = await jetstreamManager(node.nc);
    const policyId = await activePolicy(node.nc);
    await evaluateWhenVisible(node.nc, { policy_id: policyId, context: { user: { mfa: true } } }, (r) => r.ok === true);
    const passedSubject = `audit.policy.${policyId}.compliance_passed`;
    const before = (await auditEvents(jsm, "POLICY_AUDIT", passedSubject, 1)).length;
    const contexts = new Map<string, unknown>(); // evaluation_id → the context sent
    let next = 0;
    const worker = async () => {
      while (next < 3000) {
        const i = next++;
        const context = { user: { mfa: i % 2 === 0, name: `u${i}` }, i };
        const { reply } = await call(node.nc, "policy.commands.evaluate", { policy_id: policyId, context }, 10_000);
        assert.equal(reply.ok, true, JSON.stringify(reply));
        contexts.set(reply.result.evaluation_id as string, context);
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    assert.equal(contexts.size, 3000);
    const passed = (await auditEvents(jsm, "POLICY_AUDIT", passedSubject, before + 1500, 15_000)).slice(before);
    const violations = await auditEvents(jsm, "POLICY_AUDIT", `audit.policy.${policyId}.violation_detected`, 1500, 15_000);
    const landed = [...passed, ...violations];
    assert.equal(landed.length, 3000, "one event per evaluation: none dropped, none twice");
    assert.deepEqual(new Set(landed.map((e) => e.evaluation_id as string)), new Set(contexts.keys()));
    for (const e of landed) {
      assert.equal(e.context_hash, createHash("sha256").update(canonical(contexts.get(e.evaluation_id))).digest("hex"));
    }
  });
});

describe("decision audit disabled", () => {
  const node = singleNode({ AUDIT_ENABLED: "false" });
  test("AUDIT_ENABLED=false: evaluations work and nothing is published", async () => {
    const policyId = await activePolicy(node.nc);
    const reply = await evaluateWhenVisible(node.nc, { policy_id: policyId, context: { user: { mfa: true } } }, (r) => r.ok === true);
    assert.equal(reply.result.status, "Compliant");
    await sleep(300);
    const jsm = await jetstreamManager(node.nc);
    const names: string[] = [];
    for await (const s of jsm.streams.list()) names.push(s.config.name);
    assert.ok(!names.includes("POLICY_AUDIT"), `streams: ${names.join(", ")}`);
  });
});
