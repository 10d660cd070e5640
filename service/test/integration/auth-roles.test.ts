// The client roles of docs/security.md, enforced by a real nats-server (authorization users with the
// documented permission blocks, verbatim): the administrator runs the documented story, the evaluator
// evaluates and queries but cannot change a policy, the auditor reads the events and the audit records
// (JetStream, live, and `policy-service ctl events`), and none of them can publish to events.policy.> or
// read the snapshot or idempotency buckets. Every refusal is the server's (a permissions violation on the
// client, the matching line in the server's log), and the server logs no other violation: each role's
// permitted work needs nothing the doc does not grant, and the service's neither.
import { after, before, describe, test } from "node:test";
import { randomUUID } from "node:crypto";
import * as assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { PermissionViolationError } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { runService, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { documentedPermissionsText, type Role } from "../helpers/permissions.js";
import { runLifecycle, randomSecret } from "../helpers/auth.js";
import { EXAMPLE_IDS } from "../../src/protocol/examples.js";

const TEST_TIMEOUT = { timeout: 120_000 };
const CLIENT_ROLES = ["administrator", "evaluator", "auditor"] as const;
type ClientRole = (typeof CLIENT_ROLES)[number];
type Json = Record<string, any>;

let dir = "";
let server: NatsServer | undefined;
let service: ServiceProcess | undefined;
const passwords: Record<Role | "inspector", string> = {
  service: randomSecret("service"),
  administrator: randomSecret("administrator"),
  evaluator: randomSecret("evaluator"),
  auditor: randomSecret("auditor"),
  inspector: randomSecret("inspector"),
};
const clients = {} as Record<ClientRole, NatsConnection>;
/** Permission errors each client received (from its status stream). */
const received = {} as Record<ClientRole, PermissionViolationError[]>;
/** Unrestricted user of the test only: counts what is stored and proves the refused reads would have found data. */
let inspector: NatsConnection | undefined;
let inspectorJsm: JetStreamManager | undefined;
/** Violations the test provokes on purpose: `${user} ${Publish|Subscription} ${subject}`. */
const expectedViolations = new Set<string>();
/** Provoked ones whose subject is random (a client's own inbox). */
const expectedViolationPatterns: RegExp[] = [];

const BUCKET_STREAMS = ["KV_POLICY_EVENTS_SNAPSHOTS", "KV_POLICY_EVENTS_COMMANDS"];
const BUCKET_SUBJECTS = ["$KV.POLICY_EVENTS_SNAPSHOTS.>", "$KV.POLICY_EVENTS_COMMANDS.>"];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "auth-roles-"));
  const block = (role: Role) => documentedPermissionsText(role);
  server = await startNatsServer({
    extraConfig: [
      `log_file: "${join(dir, "nats.log")}"`,
      "authorization {",
      // docs/security.md's advice: a user listed without permissions gets none, not everything.
      '  default_permissions: { publish: { deny: ">" }, subscribe: { deny: ">" } }',
      ...(["service", ...CLIENT_ROLES] as Role[]).map((role) => `  ${role.toUpperCase()} = ${block(role)}`),
      "  users = [",
      `    { user: "policy-service", password: "${passwords.service}", permissions: $SERVICE }`,
      ...CLIENT_ROLES.map((role) => `    { user: "${role}", password: "${passwords[role]}", permissions: $${role.toUpperCase()} }`),
      `    { user: "inspector", password: "${passwords.inspector}", permissions: { publish: ">", subscribe: ">" } }`,
      `    { user: "newcomer", password: "${passwords.inspector}" }`,
      // docs/security.md's hardening note: the evaluator block with a private inbox prefix instead of _INBOX.>
      `    { user: "private-evaluator", password: "${passwords.evaluator}", permissions: ${block("evaluator").replace('"_INBOX.>"', '"_INBOX_evaluator.>"')} }`,
      "  ]",
      "}",
    ].join("\n"),
  });
  const passwordFile = join(dir, "service-password");
  writeFileSync(passwordFile, passwords.service, { mode: 0o600 });
  service = startService({ NATS_URL: server.url, LOG_LEVEL: "info", SNAPSHOT_FREQUENCY: "2", NATS_USER: "policy-service", NATS_PASSWORD_FILE: passwordFile });
  await service.ready(60_000);
  for (const role of CLIENT_ROLES) {
    const nc = await connect({ servers: server.url, user: role, pass: passwords[role], name: role });
    clients[role] = nc;
    received[role] = [];
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "error" && status.error instanceof PermissionViolationError) received[role].push(status.error);
      }
    })();
  }
  inspector = await connect({ servers: server.url, user: "inspector", pass: passwords.inspector });
  inspectorJsm = await jetstreamManager(inspector);
}, TEST_TIMEOUT);

