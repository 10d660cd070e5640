// Issue 12: a command with a command_id that stored an event writes no idempotency record. Its event carries the
// sha256 of the command's canonical payload as the header Policy-Command-Sha256 (the envelope is unchanged), and a
// retry is answered from that event: the identical reply for the same payload, `conflict` for another one. Only
// outcomes that store no event (remembered refusals, no-ops) are written to the COMMANDS bucket.
// Real parts: one nats-server, service instances started and stopped (SIGTERM, SIGKILL) by PID.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { sleep, startNatsServer, startService, type NatsServer, type ServiceProcess } from "../helpers/nats.js";
import { call, callOk, policyBody, readAllEvents, type Json } from "../helpers/client.js";

const STREAM = "POLICY_EVENTS";
const COMMANDS_BUCKET = `${STREAM}_COMMANDS`;
const HASH_HEADER = "Policy-Command-Sha256";
/** The envelope's fields (docs/protocol.md): the header must not add one. */
const ENVELOPE_FIELDS = ["aggregate_id", "aggregate_type", "causation_id", "command_id", "correlation_id", "data", "event_id", "event_type", "occurred_at", "version"];

/** The raw reply bytes (what a client compares), the parsed reply and the error code header. */
async function rawCall(nc: NatsConnection, name: string, body: Json): Promise<{ bytes: string; reply: Json; status: string | null }> {
  const msg = await nc.request(`policy.commands.${name}`, JSON.stringify(body), { timeout: 15_000 });
  return { bytes: new TextDecoder().decode(msg.data), reply: msg.json<Json>(), status: msg.headers?.get("Nats-Service-Error-Code") || null };
}

