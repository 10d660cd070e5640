// The command pipeline: bytes in, one reply out, whatever happens.
//   parse → (idempotency lookup) → load aggregate + referenced aggregates → decide → append with the
//   per-aggregate expectation → (snapshot) → remember the reply under command_id.
// Lost races are retried (bounded, jittered); JetStream hiccups (leader election) are retried until a
// deadline; a duplicate publish means the command already happened and its original outcome is returned.
import { createHash } from "node:crypto";
import type { PubAck } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import {
  COMMAND_ROUTES, aggregateIdOf, decide, evolve, parseCommand, referencedIds,
  type AggregateState, type Command, type CommandName, type EventEnvelope, type ErrorCode,
} from "../domain/index.js";
import { ConcurrencyError, aggregateSubject, type EventStore, type StoredEvent } from "../adapters/nats/event-store.js";
import { backoffDelay, sleep } from "./backoff.js";
import { isTransient } from "./transient.js";
import { uuidv7 } from "./ids.js";
import type { Logger } from "./logger.js";
import { failure, type Reply, type SuccessReply } from "./replies.js";

export const MAX_PAYLOAD_BYTES = 64 * 1024;
export const MAX_CONFLICT_RETRIES = 8;
export const UNAVAILABLE_DEADLINE_MS = 10_000;
const RECALL_DEADLINE_MS = 3000;
/**
 * Test-only: `1` makes a command_id worthless for deduplication (no idempotency record, no search for earlier
 * events with it, a random Nats-Msg-Id), so the fault-injection suite can show that it detects duplicates.
 */
export const TEST_DISABLE_IDEMPOTENCY_ENV = "POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY";

/** Domain outcomes that are a fact about the command, so a retry with the same command_id gets the same answer. */
const REMEMBERED_FAILURES: ReadonlySet<ErrorCode> = new Set(["not_found", "already_exists", "invalid_transition", "not_applicable"]);

class UnavailableError extends Error {
  constructor(cause: unknown) {
    super("JetStream unavailable", { cause });
    this.name = "UnavailableError";
  }
}

export { isTransient } from "./transient.js";

interface IdempotencyRecord { payload_sha256: string; reply: Reply }

export interface CommandHandlerOptions {
  store: EventStore;
  /** `<STREAM>_COMMANDS`: command_id → original reply. */
  commands: KV;
  logger: Logger;
  /** Whether several events can be appended atomically (server ≥ 2.12 and allow_atomic). */
  atomicBatches: boolean;
  clock?: () => Date;
  /** Test-only (default: the POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY environment variable is `1`). */
  disableIdempotency?: boolean;
}

export class CommandHandler {
  private readonly opts: CommandHandlerOptions;
  private readonly log: Logger;
  private readonly idempotency: boolean;
  readonly counters = { executed: 0, conflicts: 0, conflictRetries: 0, duplicates: 0, replayedReplies: 0, unavailable: 0, internal: 0 };

  constructor(opts: CommandHandlerOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.idempotency = !(opts.disableIdempotency ?? process.env[TEST_DISABLE_IDEMPOTENCY_ENV] === "1");
    if (!this.idempotency) {
      this.log.warn({ [TEST_DISABLE_IDEMPOTENCY_ENV]: "1" }, "TEST ONLY: command_id deduplication is OFF; retried commands will be stored twice. Never set this in production");
    }
  }

  /**
   * Runs one command. Never throws: every outcome is a Reply. `now` (RFC 3339) overrides the clock
   * (the expiry sweeper passes the time it observed).
   */
  async execute(name: CommandName, rawPayload: Uint8Array | string, now?: string): Promise<Reply> {
    const started = Date.now();
    this.counters.executed++;
    try {
      const reply = await this.executeUnsafe(name, rawPayload, now);
      this.log.info({ command: name, ok: reply.ok, ...(reply.ok ? { aggregate_id: reply.aggregate_id, version: reply.version } : { code: reply.error.code }), ms: Date.now() - started }, "command handled");
      return reply;
    } catch (err) {
      if (err instanceof UnavailableError) {
        this.counters.unavailable++;
        this.log.warn({ err: err.cause, command: name }, "JetStream unavailable; replying unavailable");
        return failure("unavailable", "the event store is temporarily unavailable; retry with the same command_id");
      }
      this.counters.internal++;
      this.log.error({ err, command: name }, "command failed with an internal error");
      return failure("internal", "internal error");
    }
  }

