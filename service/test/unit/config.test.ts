// Configuration parsing: defaults, one-line errors naming the variable, credential files.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, describeConfig, listenText, parseConfig, readCredentials } from "../../src/support/config.js";

test("defaults follow the seed", () => {
  const c = parseConfig({});
  assert.equal(c.natsUrl, "nats://localhost:4222");
  assert.equal(c.streamName, "POLICY_EVENTS");
  assert.equal(c.logLevel, "info");
  assert.equal(c.snapshotFrequency, 100);
  assert.equal(c.streamReplicas, 1);
  assert.equal(c.duplicateWindowSeconds, 120);
  assert.equal(c.snapshotBucket, "POLICY_EVENTS_SNAPSHOTS");
  assert.equal(c.commandsBucket, "POLICY_EVENTS_COMMANDS");
  assert.deepEqual(c.audit, { enabled: true, streamName: "POLICY_AUDIT", maxAgeDays: 90 });
  assert.equal(c.metricsListen, null, "metrics are off by default");
  assert.equal(c.heapGrowingPercent, 30, "the old generation is bounded to 1.3x the live heap by default");
});

test("HEAP_GROWING_PERCENT: 0 leaves V8's factor, up to 300", () => {
  assert.equal(parseConfig({ HEAP_GROWING_PERCENT: "0" }).heapGrowingPercent, 0);
  assert.equal(parseConfig({ HEAP_GROWING_PERCENT: "300" }).heapGrowingPercent, 300);
});

test("METRICS_LISTEN: host:port, IPv6 in brackets, empty is off", () => {
  assert.deepEqual(parseConfig({ METRICS_LISTEN: "127.0.0.1:9464" }).metricsListen, { host: "127.0.0.1", port: 9464 });
  assert.deepEqual(parseConfig({ METRICS_LISTEN: "[::1]:9464" }).metricsListen, { host: "::1", port: 9464 });
  assert.deepEqual(parseConfig({ METRICS_LISTEN: " localhost:1 " }).metricsListen, { host: "localhost", port: 1 });
  assert.equal(parseConfig({ METRICS_LISTEN: "" }).metricsListen, null);
  assert.equal(listenText({ host: "::1", port: 9464 }), "[::1]:9464");
  assert.equal(listenText({ host: "127.0.0.1", port: 9464 }), "127.0.0.1:9464");
});

test("values are parsed", () => {
  const c = parseConfig({
    NATS_URL: "nats://a:4222, nats://b:4222", STREAM_NAME: "X_EVENTS", LOG_LEVEL: "DEBUG", SNAPSHOT_FREQUENCY: "10",
    STREAM_REPLICAS: "3", DUPLICATE_WINDOW: "600", AUDIT_ENABLED: "false", AUDIT_MAX_AGE_DAYS: "30",
  });
  assert.deepEqual(c.natsServers, ["nats://a:4222", "nats://b:4222"]);
  assert.equal(c.logLevel, "debug");
  assert.equal(c.streamReplicas, 3);
  assert.equal(c.duplicateWindowSeconds, 600);
  assert.equal(c.audit.enabled, false);
  assert.equal(c.snapshotBucket, "X_EVENTS_SNAPSHOTS");
  assert.equal(c.commandRecords, "auto");
  assert.equal(parseConfig({ COMMAND_RECORDS: "Always" }).commandRecords, "always");
  assert.equal(c.commandForwarding, "auto");
  assert.equal(parseConfig({ COMMAND_FORWARDING: "off" }).commandForwarding, "off");
});

