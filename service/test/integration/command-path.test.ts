// Commands decide against the instance's projection (issue 12). Its state may trail the stream by the replication
// delay, so this must hold with several instances, on a real server:
//   - read-your-writes across instances: a command right after another one's reply, on any instance, sees it
//     (a refusal such as not_found is confirmed against the stream leader, a stale acceptance loses the append).
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { call, policyBody, readAllEvents } from "../helpers/client.js";

describe("two instances on one server, requests shared at random", () => {
  let server: NatsServer;
  let services: ServiceProcess[] = [];
  let nc: NatsConnection;
  before(async () => {
    server = await startNatsServer();
    services = [0, 1].map(() => startService({ NATS_URL: server.url, LOG_LEVEL: "info" }));
    await Promise.all(services.map((s) => s.ready()));
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    for (const s of services) await s.stop();
    await server?.stop();
  });

  test("every command right after the previous one's reply sees it, whichever instance answers", async () => {
    const ROUNDS = 40;
    for (let i = 0; i < ROUNDS; i++) {
      const created = await call(nc, "create", policyBody({ name: `round ${i}` }));
      assert.equal(created.reply.ok, true, JSON.stringify(created.reply));
      const id = created.reply.aggregate_id as string;
      const approved = await call(nc, "approve", { policy_id: id, approved_by: "ops" });
      assert.equal(approved.reply.ok, true, `round ${i}: approve right after create → ${JSON.stringify(approved.reply)}`);
      assert.equal(approved.reply.version, 2);
      const activated = await call(nc, "activate", { policy_id: id, activated_by: "ops" });
      assert.equal(activated.reply.version, 3, `round ${i}: ${JSON.stringify(activated.reply)}`);
      const again = await call(nc, "approve", { policy_id: id, approved_by: "ops" });
      assert.equal(again.reply.error?.code, "invalid_transition", `round ${i}: a second approve sees Active: ${JSON.stringify(again.reply)}`);
    }
    // Both instances took part, and nothing was stored twice.
    const handled = services.map((s) => s.lines.filter((l) => l.msg === "command handled").length);
    assert.ok(handled.every((n) => n > 0), `commands per instance: ${handled.join(", ")}`);
    const events = await readAllEvents(nc, "POLICY_EVENTS");
    assert.equal(events.length, ROUNDS * 3);
  });
});