  private async executeUnsafe(name: CommandName, rawPayload: Uint8Array | string, now: string | undefined): Promise<Reply> {
    if (!Object.hasOwn(COMMAND_ROUTES, name)) return failure("validation_failed", `unknown command ${JSON.stringify(name)}`);
    const size = typeof rawPayload === "string" ? Buffer.byteLength(rawPayload) : rawPayload.byteLength;
    if (size > MAX_PAYLOAD_BYTES) {
      return failure("validation_failed", `payload is ${size} bytes; at most ${MAX_PAYLOAD_BYTES} are accepted`, { max_bytes: MAX_PAYLOAD_BYTES });
    }
    let payload: unknown;
    try {
      payload = JSON.parse(typeof rawPayload === "string" ? rawPayload : new TextDecoder("utf-8", { fatal: true }).decode(rawPayload));
    } catch {
      return failure("invalid_json", "payload is not valid UTF-8 JSON");
    }
    const route = COMMAND_ROUTES[name];
    const original = payload;
    if (route.creates && isPlainObject(payload) && !Object.hasOwn(payload, route.idField)) {
      payload = { ...payload, [route.idField]: uuidv7() };
    }
    const parsed = parseCommand(name, payload);
    if (!parsed.ok) return { ok: false, error: parsed.error };
    const { command, meta } = parsed;
    const deadline = Date.now() + UNAVAILABLE_DEADLINE_MS;
    // Hashed only after validation (bounded depth and size); the hash covers the payload as sent, before id injection.
    // Test-only switch: the command_id stays in the envelopes (so duplicates are visible) but dedupes nothing.
    const dedupeId = this.idempotency ? meta.command_id : null;
    const payloadHash = dedupeId ? sha256(canonicalJson(original)) : "";

    if (dedupeId) {
      // The record is one layer of three (see docs/concurrency.md): if the bucket does not answer soon, go on.
      const remembered = await this.recall(dedupeId, Math.min(deadline, Date.now() + RECALL_DEADLINE_MS)).catch((err: unknown) => {
        this.log.warn({ err, command_id: dedupeId }, "idempotency record not readable; relying on the stream's checks");
        return null;
      });
      if (remembered) {
        this.counters.replayedReplies++;
        if (remembered.payload_sha256 !== payloadHash) {
          return failure("conflict", `command_id ${dedupeId} was already used for a different payload`);
        }
        return remembered.reply;
      }
    }
    const { reply, afterReply } = await this.decideAndAppend(command, meta, dedupeId, now, deadline);
    if (dedupeId && (reply.ok || REMEMBERED_FAILURES.has(reply.error.code))) {
      await this.remember(dedupeId, { payload_sha256: payloadHash, reply });
    }
    // The snapshot comes after the idempotency record: a snapshot that hides this command's event from a
    // later load never exists without the record that answers a retry.
    afterReply?.();
    return reply;
  }

