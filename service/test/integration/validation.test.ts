// Refusals in plain words, through NATS against a real service (issue 13 items 8 and 9): an exemption that has
// already expired is refused with validation_failed and stores nothing; commands, queries and evaluation name the
// field and say what it needs instead of the validation library's wording; the service keeps serving.
import { before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { call, callOk, policyBody, singleNode, streamInfo, type Json } from "../helpers/client.js";

const node = singleNode();
let policyId: string;

const ZOD_WORDING = /Invalid input|expected (string|record|object|number|array)|received undefined|Too (big|small)/i;

async function storedMessages(): Promise<number> {
  return (await streamInfo(node.nc, "POLICY_EVENTS")).state.messages;
}

/** Asserts a validation_failed reply (status 400) whose details name `path` with `message`; returns the reply. */
async function refused(subject: string, body: unknown, path: string, message: string | RegExp): Promise<Json> {
  const { reply, status, errorText } = await call(node.nc, subject, body);
  assert.equal(reply.ok, false, `${subject}: ${JSON.stringify(reply)}`);
  assert.equal(reply.error.code, "validation_failed", JSON.stringify(reply.error));
  assert.equal(status, 400);
  const detail = (reply.error.details as { path: string; message: string }[]).find((d) => d.path === path);
  assert.ok(detail, `${subject}: a detail for ${JSON.stringify(path)} in ${JSON.stringify(reply.error.details)}`);
  if (typeof message === "string") assert.equal(detail.message, message);
  else assert.match(detail.message, message);
  assert.doesNotMatch(reply.error.message, ZOD_WORDING, "no validation-library wording");
  assert.equal(errorText, reply.error.message, "the service-error header carries the same words");
  return reply;
}

describe("plain-language refusals against one node", () => {
  before(async () => {
    policyId = (await callOk(node.nc, "create", policyBody())).aggregate_id;
    await callOk(node.nc, "approve", { policy_id: policyId, approved_by: "officer" });
    await callOk(node.nc, "activate", { policy_id: policyId, activated_by: "officer" });
  });

  test("a grant whose expires_at has passed is refused, stores nothing, and the service keeps granting", async () => {
    const before = await storedMessages();
    const past = new Date(Date.now() - 60_000).toISOString();
    const grant = { policy_id: policyId, entity_id: "user:alice", reason: "migration", granted_by: "data-officer" };
    const reply = await refused("grant_exemption", { ...grant, expires_at: past }, "expires_at", /^expires_at must be in the future \(.* has passed\)/);
    assert.match(reply.error.message, /^grant_exemption: expires_at must be in the future/);
    await refused("grant_exemption", { ...grant, valid_from: "2099-03-01T00:00:00Z", expires_at: "2099-03-01T00:00:00Z" }, "expires_at", "expires_at must be after valid_from");
    assert.equal(await storedMessages(), before, "a refused grant stores nothing");

    const future = new Date(Date.now() + 3_600_000).toISOString();
    const granted = await callOk(node.nc, "grant_exemption", { ...grant, expires_at: future });
    const state = (await callOk(node.nc, "policy.queries.get", { id: granted.aggregate_id })).state as Json;
    assert.equal(state.status, "Granted");
    assert.equal(await storedMessages(), before + 1);
  });

  test("commands: required, wrong type, enum, length, date-time and unknown field, in plain words", async () => {
    const before = await storedMessages();
    const { description: _omitted, ...withoutDescription } = policyBody();
    await refused("create", withoutDescription, "description", "description is required");
    await refused("create", policyBody({ name: 42 }), "name", "name must be a string, not the number 42");
    await refused("create", policyBody({ enforcement: "Sometimes" }), "enforcement", "enforcement must be one of Advisory, Recommended, Mandatory, Critical");
    await refused("create", policyBody({ name: "n".repeat(201) }), "name", "name must be at most 200 characters");
    await refused("create", policyBody({ tags: "sox" }), "tags", "tags must be an array, not a string");
    await refused("approve", { policy_id: policyId, approved_by: "x", approval_date: "2025-11-08 10:00" }, "approval_date", /^approval_date must be an RFC 3339 date-time/);
    await refused("archive", { policy_id: policyId, archived_by: "x", retention_period_days: 1.5 }, "retention_period_days", "retention_period_days must be a whole number, not 1.5");
    await refused("create", policyBody({ admin: true }), "", /^payload has an unknown field admin; the fields are: policy_id, name, /);
    assert.equal(await storedMessages(), before);
  });

  test("queries and evaluation: the same words (\"context is required\", not \"expected record\")", async () => {
    await refused("policy.queries.get", {}, "id", "id is required");
    await refused("policy.queries.list", { limit: "ten" }, "limit", "limit must be a number, not a string");
    await refused("policy.queries.history", { id: policyId, limit: 0 }, "limit", "limit must be at least 1");
    await refused("policy.queries.get", [], "", "payload must be a JSON object, not an array");
    await refused("evaluate", { policy_id: policyId }, "context", "context is required");
    await refused("evaluate", { policy_id: policyId, context: "x" }, "context", "context must be a JSON object, not a string");
    await refused("check_compliance", { context: {} }, "", "payload needs exactly one of policy_set_id or policy_ids");
    // Still serving.
    await callOk(node.nc, "evaluate", { policy_id: policyId, context: {} });
  });
});
