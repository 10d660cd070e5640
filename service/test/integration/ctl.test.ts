// `policy-service ctl` against a real nats-server and a running service: send, status, events.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { SERVICE_MAIN, SERVICE_ROOT, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";

type Reply = Record<string, any>;

let server: NatsServer | undefined;
let service: ServiceProcess | undefined;

/** Runs `policy-service ctl …` asynchronously (the service must keep answering meanwhile) with the service's env. */
function ctl(args: string[], env: Record<string, string> = {}, timeoutMs = 15_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SERVICE_MAIN, "ctl", ...args], {
      cwd: SERVICE_ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, NATS_URL: server!.url, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const SEED_CREATE = {
  policy_id: "550e8400-e29b-41d4-a716-446655440000",
  name: "Data Retention Policy",
  description: "All customer data must be retained for 7 years",
  policy_type: "Retention",
  enforcement: "Mandatory",
  scope: "Organization",
};

before(async () => {
  server = await startNatsServer();
  service = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
  await service.ready();
});

after(async () => {
  await service?.stop();
  await server?.stop();
});

describe("policy-service ctl", () => {
  test("send: a command by name, a query by name and by full subject; error replies exit 1", async () => {
    const created = await ctl(["send", "create", JSON.stringify(SEED_CREATE), "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const reply = JSON.parse(created.stdout) as Reply;
    assert.equal(reply.ok, true);
    assert.equal(reply.aggregate_id, SEED_CREATE.policy_id);
    assert.equal(reply.events[0].subject, `events.policy.${SEED_CREATE.policy_id}.created`);

    const got = await ctl(["send", "get", JSON.stringify({ id: SEED_CREATE.policy_id }), "--json"]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal((JSON.parse(got.stdout) as Reply).state.name, "Data Retention Policy");

    const history = await ctl(["send", "policy.queries.history", JSON.stringify({ id: SEED_CREATE.policy_id })]);
    assert.equal(history.code, 0, history.stderr);
    assert.match(history.stdout, /"event_type": "created"/);

    const again = await ctl(["send", "create", JSON.stringify(SEED_CREATE), "--json"]);
    assert.equal(again.code, 1);
    assert.equal((JSON.parse(again.stdout) as Reply).error.code, "already_exists");

    const badJson = await ctl(["send", "create", "{not json"]);
    assert.equal(badJson.code, 2);
    assert.match(badJson.stderr, /not valid JSON/);
  });

  test("status: streams with replicas and the discovered service instance", async () => {
    const status = await ctl(["status", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const report = JSON.parse(status.stdout) as Reply;
    assert.equal(report.streams.events.name, "POLICY_EVENTS");
    assert.equal(report.streams.events.exists, true);
    assert.equal(report.streams.events.replicas, 1);
    assert.ok(report.streams.events.messages >= 1);
    assert.equal(report.services.name, "policy-service");
    assert.equal(report.services.instances.length, 1);
    assert.match(report.services.instances[0].version, /^\d+\.\d+\.\d+/);
    assert.match(report.server.version, /^2\./);

    const text = await ctl(["status"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /stream POLICY_EVENTS: \d+ messages?, seq \d+\.\.\d+/);
    assert.match(text.stdout, /stream KV_POLICY_EVENTS_COMMANDS: /);
    assert.match(text.stdout, /service policy-service: 1 instance/);
  });

  test("events: follows events.policy.> from a sequence", async () => {
    const id = randomUUID();
    const sent = await ctl(["send", "create", JSON.stringify({ ...SEED_CREATE, policy_id: id, name: "Followed" }), "--json"]);
    assert.equal(sent.code, 0, sent.stderr);
    const seq = (JSON.parse(sent.stdout) as Reply).events[0].seq as number;
    const events = await ctl(["events", "--since", String(seq), "--count", "1", "--json"]);
    assert.equal(events.code, 0, events.stderr);
    const line = JSON.parse(events.stdout.trim().split("\n")[0]!) as Reply;
    assert.equal(line.seq, seq);
    assert.equal(line.subject, `events.policy.${id}.created`);
    assert.equal(line.event.aggregate_id, id);
    assert.equal(line.event.data.name, "Followed");
  });

  // Issue 13 item 10: `ctl send bogus` answered NATS's "no responders" instead of naming the valid commands.
  test("send with an unknown command or query lists the valid ones (exit 2) and sends nothing", async () => {
    for (const target of ["bogus", "policy.commands.bogus", "queries.bogus", "expire_exemption"]) {
      const result = await ctl(["send", target, "{}"]);
      assert.equal(result.code, 2, `${target}: ${result.stderr}`);
      assert.match(result.stderr, new RegExp(`unknown command or query "${target.replace(/\./g, "\\.")}"`));
      assert.match(result.stderr, /commands: create, update, approve, .*grant_exemption, revoke_exemption, evaluate, check_compliance/);
      assert.match(result.stderr, /queries: +get, list, history, applicable/);
      assert.doesNotMatch(result.stderr, /no responders/i);
    }
    // Every listed name is served: none of them answers "no responders".
    for (const name of ["approve", "evaluate", "applicable"]) {
      const result = await ctl(["send", name, "{}", "--json"]);
      assert.ok(result.code === 0 || result.code === 1, `${name}: ${result.stderr}`);
      assert.ok(JSON.parse(result.stdout).ok !== undefined, `${name} answered`);
    }
  });

  test("send to a subject nobody serves says so in plain words (not NATS's \"no responders\")", async () => {
    const result = await ctl(["send", "other.service.subject", "{}"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no service answers on other\.service\.subject: is policy-service running/);
  });

  test("usage errors exit 2 with the usage text", async () => {
    const unknown = await ctl(["frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /usage: policy-service ctl/);
  });
});

describe("policy-service ctl events: the stream deleted while it follows", () => {
  // An operator's `nats stream rm`: its consumer goes with the stream, and ctl cannot recreate it. It used to retry
  // for ever ("consumer not recreated yet; retrying", every 5 s); a stream created again under the name would start
  // its sequences anew, so following it from the old position would skip or misplace events.
  test("it says the stream no longer exists and exits 1", async () => {
    const own = await startNatsServer();
    let nc: NatsConnection | undefined;
    try {
      nc = await connect({ servers: own.url });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "POLICY_EVENTS", subjects: ["events.policy.>"] });
      const following = ctl(["events"], { NATS_URL: own.url }, 30_000);
      // Deleted once ctl follows (its consumer exists).
      for (let i = 0; i < 100 && (await jsm.streams.info("POLICY_EVENTS")).state.consumer_count === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal((await jsm.streams.info("POLICY_EVENTS")).state.consumer_count, 1, "ctl's consumer exists");
      const deletedAt = Date.now();
      await jsm.streams.delete("POLICY_EVENTS");
      const { code, stderr } = await following;
      const afterMs = Date.now() - deletedAt;
      console.log(`# ctl events, stream deleted: exit ${code} ${afterMs} ms after the delete`);
      assert.equal(code, 1, stderr);
      assert.match(stderr, /the stream no longer exists; not following it any more/);
      assert.ok(afterMs < 20_000, `exited ${afterMs} ms after the delete`);
    } finally {
      await nc?.close();
      await own.stop();
    }
  });
});