after(async () => {
  for (const nc of Object.values(clients)) await nc.close();
  await inspector?.close();
  await service?.stop();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The server's permission violations: `${user} ${kind} ${subject}`. */
function serverViolations(): string[] {
  const lines = readFileSync(join(dir, "nats.log"), "utf8").split("\n");
  return lines.flatMap((line) => {
    // e.g. `… - "$G/user:evaluator" - Publish Violation - Subject "policy.commands.update"`
    const m = /"[^"/]*\/user:([^"]+)" - (Publish|Subscription) Violation - Subject "([^"]+)"/.exec(line);
    return m ? [`${m[1]} ${m[2]} ${m[3]}`] : /Violation/i.test(line) ? [`unparsed: ${line}`] : [];
  });
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A request the server must refuse (publish permission): rejected with a permissions violation. */
async function assertRequestRefused(role: ClientRole, subject: string, body = "{}"): Promise<void> {
  expectedViolations.add(`${role} Publish ${subject}`);
  await assert.rejects(clients[role].request(subject, body, { timeout: 5000 }), (err: Error) => {
    const cause = err instanceof PermissionViolationError ? err : (err as { cause?: unknown }).cause;
    assert.ok(cause instanceof PermissionViolationError, `${role}: ${subject} refused by a permissions violation, got ${err.name}: ${err.message}`);
    assert.equal(cause.operation, "publish");
    return true;
  }, `${role} may not request ${subject}`);
}

/** A plain publish the server must refuse: the client is told so. */
async function assertPublishRefused(role: ClientRole, subject: string): Promise<void> {
  expectedViolations.add(`${role} Publish ${subject}`);
  const seen = received[role].length;
  clients[role].publish(subject, JSON.stringify({ forged: true }));
  await clients[role].flush();
  await waitFor(`${role}'s publish violation on ${subject}`, () =>
    received[role].slice(seen).find((e) => e.operation === "publish" && e.subject === subject));
}

/** A subscription the server must refuse. */
async function assertSubscribeRefused(role: ClientRole, subject: string): Promise<void> {
  expectedViolations.add(`${role} Subscription ${subject}`);
  const sub = clients[role].subscribe(subject);
  const ended = (async () => { for await (const _ of sub) { /* nothing may arrive */ } })();
  await assert.rejects(
    Promise.race([ended, new Promise((_, reject) => setTimeout(() => reject(new Error("no violation within 5 s")), 5000))]),
    (err: Error) => err instanceof PermissionViolationError && err.operation === "subscription",
    `${role} may not subscribe to ${subject}`,
  );
}

describe("the client roles of docs/security.md against a real nats-server", () => {
  test("the administrator runs the documented story and sees the service's discovery endpoints", TEST_TIMEOUT, async () => {
    const { acknowledged } = await runLifecycle(clients.administrator);
    assert.ok(acknowledged.length > 20);
    // A refusal with a command_id is remembered in the idempotency bucket (stored commands need no record).
    const refused = (await clients.administrator.request("policy.commands.approve", JSON.stringify({ policy_id: randomUUID(), approved_by: "admin", command_id: randomUUID() }), { timeout: 5000 })).json<Json>();
    assert.equal(refused.error?.code, "not_found", JSON.stringify(refused));
    const info = (await clients.administrator.request("$SRV.INFO.policy-service", "", { timeout: 5000 })).json<Json>();
    assert.equal(info.name, "policy-service");
    // The data the refused reads below would have found: snapshots (every 2 events) and command ids.
    for (const stream of BUCKET_STREAMS) {
      assert.ok((await inspectorJsm!.streams.info(stream)).state.messages > 0, `${stream} holds entries (the refusals are not vacuous)`);
      const direct = await inspector!.request(`$JS.API.DIRECT.GET.${stream}`, JSON.stringify({ seq: (await inspectorJsm!.streams.info(stream)).state.first_seq }), { timeout: 5000 });
      assert.equal(direct.headers?.get("Status") ?? "", "", `an unrestricted client reads ${stream} by direct get`);
    }
  });

  test("the evaluator evaluates, checks compliance and queries", TEST_TIMEOUT, async () => {
    const nc = clients.evaluator;
    const evaluated = (await nc.request("policy.commands.evaluate", JSON.stringify({ policy_id: EXAMPLE_IDS.secondPolicy, context: { user: { department: "finance", employee_id: "E-1" } }, requester: "app" }), { timeout: 15_000 })).json<Json>();
    assert.equal(evaluated.ok, true, JSON.stringify(evaluated));
    const compliance = (await nc.request("policy.commands.check_compliance", JSON.stringify({ policy_ids: [EXAMPLE_IDS.secondPolicy], context: { user: { department: "finance", employee_id: "E-1" } }, requester: "app" }), { timeout: 15_000 })).json<Json>();
    assert.equal(compliance.ok, true, JSON.stringify(compliance));
    const got = (await nc.request("policy.queries.get", JSON.stringify({ id: EXAMPLE_IDS.secondPolicy }), { timeout: 15_000 })).json<Json>();
    assert.equal(got.ok, true, JSON.stringify(got));
    const listed = (await nc.request("policy.queries.list", "{}", { timeout: 15_000 })).json<Json>();
    assert.equal(listed.ok, true, JSON.stringify(listed));
  });

  test("the evaluator cannot change a policy: policy.commands.update and every other command are refused by the server", TEST_TIMEOUT, async () => {
    const get = async () => (await inspector!.request("policy.queries.get", JSON.stringify({ id: EXAMPLE_IDS.secondPolicy }), { timeout: 15_000 })).json<Json>();
    const before = await get();
    assert.equal(before.ok, true, JSON.stringify(before));
    const storedBefore = (await inspectorJsm!.streams.info("POLICY_EVENTS")).state.last_seq;
    await assertRequestRefused("evaluator", "policy.commands.update", JSON.stringify({ policy_id: EXAMPLE_IDS.secondPolicy, description: "changed by an evaluator" }));
    for (const command of ["create", "approve", "activate", "suspend", "revoke", "archive", "add_rule", "update_rule", "remove_rule", "reorder_rules", "create_set", "add_to_set", "remove_from_set", "grant_exemption", "revoke_exemption"]) {
      await assertRequestRefused("evaluator", `policy.commands.${command}`);
    }
    assert.equal((await inspectorJsm!.streams.info("POLICY_EVENTS")).state.last_seq, storedBefore, "nothing was stored");
    assert.deepEqual(await get(), before, "the policy is unchanged");
  });

  test("the auditor reads the events and the audit records (JetStream, live, and policy-service ctl events)", TEST_TIMEOUT, async () => {
    const nc = clients.auditor;
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    for (const [stream, subjects] of [["POLICY_EVENTS", "events.policy."], ["POLICY_AUDIT", "audit.policy."]] as const) {
      const info = await jsm.streams.info(stream);
      assert.ok(info.state.messages > 0, `${stream} has messages`);
      const consumer = await js.consumers.get(stream);
      const batch = await consumer.fetch({ max_messages: info.state.messages, expires: 5000 });
      let read = 0;
      for await (const msg of batch) {
        assert.ok(msg.subject.startsWith(subjects), msg.subject);
        read++;
        if (read === info.state.messages) break;
      }
      assert.equal(read, info.state.messages, `the auditor read all of ${stream} with an ordered consumer`);
      // Not deleted: the role has no CONSUMER.DELETE (it could delete the service's consumers); the server drops
      // an ordered consumer once it is inactive.
      if (info.config.allow_direct) {
        const first = await jsm.direct.getMessage(stream, { seq: info.state.first_seq });
        assert.ok(first?.subject.startsWith(subjects), `direct get on ${stream}`);
      }
      const viaApi = await jsm.streams.getMessage(stream, { seq: info.state.first_seq });
      assert.ok(viaApi?.subject.startsWith(subjects), `message get on ${stream}`);
    }
    // Live: a new event reaches a plain subscription.
    const live = nc.subscribe("events.policy.>", { max: 1 });
    await nc.flush();
    const next = (async () => { for await (const m of live) return m.subject; return null; })();
    const created = (await clients.administrator.request("policy.commands.create", JSON.stringify({ name: "Live", description: "seen by the auditor", policy_type: "Security", enforcement: "Advisory", scope: "Organization" }), { timeout: 15_000 })).json<Json>();
    assert.equal(created.ok, true, JSON.stringify(created));
    assert.match((await next) ?? "", /^events\.policy\..+\.created$/);
    // The operator CLI, with the auditor's credentials.
    const passwordFile = join(dir, "auditor-password");
    writeFileSync(passwordFile, passwords.auditor, { mode: 0o600 });
    const ctl = runService(["ctl", "events", "--since", "1", "--count", "3", "--json"], { NATS_URL: server!.url, NATS_USER: "auditor", NATS_PASSWORD_FILE: passwordFile }, 30_000);
    assert.equal(ctl.code, 0, `ctl events as the auditor: ${ctl.stderr}`);
    assert.equal(ctl.stdout.trim().split("\n").length, 3, ctl.stdout);
  });

  test("with a private inbox prefix (docs/security.md's note), an evaluator works and cannot read other clients' replies", TEST_TIMEOUT, async () => {
    assert.ok(!documentedPermissionsText("evaluator").includes("_INBOX_evaluator"), "the documented block itself uses _INBOX.>");
    const nc = await connect({ servers: server!.url, user: "private-evaluator", pass: passwords.evaluator, inboxPrefix: "_INBOX_evaluator" });
    try {
      const listed = (await nc.request("policy.queries.list", "{}", { timeout: 15_000 })).json<Json>();
      assert.equal(listed.ok, true, JSON.stringify(listed));
      expectedViolations.add("private-evaluator Subscription _INBOX.>");
      const sub = nc.subscribe("_INBOX.>");
      await assert.rejects((async () => { for await (const _ of sub) { /* nothing */ } })(), PermissionViolationError);
    } finally {
      await nc.close();
    }
  });

  for (const role of CLIENT_ROLES) {
    test(`${role}: cannot publish to events.policy.> or audit.policy.>, nor read the snapshot or idempotency buckets`, TEST_TIMEOUT, async () => {
      const storedBefore = (await inspectorJsm!.streams.info("POLICY_EVENTS")).state.last_seq;
      const auditBefore = (await inspectorJsm!.streams.info("POLICY_AUDIT")).state.last_seq;
      await assertPublishRefused(role, `events.policy.${EXAMPLE_IDS.secondPolicy}.suspended`);
      await assertPublishRefused(role, `audit.policy.${EXAMPLE_IDS.secondPolicy}.violation_detected`);
      await assertRequestRefused(role, `events.policy.${EXAMPLE_IDS.secondPolicy}.archived`);
      for (const subject of BUCKET_SUBJECTS) await assertSubscribeRefused(role, subject);
      for (const stream of BUCKET_STREAMS) {
        const bucket = stream.slice("KV_".length);
        await assertRequestRefused(role, `$JS.API.DIRECT.GET.${stream}`, JSON.stringify({ seq: 1 }));
        await assertRequestRefused(role, `$JS.API.DIRECT.GET.${stream}.$KV.${bucket}.${EXAMPLE_IDS.secondPolicy}`, "");
        await assertRequestRefused(role, `$JS.API.STREAM.MSG.GET.${stream}`, JSON.stringify({ seq: 1 }));
        await assertRequestRefused(role, `$JS.API.CONSUMER.CREATE.${stream}`, JSON.stringify({ stream_name: stream, config: { deliver_policy: "all", ack_policy: "none" } }));
        await assertPublishRefused(role, `$KV.${bucket}.${EXAMPLE_IDS.secondPolicy}`);
      }
      assert.equal((await inspectorJsm!.streams.info("POLICY_EVENTS")).state.last_seq, storedBefore, "no forged event stored");
      assert.equal((await inspectorJsm!.streams.info("POLICY_AUDIT")).state.last_seq, auditBefore, "no forged audit record stored");
    });
  }

  test("a user listed without permissions gets none (default_permissions deny all)", TEST_TIMEOUT, async () => {
    const nc = await connect({ servers: server!.url, user: "newcomer", pass: passwords.inspector });
    try {
      expectedViolations.add("newcomer Publish policy.queries.list");
      expectedViolationPatterns.push(/^newcomer Subscription _INBOX\.[A-Za-z0-9]+\.\*$/); // the request's reply inbox
      await assert.rejects(nc.request("policy.queries.list", "{}", { timeout: 5000 }), (err: Error) => (err as { cause?: unknown }).cause instanceof PermissionViolationError);
    } finally {
      await nc.close();
    }
  });

  test("the service's own user cannot delete or purge the event stream, its messages or the buckets (docs/security.md)", TEST_TIMEOUT, async () => {
    const nc = await connect({ servers: server!.url, user: "policy-service", pass: passwords.service });
    try {
      for (const stream of ["POLICY_EVENTS", "POLICY_AUDIT", ...BUCKET_STREAMS]) {
        for (const api of ["STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE"]) {
          const subject = `$JS.API.${api}.${stream}`;
          expectedViolations.add(`policy-service Publish ${subject}`);
          await assert.rejects(nc.request(subject, api === "STREAM.MSG.DELETE" ? JSON.stringify({ seq: 1 }) : "", { timeout: 5000 }), (err: Error) => {
            const cause = (err as { cause?: unknown }).cause;
            return cause instanceof PermissionViolationError && cause.operation === "publish";
          }, subject);
        }
      }
      assert.ok((await inspectorJsm!.streams.info("POLICY_EVENTS")).state.messages > 0, "the events are still there");
    } finally {
      await nc.close();
    }
  });

  test("the server refused exactly what the test tried on purpose: the roles' and the service's work needed no other permission", TEST_TIMEOUT, async () => {
    const logged = new Set(serverViolations());
    assert.ok(expectedViolations.size > 40, "the refusals above ran");
    for (const expected of expectedViolations) assert.ok(logged.has(expected), `the server logged the refusal ${expected}`);
    const unexpected = [...logged].filter((v) => !expectedViolations.has(v) && !expectedViolationPatterns.some((p) => p.test(v)));
    assert.deepEqual(unexpected.sort(), [], "violations nobody provoked");
    assert.deepEqual(service!.lines.filter((l) => l.level >= 50), [], "the service logged errors");
  });
});
