// scripts/faults: the fault-injection suite's command line (see docs/reliability.md).
// As root with `ip netns`, it creates a hub namespace and one namespace per node, re-runs itself inside the hub
// (the only place that can reach the nodes), and afterwards kills whatever is left in those namespaces and deletes
// them, also after a failure or Ctrl-C. Otherwise everything runs on 127.0.0.1 and the partition fault is skipped.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort } from "../helpers/nats.js";
import { createNetns, deleteNetns, netnsSlots, netnsUnavailable, removeStaleNetns, type NodeSlot } from "./topology.js";
import { runSuite, type RunOptions } from "./run.js";

const USAGE = `usage: scripts/faults [--short] [--duration SECONDS] [--seed N] [--clients N] [--timeout MS] [--tries N]
                      [--replicas 1|3] [--no-faults] [--disable-idempotency] [--loopback] [--keep-logs]
  --short                 90 s of load (the README's test command runs this); default 300 s
  --duration SECONDS      seconds of load while faults are injected (30-3600)
  --seed N                seed of the fault schedule and of the clients' choices (default: random, printed)
  --clients N             concurrent clients, spread over the three nodes (default 18)
  --timeout MS            client request timeout before a retry with the same command_id (default 5000)
  --tries N               tries per command before it counts as failed (default 8)
  --replicas 1|3          STREAM_REPLICAS of the instances (default 3); with 1 the stream lives on one of the three
                          servers and an instance appends queued commands as chains (docs/concurrency.md)
  --no-faults             the same load and checks without any fault (a baseline: what the load alone costs,
                          e.g. lost append races); the "fault injected" checks are skipped
  --disable-idempotency   start the services with POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY=1 (shows the suite fails)
  --loopback              no network namespaces even as root (the partition fault is then skipped)
  --keep-logs             keep the run's logs also when every check passes
Environment: FAULTS_SERVICE_LOG_LEVEL (the instances' LOG_LEVEL, default info; debug logs every lost append race).
Ends with "faults: N passed, N failed, N skipped"; exits 1 when a check fails, 2 on a usage error.`;

interface Args { seed: number; durationS: number; clients: number; timeoutMs: number; maxTries: number; replicas: 1 | 3; noFaults: boolean; disableIdempotency: boolean; loopback: boolean; keepLogs: boolean; inside: boolean }

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seed: Math.floor(Math.random() * 2 ** 31),
    durationS: 300,
    clients: 18,
    timeoutMs: 5000,
    maxTries: 8,
    replicas: 3,
    noFaults: false,
    disableIdempotency: process.env.POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY === "1",
    loopback: false,
    keepLogs: false,
    inside: false,
  };
  const int = (flag: string, value: string | undefined, min: number, max: number): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) usage(`${flag}: expected an integer from ${min} to ${max}, got ${JSON.stringify(value ?? "")}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case "--short": args.durationS = 90; break;
      case "--duration": args.durationS = int(a, argv[++i], 30, 3600); break;
      case "--seed": args.seed = int(a, argv[++i], 0, 2 ** 31 - 1); break;
      case "--clients": args.clients = int(a, argv[++i], 3, 60); break;
      case "--timeout": args.timeoutMs = int(a, argv[++i], 500, 60_000); break;
      case "--tries": args.maxTries = int(a, argv[++i], 1, 20); break;
      case "--replicas": {
        const n = int(a, argv[++i], 1, 3);
        if (n !== 1 && n !== 3) usage(`--replicas: expected 1 or 3, got ${n}`);
        args.replicas = n;
        break;
      }
      case "--no-faults": args.noFaults = true; break;
      case "--disable-idempotency": args.disableIdempotency = true; break;
      case "--loopback": args.loopback = true; break;
      case "--keep-logs": args.keepLogs = true; break;
      case "--inside": args.inside = true; break;
      case "-h": case "--help": process.stdout.write(`${USAGE}\n`); process.exit(0); break;
      default: usage(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  return args;
}

function usage(problem: string): never {
  process.stderr.write(`scripts/faults: ${problem}\n${USAGE}\n`);
  process.exit(2);
}

async function loopbackSlots(): Promise<NodeSlot[]> {
  const slots: NodeSlot[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    slots.push({ host: "127.0.0.1", bindHost: "127.0.0.1", wrap: [], port, httpPort: await freePort(), clusterPort: await freePort(), localUrl: `nats://127.0.0.1:${port}`, clientAdvertise: `127.0.0.1:${port}`, namespace: null });
  }
  return slots;
}

