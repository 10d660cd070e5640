// Records golden event fixtures: what a built policy-service really stores in POLICY_EVENTS for every event
// type, and the state its own `policy.queries.get` reports afterwards. It starts a real nats-server and the
// service (this tree's dist/main.js, or another build's with --main, e.g. the previous release's), sends one
// short command story per event type over NATS, reads the stream back, and writes one file per event type:
//
//   tests/fixtures/events/<version>/<event_type>.json
//     { event_type, written_by, stream: [{ seq, subject, envelope }, …], state }
//
// `stream` is that aggregate's events as stored (the last one is of `event_type`); `state` is the service's
// answer to `get` after them. test/unit/golden-events.test.ts replays every fixture of every version through
// this tree's `evolve` and requires the same state, so a later version that cannot read old events fails.
//
//   npm run fixtures:events                                   # this tree, into tests/fixtures/events/<version>/
//   npm run fixtures:events -- --ref v0.9.0                   # a release built from its tag (test/helpers/previous-release.ts)
//   npm run fixtures:events -- --main /path/to/dist/main.js   # another build (its --version names the directory)
//   … -- --out DIR                                            # another directory
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync, readdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { EVENT_TYPES } from "../../src/domain/index.js";
import { SERVICE_MAIN, SERVICE_ROOT, sleep, startNatsServer, startService } from "../helpers/nats.js";
import { previousRelease } from "../helpers/previous-release.js";
import { callOk, readAllEvents, type Json, type StoredEventRow } from "../helpers/client.js";
import { createPayload } from "../unit/domainHarness.js";

const REPO_ROOT = resolve(SERVICE_ROOT, "..");

/** A fixed UUID per story (version-4 shape), so fixtures of different versions are easy to compare. */
const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;

const policy = (policyId: string, extra: Json = {}): Json => createPayload(policyId, extra);
const rule = (ruleId: string, extra: Json = {}): Json => ({
  rule_id: ruleId,
  name: `Rule ${ruleId}`,
  severity: "High",
  expression: { op: "greater_than_or_equal", field: "record.retention_days", value: 2555 },
  ...extra,
});
const approve = (p: string) => ["approve", { policy_id: p, approved_by: "compliance-officer", approval_date: "2025-11-08T10:00:00Z" }] as const;
const activate = (p: string) => ["activate", { policy_id: p, activated_by: "compliance-officer" }] as const;

type Step = readonly [command: string, payload: Json];
interface Story { eventType: (typeof EVENT_TYPES)[number]; aggregateId: string; steps: Step[]; waitForExpiry?: true }

function stories(nowMs: number): Story[] {
  const active = id(4); // referenced by the set and exemption stories
  const second = id(8);
  const soon = new Date(nowMs + 4_000).toISOString().replace(/\.\d{3}Z$/, "Z");
  return [
    { eventType: "created", aggregateId: id(1), steps: [["create", policy(id(1), {
      scope: { Department: "finance" }, rules: [rule("r1"), { name: "Unnamed rule gets a derived id", severity: "Low", expression: { op: "exists", field: "user.id" }, on_missing: "pass" }],
      effective_from: "2025-01-01T00:00:00Z", effective_until: "2099-01-01T00:00:00Z", tags: ["sox"], owner: "records",
      command_id: id(101), correlation_id: "golden-fixtures",
    })]] },
    { eventType: "updated", aggregateId: id(2), steps: [["create", policy(id(2))], ["update", { policy_id: id(2), updated_by: "editor", description: "Retained for 7 years, then deleted", tags: ["gdpr"] }]] },
    { eventType: "approved", aggregateId: id(3), steps: [["create", policy(id(3))], approve(id(3))] },
    { eventType: "activated", aggregateId: active, steps: [["create", policy(active, { rules: [rule("r1")] })], approve(active), activate(active)] },
    { eventType: "suspended", aggregateId: id(5), steps: [["create", policy(id(5))], approve(id(5)), activate(id(5)),
      ["suspend", { policy_id: id(5), suspended_by: "ciso", reason: "Under legal review", expected_resume_date: "2099-01-01T00:00:00Z" }]] },
    { eventType: "revoked", aggregateId: id(6), steps: [["create", policy(id(6))], approve(id(6)), activate(id(6)),
      ["revoke", { policy_id: id(6), revoked_by: "ciso", reason: "Superseded" }]] },
    { eventType: "archived", aggregateId: id(7), steps: [["create", policy(id(7))], approve(id(7)), activate(id(7)),
      ["revoke", { policy_id: id(7), revoked_by: "ciso", reason: "Superseded" }], ["archive", { policy_id: id(7), archived_by: "records-manager", retention_period_days: 2555 }]] },
    { eventType: "rule_added", aggregateId: second, steps: [["create", policy(second)], ["add_rule", { policy_id: second, rule: rule("added", { description: "d", error_message: "e", remediation_hint: "h" }) }]] },
    { eventType: "rule_updated", aggregateId: id(9), steps: [["create", policy(id(9), { rules: [rule("r1")] })],
      ["update_rule", { policy_id: id(9), rule_id: "r1", rule: { name: "Rule r1 v2", severity: "Critical", expression: { op: "in", field: "record.region", values: ["eu-west-1"] } } }]] },
    { eventType: "rule_removed", aggregateId: id(10), steps: [["create", policy(id(10), { rules: [rule("r1"), rule("r2")] })], ["remove_rule", { policy_id: id(10), rule_id: "r1" }]] },
    { eventType: "rules_reordered", aggregateId: id(11), steps: [["create", policy(id(11), { rules: [rule("r1"), rule("r2")] })], ["reorder_rules", { policy_id: id(11), rule_ids: ["r2", "r1"] }]] },
    { eventType: "set_created", aggregateId: id(12), steps: [["create_set", { policy_set_id: id(12), name: "Baseline", description: "Every system", policies: [active, second], composition: { AtLeast: 1 }, conflict_resolution: "MostRestrictive" }]] },
    { eventType: "added_to_set", aggregateId: id(13), steps: [["create_set", { policy_set_id: id(13), name: "Baseline", description: "Every system", policies: [active], composition: "All", conflict_resolution: "MostRestrictive" }],
      ["add_to_set", { policy_set_id: id(13), policy_id: second }]] },
    { eventType: "removed_from_set", aggregateId: id(14), steps: [["create_set", { policy_set_id: id(14), name: "Baseline", description: "Every system", policies: [active, second], composition: "Any", conflict_resolution: "FirstWins" }],
      ["remove_from_set", { policy_set_id: id(14), policy_id: second }]] },
    { eventType: "exemption_granted", aggregateId: id(15), steps: [["grant_exemption", { exemption_id: id(15), policy_id: active, entity_id: "billing-archive", reason: "Migration",
      justification: "Finishes before the audit", risk_acceptance: "CISO accepted", granted_by: "data-officer", valid_from: "2025-11-01T00:00:00Z", expires_at: "2099-12-31T23:59:59Z",
      scope: { Resource: "billing-archive" }, conditions: [{ field: "record.region", operator: "in", value: ["eu-west-1"] }] }]] },
    { eventType: "exemption_revoked", aggregateId: id(16), steps: [["grant_exemption", { exemption_id: id(16), policy_id: active, entity_id: "legacy", reason: "Migration", granted_by: "data-officer", expires_at: "2099-12-31T23:59:59Z" }],
      ["revoke_exemption", { exemption_id: id(16), revoked_by: "data-officer", reason: "Finished early" }]] },
    // exemption_expired is written by the service's own expiry sweeper, not by a command.
    { eventType: "exemption_expired", aggregateId: id(17), waitForExpiry: true, steps: [["grant_exemption", { exemption_id: id(17), policy_id: active, entity_id: "short-lived", reason: "Weekend change window", granted_by: "data-officer", expires_at: soon }]] },
  ];
}