/** The same canonical form the service hashes: JSON with sorted keys. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Json)[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

async function record(nc: NatsConnection, commandId: string): Promise<Json | null> {
  const kv = await new Kvm(nc).open(COMMANDS_BUCKET);
  const entry = await kv.get(commandId);
  return entry && entry.operation === "PUT" && entry.length > 0 ? entry.json<Json>() : null;
}

async function eventsOf(nc: NatsConnection, commandId: string): Promise<Json[]> {
  return (await readAllEvents(nc, STREAM)).filter((e) => e.envelope.command_id === commandId).map((e) => ({ seq: e.seq, ...e.envelope }));
}

describe("a stored command answers its retries from its event (no idempotency record)", () => {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  const services: ServiceProcess[] = [];
  let policyId = "";

  async function instance(): Promise<ServiceProcess> {
    const svc = startService({ NATS_URL: server!.url, LOG_LEVEL: "info" });
    services.push(svc);
    await svc.ready();
    return svc;
  }

  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    await instance();
    policyId = (await callOk(nc, "create", policyBody())).aggregate_id;
  });
  after(async () => {
    await nc?.close();
    for (const svc of services) await svc.stop();
    await server?.stop();
  });

  test("the event carries the payload hash as a header, the envelope is unchanged, and no record is written", async () => {
    const commandId = randomUUID();
    const body = { policy_id: policyId, updated_by: "ops", name: "hashed", command_id: commandId };
    const first = await rawCall(nc!, "update", body);
    assert.equal(first.reply.ok, true, first.bytes);
    const seq = first.reply.events[0].seq as number;
    const msg = await (await jetstreamManager(nc!)).streams.getMessage(STREAM, { seq });
    assert.ok(msg, `the event at ${seq}`);
    assert.equal(msg.header.get(HASH_HEADER), createHash("sha256").update(canonical(body)).digest("hex"));
    assert.deepEqual(Object.keys(msg.json<Json>()).sort(), ENVELOPE_FIELDS);
    assert.equal(await record(nc!, commandId), null, "a stored command writes no idempotency record");

    const retry = await rawCall(nc!, "update", body);
    assert.equal(retry.bytes, first.bytes, "the retry's reply is byte-identical to the first");
    assert.equal(retry.status, null);
    assert.equal((await eventsOf(nc!, commandId)).length, 1);
  });

  test("the same command_id with a different payload is conflict (409) and stores nothing", async () => {
    const commandId = randomUUID();
    await callOk(nc!, "update", { policy_id: policyId, updated_by: "ops", name: "One", command_id: commandId });
    const before = (await readAllEvents(nc!, STREAM)).length;
    const other = await rawCall(nc!, "update", { policy_id: policyId, updated_by: "ops", name: "Two", command_id: commandId });
    assert.equal(other.reply.ok, false, other.bytes);
    assert.equal(other.reply.error.code, "conflict");
    assert.equal(other.status, "409");
    assert.equal((await readAllEvents(nc!, STREAM)).length, before, "nothing written");
  });

  test("a refusal is remembered: the retry gets it again although the command would now succeed", async () => {
    const missing = randomUUID();
    const commandId = randomUUID();
    const body = { policy_id: missing, updated_by: "ops", name: "too early", command_id: commandId };
    const first = await rawCall(nc!, "update", body);
    assert.equal(first.reply.error?.code, "not_found", first.bytes);
    assert.equal((await record(nc!, commandId))?.reply?.error?.code, "not_found", "the refusal is in the COMMANDS bucket");
    await callOk(nc!, "create", policyBody({ policy_id: missing }));
    const retry = await rawCall(nc!, "update", body);
    assert.equal(retry.bytes, first.bytes, "the remembered refusal, not a new decision");
    assert.equal((await eventsOf(nc!, commandId)).length, 0, "the refused command never stored an event");
  });

  test("the first reply lost: the command ran without anyone to answer, the retry gets the reply naming its event", async () => {
    const commandId = randomUUID();
    const body = { policy_id: policyId, updated_by: "ops", name: "reply lost", command_id: commandId };
    // A request whose reply goes nowhere: the service handles it, the client never sees the answer.
    nc!.publish("policy.commands.update", JSON.stringify(body));
    const deadline = Date.now() + 10_000;
    let stored: Json[] = [];
    while (Date.now() < deadline && stored.length === 0) {
      stored = await eventsOf(nc!, commandId);
      if (stored.length === 0) await sleep(50);
    }
    assert.equal(stored.length, 1, "the unanswered command was stored");
    const retry = await rawCall(nc!, "update", body);
    assert.equal(retry.reply.ok, true, retry.bytes);
    assert.deepEqual(retry.reply, {
      ok: true, aggregate_id: policyId, version: stored[0]!.version,
      events: [{ type: stored[0]!.event_type, subject: `events.policy.${policyId}.${stored[0]!.event_type}`, seq: stored[0]!.seq }],
    });
    assert.equal((await rawCall(nc!, "update", body)).bytes, retry.bytes);
    assert.equal((await eventsOf(nc!, commandId)).length, 1, "stored once");
  });

  test("retries at once on two instances: stored once, every reply identical", async () => {
    await instance();
    const commandId = randomUUID();
    const body = { policy_id: policyId, updated_by: "ops", name: "racing retries", command_id: commandId };
    const replies = await Promise.all(Array.from({ length: 8 }, () => rawCall(nc!, "update", body)));
    assert.equal(replies[0]!.reply.ok, true, replies[0]!.bytes);
    for (const r of replies) assert.equal(r.bytes, replies[0]!.bytes);
    assert.equal((await eventsOf(nc!, commandId)).length, 1);
  });

  test("a retry on a restarted instance (every instance SIGKILLed): identical reply; another payload still conflict", async () => {
    const commandId = randomUUID();
    const body = { policy_id: policyId, updated_by: "ops", name: "before the restart", command_id: commandId };
    const first = await rawCall(nc!, "update", body);
    assert.equal(first.reply.ok, true, first.bytes);
    for (const svc of services) if (svc.running) await svc.kill();
    await instance();
    const retry = await rawCall(nc!, "update", body);
    assert.equal(retry.bytes, first.bytes, "the restarted instance rebuilt the original reply from the stream");
    const other = await rawCall(nc!, "update", { ...body, name: "after the restart" });
    assert.equal(other.reply.error?.code, "conflict", other.bytes);
    assert.equal((await eventsOf(nc!, commandId)).length, 1);
  });
});
