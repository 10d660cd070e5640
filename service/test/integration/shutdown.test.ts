// Lifecycle of the process: graceful SIGTERM with requests in flight, start-up before NATS is up,
// and surviving a NATS restart.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { freePort, sleep, startNatsServer, startService } from "../helpers/nats.js";
import { call, policyBody, streamInfo } from "../helpers/client.js";

/** Polls until an instance answers `$SRV.PING.policy-service` (it serves commands); `alive` false or `withinMs` passed: fails with `why`. */
async function untilPingAnswered(nc: NatsConnection, opts: { withinMs: number; pollMs: number; why: string; alive?: () => boolean }): Promise<void> {
  const deadline = Date.now() + opts.withinMs;
  while (!(await nc.request("$SRV.PING.policy-service", "", { timeout: 200 }).then(() => true, () => false))) {
    assert.ok(Date.now() < deadline && (opts.alive?.() ?? true), opts.why);
    await sleep(opts.pollMs);
  }
}

test("SIGTERM: in-flight requests are answered, new ones are not taken, exit 0 well within 10 s", async () => {
  const server = await startNatsServer();
  const svc = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
  const nc = await connect({ servers: server.url });
  try {
    await svc.ready();
    const outcomes: ("ok" | "no-responders" | "other")[] = [];
    let answeredAfterSignal = 0;
    const otherErrors = new Set<string>();
    let signalled = false;
    const burst = Array.from({ length: 300 }, async () => {
      try {
        const r = await call(nc, "create", policyBody(), 12_000);
        outcomes.push(r.reply.ok ? "ok" : "other");
        if (signalled && r.reply.ok) answeredAfterSignal++;
      } catch (err) {
        const text = String((err as Error).message);
        outcomes.push(/no responders/i.test(text) ? "no-responders" : "other");
        if (!/no responders/i.test(text)) otherErrors.add(text);
      }
    });
    await sleep(30); // let the burst reach the service
    signalled = true;
    const stopping = svc.stop("SIGTERM", 15_000);
    await Promise.all(burst);
    const exit = await stopping;
    assert.equal(exit.code, 0, "exit code");
    assert.ok(exit.ms < 10_000, `stopped in ${exit.ms} ms`);
    assert.ok(!outcomes.includes("other"), `every request either answered ok or refused by 'no responders': ${outcomes.filter((o) => o === "other").length} other: ${[...otherErrors].join("; ")}`);
    assert.ok(answeredAfterSignal > 0, "some requests were in flight when SIGTERM arrived and were still answered");
    const ok = outcomes.filter((o) => o === "ok").length;
    assert.equal((await streamInfo(nc, "POLICY_EVENTS")).state.messages, ok, "every answered create is stored, nothing else");
    assert.ok(svc.lines.some((l) => l.msg === "stopped"));
  } finally {
    await nc.close();
    await svc.kill();
    await server.stop();
  }
});

test("SIGTERM once commands are served but before \"ready\" (the read side still starting): in-flight commands answered, \"stopped\" logged, exit 0", async () => {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const svc = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
  try {
    // $SRV.PING answers from the moment commands are served; "ready" follows the first peer-discovery round (at
    // least its 250 ms stall) and the read side's start. Polled often, so the signal lands in between.
    await untilPingAnswered(nc, { withinMs: 20_000, pollMs: 10, why: "the instance answers $SRV.PING", alive: () => svc.running });
    const outcomes: string[] = [];
    const burst = Array.from({ length: 40 }, async () => {
      try {
        const r = await call(nc, "create", policyBody(), 12_000);
        outcomes.push(r.reply.ok ? "ok" : `refused ${r.reply.error?.code}`);
      } catch (err) {
        outcomes.push(/no responders/i.test(String((err as Error).message)) ? "no-responders" : `error ${(err as Error).message}`);
      }
    });
    await sleep(5); // let the burst reach the service
    const stopping = svc.stop("SIGTERM", 15_000);
    await Promise.all(burst);
    const exit = await stopping;
    const msgs = svc.lines.map((l) => l.msg);
    const signalAt = msgs.indexOf("signal received");
    assert.ok(signalAt >= 0, "the signal was received");
    assert.ok(!msgs.slice(0, signalAt).includes("ready"), `the signal came before "ready" (else this case was not tested): ${msgs.join(" | ")}`);
    assert.equal(exit.code, 0, "exit code");
    assert.ok(msgs.slice(signalAt).includes("stopped"), `a graceful stop, logged: ${msgs.slice(signalAt).join(" | ")}`);
    const odd = outcomes.filter((o) => o !== "ok" && o !== "no-responders" && o !== "refused unavailable");
    assert.deepEqual(odd, [], "every command answered (ok, or unavailable while starting) or refused by 'no responders', none cut off");
    const ok = outcomes.filter((o) => o === "ok").length;
    assert.ok(ok > 0, `some commands were in flight and answered: ${outcomes.join(", ")}`);
    assert.equal((await streamInfo(nc, "POLICY_EVENTS")).state.messages, ok, "every answered create is stored, nothing else");
  } finally {
    await nc.close();
    await svc.kill();
    await server.stop();
  }
});

test("start-up while NATS is down: waits, logs why, serves once NATS comes up", async () => {
  const port = await freePort();
  const svc = startService({ NATS_URL: `nats://127.0.0.1:${port}`, LOG_LEVEL: "info" });
  let server;
  try {
    const waiting = await svc.waitForLog((l) => l.msg === "NATS not reachable yet; retrying", 10_000);
    assert.ok(waiting.err, "the reason is logged under err");
    await sleep(1500);
    assert.ok(svc.running, "still waiting, not crashed");
    server = await startNatsServer({ port });
    await svc.ready(20_000);
    const nc = await connect({ servers: server.url });
    const r = await call(nc, "create", policyBody());
    assert.equal(r.reply.ok, true);
    await nc.close();
    const exit = await svc.stop();
    assert.equal(exit.code, 0);
  } finally {
    await svc.kill();
    await server?.stop();
  }
});

test("SIGTERM while still waiting for NATS exits 0 promptly", async () => {
  const port = await freePort();
  const svc = startService({ NATS_URL: `nats://127.0.0.1:${port}`, LOG_LEVEL: "info" });
  await svc.waitForLog((l) => l.msg === "NATS not reachable yet; retrying", 10_000);
  const exit = await svc.stop();
  assert.equal(exit.code, 0);
  assert.ok(exit.ms < 2000, `${exit.ms} ms`);
});

test("a NATS restart: the service reconnects and keeps serving with the same stream", async () => {
  const server = await startNatsServer();
  const svc = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
  try {
    await svc.ready();
    let nc = await connect({ servers: server.url });
    const first = await call(nc, "create", policyBody());
    assert.equal(first.reply.ok, true);
    await nc.close();
    await server.kill();
    await sleep(500);
    await server.restart();
    await svc.waitForLog((l) => l.msg === "NATS connection status" && l.status === "reconnect", 15_000);
    nc = await connect({ servers: server.url });
    // Two connections reconnect (commands and queries; the projection's own): the line above can be the projection's,
    // logged before the endpoints are subscribed again. Serving means answering $SRV.PING again.
    await untilPingAnswered(nc, { withinMs: 10_000, pollMs: 100, why: "the service did not answer $SRV.PING within 10 s of the reconnect" });
    const approve = await call(nc, "approve", { policy_id: first.reply.aggregate_id, approved_by: "x" });
    assert.equal(approve.reply.ok, true, JSON.stringify(approve.reply));
    assert.equal(approve.reply.version, 2);
    await nc.close();
  } finally {
    await svc.stop();
    await server.stop();
  }
});
