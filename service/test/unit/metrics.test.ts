// The metric definitions over stand-in sources: what the integration test cannot make happen on demand (an expiry
// the sweeper has not recorded yet, JetStream not answering a scrape). test/integration/metrics.test.ts scrapes the
// real service.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { classifySubject, Metrics } from "../../src/app/metrics.js";
import type { AggregateState } from "../../src/domain/index.js";

const NOW = Date.parse("2099-01-01T00:00:00Z");

function exemption(status: string, expiresAt: string): AggregateState {
  return { aggregate_type: "PolicyExemption", aggregate_id: "e", version: 1, status, expires_at: expiresAt } as unknown as AggregateState;
}

async function sample(metrics: Metrics, name: string): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  if (metric === undefined) return undefined;
  const got = await metric.get();
  return got.values[0]?.value;
}

function withSources(lastSeq: () => Promise<number>, exemptions: AggregateState[]): Metrics {
  const metrics = new Metrics();
  const nc = { status: () => ({ [Symbol.asyncIterator]: () => ({ next: () => new Promise(() => undefined) }) }), closed: () => new Promise(() => undefined) };
  metrics.attach({
    commandCounters: { conflictRetries: 3, replayedReplies: 2, duplicates: 1, forwarded: 4, chainBreaks: 5 },
    projection: { lastSeq: 40, consumerRecreations: 6, exemptions: () => exemptions },
    jsm: { streams: { info: async () => ({ state: { last_seq: await lastSeq() } }) } } as unknown as JetStreamManager,
    streamName: "POLICY_EVENTS",
    nc: nc as unknown as NatsConnection,
    now: () => NOW,
  });
  return metrics;
}

describe("metrics", () => {
  test("subjects map to kind and name; other subjects are not counted", () => {
    assert.deepEqual(classifySubject("policy.commands.create"), { kind: "command", name: "create" });
    assert.deepEqual(classifySubject("policy.commands.evaluate"), { kind: "evaluation", name: "evaluate" });
    assert.deepEqual(classifySubject("policy.commands.check_compliance"), { kind: "evaluation", name: "check_compliance" });
    assert.deepEqual(classifySubject("policy.queries.list"), { kind: "query", name: "list" });
    assert.equal(classifySubject("$SRV.PING"), undefined);
  });

  test("pending expiries: Granted with expires_at passed; not Granted or not yet due do not count", async () => {
    const metrics = withSources(async () => 42, [
      exemption("Granted", "2098-12-31T23:59:59Z"),
      exemption("Granted", "2099-01-01T00:00:00Z"),
      exemption("Granted", "2099-06-01T00:00:00Z"),
      exemption("Expired", "2098-01-01T00:00:00Z"),
      exemption("Revoked", "2098-01-01T00:00:00Z"),
    ]);
    assert.equal(await sample(metrics, "policy_service_expiries_pending"), 2);
    assert.equal(await sample(metrics, "policy_service_exemptions_granted"), 3);
  });

  test("lag is the stream's last seq minus the applied seq; handler counters are read as they are", async () => {
    const metrics = withSources(async () => 42, []);
    const text = await metrics.registry.metrics();
    assert.match(text, /^policy_service_stream_last_seq 42$/m);
    assert.match(text, /^policy_service_projection_applied_seq 40$/m);
    assert.match(text, /^policy_service_projection_consumer_recreations_total 6$/m);
    assert.match(text, /^policy_service_read_side_lag_events 2$/m);
    assert.match(text, /^policy_service_command_conflict_retries_total 3$/m);
    assert.match(text, /^policy_service_command_idempotent_replays_total 2$/m);
    assert.match(text, /^policy_service_command_duplicates_total 1$/m);
    assert.match(text, /^policy_service_command_chain_breaks_total 5$/m);
    // Read again: a counter reports the handler's value, not a sum over scrapes.
    assert.match(await metrics.registry.metrics(), /^policy_service_command_conflict_retries_total 3$/m);
  });

  test("a stream that does not answer keeps the last lag instead of failing the scrape", async () => {
    let fail = false;
    const metrics = withSources(async () => { if (fail) throw new Error("timeout"); return 45; }, []);
    assert.match(await metrics.registry.metrics(), /^policy_service_read_side_lag_events 5$/m);
    fail = true;
    assert.match(await metrics.registry.metrics(), /^policy_service_read_side_lag_events 5$/m);
  });

  test("observe counts by name and outcome; ready needs setReady", async () => {
    const metrics = new Metrics();
    metrics.observe("policy.commands.create", null, 0.002);
    metrics.observe("policy.commands.create", "already_exists", 0.001);
    metrics.observe("policy.queries.get", "not_found", 0.0001);
    metrics.observe("$SRV.INFO", null, 0.1);
    const text = await metrics.registry.metrics();
    assert.match(text, /^policy_service_commands_total\{name="create",outcome="ok"\} 1$/m);
    assert.match(text, /^policy_service_commands_total\{name="create",outcome="already_exists"\} 1$/m);
    assert.match(text, /^policy_service_queries_total\{name="get",outcome="not_found"\} 1$/m);
    assert.match(text, /^policy_service_command_duration_seconds_count\{name="create"\} 2$/m);
    assert.match(text, /^policy_service_ready 0$/m);
    metrics.setReady(true);
    assert.equal(metrics.isReady(), true);
  });
});
