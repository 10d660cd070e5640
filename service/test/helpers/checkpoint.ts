// One nats-server, a client connection and a scratch directory for a read-model checkpoint file, shared by the tests
// that start and stop service instances against the same stream (checkpoint.test.ts, stored-states.test.ts).
import { after, before } from "node:test";
import * as assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { startNatsServer, startService, type NatsServer, type ServiceLogLine, type ServiceProcess } from "./nats.js";

export interface CheckpointNode {
  readonly server: NatsServer;
  readonly nc: NatsConnection;
  /** The scratch directory (removed afterwards). */
  readonly dir: string;
  /** `<dir>/read-model.checkpoint`. */
  readonly path: string;
  /** Starts an instance (audit off, `env` on top), runs `fn`, stops it gracefully (exit 0 asserted), returns its log. */
  run<T>(env: Record<string, string>, fn: (service: ServiceProcess) => Promise<T>): Promise<{ result: T; lines: ServiceLogLine[] }>;
}

/** Registers before()/after() hooks on the enclosing scope; the returned getters are valid inside tests. */
export function checkpointNode(dirPrefix: string): CheckpointNode {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  let dir: string | undefined;
  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    dir = mkdtempSync(join(tmpdir(), dirPrefix));
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  function started<T>(value: T | undefined, what: string): T {
    if (value === undefined) throw new Error(`${what} is not started: use checkpointNode()'s values inside tests and hooks`);
    return value;
  }
  const node: CheckpointNode = {
    get server() { return started(server, "nats-server"); },
    get nc() { return started(nc, "connection"); },
    get dir() { return started(dir, "scratch directory"); },
    get path() { return join(started(dir, "scratch directory"), "read-model.checkpoint"); },
    async run(env, fn) {
      const service = startService({ NATS_URL: node.server.url, LOG_LEVEL: "info", AUDIT_ENABLED: "false", ...env });
      try {
        await service.ready(60_000);
        const result = await fn(service);
        const stopped = await service.stop();
        assert.equal(stopped.code, 0, "graceful stop");
        return { result, lines: service.lines };
      } finally {
        if (service.running) await service.kill();
      }
    },
  };
  return node;
}