const bad: [Record<string, string>, string, RegExp][] = [
  [{ LOG_LEVEL: "loud" }, "LOG_LEVEL", /^LOG_LEVEL: expected one of trace\|debug\|info\|warn\|error, got "loud"$/],
  [{ SNAPSHOT_FREQUENCY: "0" }, "SNAPSHOT_FREQUENCY", /expected an integer from 1 to/],
  [{ SNAPSHOT_FREQUENCY: "ten" }, "SNAPSHOT_FREQUENCY", /got "ten"/],
  [{ SNAPSHOT_FREQUENCY: "1.5" }, "SNAPSHOT_FREQUENCY", /integer/],
  [{ STREAM_REPLICAS: "7" }, "STREAM_REPLICAS", /from 1 to 5/],
  [{ COMMAND_FORWARDING: "never" }, "COMMAND_FORWARDING", /^COMMAND_FORWARDING: expected one of auto\|off, got "never"$/],
  [{ HEAP_GROWING_PERCENT: "301" }, "HEAP_GROWING_PERCENT", /from 0 to 300/],
  [{ HEAP_GROWING_PERCENT: "-1" }, "HEAP_GROWING_PERCENT", /from 0 to 300/],
  [{ DUPLICATE_WINDOW: "60" }, "DUPLICATE_WINDOW", /from 120 to/],
  [{ COMMAND_RECORDS: "never" }, "COMMAND_RECORDS", /^COMMAND_RECORDS: expected one of auto\|always, got "never"$/],
  [{ STREAM_NAME: "events.policy" }, "STREAM_NAME", /A-Z a-z 0-9 _ -/],
  [{ STREAM_NAME: "A*" }, "STREAM_NAME", /got "A\*"/],
  [{ NATS_URL: "http://x" }, "NATS_URL", /nats:\/\//],
  [{ NATS_URL: "not a url" }, "NATS_URL", /expected/],
  [{ NATS_URL: "nats://user:secret@host:4222" }, "NATS_URL", /must not contain credentials/],
  [{ AUDIT_ENABLED: "maybe" }, "AUDIT_ENABLED", /true\|false/],
  [{ METRICS_LISTEN: "9464" }, "METRICS_LISTEN", /^METRICS_LISTEN: expected host:port such as 127\.0\.0\.1:9464 or \[::1\]:9464 \(unset to turn metrics off\), got "9464"$/],
  [{ METRICS_LISTEN: "::1:9464" }, "METRICS_LISTEN", /expected host:port/],
  [{ METRICS_LISTEN: "http://127.0.0.1:9464/metrics" }, "METRICS_LISTEN", /expected host:port/],
  [{ METRICS_LISTEN: "127.0.0.1:70000" }, "METRICS_LISTEN", /port must be from 1 to 65535/],
  [{ METRICS_LISTEN: "127.0.0.1:0" }, "METRICS_LISTEN", /port must be from 1 to 65535/],
  [{ NATS_PASSWORD_FILE: "/x" }, "NATS_USER", /must be set/],
  [{ NATS_USER: "u" }, "NATS_PASSWORD_FILE", /must be set/],
  [{ NATS_CERT_FILE: "/x" }, "NATS_KEY_FILE", /together/],
  [{ NATS_TOKEN_FILE: "relative/path" }, "NATS_TOKEN_FILE", /absolute/],
  [{ NATS_TOKEN_FILE: "/a", NATS_CREDS_FILE: "/b" }, "NATS_CREDS_FILE", /at most one/],
  [{ NATS_CREDS_FILE: "$CREDENTIALS_DIRECTORY/creds" }, "NATS_CREDS_FILE", /CREDENTIALS_DIRECTORY/],
];

for (const [env, variable, message] of bad) {
  test(`${JSON.stringify(env)} is refused naming ${variable}`, () => {
    assert.throws(() => parseConfig(env), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.variable, variable);
      assert.match(err.message, message);
      assert.ok(err.message.startsWith(`${variable}: `));
      assert.ok(!err.message.includes("\n"), "one line");
      assert.ok(!err.message.includes("secret"), "never echoes a secret");
      return true;
    });
  });
}

test("credential files are read (systemd $CREDENTIALS_DIRECTORY expanded), contents never described", () => {
  const dir = mkdtempSync(join(tmpdir(), "policy-config-"));
  writeFileSync(join(dir, "password"), "hunter2\n");
  const c = parseConfig({ NATS_USER: "svc", NATS_PASSWORD_FILE: "${CREDENTIALS_DIRECTORY}/password", CREDENTIALS_DIRECTORY: dir });
  assert.equal(c.credentialFiles.password, join(dir, "password"));
  const creds = readCredentials(c);
  assert.equal(creds.user, "svc");
  assert.equal(creds.password, "hunter2");
  assert.ok(!JSON.stringify(describeConfig(c)).includes("hunter2"));
});

