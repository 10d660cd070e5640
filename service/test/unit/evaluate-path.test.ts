// The evaluate path's shortcuts keep their behaviour: the hand-checked request gives zod's exact output (and anything
// else still goes through zod), the audit publisher keeps every record (grouped, in order), counts and logs what it drops or cannot store, the evaluate reply and its
// audit record (serialised once) are the bytes the code before gave them, and replies of one socket read share one write.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Evaluation, EvaluateRequest, fastEvaluateRequest, parseEvaluateRequest } from "../../src/app/evaluation.js";
import type { ExemptionState, PolicyState } from "../../src/domain/index.js";
import { evaluatePolicy, requestEntity, type PolicyEvaluation } from "../../src/domain/evaluation/evaluate.js";
import { History } from "./history.js";
import { parsePlain } from "../../src/app/queries.js";
import { AuditPublisher, contextHash, type AuditBatch, type AuditRecord } from "../../src/adapters/nats/audit.js";
import { batchedWrite, registerBacklog, requestEnded, requestStarted } from "../../src/adapters/nats/write-batch.js";

describe("evaluate request: the hand-checked path gives zod's answer", () => {
  const id = randomUUID();
  const context = { data: { retention_days: 2600, region: "eu-west-1" } };
  const payloads: unknown[] = [
    { policy_id: id, context },
    { policy_id: id.toUpperCase(), context },
    { context, policy_id: id, at: "2025-11-08T10:00:00Z", entity_id: "svc", requester: "r", purpose: "p", command_id: randomUUID().toUpperCase(), correlation_id: "c-1" },
    { policy_id: id, context: {} },
    { policy_id: id, context, at: "2025-11-08t10:00:00.123+01:00" },
    // Refusals (each must still come from the schema, with its message).
    {},
    null,
    [],
    "text",
    { policy_id: id },
    { context },
    { policy_id: "not-a-uuid", context },
    { policy_id: `${id}0`, context },
    { policy_id: id, context: [] },
    { policy_id: id, context: null },
    { policy_id: id, context: "x" },
    { policy_id: id, context, extra: 1 },
    { policy_id: id, context, at: "2025-02-30T10:00:00Z" },
    { policy_id: id, context, at: "yesterday" },
    { policy_id: id, context, at: 5 },
    { policy_id: id, context, entity_id: "" },
    { policy_id: id, context, entity_id: "e".repeat(257) },
    { policy_id: id, context, requester: "r".repeat(256) },
    { policy_id: id, context, purpose: 7 },
    { policy_id: id, context, correlation_id: "c".repeat(129) },
    { policy_id: id, context, command_id: "nope" },
    { policy_id: id, context, at: undefined },
    { policy_id: id, context: JSON.parse('{"__proto__": {"x": 1}, "a": 1}') },
    { policy_id: id, context: { constructor: "x" } },
    JSON.parse(`{"policy_id": "${id}", "context": {}, "__proto__": 1}`),
    JSON.parse(`{"policy_id": "${id}", "context": {}, "__proto__": "text"}`),
    { policy_id: id, context, toString: "text" },
    { policy_id: id, context, hasOwnProperty: "text" },
  ];

  test("same success, same data, same issues for every payload", () => {
    for (const payload of payloads) {
      const fast = parseEvaluateRequest(payload);
      const schema = parsePlain(EvaluateRequest, payload);
      assert.equal(fast.success, schema.success, JSON.stringify(payload));
      if (fast.success && schema.success) assert.deepEqual(fast.data, schema.data, JSON.stringify(payload));
      else assert.deepEqual(fast.error?.issues, schema.error?.issues, JSON.stringify(payload));
    }
  });

  test("the common request takes the hand-checked path; an unusual one is left to zod", () => {
    const fast = fastEvaluateRequest({ policy_id: id.toUpperCase(), context, requester: "gateway" });
    assert.deepEqual(fast, { policy_id: id, context, requester: "gateway" });
    assert.notEqual((fast as { context: unknown }).context, context, "the context is a copy, as zod's record makes it");
    assert.equal(fastEvaluateRequest({ policy_id: id, context, extra: 1 }), undefined);
    assert.equal(fastEvaluateRequest({ policy_id: id, context: { constructor: "x" } }), undefined);
  });
});

