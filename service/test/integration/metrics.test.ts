// Monitoring against a real service process over real HTTP (issue 13, "Monitoring"): METRICS_LISTEN serves
// Prometheus text on /metrics and readiness on /ready. /ready is 503 while the instance waits for NATS and while it
// is cut off from NATS, 200 once the projection caught up and the endpoints are registered. The counters follow
// real requests by name and outcome code; the command handler's conflict retries and idempotent replays equal what
// the instance reports in $SRV.STATS; the read-side lag and sequences match the stream.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { call, callOk, policyBody, streamInfo, type Json } from "../helpers/client.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, runService, SERVICE_ROOT, sleep, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";

interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parses the Prometheus text exposition format (the lines that carry samples). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function get(port: number, path: string, method = "GET"): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type") };
}

async function scrape(port: number): Promise<Sample[]> {
  const res = await get(port, "/metrics");
  assert.equal(res.status, 200, res.body);
  assert.match(res.type ?? "", /^text\/plain; version=0\.0\.4/);
  return parseMetrics(res.body);
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await probe();
    if (result !== undefined) return result;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe("METRICS_LISTEN: /metrics and /ready on a real service", () => {
  let server: NatsServer | undefined;
  let service: ServiceProcess | undefined;
  let nc: NatsConnection | undefined;
  let metricsPort = 0;

  before(async () => {
    // The service starts first, against a port where no NATS listens yet: it must say "not ready", not refuse.
    const natsPort = await freePort();
    metricsPort = await freePort();
    service = startService({ NATS_URL: `nats://127.0.0.1:${natsPort}`, LOG_LEVEL: "info", METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
    await service.waitForLog((l) => l.msg === "metrics and readiness endpoint listening (/metrics, /ready)");
    const starting = await get(metricsPort, "/ready");
    assert.equal(starting.status, 503, "not ready while NATS is unreachable");
    assert.equal(value(await scrape(metricsPort), "policy_service_ready"), 0);
    server = await startNatsServer({ port: natsPort });
    await service.ready(60_000);
    nc = await connect({ servers: server.url });
  });

  after(async () => {
    await nc?.close();
    await service?.stop();
    await server?.stop();
  });

  test("/ready is 200 once serving; /metrics has every endpoint's series from the start; other paths and methods are refused", async () => {
    const ready = await get(metricsPort, "/ready");
    assert.equal(ready.status, 200);
    assert.equal(ready.body, "ready\n");
    const samples = await scrape(metricsPort);
    assert.equal(value(samples, "policy_service_ready"), 1);
    for (const name of ["create", "grant_exemption", "archive"]) {
      assert.equal(value(samples, "policy_service_commands_total", { name, outcome: "ok" }), 0, `${name} series exists`);
      assert.equal(value(samples, "policy_service_command_duration_seconds_count", { name }), 0);
    }
    assert.equal(value(samples, "policy_service_evaluations_total", { name: "evaluate", outcome: "ok" }), 0);
    assert.equal(value(samples, "policy_service_queries_total", { name: "applicable", outcome: "ok" }), 0);
    assert.ok((value(samples, "policy_service_process_resident_memory_bytes") ?? 0) > 0, "process metrics");
    const pkgVersion = JSON.parse(readFileSync(join(SERVICE_ROOT, "package.json"), "utf8")).version as string;
    assert.equal(value(samples, "policy_service_build_info", { version: pkgVersion }), 1);
    assert.equal((await get(metricsPort, "/nope")).status, 404);
    assert.equal((await get(metricsPort, "/metrics", "POST")).status, 405);
    assert.equal((await get(metricsPort, "/ready", "HEAD")).status, 200);
  });

  test("commands, evaluations and queries are counted by name and outcome code, with latency histograms", async () => {
    const before = await scrape(metricsPort);
    const count = (s: Sample[], metric: string, name: string, outcome: string) => value(s, metric, { name, outcome }) ?? 0;
    const policy = await callOk(nc!, "create", policyBody());
    await callOk(nc!, "approve", { policy_id: policy.aggregate_id, approved_by: "o" });
    await callOk(nc!, "activate", { policy_id: policy.aggregate_id, activated_by: "o" });
    assert.equal((await call(nc!, "create", { ...policyBody(), policy_id: policy.aggregate_id })).reply.error.code, "already_exists");
    assert.equal((await call(nc!, "create", { name: "x" })).reply.error.code, "validation_failed");
    assert.equal((await call(nc!, "create", "{not json")).reply.error.code, "invalid_json");
    await callOk(nc!, "evaluate", { policy_id: policy.aggregate_id, context: {} });
    assert.equal((await call(nc!, "evaluate", { policy_id: policy.aggregate_id })).reply.error.code, "validation_failed");
    await callOk(nc!, "policy.queries.get", { id: policy.aggregate_id });
    assert.equal((await call(nc!, "policy.queries.get", { id: randomUUID() })).reply.error.code, "not_found");

    const after = await scrape(metricsPort);
    const delta = (metric: string, name: string, outcome: string) => count(after, metric, name, outcome) - count(before, metric, name, outcome);
    assert.equal(delta("policy_service_commands_total", "create", "ok"), 1);
    assert.equal(delta("policy_service_commands_total", "create", "already_exists"), 1);
    assert.equal(delta("policy_service_commands_total", "create", "validation_failed"), 1);
    assert.equal(delta("policy_service_commands_total", "create", "invalid_json"), 1);
    assert.equal(delta("policy_service_commands_total", "approve", "ok"), 1);
    assert.equal(delta("policy_service_evaluations_total", "evaluate", "ok"), 1);
    assert.equal(delta("policy_service_evaluations_total", "evaluate", "validation_failed"), 1);
    assert.equal(delta("policy_service_queries_total", "get", "ok"), 1);
    assert.equal(delta("policy_service_queries_total", "get", "not_found"), 1);
    const createCount = value(after, "policy_service_command_duration_seconds_count", { name: "create" })!;
    assert.equal(createCount - value(before, "policy_service_command_duration_seconds_count", { name: "create" })!, 4);
    assert.equal(value(after, "policy_service_command_duration_seconds_bucket", { name: "create", le: "+Inf" }), createCount);
    assert.ok(value(after, "policy_service_command_duration_seconds_sum", { name: "create" })! > 0);
    assert.ok((value(after, "policy_service_evaluation_duration_seconds_count", { name: "evaluate" }) ?? 0) >= 2);
  });

  test("conflict retries and idempotent replays are the command handler's own counters (as in $SRV.STATS)", async (t) => {
    const policy = await callOk(nc!, "create", policyBody());
    const commandId = randomUUID();
    const update = { policy_id: policy.aggregate_id, updated_by: "o", name: "Renamed", command_id: commandId };
    await callOk(nc!, "update", update);
    await callOk(nc!, "update", update); // a resend: answered from the idempotency record
    // Concurrent writers on one aggregate: some lose the append race and are decided again.
    await Promise.all(Array.from({ length: 16 }, (_, i) => callOk(nc!, "update", { policy_id: policy.aggregate_id, updated_by: "o", name: `Name ${i}` })));

    const stats = (await nc!.request("$SRV.STATS.policy-service", "", { timeout: 5000 })).json<Json>();
    const counters = (stats.endpoints as Json[]).find((e) => e.subject === "policy.commands.update")!.data.commands as Json;
    const samples = await scrape(metricsPort);
    assert.ok(counters.replayedReplies >= 1, JSON.stringify(counters));
    assert.equal(value(samples, "policy_service_command_idempotent_replays_total"), counters.replayedReplies);
    assert.equal(value(samples, "policy_service_command_conflict_retries_total"), counters.conflictRetries);
    assert.equal(value(samples, "policy_service_command_duplicates_total"), counters.duplicates);
    t.diagnostic(`handler counters: ${JSON.stringify(counters)}`);
  });

  test("read-side lag: stream last seq minus the projection's applied seq; exemptions and pending expiries", async () => {
    const policy = await callOk(nc!, "create", policyBody());
    await callOk(nc!, "approve", { policy_id: policy.aggregate_id, approved_by: "o" });
    await callOk(nc!, "activate", { policy_id: policy.aggregate_id, activated_by: "o" });
    const expiresAt = new Date(Date.now() + 1500).toISOString();
    await callOk(nc!, "grant_exemption", { policy_id: policy.aggregate_id, entity_id: "e", reason: "r", granted_by: "g", expires_at: expiresAt });
    const lastSeq = (await streamInfo(nc!, "POLICY_EVENTS")).state.last_seq;
    const caughtUp = await until("the projection to apply the grant", async () => {
      const s = await scrape(metricsPort);
      return value(s, "policy_service_projection_applied_seq") === lastSeq ? s : undefined;
    });
    assert.equal(value(caughtUp, "policy_service_stream_last_seq"), lastSeq);
    assert.equal(value(caughtUp, "policy_service_read_side_lag_events"), 0);
    assert.ok((value(caughtUp, "policy_service_exemptions_granted") ?? 0) >= 1);

    // The sweeper records the expiry within seconds: then nothing is pending and the lag is back to 0.
    const expired = await until("the exemption's expiry to be recorded", async () => {
      const s = await scrape(metricsPort);
      return value(s, "policy_service_exemptions_granted") === 0 && value(s, "policy_service_stream_last_seq") === lastSeq + 1 ? s : undefined;
    });
    assert.equal(value(expired, "policy_service_expiries_pending"), 0);
    assert.equal(value(expired, "policy_service_read_side_lag_events"), 0);
    assert.equal(value(expired, "policy_service_commands_total", { name: "grant_exemption", outcome: "ok" }), 1);
  });

  test("/ready is 503 while the instance is cut off from NATS, and 200 again after it reconnects", async () => {
    await server!.kill();
    await until("/ready to answer 503", async () => ((await get(metricsPort, "/ready")).status === 503 ? true : undefined));
    assert.equal(value(await scrape(metricsPort), "policy_service_ready"), 0, "metrics are served while NATS is down");
    await server!.restart();
    await until("/ready to answer 200", async () => ((await get(metricsPort, "/ready")).status === 200 ? true : undefined), 30_000);
  });
});

describe("METRICS_LISTEN misconfigured or taken", () => {
  test("--check-config says where metrics would listen", () => {
    assert.match(runService(["--check-config"], { METRICS_LISTEN: "[::1]:9464" }).stdout, /, metrics on \[::1\]:9464$/m);
    assert.match(runService(["--check-config"], {}).stdout, /, metrics off$/m);
  });

  test("a malformed value is a one-line configuration error (exit 2)", () => {
    const result = runService(["--check-config"], { METRICS_LISTEN: "9464" });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^policy-service: invalid configuration: METRICS_LISTEN: expected host:port such as 127\.0\.0\.1:9464/);
  });

  test("a port already in use stops the service with a message naming METRICS_LISTEN (exit 1)", async () => {
    const taken = await startNatsServer();
    try {
      // The NATS server's monitoring port is a real listener on 127.0.0.1.
      const service = startService({ NATS_URL: taken.url, LOG_LEVEL: "info", METRICS_LISTEN: `127.0.0.1:${taken.httpPort}` });
      const exit = await service.exited();
      assert.equal(exit.code, 1);
      assert.ok(service.lines.some((l) => l.level === 60 && /^cannot listen on METRICS_LISTEN 127\.0\.0\.1:\d+: .*EADDRINUSE/.test(l.msg ?? "")), JSON.stringify(service.lines));
    } finally {
      await taken.stop();
    }
  });
});
