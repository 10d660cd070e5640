// A full lifecycle over NATS: policy (rules, approve, activate, suspend, resume, revoke, archive), exemptions,
// sets. Versions are 1..n per aggregate, every event lands on its aggregate's subject, refusals write nothing.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { SEED_POLICY_ID, call, callOk, policyBody, readAllEvents, singleNode, streamInfo, type Json } from "../helpers/client.js";

const node = singleNode();

async function ok(name: string, body: unknown, expectVersion: number, expectType: string): Promise<Json> {
  const reply = await callOk(node.nc, name, body);
  assert.equal(reply.version, expectVersion, `${name}: version`);
  assert.equal(reply.events.length, 1);
  assert.equal(reply.events[0].type, expectType);
  assert.equal(reply.events[0].subject, `events.policy.${reply.aggregate_id}.${expectType}`);
  return reply;
}

async function refused(name: string, body: unknown, code: string): Promise<void> {
  const before = (await streamInfo(node.nc, "POLICY_EVENTS")).state.messages;
  const { reply } = await call(node.nc, name, body);
  assert.equal(reply.ok, false, `${name} should be refused`);
  assert.equal(reply.error.code, code, `${name}: ${JSON.stringify(reply.error)}`);
  assert.equal((await streamInfo(node.nc, "POLICY_EVENTS")).state.messages, before, `${name} wrote nothing`);
}

const rule = (id: string, value: unknown) => ({ rule_id: id, name: `Rule ${id}`, severity: "High", expression: { op: "equal", field: "data.retention_years", value } });

test("policy, exemption and set lifecycles store contiguous versions on their own subjects", async () => {
  const p = SEED_POLICY_ID;
  // The seed's and domain.md's examples.
  await ok("create", policyBody({ policy_id: p }), 1, "created");
  await ok("add_rule", { policy_id: p, rule: rule("r1", 7) }, 2, "rule_added");
  await ok("add_rule", { policy_id: p, rule: rule("r2", 8) }, 3, "rule_added");
  await ok("update_rule", { policy_id: p, rule_id: "r1", rule: rule("r1", 10) }, 4, "rule_updated");
  await ok("reorder_rules", { policy_id: p, rule_ids: ["r2", "r1"] }, 5, "rules_reordered");
  await ok("remove_rule", { policy_id: p, rule_id: "r2" }, 6, "rule_removed");
  await ok("update", { policy_id: p, updated_by: "editor", description: "Retain for 10 years" }, 7, "updated");
  await refused("grant_exemption", { policy_id: p, entity_id: "legacy-system", reason: "Legacy system migration", granted_by: "data-officer", expires_at: "2099-02-08T10:00:00Z" }, "invalid_transition");
  await ok("approve", { policy_id: p, approved_by: "compliance-officer", approval_date: "2025-11-08T10:00:00Z" }, 8, "approved");
  await ok("activate", { policy_id: p, activated_by: "compliance-officer" }, 9, "activated");
  await ok("suspend", { policy_id: p, suspended_by: "ops", reason: "Audit" }, 10, "suspended");
  await refused("approve", { policy_id: p, approved_by: "x" }, "invalid_transition");
  await ok("activate", { policy_id: p, activated_by: "ops" }, 11, "activated"); // resume

  const exemption = randomUUID();
  const grant = await ok("grant_exemption", {
    exemption_id: exemption, policy_id: p, entity_id: "550e8400-e29b-41d4-a716-446655440001", reason: "Legacy system migration",
    granted_by: "data-officer", expires_at: "2099-02-08T10:00:00Z",
  }, 1, "exemption_granted");
  assert.equal(grant.aggregate_id, exemption);
  await ok("revoke_exemption", { exemption_id: exemption, revoked_by: "data-officer", reason: "Migration done" }, 2, "exemption_revoked");
  await refused("revoke_exemption", { exemption_id: exemption, revoked_by: "data-officer", reason: "again" }, "invalid_transition");

  // Sets: a generated id, referencing existing policies only.
  const p2 = (await ok("create", policyBody({ name: "Second" }), 1, "created")).aggregate_id as string;
  await refused("create_set", { name: "Bad", description: "Unknown member", policies: [randomUUID()], composition: "All", conflict_resolution: "MostRestrictive" }, "not_found");
  const set = await ok("create_set", { name: "Core", description: "Core policies", policies: [p], composition: { AtLeast: 1 }, conflict_resolution: "MostRestrictive" }, 1, "set_created");
  const setId = set.aggregate_id as string;
  assert.match(setId, /^[0-9a-f]{8}-[0-9a-f]{4}-7/, "generated ids are UUIDv7");
  await ok("add_to_set", { policy_set_id: setId, policy_id: p2 }, 2, "added_to_set");
  await ok("remove_from_set", { policy_set_id: setId, policy_id: p2 }, 3, "removed_from_set");

  await ok("revoke", { policy_id: p, revoked_by: "ciso", reason: "Superseded" }, 12, "revoked");
  await refused("activate", { policy_id: p, activated_by: "ops" }, "invalid_transition");
  await ok("archive", { policy_id: p, archived_by: "records", retention_period_days: 2555 }, 13, "archived");
  await refused("archive", { policy_id: p, archived_by: "records" }, "invalid_transition");

  // The stream holds exactly these events, versions 1..n per aggregate, envelopes complete.
  const all = await readAllEvents(node.nc, "POLICY_EVENTS");
  const byAggregate = new Map<string, Json[]>();
  for (const row of all) {
    const env = row.envelope;
    assert.equal(row.subject, `events.policy.${env.aggregate_id}.${env.event_type}`);
    for (const field of ["event_id", "event_type", "aggregate_type", "aggregate_id", "version", "occurred_at", "command_id", "correlation_id", "causation_id", "data"]) {
      assert.ok(Object.hasOwn(env, field), `envelope field ${field}`);
    }
    byAggregate.set(env.aggregate_id, [...(byAggregate.get(env.aggregate_id) ?? []), env]);
  }
  assert.deepEqual(byAggregate.get(p)!.map((e) => e.version), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
  assert.deepEqual(byAggregate.get(exemption)!.map((e) => e.event_type), ["exemption_granted", "exemption_revoked"]);
  assert.deepEqual(byAggregate.get(setId)!.map((e) => e.version), [1, 2, 3]);
  assert.equal(all.length, 13 + 2 + 1 + 3);
  assert.equal(new Set(all.map((r) => r.envelope.event_id)).size, all.length, "event ids unique");
});
