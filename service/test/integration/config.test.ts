// The command line (--version, --help, --check-config) and start-up provisioning against existing streams.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { SERVICE_ROOT, runService, startNatsServer, startService, type NatsServer } from "../helpers/nats.js";
import { join } from "node:path";

const version = (JSON.parse(readFileSync(join(SERVICE_ROOT, "package.json"), "utf8")) as { version: string }).version;

describe("command line", () => {
  test("--version prints the package version", () => {
    const r = runService(["--version"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${version}\n`);
  });

  test("--help lists the environment", () => {
    const r = runService(["--help"]);
    assert.equal(r.code, 0);
    for (const v of ["NATS_URL", "STREAM_NAME", "LOG_LEVEL", "SNAPSHOT_FREQUENCY", "STREAM_REPLICAS", "NATS_CREDS_FILE", "READ_MODEL_CHECKPOINT_INTERVAL_S"]) assert.match(r.stdout, new RegExp(v));
  });

  test("--check-config accepts a good environment without touching NATS", () => {
    const r = runService(["--check-config"], { NATS_URL: "nats://127.0.0.1:1", STREAM_REPLICAS: "3", LOG_LEVEL: "debug" });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /configuration ok/);
  });

  for (const [env, variable] of [
    [{ LOG_LEVEL: "loud" }, "LOG_LEVEL"],
    [{ STREAM_REPLICAS: "zero" }, "STREAM_REPLICAS"],
    [{ DUPLICATE_WINDOW: "10" }, "DUPLICATE_WINDOW"],
    [{ READ_MODEL_CHECKPOINT_INTERVAL_S: "5m" }, "READ_MODEL_CHECKPOINT_INTERVAL_S"],
    [{ NATS_CREDS_FILE: "/nonexistent/policy.creds" }, "NATS_CREDS_FILE"],
  ] as const) {
    test(`--check-config and a normal start exit 2 with one line naming ${variable}`, () => {
      for (const args of [["--check-config"], []]) {
        const r = runService(args, env);
        assert.equal(r.code, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
        const lines = r.stderr.trim().split("\n");
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0]!, new RegExp(`^policy-service: invalid configuration: ${variable}: `));
      }
    });
  }

  test("LOG_LEVEL=loud gives exactly the documented message", () => {
    const r = runService(["--check-config"], { LOG_LEVEL: "loud" });
    assert.equal(r.stderr, 'policy-service: invalid configuration: LOG_LEVEL: expected one of trace|debug|info|warn|error, got "loud"\n');
  });
});

describe("start-up against existing streams", () => {
  let server: NatsServer;
  let nc: NatsConnection;
  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  test("a stream of that name with other subjects is refused and left untouched", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "FOREIGN", subjects: ["foreign.>"] });
    await jetstream(nc).publish("foreign.x", "keep me");
    const svc = startService({ NATS_URL: server.url, STREAM_NAME: "FOREIGN" });
    const exit = await svc.exited();
    assert.equal(exit.code, 1);
    const fatal = svc.lines.find((l) => l.level === 60);
    assert.ok(fatal, "a fatal log line");
    assert.match(String(fatal.msg), /stream FOREIGN exists with subjects \["foreign\.>"\], expected \["events\.policy\.>"\]/);
    const info = await jsm.streams.info("FOREIGN");
    assert.deepEqual(info.config.subjects, ["foreign.>"]);
    assert.equal(info.state.messages, 1);
    await jsm.streams.delete("FOREIGN");
  });

  test("another stream owning events.policy.> is a clear refusal", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "SQUATTER", subjects: ["events.>"] });
    const svc = startService({ NATS_URL: server.url });
    const exit = await svc.exited();
    assert.equal(exit.code, 1);
    const fatal = svc.lines.find((l) => l.level === 60);
    assert.match(String(fatal?.msg), /overlap with another stream/);
    await jsm.streams.delete("SQUATTER");
  });

  test("an existing event stream is updated in place (duplicate window), never emptied", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "POLICY_EVENTS", subjects: ["events.policy.>"], duplicate_window: 30e9, max_age: 24 * 3600e9 });
    await jetstream(nc).publish("events.policy.00000000-0000-4000-8000-000000000000.created", JSON.stringify({ pre: "existing" }));
    const svc = startService({ NATS_URL: server.url, DUPLICATE_WINDOW: "300" });
    try {
      await svc.ready();
      const info = await jsm.streams.info("POLICY_EVENTS");
      assert.equal(info.config.duplicate_window, 300e9);
      assert.equal(info.config.max_age, 365 * 24 * 3600e9, "a shorter max age is raised, never lowered");
      assert.equal(info.config.allow_direct, true);
      assert.equal(info.state.messages, 1);
    } finally {
      const stopped = await svc.stop();
      assert.equal(stopped.code, 0);
    }
  });
});