  private async decideAndAppend(
    command: Command, meta: { command_id: string | null; correlation_id: string | null }, dedupeId: string | null, nowOverride: string | undefined, deadline: number,
  ): Promise<{ reply: Reply; afterReply?: () => void }> {
    const { store } = this.opts;
    const aggregateId = aggregateIdOf(command);
    const route = COMMAND_ROUTES[command.name];
    // Event ids this execution has tried to publish: a publish that timed out may still have landed.
    const attemptedEventIds = new Set<string>();
    let previousLastSeq: number | null = null;
    for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
      const loaded = await this.retryTransient(() => store.load(aggregateId), deadline);
      // After a lost race, whatever beat us has seq > previousLastSeq; read it even if a snapshot now covers it.
      let recent = loaded.tail;
      if (previousLastSeq !== null && loaded.snapshotSeq > previousLastSeq) {
        const from = previousLastSeq + 1;
        const covered = await this.retryTransient(() => store.readEvents(aggregateId, from, loaded.snapshotSeq), deadline);
        recent = [...covered, ...loaded.tail];
      }
      // Already applied? Another instance (a retry with the same command_id racing the first attempt) or our own
      // earlier publish may have stored this command. Newer servers answer such a duplicate with "wrong last
      // sequence" instead of a duplicate ack, so look for it before deciding again.
      const mine = recent.filter((e) => (dedupeId !== null && e.envelope.command_id === dedupeId) || attemptedEventIds.has(e.envelope.event_id));
      if (mine.length > 0) {
        this.counters.duplicates++;
        return { reply: replyFrom(mine) };
      }
      const refs = new Map<string, AggregateState | undefined>();
      for (const refId of referencedIds(command)) {
        if (refs.has(refId)) continue;
        refs.set(refId, refId === aggregateId ? loaded.state : (await this.retryTransient(() => store.load(refId), deadline)).state);
      }
      const now = nowOverride ?? (this.opts.clock ?? (() => new Date()))().toISOString();
      const decision = decide(loaded.state, command, { now, refs });
      if (!decision.ok) return { reply: { ok: false, error: decision.error } };
      if (decision.events.length === 0) return { reply: { ok: true, aggregate_id: aggregateId, version: loaded.version, events: [] } };

      const envelopes: EventEnvelope[] = decision.events.map((e, i) => ({
        event_id: uuidv7(),
        event_type: e.event_type,
        aggregate_type: route.aggregateType,
        aggregate_id: aggregateId,
        version: loaded.version + i + 1,
        occurred_at: now,
        command_id: meta.command_id,
        correlation_id: meta.correlation_id,
        causation_id: meta.command_id,
        data: e.data,
      }));
      // The expected sequence is part of the id: a re-send of the same write deduplicates, while a re-decision after a
      // lost race uses a fresh id (nats-server 2.11 keeps an id rejected by the sequence check "in process" on
      // clustered streams, blocking it for the duplicate window).
      const toAppend = envelopes.map((envelope, i) => ({ envelope, msgId: dedupeId ? `${dedupeId}:${i}:${loaded.lastSeq}` : envelope.event_id }));
      for (const e of envelopes) attemptedEventIds.add(e.event_id);
      let acks: PubAck[];
      try {
        // The same envelopes (same Nats-Msg-Id) are re-sent on a timeout, so a write that did land is deduplicated.
        acks = await this.retryTransient(() => store.append(aggregateId, loaded.lastSeq, toAppend, this.opts.atomicBatches), deadline);
      } catch (err) {
        if (!(err instanceof ConcurrencyError)) throw err;
        this.counters.conflictRetries++;
        this.log.debug({ aggregate_id: aggregateId, command: command.name, expected_seq: loaded.lastSeq, attempt }, "lost an append race; reloading");
        previousLastSeq ??= loaded.lastSeq;
        await sleep(backoffDelay(attempt, { initialMs: 5, maxMs: 250 }));
        continue;
      }
      if (acks.some((a) => a.duplicate)) {
        this.counters.duplicates++;
        return { reply: await this.originalReply(acks, deadline) };
      }
      let state = loaded.state;
      for (const e of envelopes) state = evolve(state, e);
      const lastAckSeq = acks[acks.length - 1]!.seq;
      const reply: SuccessReply = {
        ok: true,
        aggregate_id: aggregateId,
        version: envelopes[envelopes.length - 1]!.version,
        events: envelopes.map((e, i) => ({ type: e.event_type, subject: aggregateSubject(aggregateId, e.event_type), seq: acks[i]!.seq })),
      };
      return { reply, afterReply: () => store.maybeSnapshot(aggregateId, loaded.version, state, lastAckSeq) };
    }
    this.counters.conflicts++;
    return { reply: failure("conflict", `aggregate ${aggregateId} kept changing; gave up after ${MAX_CONFLICT_RETRIES + 1} attempts (retry with the same command_id)`) };
  }

  /** A duplicate ack: the command was stored before; rebuild its reply from the stored events. */
  private async originalReply(acks: PubAck[], deadline: number): Promise<SuccessReply> {
    const events = [];
    for (const ack of acks) {
      const stored = await this.retryTransient(() => this.opts.store.eventAt(ack.seq), deadline);
      if (!stored) throw new Error(`duplicate ack for sequence ${ack.seq}, but no message is stored there`);
      events.push(stored);
    }
    return replyFrom(events);
  }

  private async recall(commandId: string, deadline: number): Promise<IdempotencyRecord | null> {
    const entry = await this.retryTransient(() => this.opts.commands.get(commandId), deadline);
    if (!entry || entry.operation !== "PUT" || entry.length === 0) return null;
    try {
      const record = entry.json<IdempotencyRecord>();
      return record && typeof record.payload_sha256 === "string" && record.reply && typeof record.reply.ok === "boolean" ? record : null;
    } catch {
      this.log.warn({ command_id: commandId }, "unreadable idempotency record ignored");
      return null;
    }
  }

  private async remember(commandId: string, record: IdempotencyRecord): Promise<void> {
    try {
      await this.opts.commands.put(commandId, JSON.stringify(record));
    } catch (err) {
      // Not fatal: within the duplicate window the stream's Nats-Msg-Id dedupe still answers a retry.
      this.log.warn({ err, command_id: commandId }, "could not store the reply for idempotent retries");
    }
  }

  private async retryTransient<T>(fn: () => Promise<T>, deadline: number): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err)) throw err;
        if (Date.now() >= deadline) throw new UnavailableError(err);
        const delay = Math.min(backoffDelay(attempt, { initialMs: 100, maxMs: 1000, jitter: 0.5 }), Math.max(0, deadline - Date.now()));
        this.log.debug({ err, attempt, retry_in_ms: delay }, "JetStream not answering; retrying");
        await sleep(delay);
      }
    }
  }
}

/** The reply a command got when it stored these events (its original outcome). */
function replyFrom(events: StoredEvent[]): SuccessReply {
  const last = events[events.length - 1]!;
  return {
    ok: true,
    aggregate_id: last.envelope.aggregate_id,
    version: last.envelope.version,
    events: events.map((e) => ({ type: e.envelope.event_type, subject: e.subject, seq: e.seq })),
  };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** JSON with sorted keys: the same payload always hashes the same. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isPlainObject(value)) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
