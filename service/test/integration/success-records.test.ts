// The success-record gate against a real nats-server: with only instances of this build serving the stream, a
// stored command costs 3 messages of the service's connections (reply, COMMANDS lookup, publish) and writes no
// record; once an instance without the payload-hash capability answers $SRV.PING (here a micro-service registered
// under the service's name with 0.9.0's metadata, as the rolling-upgrade test does with the real 0.9.0), every
// stored command writes its record too (4 messages), and keeps doing so after it left (the hold, peers.ts). An
// instance of another stream does not count. And a service user with 0.9.0's permissions (no publish on
// $SRV.PING.policy-service): the ping is refused, the instance never hears itself, so it keeps writing every record.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { Svcm, type Service } from "@nats-io/services";
import { sleep, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { callOk, policyBody } from "../helpers/client.js";
import { documentedPermissionsText, serviceAndTesterAuthorization } from "../helpers/permissions.js";
import { PEER_DISCOVERY_INTERVAL_MS } from "../../src/adapters/nats/peers.js";

const STREAM = "POLICY_EVENTS";
const OPS = 40;

describe("success records follow the peers that serve the stream", () => {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  let svc: ServiceProcess | undefined;
  const peers: Service[] = [];
  let policyId = "";

  async function sentByService(): Promise<number> {
    const connz = await server!.monitor<{ connections?: { name?: string; in_msgs: number }[] }>("/connz?limit=1024");
    return (connz.connections ?? []).filter((c) => c.name?.startsWith("policy-service@")).reduce((sum, c) => sum + c.in_msgs, 0);
  }

  async function hasRecord(commandId: string): Promise<boolean> {
    const entry = await (await new Kvm(nc!).open(`${STREAM}_COMMANDS`)).get(commandId);
    return entry !== null && entry.operation === "PUT" && entry.length > 0;
  }

  /** OPS updates with a command_id, one at a time: messages the service sent per command, and how many wrote a record. */
  async function updates(label: string): Promise<{ msgsPerOp: number; recorded: number }> {
    const ids: string[] = [];
    const before = await sentByService();
    for (let i = 0; i < OPS; i++) {
      const commandId = randomUUID();
      ids.push(commandId);
      await callOk(nc!, "update", { policy_id: policyId, updated_by: "ops", description: `${label} ${i}`, command_id: commandId });
    }
    const msgsPerOp = ((await sentByService()) - before) / OPS;
    let recorded = 0;
    for (const id of ids) if (await hasRecord(id)) recorded++;
    return { msgsPerOp, recorded };
  }

  /** A micro-service under the service's name, as an instance of another build would register it. */
  async function peer(metadata: Record<string, string>): Promise<Service> {
    const s = await new Svcm(nc!).add({ name: "policy-service", version: "0.9.0", metadata });
    peers.push(s);
    return s;
  }

  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    // Present from the start: an instance of another stream, without the capability.
    await peer({ stream: "OTHER_EVENTS", server_version: "2.14.9" });
    svc = startService({ NATS_URL: server.url, LOG_LEVEL: "info" });
    await svc.ready();
    policyId = (await callOk(nc, "create", policyBody())).aggregate_id;
  });
  after(async () => {
    for (const p of peers) await p.stop().catch(() => undefined);
    await nc?.close();
    await svc?.stop();
    await server?.stop();
  });

  test("only instances with the capability on this stream: no record, 3 messages per command", async () => {
    const { msgsPerOp, recorded } = await updates("new only");
    assert.equal(recorded, 0, "a stored command writes no record");
    // The discovery round every 2 s adds a message or two to the whole run (its ping and its own answer).
    assert.ok(msgsPerOp >= 3 && msgsPerOp < 3.2, `msgs/op ${msgsPerOp}`);
  });

  test("an instance of 0.9.0 on this stream answers $SRV.PING: every stored command writes its record, 4 messages", async () => {
    const old = await peer({ stream: STREAM, server_version: "2.14.9" });
    await svc!.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("an instance without the payload-hash capability"), 10_000);
    const { msgsPerOp, recorded } = await updates("old peer");
    assert.equal(recorded, OPS, "every stored command has its record");
    assert.ok(msgsPerOp >= 4 && msgsPerOp < 4.2, `msgs/op ${msgsPerOp}`);
    // It leaves: records continue for the hold (the COMMANDS TTL, far longer than this test), two rounds later too.
    await old.stop();
    await sleep(2 * PEER_DISCOVERY_INTERVAL_MS + 500);
    const afterLeft = await updates("old peer gone");
    assert.equal(afterLeft.recorded, OPS, "records continue after the older instance left (the hold)");
    const gateLines = svc!.lines.filter((l) => typeof l.msg === "string" && /^(an instance without|every instance serving)/.test(l.msg));
    assert.match(String(gateLines.at(-1)?.msg), /^an instance without/, "the gate did not open again");
  });
});

describe("a service user with 0.9.0's permissions (no publish on $SRV.PING.policy-service)", () => {
  let dir = "";
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  let svc: ServiceProcess | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "success-records-"));
    writeFileSync(join(dir, "service-password"), "service-secret\n", { mode: 0o600 });
    const documented = documentedPermissionsText("service");
    const withoutPing = documented.replace(/^\s*"\$SRV\.PING\.policy-service"\n/m, "");
    assert.notEqual(withoutPing, documented, "docs/security.md lists $SRV.PING.policy-service for the service user");
    server = await startNatsServer({
      extraConfig: [
        ...serviceAndTesterAuthorization(withoutPing),
      ].join("\n"),
    });
    svc = startService({ NATS_URL: server.url, NATS_USER: "policy-service", NATS_PASSWORD_FILE: join(dir, "service-password"), LOG_LEVEL: "info" });
    await svc.ready(60_000);
    nc = await connect({ servers: server.url, user: "tester", pass: "tester-secret" });
  });
  after(async () => {
    await nc?.close();
    await svc?.stop();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the refused ping counts as an older instance seen: every stored command writes its record, and the instance serves", async () => {
    const policyId = (await callOk(nc!, "create", policyBody())).aggregate_id;
    await sleep(PEER_DISCOVERY_INTERVAL_MS + 2000); // rounds after the first refused too
    const commandId = randomUUID();
    await callOk(nc!, "update", { policy_id: policyId, updated_by: "ops", description: "records kept", command_id: commandId });
    const entry = await (await new Kvm(nc!).open(`${STREAM}_COMMANDS`)).get(commandId).catch(() => null);
    // The tester user has no limits: it reads the bucket directly.
    assert.ok(entry && entry.operation === "PUT" && entry.length > 0, "the record is written");
    assert.ok(svc!.lines.some((l) => l.msg === "peer discovery failed; writing success records as if an older instance were present"), "the instance says why");
    assert.ok(!svc!.lines.some((l) => typeof l.msg === "string" && l.msg.startsWith("every instance serving this stream")), "the gate never opened");
    assert.ok(svc!.running);
  });
});