async function waitForState(nc: NatsConnection, aggregateId: string, lastEventType: string, timeoutMs = 30_000): Promise<{ events: StoredEventRow[]; reply: Json }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = (await readAllEvents(nc, "POLICY_EVENTS")).filter((e) => e.subject.startsWith(`events.policy.${aggregateId}.`));
    const last = events[events.length - 1];
    if (last?.envelope.event_type === lastEventType) {
      const reply = await callOk(nc, "policy.queries.get", { id: aggregateId });
      if (reply.version === last.envelope.version) return { events, reply };
    }
    if (Date.now() > deadline) throw new Error(`${aggregateId}: no ${lastEventType} event with a matching get answer after ${timeoutMs} ms`);
    await sleep(250);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { main: { type: "string" }, ref: { type: "string" }, out: { type: "string" } } });
  let mainJs = resolve(values.main ?? SERVICE_MAIN);
  let source = values.main ? mainJs : "this tree";
  if (values.ref) {
    const built = previousRelease(values.ref);
    if (!built.ok) throw new Error(`cannot build ${values.ref}: ${built.reason}`);
    mainJs = built.main;
    source = `${built.ref} (${built.commit.slice(0, 7)})`;
  }
  // The chosen build names its own version (its directory of fixtures).
  const v = spawnSync(process.execPath, [mainJs, "--version"], { encoding: "utf8", timeout: 15_000 });
  if (v.status !== 0) throw new Error(`${mainJs} --version failed: ${v.stderr}`);
  const version = v.stdout.trim().replace(/^policy-service\s+v?/, "");
  const outDir = resolve(values.out ?? join(REPO_ROOT, "tests", "fixtures", "events", version));

  const server = await startNatsServer();
  const service = startService({ NATS_URL: server.url, LOG_LEVEL: "info" }, [], mainJs);
  let nc: NatsConnection | undefined;
  try {
    await service.ready();
    nc = await connect({ servers: server.url });
    const written: string[] = [];
    mkdirSync(outDir, { recursive: true });
    for (const f of readdirSync(outDir)) if (f.endsWith(".json")) rmSync(join(outDir, f));
    const all = stories(Date.now());
    for (const story of all) for (const [command, payload] of story.steps) await callOk(nc, command, payload);
    for (const story of all) {
      const { events, reply } = await waitForState(nc, story.aggregateId, story.eventType, story.waitForExpiry ? 60_000 : 10_000);
      const fixture = {
        comment: "Generated by service/test/tools/gen-event-fixtures.ts from a running service; do not edit by hand.",
        event_type: story.eventType,
        written_by: { service: `policy-service ${version}`, source, node: process.version, nats_server: server.version },
        stream: events.map((e) => ({ seq: e.seq, subject: e.subject, envelope: e.envelope })),
        state: reply.state,
      };
      const file = join(outDir, `${story.eventType}.json`);
      writeFileSync(file, JSON.stringify(fixture, null, 2) + "\n");
      written.push(story.eventType);
    }
    const missing = EVENT_TYPES.filter((t) => !written.includes(t));
    if (missing.length > 0) throw new Error(`no story for event types: ${missing.join(", ")}`);
    console.log(`wrote ${written.length} fixtures (policy-service ${version}) to ${outDir}`);
  } finally {
    await nc?.close();
    await service.stop();
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
