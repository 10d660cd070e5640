// Issue 2 on one nats-server: the seed's example byte for byte, the stream's settings, discovery ($SRV.*),
// every error code with its service-error header, and idempotent retries by command_id.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { Svcm } from "@nats-io/services";
import { jetstream } from "@nats-io/jetstream";
import { SEED_POLICY_ID, call, policyBody, readAllEvents, singleNode, streamInfo } from "../helpers/client.js";

// Exactly as printed in LEAF_NODE_DEPLOYMENT.md ("Send a test command").
const SEED_README_PAYLOAD = `{
  "policy_id": "550e8400-e29b-41d4-a716-446655440000",
  "name": "Data Retention Policy",
  "description": "All customer data must be retained for 7 years",
  "policy_type": "Retention",
  "enforcement": "Mandatory",
  "scope": "Organization"
}`;

const node = singleNode();

function natsCli(): string | null {
  const fromEnv = process.env.NATS_CLI_BIN;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  const cached = join(process.env.POLICY_SERVICE_CACHE ?? join(homedir(), ".cache", "policy-service"), "tools", "nats-v0.5.0", "bin", "nats");
  return existsSync(cached) ? cached : null;
}

describe("the seed's create example", () => {
  test("is accepted byte for byte and stores one created event on the policy's subject", async () => {
    const { reply, status } = await call(node.nc, "create", SEED_README_PAYLOAD);
    assert.equal(status, null);
    assert.deepEqual(reply, {
      ok: true,
      aggregate_id: SEED_POLICY_ID,
      version: 1,
      events: [{ type: "created", subject: `events.policy.${SEED_POLICY_ID}.created`, seq: reply.events?.[0]?.seq }],
    });
    const events = await readAllEvents(node.nc, "POLICY_EVENTS", `events.policy.${SEED_POLICY_ID}.>`);
    assert.equal(events.length, 1);
    const [event] = events;
    assert.equal(event!.subject, `events.policy.${SEED_POLICY_ID}.created`);
    assert.equal(event!.seq, reply.events?.[0]?.seq);
    const env = event!.envelope;
    assert.equal(env.event_type, "created");
    assert.equal(env.aggregate_type, "Policy");
    assert.equal(env.aggregate_id, SEED_POLICY_ID);
    assert.equal(env.version, 1);
    assert.match(env.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(!Number.isNaN(Date.parse(env.occurred_at)));
    assert.equal(env.data.name, "Data Retention Policy");
    assert.equal(env.data.description, "All customer data must be retained for 7 years");
    // "You should see the command request logged in the service logs"
    await node.service.waitForLog((l) => l.msg === "command handled" && l.command === "create" && l.aggregate_id === SEED_POLICY_ID, 5000);
  });

  test("the stream has the documented settings", async () => {
    const info = await streamInfo(node.nc, "POLICY_EVENTS");
    const c = info.config;
    assert.deepEqual(c.subjects, ["events.policy.>"]);
    assert.equal(c.storage, "file");
    assert.equal(c.max_age, 365 * 24 * 3600 * 1e9);
    assert.equal(c.num_replicas, 1);
    assert.ok(c.duplicate_window >= 120 * 1e9, `duplicate window ${c.duplicate_window}`);
    assert.equal(c.allow_direct, true);
    assert.equal(c.deny_delete, true);
    assert.equal(c.deny_purge, true);
    const kv = await streamInfo(node.nc, "KV_POLICY_EVENTS_SNAPSHOTS");
    assert.equal(kv.config.num_replicas, 1);
    const commands = await streamInfo(node.nc, "KV_POLICY_EVENTS_COMMANDS");
    assert.ok(commands.config.max_age >= c.duplicate_window, "idempotency records outlive the duplicate window");
  });

  test("natscli: `nats req` as printed in the seed gets a reply, `nats stream info POLICY_EVENTS` works", (t) => {
    const cli = natsCli();
    if (!cli) {
      t.skip("natscli not found (NATS_CLI_BIN unset, no cached build): run eval \"$(scripts/ensure-tools)\"");
      return;
    }
    const req = spawnSync(cli, ["--server", node.server.url, "req", "policy.commands.create", SEED_README_PAYLOAD], { encoding: "utf8", timeout: 15_000 });
    assert.equal(req.status, 0, req.stderr);
    // The policy exists already (previous test): the reply is the coded error, proving the CLI round trip.
    assert.match(req.stdout, /"code":"already_exists"/);
    const info = spawnSync(cli, ["--server", node.server.url, "stream", "info", "POLICY_EVENTS"], { encoding: "utf8", timeout: 15_000 });
    assert.equal(info.status, 0, info.stderr);
    assert.match(info.stdout, /events\.policy\.>/);
  });
});

describe("micro-service discovery", () => {
  test("$SRV.PING/INFO/STATS name policy-service with its version, every public command endpoint in queue group q", async () => {
    const client = new Svcm(node.nc).client();
    const pings = [];
    for await (const p of await client.ping("policy-service")) pings.push(p);
    assert.equal(pings.length, 1);
    const { version } = JSON.parse((await import("node:fs")).readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
    assert.equal(pings[0]!.version, version);
    const infos = [];
    for await (const i of await client.info("policy-service")) infos.push(i);
    const subjects = new Map(infos[0]!.endpoints.map((e) => [e.subject, e.queue_group]));
    for (const name of ["create", "update", "approve", "activate", "suspend", "revoke", "archive", "add_rule", "update_rule", "remove_rule",
      "reorder_rules", "create_set", "add_to_set", "remove_from_set", "grant_exemption", "revoke_exemption"]) {
      assert.equal(subjects.get(`policy.commands.${name}`), "q", `endpoint ${name}`);
    }
    assert.ok(!subjects.has("policy.commands.expire_exemption"), "expire_exemption is internal");
    const stats = [];
    for await (const s of await client.stats("policy-service")) stats.push(s);
    const create = stats[0]!.endpoints!.find((e) => e.subject === "policy.commands.create");
    assert.ok(create && create.num_requests >= 1);
    const counters = (create.data as { commands?: Record<string, number> } | undefined)?.commands;
    assert.ok(counters && (counters.executed ?? 0) >= 1 && typeof counters.conflictRetries === "number", `command counters in STATS data: ${JSON.stringify(create.data)}`);
  });
});

describe("error codes (body and Nats-Service-Error-Code header)", () => {
  const id = randomUUID();

  test("invalid_json → 400", async () => {
    const r = await call(node.nc, "create", "{not json");
    assert.equal(r.reply.ok, false);
    assert.equal(r.reply.error.code, "invalid_json");
    assert.equal(r.status, 400);
    assert.ok(r.errorText && r.errorText.length > 0);
  });

  test("validation_failed → 400 with details", async () => {
    const r = await call(node.nc, "create", policyBody({ policy_type: "Nonsense" }));
    assert.equal(r.reply.error.code, "validation_failed");
    assert.equal(r.status, 400);
    assert.ok(r.reply.error.details !== undefined);
  });

  test("not_found → 404", async () => {
    const r = await call(node.nc, "approve", { policy_id: randomUUID(), approved_by: "someone" });
    assert.equal(r.reply.error.code, "not_found");
    assert.equal(r.status, 404);
  });

  test("already_exists → 409", async () => {
    assert.equal((await call(node.nc, "create", policyBody({ policy_id: id }))).reply.ok, true);
    const r = await call(node.nc, "create", policyBody({ policy_id: id }));
    assert.equal(r.reply.error.code, "already_exists");
    assert.equal(r.status, 409);
  });

  test("invalid_transition → 409, and nothing is written", async () => {
    const before = (await streamInfo(node.nc, "POLICY_EVENTS")).state.messages;
    const r = await call(node.nc, "archive", { policy_id: id, archived_by: "someone" });
    assert.equal(r.reply.error.code, "invalid_transition");
    assert.equal(r.status, 409);
    assert.equal((await streamInfo(node.nc, "POLICY_EVENTS")).state.messages, before);
  });

  test("conflict → 409 when a command_id is reused for a different payload", async () => {
    const commandId = randomUUID();
    assert.equal((await call(node.nc, "update", { policy_id: id, updated_by: "a", name: "One", command_id: commandId })).reply.ok, true);
    const r = await call(node.nc, "update", { policy_id: id, updated_by: "a", name: "Two", command_id: commandId });
    assert.equal(r.reply.error.code, "conflict");
    assert.equal(r.status, 409);
  });

  test("internal → 500 on a corrupt stream (a non-envelope message on an aggregate's subject), and the service keeps serving", async () => {
    const corruptId = randomUUID();
    await jetstream(node.nc).publish(`events.policy.${corruptId}.created`, "this is not an event envelope");
    const r = await call(node.nc, "approve", { policy_id: corruptId, approved_by: "x" });
    assert.equal(r.reply.error.code, "internal");
    assert.equal(r.status, 500);
    assert.equal(r.reply.error.message, "internal error", "no internals leak to the client");
    await node.service.waitForLog((l) => l.level === 50 && l.msg === "command failed with an internal error" && typeof l.err === "object", 5000);
    assert.equal((await call(node.nc, "create", policyBody())).reply.ok, true);
  });
  // unavailable (503) is provoked in cluster.test.ts: an R1 stream whose only node is down.
});

describe("idempotency by command_id", () => {
  test("a retry returns the original reply and stores nothing new (also for generated ids)", async () => {
    const commandId = randomUUID();
    const body = { ...policyBody({ name: "Idempotent" }), command_id: commandId };
    const first = await call(node.nc, "create", body);
    assert.equal(first.reply.ok, true);
    const before = (await streamInfo(node.nc, "POLICY_EVENTS")).state.messages;
    const again = await call(node.nc, "create", body);
    assert.deepEqual(again.reply, first.reply);
    assert.equal((await streamInfo(node.nc, "POLICY_EVENTS")).state.messages, before);
    const events = await readAllEvents(node.nc, "POLICY_EVENTS", `events.policy.${first.reply.aggregate_id}.>`);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.envelope.command_id, commandId);
    assert.equal(events[0]!.envelope.causation_id, commandId);
  });

  test("a remembered domain refusal is returned again", async () => {
    const commandId = randomUUID();
    const body = { policy_id: randomUUID(), approved_by: "x", command_id: commandId };
    const first = await call(node.nc, "approve", body);
    assert.equal(first.reply.error.code, "not_found");
    assert.deepEqual((await call(node.nc, "approve", body)).reply, first.reply);
  });
});
