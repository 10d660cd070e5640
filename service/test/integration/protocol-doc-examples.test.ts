// Every example of docs/protocol.md, sent in order to a real service, which runs as a NATS user with
// exactly the least-privilege permissions printed in docs/security.md. Checks the documented outcome of
// each request, that the stored events are the documented ones, that the service serves exactly the
// documented subjects and reports the package version, and that no permission was ever violated.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { SERVICE_ROOT, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { VALID_EXAMPLES, INVALID_EXAMPLES, exampleBody } from "../../src/protocol/examples.js";
import { ERROR_STATUS } from "../../src/support/replies.js";
import { documentedPermissionsText, serviceAndTesterAuthorization } from "../helpers/permissions.js";

type Json = Record<string, any>;
interface Generator {
  QUERY_EXAMPLES: { query: string; payload: Json; replyKeys: string[] }[];
  EVALUATION_SETUP: { command: string; payload: Json }[];
  EVALUATION_EXAMPLES: { endpoint: string; title: string; payload: Json; expect: { ok: boolean; status?: string; blocking?: boolean; code?: string } }[];
  DOC_NOW: string;
  documentedStory(): Promise<{ envelope: Json; msgId: string }[]>;
}

const REPO_ROOT = join(SERVICE_ROOT, "..");
const generator = (await import(pathToFileURL(join(SERVICE_ROOT, "scripts", "gen-protocol-doc.mjs")).href)) as Generator;
const pkgVersion: string = JSON.parse(readFileSync(join(SERVICE_ROOT, "package.json"), "utf8")).version;

/** Subjects listed in docs/protocol.md's Subjects table (policy.commands.* and policy.queries.*). */
function documentedSubjects(): string[] {
  const doc = readFileSync(join(REPO_ROOT, "docs", "protocol.md"), "utf8");
  const table = doc.split("## Subjects")[1]!.split("\n## ")[0]!;
  return [...table.matchAll(/^\| \[?`(policy\.[a-z_]+\.[a-z_]+)`/gm)].map((m) => m[1]!).sort();
}

let dir = "";

/** The service runs as the documented least-privilege user; snapshots every 5 events so they are written too. */
function serviceEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NATS_URL: server!.url,
    NATS_USER: "policy-service",
    NATS_PASSWORD_FILE: join(dir, "service-password"),
    LOG_LEVEL: "info",
    SNAPSHOT_FREQUENCY: "5",
    ...overrides,
  };
}
let server: NatsServer | undefined;
let service: ServiceProcess | undefined;
let nc: NatsConnection | undefined;
let jsm: JetStreamManager | undefined;

async function request(subject: string, body: string): Promise<{ reply: Json; status: string | undefined }> {
  const msg = await nc!.request(subject, body, { timeout: 15_000 });
  return { reply: msg.json<Json>(), status: msg.headers?.get("Nats-Service-Error-Code") || undefined };
}

/**
 * Replaces the instants commands ran at by a placeholder, so documented and live events compare: the
 * doc runs every command at DOC_NOW, the live story at successive real instants (an event may carry an
 * earlier command's time, e.g. a resumed policy keeps its first effective_from).
 */
function normaliseTime(value: unknown, nows: ReadonlySet<string>): unknown {
  if (typeof value === "string" && nows.has(value)) return "<now>";
  if (Array.isArray(value)) return value.map((v) => normaliseTime(v, nows));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normaliseTime(v, nows)]));
  }
  return value;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "protocol-doc-"));
  const passwordFile = join(dir, "service-password");
  writeFileSync(passwordFile, "service-secret\n", { mode: 0o600 });
  server = await startNatsServer({
    extraConfig: [
      `log_file: "${join(dir, "nats.log")}"`,
      ...serviceAndTesterAuthorization(documentedPermissionsText("service")),
    ].join("\n"),
  });
  service = startService(serviceEnv());
  await service.ready(60_000);
  nc = await connect({ servers: server.url, user: "tester", pass: "tester-secret" });
  jsm = await jetstreamManager(nc);
});

