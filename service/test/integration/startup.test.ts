// Start-up as a client sees it (issue 12): from the moment an instance is connected to NATS, every endpoint answers
// (a coded `unavailable` with a retry hint until it can serve), never NATS "no responders"; and after a restart the
// read side rebuilt from the stream is the one it had before (more events than one pull batch of the projection).
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { freePort, resolveNatsServer, sleep, startNatsServer, startService, type ServiceProcess } from "../helpers/nats.js";
import { call, callOk, policyBody, type Json } from "../helpers/client.js";
import { PUBLIC_COMMANDS } from "../../src/domain/index.js";
import { PROJECTION_PULL_BATCH } from "../../src/adapters/nats/projection.js";

const QUERIES = ["get", "list", "history", "applicable"];

/** A nats-server without JetStream: an instance connects but cannot provision (it retries, as while a cluster forms). */
function startServerWithoutJetStream(port: number): { stop(): Promise<void> } {
  const child = spawn(resolveNatsServer().path, ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
  return {
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    }),
  };
}

async function connectWhenUp(url: string): Promise<NatsConnection> {
  for (let i = 0; ; i++) {
    try {
      return await connect({ servers: url });
    } catch (err) {
      if (i > 100) throw err;
      await sleep(50);
    }
  }
}

describe("before the stream is provisioned", () => {
  test("every endpoint answers a coded unavailable with a retry hint, then serves once JetStream is there", async () => {
    const port = await freePort();
    const bare = startServerWithoutJetStream(port);
    const url = `nats://127.0.0.1:${port}`;
    let service: ServiceProcess | undefined;
    let nc: NatsConnection | undefined;
    try {
      nc = await connectWhenUp(url);
      service = startService({ NATS_URL: url, LOG_LEVEL: "info" });
      await service.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("JetStream not ready for"), 20_000);
      const subjects = [...PUBLIC_COMMANDS, "evaluate", "check_compliance"].map((n) => `policy.commands.${n}`).concat(QUERIES.map((n) => `policy.queries.${n}`));
      for (const subject of subjects) {
        const { reply, status } = await call(nc, subject, { policy_id: randomUUID() }, 5000);
        assert.equal(reply.ok, false, `${subject}: ${JSON.stringify(reply)}`);
        assert.equal(reply.error.code, "unavailable", `${subject}: ${JSON.stringify(reply)}`);
        assert.ok(Number(reply.error.details?.retry_after_ms) > 0, `${subject}: a retry hint`);
        assert.equal(status, 503, `${subject}: the service error header`);
      }
      // $SRV.PING keeps meaning "provisioned" (scripts/run waits for it, and for "ready", before it prints the guide's commands).
      await assert.rejects(nc.request("$SRV.PING.policy-service", "", { timeout: 2000 }), /no responders/i);
      assert.equal(service.lines.some((l) => l.msg === "ready"), false, "not ready without a stream");

      // JetStream arrives (the same port, now with JetStream): the instance provisions and serves.
      await nc.close();
      await bare.stop();
      const server = await startNatsServer({ port });
      try {
        await service.ready(60_000);
        nc = await connect({ servers: url });
        const created = await callOk(nc, "create", policyBody());
        assert.equal(created.version, 1);
        await callOk(nc, "policy.queries.get", { id: created.aggregate_id });
        await nc.close();
        nc = undefined;
        await service.stop();
        service = undefined;
      } finally {
        await server.stop();
      }
    } finally {
      await nc?.close().catch(() => undefined);
      await service?.stop();
      await bare.stop();
    }
  });
});

async function listAll(nc: NatsConnection): Promise<Json[]> {
  const items: Json[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const reply = await callOk(nc, "policy.queries.list", { aggregate_type: "Policy", limit: 500, ...(cursor ? { cursor } : {}) });
    items.push(...(reply.items as Json[]));
    cursor = reply.next_cursor ?? undefined;
    if (!cursor) return items;
  }
  throw new Error("list did not end");
}

describe("after a restart", () => {
  test("the read side rebuilt from more events than one pull batch equals the one before; queries meanwhile answer data or a coded unavailable", async () => {
    const server = await startNatsServer();
    let service: ServiceProcess | undefined;
    const nc = await connect({ servers: server.url });
    try {
      service = startService({ NATS_URL: server.url, LOG_LEVEL: "warn" });
      for (let i = 0; ; i++) {
        const r = await call(nc, "policy.queries.list", { limit: 1 }, 2000).catch(() => null);
        if (r?.reply.ok === true) break;
        if (i > 300) throw new Error("service not ready");
        await sleep(100);
      }
      const count = PROJECTION_PULL_BATCH + 1000;
      const ids: string[] = [];
      let next = 0;
      await Promise.all(Array.from({ length: 64 }, async () => {
        while (next < count) {
          next++;
          ids.push((await callOk(nc, "create", policyBody({ name: `p${next}` }))).aggregate_id);
        }
      }));
      for (const id of ids.slice(0, 300)) await callOk(nc, "update", { policy_id: id, updated_by: "t", description: `changed ${id}` });
      const before = await listAll(nc);
      assert.equal(before.length, count);

      await service.stop();
      service = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
      const answers: Json[] = [];
      let after: Json[] | undefined;
      for (let i = 0; i < 1200 && !after; i++) {
        if (!service.running) throw new Error("service exited");
        // Logged once the server has the endpoints' subscriptions (runtime.ts flushes first).
        const registered = service.lines.some((l) => typeof l.msg === "string" && l.msg.startsWith("endpoints registered"));
        try {
          const { reply } = await call(nc, "policy.queries.list", { aggregate_type: "Policy", limit: 1 }, 2000);
          answers.push(reply);
          if (reply.ok === true) after = await listAll(nc);
          else {
            assert.equal(reply.error.code, "unavailable", JSON.stringify(reply));
            assert.ok(Number(reply.error.details?.retry_after_ms) > 0, "a retry hint");
          }
        } catch (err) {
          // Before the new process is connected nothing can answer; once it is, something must.
          if (registered) throw new Error(`a query got no answer after the instance registered its endpoints: ${String(err)}`);
        }
        await sleep(25);
      }
      assert.ok(after, "the read side came back");
      assert.deepEqual(after, before);
      await service.stop();
      service = undefined;
    } finally {
      await nc.close().catch(() => undefined);
      await service?.stop();
      await server.stop();
    }
  });
});
