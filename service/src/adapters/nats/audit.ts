// Decision audit: one event per evaluation on its own stream (never the event store's), published off the reply path
// through a bounded queue so that a slow or unavailable audit stream can never slow or fail an evaluation.
import { randomUUID } from "node:crypto";
import { nanos } from "@nats-io/nats-core";
import { RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { canonicalSha256 } from "../../support/canonical-json.js";
import type { ProjectionLogger } from "./projection.js";

export const AUDIT_SUBJECT_PREFIX = "audit.policy";
export const AUDIT_SCHEMA_VERSION = 1;
/**
 * How long a record waits for others to share its message. Each message costs a write, an ack to read and a
 * request's bookkeeping on the service (a quarter of its CPU at one evaluation in flight with 5 ms, when nearly
 * every message carried a handful of records); 20 ms makes that a few per cent. Also the most a record waits
 * for its publish to start, so the most an instance crash can lose beyond what is in flight.
 */
export const AUDIT_LINGER_MS = 20;
/** Records that make a message worth sending as soon as a write frees up, before their linger has passed. */
export const AUDIT_MIN_BATCH = 32;

export type AuditEventType = "evaluated" | "violation_detected" | "compliance_passed";

export interface AuditVersionRef {
  id: string;
  version: number;
}

export interface AuditEvent {
  schema_version: number;
  audit_id: string;
  type: AuditEventType;
  evaluation_id: string;
  /** evaluate | check_compliance */
  request: "evaluate" | "check_compliance";
  /** The policy (evaluate) or policy set (check_compliance); `adhoc` for a list of policy ids. */
  subject_id: string;
  /** sha256 (hex) of the canonical JSON of the context (object keys sorted). */
  context_hash: string;
  /** The result's status (Compliant, NonCompliant, CompliantWithExemption, PartiallyCompliant) or the error code. */
  status: string;
  blocking: boolean | null;
  result: unknown;
  duration_us: number;
  evaluated_at: string;
  /** The moment the policy was evaluated "as of". */
  at: string;
  requester: string | null;
  purpose: string | null;
  entity_id: string | null;
  policies: AuditVersionRef[];
  exemptions: AuditVersionRef[];
  instance: string;
}

/** sha256 (hex) of the context's canonical JSON (support/canonical-json.ts): equal contexts, equal hashes. */
export function contextHash(context: unknown): string {
  return canonicalSha256(context);
}

/** The audit type of a finished evaluation: violations found → violation_detected, passed → compliance_passed. */
export function auditTypeFor(status: string): AuditEventType {
  if (status === "NonCompliant" || status === "PartiallyCompliant") return "violation_detected";
  if (status === "Compliant" || status === "CompliantWithExemption") return "compliance_passed";
  return "evaluated";
}

export interface AuditStreamSettings {
  streamName: string;
  replicas: number;
  maxAgeDays: number;
}

/** Creates the audit stream, or brings an existing one to the configured retention and replicas. */
export async function ensureAuditStream(jsm: JetStreamManager, settings: AuditStreamSettings): Promise<void> {
  const maxAge = nanos(settings.maxAgeDays * 24 * 60 * 60 * 1000);
  let existing;
  try {
    existing = await jsm.streams.info(settings.streamName);
  } catch (err) {
    if (!/stream not found/i.test(String((err as Error).message))) throw err;
  }
  if (!existing) {
    await jsm.streams.add({
      name: settings.streamName,
      subjects: [`${AUDIT_SUBJECT_PREFIX}.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_age: maxAge,
      num_replicas: settings.replicas,
      deny_delete: true,
      deny_purge: false,
    });
    return;
  }
  const config = existing.config;
  if (config.max_age !== maxAge || config.num_replicas !== settings.replicas) {
    await jsm.streams.update(settings.streamName, { ...config, max_age: maxAge, num_replicas: settings.replicas });
  }
}

export interface AuditPublisherOptions {
  js: JetStreamClient;
  logger: ProjectionLogger;
  instance: string;
  /** Events waiting beyond this are dropped (and counted, and logged). */
  maxQueue?: number;
  /** Messages awaiting their ack at once. */
  maxInFlight?: number;
  /** How long an event may wait for others to share its message (ms). */
  lingerMs?: number;
  /** Most events in one message. */
  maxBatch?: number;
  /** Events that make a message worth sending when a write frees up, before their linger has passed. */
  minBatch?: number;
}

/**
 * What an evaluation hands over; the context is hashed later, off the reply path. `result_json` is the event's
 * `result` as JSON text: the evaluation serialises its result once, for the reply and the record (see evaluation.ts).
 */
export type AuditRecord = Omit<AuditEvent, "schema_version" | "audit_id" | "instance" | "context_hash" | "result"> & {
  context: unknown;
  result_json: string;
};

/**
 * One event's JSON: the same text as JSON.stringify of the AuditEvent {schema_version, audit_id, instance,
 * context_hash, ...record} with `result` parsed from `result_json`, built without serialising the result again
 * (about half of a record's bytes).
 */
export function auditEventJson(record: AuditRecord, auditId: string, instance: string): string {
  const head = JSON.stringify({
    schema_version: AUDIT_SCHEMA_VERSION,
    audit_id: auditId,
    instance,
    context_hash: contextHash(record.context),
    type: record.type,
    evaluation_id: record.evaluation_id,
    request: record.request,
    subject_id: record.subject_id,
    status: record.status,
    blocking: record.blocking,
  });
  const tail = JSON.stringify({
    duration_us: record.duration_us,
    evaluated_at: record.evaluated_at,
    at: record.at,
    requester: record.requester,
    purpose: record.purpose,
    entity_id: record.entity_id,
    policies: record.policies,
    exemptions: record.exemptions,
  });
  return `${head.slice(0, -1)},"result":${record.result_json},${tail.slice(1)}`;
}

/** One stored audit message: the events of one subject (policy or set, and type) recorded within one linger period. */
export interface AuditBatch {
  schema_version: number;
  events: AuditEvent[];
}

export interface AuditSink {
  record(event: AuditRecord): void;
  stats(): { published: number; dropped: number; failed: number; queued: number };
  close(timeoutMs?: number): Promise<void>;
}

/** Audit off: evaluations behave identically, nothing is published. */
export const disabledAudit: AuditSink = {
  record() {},
  stats: () => ({ published: 0, dropped: 0, failed: 0, queued: 0 }),
  close: async () => {},
};

/**
 * Publishes audit events with acknowledgement, grouped: events recorded within `lingerMs` that share a subject
 * travel in one message ({schema_version, events: [...]}). One JetStream write per evaluation would cost as much
 * as the evaluation itself (see bench/nats.ts); grouping keeps every event, acked, at a fraction of the writes.
 */
export class AuditPublisher implements AuditSink {
  private readonly opts: Required<AuditPublisherOptions>;
  /**
   * Records handed over and not serialised yet. They are serialised in the next loop iteration, after this turn's
   * replies have gone out, rather than when their message is sent: a record waiting out the linger as objects (its
   * context, result text, references) was copied by every young-generation GC it survived and often promoted; with
   * the audit on, the GC took three times the CPU it took with the audit off (docs/performance.md, "auditbytes").
   * As bytes outside V8's heap it costs the GC nothing.
   */
  private readonly unserialised: AuditRecord[] = [];
  private serialiseScheduled = false;
  /** Serialised events, in the order recorded: each one's subject and JSON (auditEventJson) as UTF-8. */
  private readonly queue: { subject: string; json: Uint8Array }[] = [];
  private inFlight = 0;
  private published = 0;
  private dropped = 0;
  private failed = 0;
  private lastDropLog = 0;
  private closing = false;
  private timer: NodeJS.Timeout | undefined;
  /** The linger of what is queued has passed (or the publisher is closing): publish it as soon as a write is free. */
  private due = false;
  private nextSlice: NodeJS.Immediate | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(opts: AuditPublisherOptions) {
    this.opts = { maxQueue: 10_000, maxInFlight: 16, lingerMs: AUDIT_LINGER_MS, maxBatch: 256, minBatch: AUDIT_MIN_BATCH, ...opts };
  }

  record(event: AuditRecord): void {
    if (this.closing || this.queued() >= this.opts.maxQueue) {
      this.dropped++;
      const now = Date.now();
      if (now - this.lastDropLog > 5000) {
        this.lastDropLog = now;
        this.opts.logger.warn({ dropped: this.dropped, queued: this.queued() }, "audit queue full: audit events dropped");
      }
      return;
    }
    this.unserialised.push(event);
    if (!this.serialiseScheduled) {
      this.serialiseScheduled = true;
      // In the next loop iteration: an immediate set now may run before the one that writes this turn's replies
      // (write-batch.ts), and the client library sends those in a microtask after it; one set from inside it runs
      // after both. Serialising in that same immediate, before the replies reached the socket, gained nothing.
      setImmediate(() => setImmediate(() => this.serialise()));
    }
    // Publishing starts on a later timer tick, so the evaluation reply always goes out first.
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.due = true;
      this.pump();
    }, this.opts.lingerMs);
  }

  stats(): { published: number; dropped: number; failed: number; queued: number } {
    return { published: this.published, dropped: this.dropped, failed: this.failed, queued: this.queued() };
  }

  private queued(): number {
    return this.queue.length + this.unserialised.length;
  }

  /** Serialises every record handed over so far, in order, into the queue (sends nothing). */
  private serialise(): void {
    this.serialiseScheduled = false;
    for (const record of this.unserialised.splice(0)) {
      this.queue.push({
        subject: `${AUDIT_SUBJECT_PREFIX}.${record.subject_id}.${record.type}`,
        json: utf8(auditEventJson(record, randomUUID(), this.opts.instance)),
      });
    }
  }

  /** Stops accepting events, publishes what is queued and waits (bounded) for the acks. */
  async close(timeoutMs = 5000): Promise<void> {
    this.closing = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.due = true;
    this.pump();
    if (this.queued() === 0 && this.inFlight === 0) return;
    await Promise.race([
      new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
      new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref()),
    ]);
  }

  /**
   * Publishes while writes are free, when `minBatch` records are queued or their linger has passed: up to
   * `maxBatch` records per event-loop turn, the rest on the next (setImmediate). Serialising a whole linger's
   * records at once (300 at 15,000 evaluations/s) held back the replies of that turn.
   */
  private pump(): void {
    if (this.unserialised.length > 0) this.serialise(); // the newest records, behind the queued ones
    if (this.inFlight < this.opts.maxInFlight && (this.queue.length >= this.opts.minBatch || (this.due && this.queue.length > 0))) {
      const groups = new Map<string, Uint8Array[]>();
      for (const { subject, json } of this.queue.splice(0, this.opts.maxBatch)) {
        const group = groups.get(subject);
        if (group) group.push(json);
        else groups.set(subject, [json]);
      }
      for (const [subject, events] of groups) this.publish(subject, events);
      if (this.queue.length > 0 && !this.nextSlice) {
        this.nextSlice = setImmediate(() => {
          this.nextSlice = undefined;
          this.pump();
        });
      }
    }
    if (this.queue.length === 0) this.due = false;
  }

  /** `events`: each event's JSON (auditEventJson); the message is the AuditBatch {schema_version, events}. */
  private publish(subject: string, events: Uint8Array[]): void {
    this.inFlight++;
    this.opts.js
      .publish(subject, batchBody(events), { timeout: 5000 })
      .then(() => {
        this.published += events.length;
      })
      .catch((err: unknown) => {
        this.failed += events.length;
        this.opts.logger.warn({ err, subject, events: events.length }, "audit events not stored");
      })
      .finally(() => {
        this.inFlight--;
        // A freed write takes what is due, or a message worth its write (minBatch); not the few records queued since
        // the last message, which wait out their linger to share one. Pumping whatever was queued at each ack made,
        // at R3 under light load, one message per few evaluations: each replicated and acknowledged by three servers.
        this.pump();
        if (this.queued() === 0 && this.inFlight === 0) {
          for (const resolve of this.idleWaiters.splice(0)) resolve();
        }
      });
  }
}

const BATCH_HEAD = utf8(`{"schema_version":${AUDIT_SCHEMA_VERSION},"events":[`);
const COMMA = 0x2c;
const BATCH_TAIL = utf8("]}");

/** The AuditBatch's bytes: `{"schema_version":1,"events":[` + the events' JSON, comma-separated, + `]}`. */
function batchBody(events: readonly Uint8Array[]): Uint8Array {
  let length = BATCH_HEAD.length + BATCH_TAIL.length + events.length - 1;
  for (const event of events) length += event.length;
  const body = Buffer.allocUnsafe(length);
  body.set(BATCH_HEAD, 0);
  let at = BATCH_HEAD.length;
  events.forEach((event, i) => {
    if (i > 0) body[at++] = COMMA;
    body.set(event, at);
    at += event.length;
  });
  body.set(BATCH_TAIL, at);
  return body;
}

/**
 * UTF-8 bytes of an event's JSON. Buffer.from, not TextEncoder.encode: it slices Node's shared 8 KiB pool for
 * strings under 4 KiB, where TextEncoder allocates and zero-fills a buffer of its own for every event.
 */
function utf8(text: string): Uint8Array {
  return Buffer.from(text, "utf8");
}