/** A JetStream client that records publishes and acknowledges them when told to. */
function fakeJetStream(mode: "ack" | "hold" | "fail" = "ack") {
  const published: { subject: string; batch: AuditBatch; data: string }[] = [];
  const held: (() => void)[] = [];
  const js = {
    publish(subject: string, payload: string | Uint8Array) {
      const data = typeof payload === "string" ? payload : new TextDecoder("utf-8", { fatal: true }).decode(payload);
      published.push({ subject, batch: JSON.parse(data) as AuditBatch, data });
      if (mode === "fail") return Promise.reject(new Error("stream unavailable"));
      if (mode === "hold") return new Promise((resolve) => held.push(() => resolve({ stream: "POLICY_AUDIT", seq: published.length })));
      return Promise.resolve({ stream: "POLICY_AUDIT", seq: published.length });
    },
  };
  return { js: js as unknown as JetStreamClient, published, release: () => { for (const r of held.splice(0)) r(); } };
}

function recordingLogger() {
  const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
  return {
    warnings,
    logger: { info() {}, debug() {}, error() {}, warn: (fields: Record<string, unknown>, msg: string) => { warnings.push({ fields, msg }); } },
  };
}

function record(i: number, subject = "p1", status = "Compliant"): AuditRecord {
  return {
    type: status === "Compliant" ? "compliance_passed" : "violation_detected", evaluation_id: `e${i}`, request: "evaluate", subject_id: subject,
    context: { i }, status, blocking: false, result_json: JSON.stringify({ status }), duration_us: 1, evaluated_at: "2026-01-01T00:00:00.000Z",
    at: "2026-01-01T00:00:00.000Z", requester: null, purpose: null, entity_id: null, policies: [], exemptions: [],
  };
}

