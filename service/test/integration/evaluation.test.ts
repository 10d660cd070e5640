// evaluate and check_compliance over NATS against a real nats-server and the built service:
// results per rule, violations, exemptions (waived violations still reported), not-applicable policies,
// evaluation as of a past moment, and policy sets.
import { before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { sleep } from "../helpers/nats.js";
import { call, callOk, policyBody, singleNode, type Json as Reply } from "../helpers/client.js";

const node = singleNode();
// Each request here may take 10 s (the helpers' default is 15 s).
const request = (subject: string, body: unknown) => call(node.nc, subject, body, 10_000);
const ok = (subject: string, body: unknown) => callOk(node.nc, subject, body, 10_000);

/** evaluate, retried for up to a second while the instance's projection catches up with the last write. */
async function evaluate(body: Reply, until: (reply: Reply) => boolean = (r) => r.ok === true): Promise<Reply> {
  const deadline = Date.now() + 1000;
  for (;;) {
    const { reply } = await request("policy.commands.evaluate", body);
    if (until(reply) || Date.now() > deadline) return reply;
    await sleep(25);
  }
}

const RULES = [
  {
    rule_id: "retention",
    name: "Retention period",
    severity: "High",
    expression: { op: "greater_than_or_equal", field: "data.retention_days", value: 2555 },
    error_message: "data must be kept for at least 7 years",
    remediation_hint: "set retention_days to 2555 or more",
  },
  { rule_id: "region", name: "Region", severity: "Medium", expression: { op: "in", field: "data.region", values: ["eu-west-1", "eu-central-1"] } },
];
const GOOD = { data: { retention_days: 2600, region: "eu-west-1" } };
const BAD = { data: { retention_days: 30, region: "eu-west-1" } };

async function activePolicy(overrides: Reply = {}): Promise<string> {
  const created = await ok("policy.commands.create", policyBody({ rules: RULES, ...overrides }));
  const id = created.aggregate_id as string;
  await ok("policy.commands.approve", { policy_id: id, approved_by: "compliance-officer" });
  await ok("policy.commands.activate", { policy_id: id, activated_by: "ops" });
  return id;
}

describe("policy.commands.evaluate", () => {
  let policyId = "";
  before(async () => {
    policyId = await activePolicy();
  });

  test("a compliant context: every rule passed, not blocking", async () => {
    const reply = await evaluate({ policy_id: policyId, context: GOOD });
    assert.equal(reply.ok, true, JSON.stringify(reply));
    const r = reply.result;
    assert.equal(r.status, "Compliant");
    assert.equal(r.blocking, false);
    assert.equal(r.enforcement, "Mandatory");
    assert.equal(r.policy_version, 3);
    assert.deepEqual(r.rules.map((x: Reply) => [x.rule_id, x.passed]), [["retention", true], ["region", true]]);
    assert.deepEqual(r.violations, []);
    assert.ok(Number.isFinite(Date.parse(r.evaluated_at)));
  });

  test("a violating context: the failed rule, its severity, message, remediation and reason; blocking for Mandatory", async () => {
    const reply = await evaluate({ policy_id: policyId, context: BAD });
    const r = reply.result;
    assert.equal(r.status, "NonCompliant");
    assert.equal(r.blocking, true);
    const retention = r.rules.find((x: Reply) => x.rule_id === "retention");
    assert.equal(retention.passed, false);
    assert.ok(typeof retention.reason === "string" && retention.reason.length > 0);
    assert.equal(r.violations.length, 1);
    assert.equal(r.violations[0].rule_id, "retention");
    assert.equal(r.violations[0].severity, "High");
    assert.match(r.violations[0].message, /7 years/);
    assert.match(r.violations[0].remediation, /2555/);
  });

  test("a valid exemption for the entity: CompliantWithExemption naming it, violations still reported as waived", async () => {
    const exemptionId = randomUUID();
    await ok("policy.commands.grant_exemption", {
      exemption_id: exemptionId, policy_id: policyId, entity_id: "legacy-system-7", reason: "Legacy system migration",
      granted_by: "data-officer", expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    const reply = await evaluate({ policy_id: policyId, context: BAD, entity_id: "legacy-system-7" }, (x) => x.result?.status === "CompliantWithExemption");
    const r = reply.result;
    assert.equal(r.status, "CompliantWithExemption", JSON.stringify(reply));
    assert.equal(r.exemption_id, exemptionId);
    assert.equal(r.blocking, false);
    assert.deepEqual(r.waived_violations.map((v: Reply) => v.rule_id), ["retention"]);
    // Another entity is not exempted.
    const other = await evaluate({ policy_id: policyId, context: BAD, entity_id: "someone-else" });
    assert.equal(other.result.status, "NonCompliant");
  });

  test("a policy that is not Active is not_applicable (422) with a clear message", async () => {
    const draft = await ok("policy.commands.create", {
      name: "Draft only", description: "never activated", policy_type: "Security", enforcement: "Critical", scope: "System", rules: RULES,
    });
    await sleep(200);
    const { reply: body, status } = await request("policy.commands.evaluate", { policy_id: draft.aggregate_id, context: GOOD });
    assert.equal(body.ok, false);
    assert.equal(body.error.code, "not_applicable");
    assert.match(body.error.message, /Draft|not Active|not active/);
    assert.equal(status, 422);
    const unknown = await request("policy.commands.evaluate", { policy_id: randomUUID(), context: GOOD });
    assert.equal(unknown.reply.error.code, "not_found");
    assert.equal(unknown.status, 404);
    const invalid = await request("policy.commands.evaluate", { policy_id: policyId });
    assert.equal(invalid.reply.error.code, "validation_failed");
    assert.equal(invalid.status, 400);
  });

  test("an impossible date (2025-02-30) is validation_failed, and an upper-case id finds the policy", async () => {
    const impossible = await request("policy.commands.evaluate", { policy_id: policyId, context: GOOD, at: "2025-02-30T10:00:00Z" });
    assert.equal(impossible.reply.error.code, "validation_failed", JSON.stringify(impossible.reply));
    assert.equal(impossible.status, 400);
    const midnight = await request("policy.queries.get", { id: policyId, at: "2025-01-01T24:00:00Z" });
    assert.equal(midnight.reply.error.code, "validation_failed", JSON.stringify(midnight.reply));
    const upper = await evaluate({ policy_id: policyId.toUpperCase(), context: GOOD });
    assert.equal(upper.ok, true, JSON.stringify(upper));
    assert.equal(upper.result.status, "Compliant");
  });

  test("as of a past moment: the rules and version in force then", async () => {
    const id = await activePolicy();
    await evaluate({ policy_id: id, context: GOOD });
    await sleep(30);
    const beforeChange = new Date().toISOString();
    await sleep(30);
    await ok("policy.commands.add_rule", {
      policy_id: id,
      rule: { rule_id: "encrypted", name: "Encrypted", severity: "Critical", expression: { op: "equal", field: "data.encrypted", value: true } },
    });
    const now = await evaluate({ policy_id: id, context: GOOD }, (x) => x.result?.policy_version === 4);
    assert.equal(now.result.policy_version, 4);
    assert.equal(now.result.status, "NonCompliant");
    const then = await evaluate({ policy_id: id, context: GOOD, at: beforeChange });
    assert.equal(then.ok, true, JSON.stringify(then));
    assert.equal(then.result.policy_version, 3);
    assert.equal(then.result.status, "Compliant");
    assert.deepEqual(then.result.rules.map((x: Reply) => x.rule_id), ["retention", "region"]);
    const beforeActive = await request("policy.commands.evaluate", { policy_id: id, context: GOOD, at: "2001-01-01T00:00:00Z" });
    assert.equal(beforeActive.reply.ok, false);
    assert.ok(["not_applicable", "not_found"].includes(beforeActive.reply.error.code));
  });
});

describe("policy.commands.check_compliance", () => {
  test("a set combines its members (All) and reports each member's result", async () => {
    const a = await activePolicy({ name: "Retention A" });
    const b = await activePolicy({
      name: "Encryption B",
      rules: [{ rule_id: "encrypted", name: "Encrypted", severity: "Critical", expression: { op: "equal", field: "data.encrypted", value: true } }],
    });
    const set = await ok("policy.commands.create_set", {
      name: "Storage baseline", description: "retention and encryption", policies: [a, b], composition: "All", conflict_resolution: "MostRestrictive",
    });
    const body = { policy_set_id: set.aggregate_id, context: { data: { retention_days: 3000, region: "eu-west-1", encrypted: false } } };
    let reply: Reply = {};
    for (const deadline = Date.now() + 1000; Date.now() < deadline; await sleep(25)) {
      reply = (await request("policy.commands.check_compliance", body)).reply;
      if (reply.ok === true) break;
    }
    assert.equal(reply.ok, true, JSON.stringify(reply));
    // One member complies, one does not: All fails; with a complying member the set is PartiallyCompliant.
    assert.equal(reply.result.status, "PartiallyCompliant");
    assert.equal(reply.result.compliant, false);
    assert.equal(reply.result.blocking, true);
    assert.equal(reply.result.deciding_policy_id, b);
    assert.equal(reply.result.policy_set_id, set.aggregate_id);
    const members = reply.result.members;
    assert.ok(Array.isArray(members), JSON.stringify(reply.result));
    const byId = new Map(members.map((m: Reply) => [m.policy_id, m]));
    assert.equal((byId.get(a) as Reply).status, "Compliant");
    assert.equal((byId.get(b) as Reply).status, "NonCompliant");

    const compliant = await request("policy.commands.check_compliance", {
      policy_ids: [a, b], context: { data: { retention_days: 3000, region: "eu-west-1", encrypted: true } },
    });
    assert.equal(compliant.reply.ok, true, JSON.stringify(compliant.reply));
    assert.equal(compliant.reply.result.status, "Compliant");
    const neither = await request("policy.commands.check_compliance", { context: {} });
    assert.equal(neither.reply.error.code, "validation_failed");
  });
});
