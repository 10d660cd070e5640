// Hostile input: every case gets a coded error reply, the stream does not change, and the service keeps serving.
import { before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { call, policyBody, singleNode, streamInfo } from "../helpers/client.js";

const node = singleNode();
let policyId: string;

const ONE_MIB = 1024 * 1024;

function cases(): { name: string; command: string; payload: string | Uint8Array; codes: string[] }[] {
  const protoJson = `{"__proto__":{"admin":true},"name":"x","description":"y","policy_type":"Retention","enforcement":"Mandatory","scope":"Organization"}`;
  const nested = `{"constructor":{"prototype":{"polluted":true}},"name":"x","description":"y","policy_type":"Retention","enforcement":"Mandatory","scope":"Organization"}`;
  const hugeBody = JSON.stringify({ ...policyBody(), description: "x".repeat(ONE_MIB - 200) });
  const exactMiB = hugeBody + " ".repeat(Math.max(0, ONE_MIB - Buffer.byteLength(hugeBody)));
  const deep = "[".repeat(5000) + "]".repeat(5000);
  return [
    { name: "not JSON", command: "create", payload: "{\"name\": ", codes: ["invalid_json"] },
    { name: "empty payload", command: "create", payload: "", codes: ["invalid_json"] },
    { name: "invalid UTF-8", command: "create", payload: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), codes: ["invalid_json"] },
    { name: "JSON array", command: "create", payload: "[1,2,3]", codes: ["validation_failed"] },
    { name: "JSON null", command: "create", payload: "null", codes: ["validation_failed"] },
    { name: "deeply nested array", command: "create", payload: deep, codes: ["validation_failed", "invalid_json"] },
    { name: "wrong type (name is a number)", command: "create", payload: JSON.stringify(policyBody({ name: 42 })), codes: ["validation_failed"] },
    { name: "unknown enum value", command: "create", payload: JSON.stringify(policyBody({ enforcement: "Sometimes" })), codes: ["validation_failed"] },
    { name: "missing field", command: "create", payload: JSON.stringify({ name: "x" }), codes: ["validation_failed"] },
    { name: "unknown field", command: "create", payload: JSON.stringify(policyBody({ admin: true })), codes: ["validation_failed"] },
    { name: "policy_id with a dot", command: "create", payload: JSON.stringify(policyBody({ policy_id: "a.b" })), codes: ["validation_failed"] },
    { name: "policy_id *", command: "approve", payload: JSON.stringify({ policy_id: "*", approved_by: "x" }), codes: ["validation_failed"] },
    { name: "policy_id >", command: "approve", payload: JSON.stringify({ policy_id: ">", approved_by: "x" }), codes: ["validation_failed"] },
    { name: "policy_id UUID with suffix token", command: "approve", payload: JSON.stringify({ policy_id: `${randomUUID()}.created`, approved_by: "x" }), codes: ["validation_failed"] },
    { name: "policy_id with spaces", command: "approve", payload: JSON.stringify({ policy_id: "a b", approved_by: "x" }), codes: ["validation_failed"] },
    { name: "exemption id wildcard", command: "revoke_exemption", payload: JSON.stringify({ exemption_id: "events.>", revoked_by: "x", reason: "y" }), codes: ["validation_failed"] },
    { name: "oversized string", command: "create", payload: JSON.stringify(policyBody({ name: "n".repeat(20_000) })), codes: ["validation_failed"] },
    { name: "__proto__ key", command: "create", payload: protoJson, codes: ["validation_failed"] },
    { name: "constructor.prototype key", command: "create", payload: nested, codes: ["validation_failed"] },
    { name: "invalid date", command: "approve", payload: JSON.stringify({ policy_id: "00000000-0000-4000-8000-000000000000", approved_by: "x", approval_date: "2025-13-45T99:00:00Z" }), codes: ["validation_failed"] },
    { name: "date without zone", command: "approve", payload: JSON.stringify({ policy_id: "00000000-0000-4000-8000-000000000000", approved_by: "x", approval_date: "2025-11-08 10:00" }), codes: ["validation_failed"] },
    { name: "control characters", command: "create", payload: JSON.stringify(policyBody({ name: "evil\u0000name" })), codes: ["validation_failed"] },
    { name: "bad command_id", command: "create", payload: JSON.stringify(policyBody({ command_id: "not-a-uuid" })), codes: ["validation_failed"] },
    { name: "1 MiB payload", command: "create", payload: exactMiB, codes: ["validation_failed"] },
  ];
}

// Inside a describe: at a file's top level Node 20 starts the next before() hook without awaiting the previous one.
describe("hostile input against one node", () => {
  before(async () => {
    const created = await call(node.nc, "create", policyBody());
    assert.equal(created.reply.ok, true);
    policyId = created.reply.aggregate_id;
  });

  test("hostile inputs get coded errors, store nothing, and the service keeps answering", async () => {
    const before = (await streamInfo(node.nc, "POLICY_EVENTS")).state;
    for (const c of cases()) {
      const { reply, status } = await call(node.nc, c.command, c.payload);
      assert.equal(reply.ok, false, `${c.name}: ${JSON.stringify(reply).slice(0, 200)}`);
      assert.ok(c.codes.includes(reply.error.code), `${c.name}: got ${reply.error.code} (${reply.error.message})`);
      assert.equal(status, 400, `${c.name}: service error header`);
      assert.equal(typeof reply.error.message, "string");
    }
    const afterState = (await streamInfo(node.nc, "POLICY_EVENTS")).state;
    assert.equal(afterState.messages, before.messages, "no event stored");
    assert.equal(afterState.last_seq, before.last_seq);
    // Still serving, and nothing was polluted.
    assert.equal(({} as Record<string, unknown>).admin, undefined);
    const approve = await call(node.nc, "approve", { policy_id: policyId, approved_by: "compliance-officer" });
    assert.equal(approve.reply.ok, true, JSON.stringify(approve.reply));
    assert.equal(approve.reply.version, 2);
    assert.ok(node.service.running, "service process still running");
    assert.ok(!node.service.lines.some((l) => l.level >= 60), "no fatal log line");
  });

  test("a burst of garbage in parallel does not stop the service", async () => {
    const junk = Array.from({ length: 200 }, (_, i) => call(node.nc, i % 2 ? "create" : "approve", i % 3 ? "}{" : JSON.stringify({ policy_id: ">" })));
    const replies = await Promise.all(junk);
    assert.ok(replies.every((r) => r.reply.ok === false && r.status === 400));
    const still = await call(node.nc, "create", policyBody());
    assert.equal(still.reply.ok, true);
  });
});
