// Benchmark over NATS: in ONE run, against a nats-server this script starts, compare
//   raw core request/reply echo (responder in its own Node process, like the service),
//   raw JetStream publish to an R1 file stream,
//   the service's policy.commands.evaluate and policy.commands.create,
// each at 1 and 32 requests in flight, printing req/s and p50/p99 latency. Performance claims come only from here.
//
// Run from service/:  npm run bench [-- --seconds 3 --json]   (builds dist/, compiles bench/, runs .build/bench/nats.js)
import { spawn } from "node:child_process";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { SERVICE_ROOT, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../test/helpers/nats.js";

interface PhaseResult {
  name: string;
  inFlight: number;
  ops: number;
  errors: number;
  seconds: number;
  reqPerSec: number;
  p50ms: number;
  p99ms: number;
}

const args = process.argv.slice(2);
const seconds = Number(args[args.indexOf("--seconds") + 1] ?? 3) || 3;
const asJson = args.includes("--json");
const PAYLOAD_600 = JSON.stringify({ pad: "x".repeat(580) });

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Keeps `inFlight` operations running for `durationMs` after a short warm-up; latency per op in the client. */
async function phase(name: string, inFlight: number, op: () => Promise<boolean>): Promise<PhaseResult> {
  const warmupEnd = Date.now() + 500;
  const end = warmupEnd + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  let measuredStart = 0;
  const worker = async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      let ok = false;
      try {
        ok = await op();
      } catch {
        ok = false;
      }
      const now = Date.now();
      if (now >= warmupEnd) {
        if (measuredStart === 0) measuredStart = now;
        if (ok) latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        else errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const elapsed = (Date.now() - (measuredStart || warmupEnd)) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    name,
    inFlight,
    ops: latencies.length,
    errors,
    seconds: elapsed,
    reqPerSec: latencies.length / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
  };
}

/** An echo responder in its own Node process, so the raw baseline pays the same process hop as the service. */
function startEchoResponder(url: string): Promise<{ stop(): Promise<void> }> {
  const code = `
    import { connect } from "@nats-io/transport-node";
    const nc = await connect({ servers: ${JSON.stringify(url)} });
    const sub = nc.subscribe("bench.echo", { queue: "q" });
    console.log("ready");
    for await (const m of sub) m.respond(m.data);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], { cwd: SERVICE_ROOT, stdio: ["ignore", "pipe", "inherit"] });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
    }
  };
  process.once("exit", () => child.kill("SIGKILL"));
  return new Promise((resolve, reject) => {
    child.stdout!.once("data", () => resolve({ stop }));
    child.once("exit", (codeNum) => reject(new Error(`echo responder exited (${codeNum})`)));
  });
}

async function request(nc: NatsConnection, subject: string, body: string): Promise<Record<string, unknown>> {
  const reply = await nc.request(subject, body, { timeout: 10_000 });
  return reply.json<Record<string, unknown>>();
}

async function main(): Promise<void> {
  let server: NatsServer | undefined;
  let service: ServiceProcess | undefined;
  let echo: { stop(): Promise<void> } | undefined;
  let nc: NatsConnection | undefined;
  const results: PhaseResult[] = [];
  try {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    const client = nc;

    echo = await startEchoResponder(server.url);
    for (const inFlight of [1, 32]) {
      results.push(await phase("core request/reply echo (600 B)", inFlight, async () => {
        await client.request("bench.echo", PAYLOAD_600, { timeout: 5000 });
        return true;
      }));
    }
    await echo.stop();
    echo = undefined;

    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "BENCH", subjects: ["bench.js.>"], storage: "file", num_replicas: 1 });
    const js = jetstream(nc);
    for (const inFlight of [1, 32]) {
      results.push(await phase("JetStream publish R1 file (600 B)", inFlight, async () => {
        await js.publish("bench.js.x", PAYLOAD_600);
        return true;
      }));
    }
    await jsm.streams.delete("BENCH");

    service = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
    await service.ready(60_000);

    const policy = await request(nc, "policy.commands.create", JSON.stringify({
      name: "Bench retention policy",
      description: "Data must be retained and encrypted",
      policy_type: "Retention",
      enforcement: "Mandatory",
      scope: "Organization",
      rules: [
        { rule_id: "retention", name: "Retention", severity: "High", expression: { op: "greater_than_or_equal", field: "data.retention_days", value: 2555 } },
        { rule_id: "region", name: "Region", severity: "Medium", expression: { op: "in", field: "data.region", values: ["eu-west-1", "eu-central-1"] } },
        { rule_id: "encrypted", name: "Encrypted", severity: "Critical", expression: { op: "and", args: [
          { op: "equal", field: "data.encryption.enabled", value: true },
          { op: "starts_with", field: "data.encryption.algorithm", value: "AES" },
        ] } },
      ],
    }));
    const policyId = policy.aggregate_id as string;
    if (policy.ok !== true) throw new Error(`create failed: ${JSON.stringify(policy)}`);
    for (const [name, body] of [
      ["approve", { policy_id: policyId, approved_by: "bench" }],
      ["activate", { policy_id: policyId, activated_by: "bench" }],
    ] as const) {
      const reply = await request(nc, `policy.commands.${name}`, JSON.stringify(body));
      if (reply.ok !== true) throw new Error(`${name} failed: ${JSON.stringify(reply)}`);
    }
    const evaluateBody = JSON.stringify({
      policy_id: policyId,
      context: { data: { retention_days: 2600, region: "eu-west-1", encryption: { enabled: true, algorithm: "AES-256-GCM" } } },
    });
    // Wait until this instance's projection has the activation.
    for (let i = 0; i < 100; i++) {
      const reply = await request(nc, "policy.commands.evaluate", evaluateBody);
      if (reply.ok === true) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const inFlight of [1, 32]) {
      results.push(await phase("service evaluate (3 rules, audit on)", inFlight, async () => {
        const reply = await client.request("policy.commands.evaluate", evaluateBody, { timeout: 10_000 });
        return reply.json<{ ok: boolean }>().ok === true;
      }));
    }
    // The same evaluation without the decision audit (acked JetStream writes, batched per subject), to show its cost.
    await service.stop();
    service = startService({ NATS_URL: server.url, LOG_LEVEL: "info", AUDIT_ENABLED: "false" });
    await service.ready(60_000);
    for (const inFlight of [1, 32]) {
      results.push(await phase("service evaluate (3 rules, audit off)", inFlight, async () => {
        const reply = await client.request("policy.commands.evaluate", evaluateBody, { timeout: 10_000 });
        return reply.json<{ ok: boolean }>().ok === true;
      }));
    }
    const createBody = JSON.stringify({
      name: "Bench policy", description: "created by the benchmark", policy_type: "Security", enforcement: "Advisory", scope: "Team",
    });
    for (const inFlight of [1, 32]) {
      results.push(await phase("service create command", inFlight, async () => {
        const reply = await client.request("policy.commands.create", createBody, { timeout: 10_000 });
        return reply.json<{ ok: boolean }>().ok === true;
      }));
    }
  } finally {
    await nc?.close().catch(() => {});
    await echo?.stop();
    await service?.stop();
    await server?.stop();
  }

  if (asJson) {
    console.log(JSON.stringify({ server: server?.version, seconds, results }, null, 2));
    return;
  }
  console.log(`nats-server ${server?.version}, ${seconds} s per phase after 0.5 s warm-up, Node ${process.version}`);
  console.log("phase".padEnd(40) + "in-flight".padStart(10) + "req/s".padStart(10) + "p50 ms".padStart(9) + "p99 ms".padStart(9) + "errors".padStart(8));
  for (const r of results) {
    console.log(
      r.name.padEnd(40) + String(r.inFlight).padStart(10) + r.reqPerSec.toFixed(0).padStart(10) +
        r.p50ms.toFixed(3).padStart(9) + r.p99ms.toFixed(3).padStart(9) + String(r.errors).padStart(8),
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
