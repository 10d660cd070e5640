/**
 * Client-side helpers for integration tests (drive the service only over NATS):
 *   const node = singleNode();                      // one nats-server + the built service + a connection, for the
 *                                                   // enclosing describe (or file): node.nc, node.service, node.server
 *   await call(nc, "create", body | "raw string")  → { reply, status (Nats-Service-Error-Code or null), errorText }
 *   await callOk(nc, "policy.queries.get", body)   → the reply, asserted ok:true without an error header
 *   await readAllEvents(nc, "POLICY_EVENTS")        → every stored message (seq, subject, envelope), read until the last seq
 *   await streamInfo(nc, "POLICY_EVENTS")
 *   await forwardTokensById(nc)                    → each instance's forward token ($SRV.INFO metadata), by instance id
 *   SEED_CREATE: the seed's create payload, byte for byte.
 */
import { after, before } from "node:test";
import * as assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import { FORWARD_METADATA } from "../../src/adapters/nats/forward.js";
import { startNatsServer, startService, type NatsServer, type ServiceProcess } from "./nats.js";

export const SEED_POLICY_ID = "550e8400-e29b-41d4-a716-446655440000";
export const SEED_CREATE =
  '{"policy_id":"550e8400-e29b-41d4-a716-446655440000","name":"Data Retention Policy","description":"All customer data must be retained for 7 years","policy_type":"Retention","enforcement":"Mandatory","scope":"Organization"}';

export type Json = Record<string, any>;
export interface CallResult { reply: Json; status: number | null; errorText: string | null }

/** Request on `policy.commands.<name>` (or a full subject when it contains a dot). */
export async function call(nc: NatsConnection, nameOrSubject: string, body: unknown, timeoutMs = 15_000): Promise<CallResult> {
  const subject = nameOrSubject.includes(".") ? nameOrSubject : `policy.commands.${nameOrSubject}`;
  const payload = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
  const msg = await nc.request(subject, payload, { timeout: timeoutMs });
  const code = msg.headers?.get("Nats-Service-Error-Code");
  return { reply: msg.json<Json>(), status: code ? Number(code) : null, errorText: msg.headers?.get("Nats-Service-Error") || null };
}

/** call(), asserting the reply is ok:true and carries no service-error header; returns the reply. */
export async function callOk(nc: NatsConnection, nameOrSubject: string, body: unknown, timeoutMs = 15_000): Promise<Json> {
  const { reply, status } = await call(nc, nameOrSubject, body, timeoutMs);
  assert.equal(reply.ok, true, `${nameOrSubject} ${typeof body === "string" ? body : JSON.stringify(body)} → ${JSON.stringify(reply)}`);
  assert.equal(status, null, `${nameOrSubject}: service error header on an ok reply`);
  return reply;
}

export interface SingleNode { readonly server: NatsServer; readonly service: ServiceProcess; readonly nc: NatsConnection }

/**
 * Registers before()/after() hooks on the enclosing describe (or the file, at top level): start one nats-server,
 * the built service on it (LOG_LEVEL info, plus `serviceEnv`) once ready, and a client connection; afterwards close,
 * stop the service, stop the server. The returned getters are valid inside tests and later hooks.
 * At a file's top level Node 20 starts sibling before() hooks without awaiting one another: put a hook that
 * uses the node inside a describe.
 */
export function singleNode(serviceEnv: Record<string, string> = {}): SingleNode {
  let server: NatsServer | undefined;
  let service: ServiceProcess | undefined;
  let nc: NatsConnection | undefined;
  before(async () => {
    server = await startNatsServer();
    service = startService({ NATS_URL: server.url, LOG_LEVEL: "info", ...serviceEnv });
    await service.ready();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    await service?.stop();
    await server?.stop();
  });
  function started<T>(value: T | undefined, what: string): T {
    if (value === undefined) throw new Error(`${what} is not started: use singleNode()'s values inside tests and hooks`);
    return value;
  }
  return {
    get server() { return started(server, "nats-server"); },
    get service() { return started(service, "service"); },
    get nc() { return started(nc, "connection"); },
  };
}

export interface StoredEventRow { seq: number; subject: string; envelope: Json }

/** Every message in the stream (optionally filtered), read by sequence up to the stream's last sequence: always terminates. */
export async function readAllEvents(nc: NatsConnection, stream: string, filter = "events.policy.>"): Promise<StoredEventRow[]> {
  const jsm = await jetstreamManager(nc, { timeout: 15_000 });
  const info = await jsm.streams.info(stream);
  const last = info.state.last_seq;
  const out: StoredEventRow[] = [];
  let next = info.state.first_seq;
  while (next <= last && info.state.messages > 0) {
    const iter = await jsm.direct.getBatch(stream, { seq: next, batch: 1000, next_by_subj: filter });
    let got = 0;
    for await (const m of iter) {
      got++;
      if (m.seq > last) break;
      out.push({ seq: m.seq, subject: m.subject, envelope: m.json<Json>() });
      next = m.seq + 1;
    }
    if (got === 0) break;
  }
  return out;
}

export async function streamInfo(nc: NatsConnection, stream: string): Promise<StreamInfo> {
  // Generous: a 2-core machine running three servers and three services can be slow to answer.
  const jsm = await jetstreamManager(nc, { timeout: 15_000 });
  return jsm.streams.info(stream);
}

export function policyBody(overrides: Json = {}): Json {
  return {
    name: "Data Retention Policy",
    description: "All customer data must be retained for 7 years",
    policy_type: "Retention",
    enforcement: "Mandatory",
    scope: "Organization",
    ...overrides,
  };
}

/** The forward token each instance advertises ($SRV.INFO metadata), by instance id; undefined: none. */
export async function forwardTokensById(nc: NatsConnection): Promise<Map<string, string | undefined>> {
  const out = new Map<string, string | undefined>();
  for await (const i of await new Svcm(nc).client().info("policy-service")) out.set(i.id, i.metadata?.[FORWARD_METADATA]);
  return out;
}