async function inside(args: Args, slots: NodeSlot[], partitionUnavailable: string | null): Promise<number> {
  const abort = new AbortController();
  const interrupted = (sig: string) => {
    process.stdout.write(`\nfaults: ${sig}: stopping every process this run started\n`);
    abort.abort();
    // The test helpers SIGKILL every nats-server and service they started on exit; run.ts does the same for workers.
    process.exit(130);
  };
  process.once("SIGINT", () => interrupted("SIGINT"));
  process.once("SIGTERM", () => interrupted("SIGTERM"));
  const opts: RunOptions = {
    seed: args.seed, durationS: args.durationS, clients: args.clients, timeoutMs: args.timeoutMs, maxTries: args.maxTries, replicas: args.replicas, noFaults: args.noFaults,
    disableIdempotency: args.disableIdempotency, slots, partitionUnavailable, keepLogs: args.keepLogs, signal: abort.signal,
  };
  return runSuite(opts);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.inside) {
    const slots = JSON.parse(process.env.POLICY_FAULTS_SLOTS ?? "[]") as NodeSlot[];
    return inside(args, slots, null);
  }
  process.stdout.write(`faults: seed ${args.seed} (reproduce with --seed ${args.seed}${args.replicas === 1 ? " --replicas 1" : ""}${args.noFaults ? " --no-faults" : ""}), ${args.durationS} s of load, R${args.replicas}, node ${process.version}\n`);
  const why = args.loopback ? "--loopback given" : netnsUnavailable();
  if (why) {
    process.stdout.write(`faults: on 127.0.0.1 without network namespaces (${why}); the partition fault is skipped\n`);
    return inside(args, await loopbackSlots(), `no network namespaces (${why})`);
  }
  const stale = removeStaleNetns();
  if (stale.length > 0) process.stdout.write(`faults: removed namespaces of an earlier run that was killed: ${stale.join(", ")}\n`);
  const plan = createNetns(3);
  const slots = netnsSlots(plan);
  process.stdout.write(`faults: network namespaces ${plan.hub} (bridge, ${plan.hubAddress}) and ${plan.nodes.map((n) => `${n.namespace} (${n.address})`).join(", ")}; deleted at exit\n`);
  const self = fileURLToPath(import.meta.url);
  const passThrough = process.argv.slice(2).filter((a) => a !== "--inside");
  if (!passThrough.includes("--seed")) passThrough.push("--seed", String(args.seed));
  const child = spawn("ip", ["netns", "exec", plan.hub, process.execPath, self, ...passThrough, "--inside"], {
    stdio: "inherit",
    env: { ...process.env, POLICY_FAULTS_SLOTS: JSON.stringify(slots) },
  });
  let signalled = false;
  const forward = (sig: NodeJS.Signals) => { signalled = true; try { child.kill(sig); } catch { /* gone */ } };
  process.on("SIGINT", () => forward("SIGINT"));
  process.on("SIGTERM", () => forward("SIGTERM"));
  const code = await new Promise<number>((resolve) => {
    child.once("exit", (c, sig) => resolve(c ?? (sig ? 128 : 1)));
    child.once("error", (err) => { process.stderr.write(`faults: cannot start the run inside ${plan.hub}: ${err.message}\n`); resolve(1); });
  });
  // Quietly, so the summary stays the last line; only leftovers are worth a word (on stderr).
  const left = deleteNetns(plan);
  if (left.length > 0) process.stderr.write(`faults: killed ${left.length} process(es) still in the namespaces: ${left.join(", ")}\n`);
  return signalled ? 130 : code;
}

main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`faults: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