after(async () => {
  await nc?.close();
  await service?.stop();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("docs/protocol.md examples against a real service with the documented permissions", () => {
  test("the service serves exactly the documented subjects and reports the package version", async () => {
    const msg = await nc!.request("$SRV.INFO.policy-service", "", { timeout: 5000 });
    const info = msg.json<Json>();
    assert.equal(info.name, "policy-service");
    assert.equal(info.version, pkgVersion, "NATS service info version = package.json version");
    const served = (info.endpoints as Json[]).map((e) => e.subject as string).sort();
    assert.deepEqual(served, documentedSubjects());
    for (const endpoint of info.endpoints as Json[]) assert.equal(endpoint.queue_group, "q", `${endpoint.subject} queue group`);
  });

  test("every command example stores the documented event", async () => {
    const documented = await generator.documentedStory();
    let index = 0;
    const liveNows = new Set<string>();
    const docNows = new Set([generator.DOC_NOW]);
    for (const example of VALID_EXAMPLES) {
      const { reply, status } = await request(`policy.commands.${example.command}`, exampleBody(example));
      assert.equal(reply.ok, true, `${example.title}: ${JSON.stringify(reply)}`);
      assert.equal(status, undefined, `${example.title}: no error header`);
      assert.equal(reply.events.length, 1, `${example.title}: one event`);
      const ref = reply.events[0];
      assert.equal(ref.type, example.event, example.title);
      assert.equal(ref.subject, `events.policy.${reply.aggregate_id}.${example.event}`);

      const stored = (await jsm!.streams.getMessage("POLICY_EVENTS", { seq: ref.seq }))!.json<Json>();
      const doc = documented[index++]!.envelope;
      liveNows.add(stored.occurred_at);
      for (const field of ["event_type", "aggregate_type", "aggregate_id", "version", "command_id", "correlation_id"]) {
        assert.deepEqual(stored[field], doc[field], `${example.title}: ${field}`);
      }
      assert.deepEqual(
        normaliseTime(stored.data, liveNows),
        normaliseTime(doc.data, docNows),
        `${example.title}: event data as documented`,
      );
    }
  });

  test("every invalid example answers the documented error code, header and message", async () => {
    for (const example of INVALID_EXAMPLES) {
      const { reply, status } = await request(`policy.commands.${example.command}`, exampleBody(example));
      assert.equal(reply.ok, false, `${example.title}: ${JSON.stringify(reply)}`);
      assert.equal(reply.error.code, example.expect, `${example.title}: ${JSON.stringify(reply.error)}`);
      assert.equal(status, String(ERROR_STATUS[example.expect]), `${example.title}: Nats-Service-Error-Code`);
      if (example.message !== undefined) assert.equal(reply.error.message, example.message, `${example.title}: documented message`);
    }
  });

  test("every query example answers with the documented reply fields", async () => {
    for (const example of generator.QUERY_EXAMPLES) {
      const { reply } = await request(`policy.queries.${example.query}`, JSON.stringify(example.payload));
      assert.equal(reply.ok, true, `${example.query}: ${JSON.stringify(reply)}`);
      for (const key of example.replyKeys) assert.ok(key in reply, `${example.query} reply has ${key}`);
    }
  });

  test("every evaluation example has the documented outcome", async () => {
    for (const step of generator.EVALUATION_SETUP) {
      const { reply } = await request(`policy.commands.${step.command}`, JSON.stringify(step.payload));
      assert.equal(reply.ok, true, `setup ${step.command}: ${JSON.stringify(reply)}`);
    }
    for (const example of generator.EVALUATION_EXAMPLES) {
      const { reply, status } = await request(`policy.commands.${example.endpoint}`, JSON.stringify(example.payload));
      assert.equal(reply.ok, example.expect.ok, `${example.title}: ${JSON.stringify(reply)}`);
      if (example.expect.ok) {
        if (example.expect.status !== undefined) assert.equal(reply.result.status, example.expect.status, example.title);
        if (example.expect.blocking !== undefined) assert.equal(reply.result.blocking, example.expect.blocking, example.title);
      } else {
        assert.equal(reply.error.code, example.expect.code, example.title);
        assert.equal(status, String(ERROR_STATUS[example.expect.code as keyof typeof ERROR_STATUS]), `${example.title}: header`);
      }
    }
  });

  test("a restart with other retention settings updates the streams and buckets in place", async () => {
    const second = startService(serviceEnv({ DUPLICATE_WINDOW: "300", AUDIT_MAX_AGE_DAYS: "30" }));
    try {
      await second.ready(60_000);
      const events = await jsm!.streams.info("POLICY_EVENTS");
      assert.equal(events.config.duplicate_window, 300 * 1e9, "event stream duplicate window updated");
      const audit = await jsm!.streams.info("POLICY_AUDIT");
      assert.equal(audit.config.max_age, 30 * 24 * 3600 * 1e9, "audit stream max age updated");
      const errors = second.lines.filter((l) => l.level >= 50);
      assert.deepEqual(errors, [], "the restarted service logged errors");
    } finally {
      await second.stop();
    }
  });

  test("the service never needed a permission docs/security.md does not grant", async () => {
    const logPath = join(dir, "nats.log");
    assert.ok(existsSync(logPath), "nats-server log file written");
    const violations = readFileSync(logPath, "utf8").split("\n").filter((l) => /(Publish|Subscription|Permissions) Violation/i.test(l));
    assert.deepEqual(violations, [], "nats-server logged permission violations");
    const errors = service!.lines.filter((l) => l.level >= 50);
    assert.deepEqual(errors, [], "the service logged errors");
  });
});