test("an unreadable credential file is a config error naming the variable", () => {
  const c = parseConfig({ NATS_TOKEN_FILE: "/nonexistent/token" });
  assert.throws(() => readCredentials(c), /^ConfigError: NATS_TOKEN_FILE: cannot read file \/nonexistent\/token \(ENOENT\)$/);
  const dir = mkdtempSync(join(tmpdir(), "policy-config-"));
  writeFileSync(join(dir, "empty"), "");
  assert.throws(() => readCredentials(parseConfig({ NATS_TOKEN_FILE: join(dir, "empty") })), /NATS_TOKEN_FILE: file .* is empty/);
});

test("server version floor: 2.11 or newer, older refused with what cannot be guaranteed", async () => {
  const { checkServerVersion, StartupError } = await import("../../src/adapters/nats/setup.js");
  assert.equal(checkServerVersion("2.11.0", 3).minor, 11);
  assert.equal(checkServerVersion("2.14.9", 1).text, "2.14.9");
  assert.equal(checkServerVersion("3.0.0", 1).major, 3);
  for (const [version, replicas] of [["2.10.29", 1], ["2.9.10", 3]] as const) {
    assert.throws(() => checkServerVersion(version, replicas), (err: unknown) => {
      assert.ok(err instanceof StartupError);
      assert.match(err.message, /2\.11\.0 or newer is required/);
      assert.match(err.message, /Nats-Expected-Last-Subject-Sequence-Subject/);
      assert.match(err.message, /Refusing to start/);
      return true;
    });
  }
  assert.throws(() => checkServerVersion("garbage", 1), /cannot parse/);
});

test("READ_MODEL_CHECKPOINT: an absolute file path, unset or empty is off, anything else a coded error", () => {
  assert.equal(parseConfig({}).checkpointPath, null);
  assert.equal(parseConfig({ READ_MODEL_CHECKPOINT: " " }).checkpointPath, null);
  assert.equal(parseConfig({ READ_MODEL_CHECKPOINT: "/var/lib/policy-service/read-model.checkpoint" }).checkpointPath, "/var/lib/policy-service/read-model.checkpoint");
  for (const bad of ["relative/file", "/var/lib/policy-service/"]) {
    assert.throws(() => parseConfig({ READ_MODEL_CHECKPOINT: bad }), (err: unknown) => err instanceof ConfigError && err.message.includes("READ_MODEL_CHECKPOINT"), bad);
  }
});

test("READ_MODEL_CHECKPOINT_INTERVAL_S: seconds from 1 to 86400, unset or empty is 300, anything else a coded error", () => {
  assert.equal(parseConfig({}).checkpointIntervalSeconds, 300);
  assert.equal(parseConfig({ READ_MODEL_CHECKPOINT_INTERVAL_S: "" }).checkpointIntervalSeconds, 300);
  assert.equal(parseConfig({ READ_MODEL_CHECKPOINT_INTERVAL_S: "1" }).checkpointIntervalSeconds, 1);
  assert.equal(parseConfig({ READ_MODEL_CHECKPOINT_INTERVAL_S: " 86400 " }).checkpointIntervalSeconds, 86_400);
  // Checked with the checkpoint off too: the mistake shows before the checkpoint is turned on.
  for (const bad of ["0", "-5", "86401", "1.5", "5m", "300s", "abc", "1e3"]) {
    assert.throws(() => parseConfig({ READ_MODEL_CHECKPOINT_INTERVAL_S: bad }), (err: unknown) =>
      err instanceof ConfigError && err.variable === "READ_MODEL_CHECKPOINT_INTERVAL_S" &&
      err.message === `READ_MODEL_CHECKPOINT_INTERVAL_S: expected an integer from 1 to 86400, got ${JSON.stringify(bad)}`, bad);
  }
});
