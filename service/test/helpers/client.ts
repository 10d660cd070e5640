/**
 * Client-side helpers for integration tests (drive the service only over NATS):
 *   await call(nc, "create", body | "raw string")  → { reply, status (Nats-Service-Error-Code or null), errorText }
 *   await readAllEvents(nc, "POLICY_EVENTS")        → every stored message (seq, subject, envelope), read until the last seq
 *   await streamInfo(nc, "POLICY_EVENTS")
 *   SEED_CREATE: the seed's create payload, byte for byte.
 */
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";

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