describe("audit publisher", () => {
  test("every record is published once, grouped by subject, in the order recorded, with its context hash", async () => {
    const { js, published } = fakeJetStream();
    const { logger } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 1, maxBatch: 100 });
    for (let i = 0; i < 1000; i++) audit.record(record(i, i % 3 === 0 ? "p2" : "p1", i % 2 === 0 ? "Compliant" : "NonCompliant"));
    await audit.close(2000);
    const events = published.flatMap((m) => m.batch.events.map((e) => ({ subject: m.subject, e })));
    assert.equal(events.length, 1000);
    assert.deepEqual(new Set(events.map(({ e }) => e.evaluation_id)).size, 1000);
    for (const { subject, e } of events) {
      assert.equal(subject, `audit.policy.${e.subject_id}.${e.type}`);
      assert.equal(e.context_hash, contextHash({ i: Number(e.evaluation_id.slice(1)) }));
      assert.equal(e.instance, "i1");
    }
    for (const m of published) {
      const order = m.batch.events.map((e) => Number(e.evaluation_id.slice(1)));
      assert.deepEqual(order, [...order].sort((x, y) => x - y), "in the order recorded");
    }
    assert.ok(published.length < 100, `grouped: ${published.length} messages for 1000 records`);
    assert.deepEqual(audit.stats(), { published: 1000, dropped: 0, failed: 0, queued: 0 });
  });

  test("a full queue drops new records, counts them and logs a warning (once per 5 s)", async () => {
    const { js, release } = fakeJetStream("hold");
    const { logger, warnings } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 1, maxQueue: 10, maxInFlight: 1, maxBatch: 5 });
    for (let i = 0; i < 10; i++) audit.record(record(i));
    await new Promise((resolve) => setTimeout(resolve, 20)); // one message of 5 in flight (held), 5 queued
    for (let i = 10; i < 30; i++) audit.record(record(i));
    const stats = audit.stats();
    assert.equal(stats.queued, 10);
    assert.equal(stats.dropped, 15);
    assert.equal(warnings.filter((w) => w.msg === "audit queue full: audit events dropped").length, 1);
    release();
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    await audit.close(1000);
    assert.deepEqual(audit.stats(), { published: 15, dropped: 15, failed: 0, queued: 0 });
  });

  test("an ack does not send the few records queued since: they wait out their linger to share one message; minBatch of them go at once", async () => {
    const { js, published, release } = fakeJetStream("hold");
    const { logger } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 150, maxBatch: 8, minBatch: 8 });
    const turns = async (n: number) => { for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve)); };
    for (let i = 0; i < 3; i++) audit.record(record(i));
    await new Promise((resolve) => setTimeout(resolve, 250)); // the linger passed: one message of 3, its ack held
    assert.equal(published.length, 1);
    for (let i = 3; i < 5; i++) audit.record(record(i)); // their linger starts now
    release();
    await turns(5);
    // Before, every ack sent whatever was queued: under load at R3, one small message per ack.
    assert.equal(published.length, 1, "2 records queued 0 ms ago are not sent by the ack");
    for (let i = 5; i < 13; i++) audit.record(record(i)); // 10 queued: a full message (8) is ready
    await turns(5);
    assert.equal(published.length, 1, "nothing goes out before a write completes or the linger passes (the reply first)");
    await new Promise((resolve) => setTimeout(resolve, 250)); // the linger passed: 8 + 2
    assert.deepEqual(published.map((m) => m.batch.events.length), [3, 8, 2]);
    for (let i = 13; i < 30; i++) audit.record(record(i)); // 17 queued, two writes held
    release();
    await turns(5);
    assert.deepEqual(published.map((m) => m.batch.events.length), [3, 8, 2, 8, 8], "each freed write takes minBatch (here a full message) at once");
    const closed = audit.close(1000); // closing sends the rest without waiting for the linger
    assert.deepEqual(published.map((m) => m.batch.events.length), [3, 8, 2, 8, 8, 1]);
    release();
    await closed;
    assert.deepEqual(audit.stats(), { published: 30, dropped: 0, failed: 0, queued: 0 });
    assert.deepEqual(published.flatMap((m) => m.batch.events.map((e) => e.evaluation_id)), Array.from({ length: 30 }, (_, i) => `e${i}`));
  });

  test("what is due goes out one message per event-loop turn, so that the replies of a turn are not held back", async () => {
    const { js, published, release } = fakeJetStream("hold");
    const { logger } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 60_000, maxBatch: 8, minBatch: 8 });
    for (let i = 0; i < 20; i++) audit.record(record(i));
    const closed = audit.close(1000); // due now
    assert.deepEqual(published.map((m) => m.batch.events.length), [8], "one message in this turn");
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(published.map((m) => m.batch.events.length), [8, 8], "the next in the next turn");
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(published.map((m) => m.batch.events.length), [8, 8, 4]);
    release();
    await closed;
    assert.deepEqual(audit.stats(), { published: 20, dropped: 0, failed: 0, queued: 0 });
  });

  test("a record is serialised in the next loop iteration, after its turn's replies, long before its linger ends", async () => {
    const { js, published } = fakeJetStream();
    const { logger } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 60_000 });
    const order: string[] = [];
    const watched = record(1);
    // The context is read when the record is serialised (its hash): the getter says when.
    watched.context = { get i() { order.push("serialised"); return 1; } };
    requestStarted();
    requestStarted(); // two requests in this turn: replies wait for the turn's one write
    try {
      audit.record(watched); // recorded before the reply is handed over, as evaluation.ts does
      batchedWrite(() => order.push("reply written"));
      assert.deepEqual(order, [], "nothing in the turn itself");
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(order, ["reply written"], "the turn's replies first");
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(order, ["reply written", "serialised"], "then the record, one loop iteration later");
    } finally {
      requestEnded();
      requestEnded();
    }
    assert.equal(published.length, 0, "serialising sends nothing: the record waits out its linger");
    assert.equal(audit.stats().queued, 1);
    await audit.close(1000);
    assert.equal(published[0]!.batch.events[0]!.context_hash, contextHash({ i: 1 }));
  });

  test("while it waits out its linger, a record's objects are no longer held (only its bytes)", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const { js, published } = fakeJetStream();
    const { logger } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 60_000 });
    // Handed over from a function of its own, so that no frame of this test still refers to the last record.
    const handOver = (): WeakRef<object>[] => Array.from({ length: 50 }, (_, i) => {
      const r = record(i);
      audit.record(r);
      return [new WeakRef(r.context as object), new WeakRef(r)];
    }).flat();
    const refs = handOver();
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    gc();
    assert.equal(refs.filter((ref) => ref.deref() !== undefined).length, 0, "records and contexts collected while queued");
    assert.equal(audit.stats().queued, 50);
    await audit.close(1000);
    assert.deepEqual(published.flatMap((m) => m.batch.events.map((e) => e.evaluation_id)), Array.from({ length: 50 }, (_, i) => `e${i}`));
  });

  test("a write the stream refuses is counted as failed and logged", async () => {
    const { js } = fakeJetStream("fail");
    const { logger, warnings } = recordingLogger();
    const audit = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 1 });
    for (let i = 0; i < 3; i++) audit.record(record(i));
    await audit.close(1000);
    assert.deepEqual(audit.stats(), { published: 0, dropped: 0, failed: 3, queued: 0 });
    assert.equal(warnings.filter((w) => w.msg === "audit events not stored").length, 1);
  });
});

