#!/usr/bin/env node
// policy-service: the command-line entry. `--version`, `--check-config`, `--help`, `ctl …`, or run the service.
import { ConfigError, listenText, parseConfig, readCredentials, type Config } from "./support/config.js";
import { componentLogger, createLogger } from "./support/logger.js";
import { SHUTDOWN_TIMEOUT_MS, startRuntime, type Runtime } from "./app/runtime.js";
import { StartupError } from "./adapters/nats/setup.js";
import { CredentialError } from "./adapters/nats/connection.js";
import { packageVersion } from "./app/version.js";
import { Metrics, startMonitoringServer } from "./app/metrics.js";
import { setFlagsFromString } from "node:v8";

const HELP = `usage: policy-service [--version | --check-config | --help | ctl <command> …]

Runs the policy service: NATS micro service "policy-service" on policy.commands.* (queue group "q"),
events in the JetStream stream STREAM_NAME (subjects events.policy.>).

Environment (defaults in brackets):
  NATS_URL            nats://host:port[,…]          [nats://localhost:4222]
  STREAM_NAME         event stream name             [POLICY_EVENTS]
  LOG_LEVEL           trace|debug|info|warn|error   [info]
  SNAPSHOT_FREQUENCY  events between snapshots      [100]
  STREAM_REPLICAS     1..5                          [1]
  DUPLICATE_WINDOW    seconds, ≥ 120                [120]
  MAX_IN_FLIGHT       concurrent requests/instance  [64]
  COMMAND_RECORDS     auto|always: idempotency record of a stored command only while a 0.9.0 instance serves the stream, or always  [auto]
  COMMAND_FORWARDING  auto|off: commands on an aggregate several instances write go to the one instance that writes it, or never  [auto]
  HEAP_GROWING_PERCENT  old-generation growth after a full GC, % of the live heap (0: V8's own)  [30]
  AUDIT_ENABLED, AUDIT_STREAM_NAME [POLICY_AUDIT], AUDIT_MAX_AGE_DAYS [90]
  METRICS_LISTEN      host:port of GET /metrics (Prometheus) and GET /ready   [off]
  READ_MODEL_CHECKPOINT  absolute path of the read-model checkpoint file (restarts replay only what follows it)  [off]
  READ_MODEL_CHECKPOINT_INTERVAL_S  seconds between its writes while running (a crash replays at most this much), 1..86400  [300]
  Credentials (file paths; $CREDENTIALS_DIRECTORY/… allowed): NATS_CREDS_FILE, NATS_NKEY_SEED_FILE,
  NATS_USER + NATS_PASSWORD_FILE, NATS_TOKEN_FILE; TLS: NATS_CA_FILE, NATS_CERT_FILE + NATS_KEY_FILE.

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration.`;

/** Exits with 2 and ONE line naming the variable (config errors are the operator's to fix). */
function configOrExit(): Config {
  try {
    const config = parseConfig(process.env);
    readCredentials(config);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`policy-service: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

async function runService(): Promise<void> {
  const config = configOrExit();
  // Read by V8 at every full GC, so it can be set now. Without it V8 lets the heap grow to up to 4× the live heap
  // under a high allocation rate and keeps it (docs/performance.md "Memory"). The young generation's size can only
  // be set when node starts: NODE_OPTIONS=--max-semi-space-size (package.json "config", set by the launchers).
  if (config.heapGrowingPercent > 0) setFlagsFromString(`--heap-growing-percent=${config.heapGrowingPercent}`);
  const logger = createLogger(config.logLevel);
  const abort = new AbortController();
  let runtime: Runtime | null = null;
  let exiting = false;

  const onSignal = (sig: NodeJS.Signals) => {
    if (exiting) return;
    exiting = true;
    logger.info({ signal: sig }, "signal received");
    // Hard stop: whatever hangs, the process is gone within the timeout.
    setTimeout(() => {
      logger.error({ timeout_ms: SHUTDOWN_TIMEOUT_MS }, "shutdown timed out; exiting");
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS).unref();
    if (!runtime) {
      // Not serving commands yet (connecting or provisioning): nothing is in flight.
      abort.abort();
      logger.info({ reason: sig }, "stopped during start-up");
      process.exit(0);
    }
    // Serving (perhaps still replaying the read side): the start-up runs on while the shutdown drains what is in flight.
    void runtime.shutdown(sig).then(() => process.exit(0), (err) => {
      logger.error({ err }, "shutdown failed");
      process.exit(1);
    });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("unhandledRejection", (err) => logger.error({ err }, "unhandled rejection (bug; the service keeps running)"));

  // Up before NATS is reached, so /ready answers 503 (not "connection refused") while the instance starts.
  let metrics: Metrics | undefined;
  if (config.metricsListen) {
    metrics = new Metrics();
    try {
      await startMonitoringServer(config.metricsListen, metrics, componentLogger(logger, "metrics"));
    } catch (err) {
      const reason = `cannot listen on METRICS_LISTEN ${listenText(config.metricsListen)}: ${(err as Error).message}`;
      logger.fatal({ err }, reason);
      process.exit(1);
    }
  }

  try {
    // Set as soon as commands are served, so a signal during the read side's replay drains them (runtime.shutdown).
    runtime = await startRuntime(config, logger, { signal: abort.signal, ...(metrics ? { metrics } : {}), onServing: (serving) => { runtime = serving; } });
  } catch (err) {
    if (exiting) return; // the signal's shutdown ends the process
    if (err instanceof CredentialError) {
      // The operator's to fix, like a configuration error: one line naming the variable, exit 2.
      logger.fatal({ variable: err.variable }, `invalid configuration: ${err.message}`);
      process.exit(2);
    }
    if (err instanceof StartupError) logger.fatal({ reason: err.message }, err.message);
    else logger.fatal({ err }, "start-up failed");
    process.exit(1);
  }
  if (exiting) return; // a signal came while serving during start-up: its shutdown ends the process
  void runtime.closed().then(() => {
    if (!exiting) {
      logger.fatal("NATS connection closed unexpectedly");
      process.exit(1);
    }
  });
}

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  switch (first) {
    case "--version":
    case "-v":
      process.stdout.write(`${packageVersion()}\n`);
      return;
    case "--help":
    case "-h":
      process.stdout.write(`${HELP}\n`);
      return;
    case "--check-config": {
      const config = configOrExit();
      const metrics = config.metricsListen ? `metrics on ${listenText(config.metricsListen)}` : "metrics off";
      process.stdout.write(`configuration ok: stream ${config.streamName}, ${config.natsServers.length} NATS URL(s), replicas ${config.streamReplicas}, ${metrics}\n`);
      return;
    }
    case "ctl": {
      const config = configOrExit();
      const { runCtl } = await import("./ctl/main.js");
      const { connectionOptions, permanentConnectFailure } = await import("./adapters/nats/connection.js");
      const { connect } = await import("@nats-io/transport-node");
      const code = await runCtl(rest, {
        // A refused credential is reported like the service does: naming the variable to fix.
        connect: () =>
          connect({ ...connectionOptions(config, readCredentials(config), "policy-service-ctl"), maxReconnectAttempts: 0 }).catch((err: unknown) => {
            throw permanentConnectFailure(err, config) ?? err;
          }),
        streamName: config.streamName,
        auditStreamName: config.audit.streamName,
      });
      process.exit(code);
    }
    case undefined:
      await runService();
      return;
    default:
      process.stderr.write(`policy-service: unknown argument ${JSON.stringify(first)}\n${HELP}\n`);
      process.exit(2);
  }
}

await main(process.argv.slice(2));