/** An active (or draft) policy with these rules, created through the real domain. */
function givenPolicyWith(history: History, rules: unknown[], enforcement: string, activate: boolean): string {
  const id = randomUUID();
  history.run("create", {
    policy_id: id, name: "Access", description: "Access rules", policy_type: "Security", enforcement, scope: "Organization", rules,
  }, "2025-11-01T09:00:00Z");
  if (activate) {
    history.run("approve", { policy_id: id, approved_by: "officer" }, "2025-11-02T09:00:00Z");
    history.run("activate", { policy_id: id, activated_by: "officer" }, "2025-11-03T09:00:00Z");
  }
  return id;
}

describe("evaluate: the result serialised once for the reply and the audit record", () => {
  test("reply and record are, byte for byte, what the code before gave for 600 evaluations of every shape", async () => {
    const RULES = [
      { rule_id: "min-age", name: "min-age", severity: "High", expression: { op: "greater_than_or_equal", field: "user.age", value: 18 } },
      { rule_id: "region", name: "region", severity: "Low", expression: { op: "in", field: "region", values: ["eu", "us"] } },
      {
        rule_id: "mfa", name: "mfa", severity: "Medium", expression: { op: "equal", field: "user.mfa", value: true },
        error_message: "multi-factor \"MFA\" is off", remediation_hint: "enable MFA é\u2028",
      },
    ];
    const states = new History();
    const mandatory = givenPolicyWith(states, RULES, "Mandatory", true);
    const advisory = givenPolicyWith(states, RULES.slice(1), "Advisory", true);
    const draft = givenPolicyWith(states, RULES, "Mandatory", false); // not in force: not_applicable
    const exemptionId = randomUUID();
    states.run("grant_exemption", {
      exemption_id: exemptionId, policy_id: mandatory, entity_id: "crm", reason: "Legacy system migration",
      granted_by: "data-officer", expires_at: "2099-01-01T00:00:00Z",
    }, "2025-11-05T00:00:00Z");
    const exemptionsOf = (policyId: string): ExemptionState[] =>
      [...states.events.keys()].map((id) => states.stateAt(id)!)
        .filter((s) => s.aggregate_type === "PolicyExemption" && (s as ExemptionState).policy_id === policyId) as ExemptionState[];
    const projection = { getState: (id: string) => states.stateAt(id), exemptionsForPolicy: exemptionsOf };
    const { js, published } = fakeJetStream();
    const { logger } = recordingLogger();
    const publisher = new AuditPublisher({ js, logger: logger as never, instance: "i1", lingerMs: 1, maxBatch: 7 });
    const records: AuditRecord[] = [];
    const audit = { record(r: AuditRecord) { records.push(r); publisher.record(r); }, stats: () => publisher.stats(), close: (ms?: number) => publisher.close(ms) };
    const evaluation = new Evaluation({ projection: projection as never, history: {} as never, audit });

    const seed = { s: 7 };
    const next = () => (seed.s = (seed.s * 1103515245 + 12345) % 2147483648) / 2147483648;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
    const domainResults = new Map<string, PolicyEvaluation>();
    for (let i = 0; i < 600; i++) {
      const policyId = pick([mandatory, mandatory, advisory, draft]);
      const context: Record<string, unknown> = { user: { age: pick([12, 18, 40, "x"]), mfa: pick([true, false, undefined]) }, region: pick(["eu", "cn", "ünï\u0000"]) };
      if (next() < 0.3) context.entity = { id: pick(["crm", "erp"]) };
      const payload: Record<string, unknown> = { policy_id: policyId, context };
      if (next() < 0.3) payload.entity_id = pick(["crm", "erp"]);
      if (next() < 0.5) payload.requester = pick(["svc-a", "ann \"the\" admin"]);
      if (next() < 0.5) payload.purpose = "checkout";
      const reply = await evaluation.evaluate(payload);
      const record = records.at(-1)!;
      assert.equal(records.length, i + 1, "one record per evaluation");
      // What evaluatePolicy gave the code before (the record's `result`), from the same inputs and instants.
      const entity = requestEntity(context, payload.entity_id as string | undefined);
      const result = evaluatePolicy(states.stateAt(policyId) as PolicyState, context, {
        at: record.at, exemptions: entity === undefined ? [] : exemptionsOf(policyId).filter((e) => e.entity_id === entity),
        ...(payload.entity_id !== undefined ? { entityId: payload.entity_id as string } : {}),
        evaluatedAt: (JSON.parse(record.result_json) as { evaluated_at: string }).evaluated_at,
      });
      domainResults.set(record.evaluation_id, result);
      assert.equal(record.result_json, JSON.stringify(result));
      if (result.applicable) {
        const { applicable: _applicable, ...rest } = result;
        assert.ok("json" in reply && reply.ok);
        assert.equal(reply.json, JSON.stringify({ ok: true, result: { evaluation_id: record.evaluation_id, ...rest } }));
      } else {
        assert.equal(reply.ok, false);
        assert.ok(!reply.ok && reply.error.code === "not_applicable");
      }
    }
    await publisher.close(2000);
    const shapes = new Set([...domainResults.values()].map((r) => (r.applicable ? r.status : "not_applicable")));
    assert.deepEqual([...shapes].sort(), ["Compliant", "CompliantWithExemption", "NonCompliant", "PartiallyCompliant", "not_applicable"]);
    const byId = new Map(records.map((r) => [r.evaluation_id, r]));
    let events = 0;
    for (const message of published) {
      // The message as the code before serialised it: each event {schema_version, audit_id, instance, context_hash,
      // ...the record with its result object}, audit_id the one drawn (random).
      const before = {
        schema_version: 1,
        events: message.batch.events.map((e) => {
          const r = byId.get(e.evaluation_id)!;
          // The record as evaluation.ts built it before, in its key order, `context` left out as the publisher did.
          const old = {
            type: r.type, evaluation_id: r.evaluation_id, request: r.request, subject_id: r.subject_id, status: r.status,
            blocking: r.blocking, result: domainResults.get(e.evaluation_id), duration_us: r.duration_us, evaluated_at: r.evaluated_at,
            at: r.at, requester: r.requester, purpose: r.purpose, entity_id: r.entity_id, policies: r.policies, exemptions: r.exemptions,
          };
          return { schema_version: 1, audit_id: e.audit_id, instance: "i1", context_hash: contextHash(r.context), ...old };
        }),
      };
      assert.equal(message.data, JSON.stringify(before));
      events += message.batch.events.length;
    }
    assert.equal(events, 600);
  });
});

describe("replies of one socket read", () => {
  test("alone, a reply goes out at once; with requests of the same read still waiting it waits for the turn's one write", async () => {
    let waiting = 0;
    const unregister = registerBacklog(() => waiting);
    try {
      const order: string[] = [];
      requestStarted();
      batchedWrite(() => order.push("alone"));
      assert.deepEqual(order, ["alone"], "nothing to gather: written at once");
      waiting = 3;
      batchedWrite(() => order.push("first of a burst"));
      assert.deepEqual(order, ["alone"], "others of the same read follow: deferred");
      requestEnded();
      waiting = 0;
      requestStarted();
      batchedWrite(() => order.push("last of the burst"));
      assert.deepEqual(order, ["alone"], "a write of this turn is already pending: joins it");
      requestEnded();
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(order, ["alone", "first of a burst", "last of the burst"]);
    } finally {
      unregister();
    }
  });
});
