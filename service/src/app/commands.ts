// The command pipeline: bytes in, one reply out, whatever happens.
//   parse → (idempotency: the COMMANDS bucket for remembered refusals and no-ops, then the projection's command-id
//   index; a stored event carries its command's payload hash as a header, so a stored command needs no record)
//   → decide against the state this instance already holds (its projection) → ONE acknowledged publish with the
//   aggregate's expected last sequence → reply once the projection has applied it.
// The server's expected-sequence check is the safety net of the optimistic state: a lost race (or a projection that
// was behind) waits for the projection to catch up and decides again (bounded, jittered). JetStream hiccups
// (leader election) are retried until a deadline. The argument that a command_id is stored at most once is in
// docs/concurrency.md ("Idempotency").
import { JetStreamApiError, type PubAck } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import {
  COMMAND_ROUTES, aggregateIdOf, decide, evolve, parseCommand, referencedIds,
  type AggregateState, type Command, type CommandName, type EventEnvelope, type ErrorCode,
} from "../domain/index.js";
import { ConcurrencyError, aggregateSubject, type EventStore, type EventToAppend, type StoredEvent } from "../adapters/nats/event-store.js";
import type { CommandForwarder } from "../adapters/nats/forward.js";
import type { Projection } from "../adapters/nats/projection.js";
import type { RecordLookup } from "../adapters/nats/record-lookup.js";
import { backoffDelay, sleep } from "../support/backoff.js";
import { canonicalSha256 } from "../support/canonical-json.js";
import { isTransient } from "../support/transient.js";
import { uuidV5, uuidv7 } from "../support/ids.js";
import { fixedFieldsLogger, type Logger } from "../support/logger.js";
import { failure, type Reply, type SuccessReply } from "../support/replies.js";

export const MAX_PAYLOAD_BYTES = 64 * 1024;
export const MAX_CONFLICT_RETRIES = 8;
export const UNAVAILABLE_DEADLINE_MS = 10_000;
const RECALL_DEADLINE_MS = 3000;
/**
 * At most this many own appends on one aggregate ahead of the projection (a projection that stopped following would
 * otherwise let the list grow); beyond it the next command decides against the projection again.
 */
const MAX_AHEAD_OF_PROJECTION = 256;
/**
 * At most this many commands queued on one aggregate are written as one atomic batch (server ≥ 2.12): the commands
 * waiting behind the one that is about to publish, decided one after the other on the state the previous one leaves.
 */
const MAX_GROUP = 32;
/** How long a command waits for its own projection to reach a sequence before it reads the stream instead. */
const PROJECTION_WAIT_MS = 2000;
/**
 * An aggregate this instance lost an append race on is "contended" this long after its last command here: its
 * commands go to its owner (adapters/nats/forward.ts) while they keep coming. At most CONTENDED_MAX are tracked.
 */
const CONTENDED_MS = 5000;
const CONTENDED_MAX = 4096;
/** A forwarded command's owner answers within its own deadline (UNAVAILABLE_DEADLINE_MS); this adds the way back. */
export const FORWARD_TIMEOUT_MS = UNAVAILABLE_DEADLINE_MS + 2000;

/**
 * Test-only: `POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY=1` means a command_id is not used for deduplication at all
 * (no recall of the idempotency record, no look for earlier events with that command_id, a random Nats-Msg-Id, a
 * random generated id). The fault-injection suite uses it to show that it detects duplicates. Never in production.
 */
export const DISABLE_IDEMPOTENCY_ENV = "POLICY_SERVICE_TEST_DISABLE_IDEMPOTENCY";
export function idempotencyDisabledByEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[DISABLE_IDEMPOTENCY_ENV] === "1";
}

/** Fixed namespace for ids derived from a command_id (a random UUID chosen once for this purpose). */
const DERIVED_ID_NAMESPACE = "3b8f6c1e-5d2a-4f7b-9a1c-7e4d2b6a8f30";

/**
 * The id a create without an id gets: derived from its command_id (so every retry, on any instance, addresses the
 * same aggregate and the server's expected-sequence-0 check makes it stored once), else a fresh UUIDv7.
 */
export function generatedAggregateId(name: CommandName, commandId: unknown, idempotent: boolean): string {
  if (idempotent && typeof commandId === "string" && commandId !== "") return uuidV5(`${name}:${commandId.toLowerCase()}`, DERIVED_ID_NAMESPACE);
  return uuidv7();
}

/** Domain outcomes that are a fact about the command, so a retry with the same command_id gets the same answer. */
const REMEMBERED_FAILURES: ReadonlySet<ErrorCode> = new Set(["not_found", "already_exists", "invalid_transition", "not_applicable"]);

class UnavailableError extends Error {
  constructor(cause: unknown) {
    super("JetStream unavailable", { cause });
    this.name = "UnavailableError";
  }
}

export { isTransient } from "../support/transient.js";

interface IdempotencyRecord { payload_sha256: string; reply: Reply }

/** The slice of the forwarder the command path uses: who owns an aggregate, and the way to it. */
export type CommandRouter = Pick<CommandForwarder, "token" | "generation" | "ownerOf" | "forward">;

/** The slice of the projection the command path uses (every instance runs one for its read side). */
export type CommandProjection = Pick<Projection, "caughtUp" | "lastSeq" | "get" | "commandSeqs" | "waitForSeq" | "onEvent">;

export interface CommandHandlerOptions {
  store: EventStore;
  /** `<STREAM>_COMMANDS`: command_id → original reply. */
  commands: KV;
  /** Step 2's reads of that bucket; default: its `get`, one request per lookup (the instance batches them, record-lookup.ts). */
  recordLookup?: RecordLookup;
  logger: Logger;
  /** Whether several events can be appended atomically (server ≥ 2.12 and allow_atomic). */
  atomicBatches: boolean;
  /**
   * Whether commands waiting on one aggregate join the append of the one before them, and how (off when absent):
   * "atomic", one atomic batch (needs atomicBatches; for replicated streams: on nats-server 2.14.9 an atomic batch on
   * an R1 stream took 5-13 ms against 0.4 ms for a publish, docs/performance.md); "chained", for R1 streams: one
   * event per command, each publish stored only right after the one before it (EventStore.appendChained), so a
   * prefix of the group is stored and the rest runs again on its own.
   */
  groupAppends?: "atomic" | "chained";
  /**
   * This instance's projection: the state commands decide against and the command-id index. Without one (unit
   * tests), every command loads its aggregate from the stream.
   */
  projection?: CommandProjection;
  /** Test-only switch, see DISABLE_IDEMPOTENCY_ENV. */
  idempotencyDisabled?: boolean;
  /**
   * Whether a command that stored an event must also write its idempotency record now: while an instance of an
   * older build, which answers retries from the record only, may serve the stream (adapters/nats/peers.ts).
   * Undefined: never (every instance answers retries from the event's payload hash).
   */
  successRecords?: () => boolean;
  /**
   * One writer per contended aggregate: where commands on an aggregate this instance lost a race on go instead
   * (adapters/nats/forward.ts). Undefined: every command runs here.
   */
  router?: CommandRouter;
  clock?: () => Date;
}

/** One event this instance appended (acknowledged) that its projection has not applied yet. */
interface OwnAppend { seq: number; commandId: string | null; payloadHash: string; reply: SuccessReply }

/**
 * This instance's own acknowledged appends on an aggregate, ahead of its projection: the state after them and the
 * sequence of the last one. The first was appended with the projection's state as expectation, each later one with
 * the previous one's ack as expectation, so the server's check makes them the aggregate's only events after that
 * projection state (up to `seq`).
 */
interface AheadOfProjection { state: AggregateState; seq: number; appends: OwnAppend[] }

/** What a command's run on its aggregate's queue ends with; `settle` is awaited before the reply, outside the queue. */
interface Outcome { reply: Reply & { recorded?: true }; settle?: Promise<unknown>; afterReply?: () => void }

/** A parsed command waiting for (or holding) its aggregate on this instance. */
interface QueuedCommand {
  command: Command;
  commandId: string | null;
  meta: { command_id: string | null; correlation_id: string | null };
  payloadHash: string;
  now: string | undefined;
  deadline: number;
  /**
   * A group append that took this command failed: its events may have landed anyway (a timeout, a lost ack), so its
   * own run looks for them like for its own earlier attempts (see storedBefore).
   */
  carried?: { eventIds: string[]; afterSeq: number };
  finish: (outcome: Promise<Outcome>) => void;
}

/** The state a decision is made against, and the expectation that goes with it. */
interface Current {
  state: AggregateState | undefined;
  /** Stream sequence of the aggregate's last event in that state (0 = none): the append's expectation. */
  lastSeq: number;
  version: number;
  /**
   * "memory": the projection; "ahead": the projection plus this instance's own acknowledged appends it has not
   * applied yet (AheadOfProjection); "stream": loaded from the stream (snapshot + events).
   */
  source: "memory" | "ahead" | "stream";
  /** For "stream": the events read after the snapshot (all of them when snapshotSeq is 0). */
  tail: StoredEvent[];
  snapshotSeq: number;
  /** For "ahead": the own appends after the projection's state of the aggregate. */
  ownAppends: OwnAppend[];
}

export class CommandHandler {
  private readonly opts: CommandHandlerOptions;
  private readonly log: Logger;
  /** For the "command handled" line only: its fields are the command's name, ids, numbers, an error code. */
  private readonly handledLog: Logger;
  private readonly idempotent: boolean;
  /** Event ids of appends in flight → the sequence the projection saw them at (a publish whose ack was lost). */
  private readonly watchedEventIds = new Map<string, number>();
  /** Per aggregate with a command running on this instance: the commands waiting behind it (see enqueue). */
  private readonly aggregateQueues = new Map<string, QueuedCommand[]>();
  /** Per aggregate: own acknowledged appends the projection has not applied yet (the next queued command decides on them). */
  private readonly ahead = new Map<string, AheadOfProjection>();
  /** Commands that lost a race, waiting for the projection to apply the aggregate's next event. */
  private readonly aggregateWaiters = new Map<string, Set<{ afterSeq: number; resolve: (ok: boolean) => void }>>();
  /** Aggregates this instance lost a race on, oldest first: until when their commands go to the owner, and that owner. */
  private readonly contended = new Map<string, { until: number; owner: string | null; generation: number }>();
  readonly counters = {
    executed: 0, conflicts: 0, conflictRetries: 0, duplicates: 0, replayedReplies: 0, unavailable: 0, internal: 0, streamLoads: 0,
    /** Sent to the aggregate's owner; run here for another instance; run here because the owner had gone. */
    forwarded: 0, forwardedHere: 0, forwardFallbacks: 0,
    /** Chained group appends (R1) stored only in part: another writer's message came between; the rest ran again. */
    chainBreaks: 0,
  };

  constructor(opts: CommandHandlerOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.handledLog = fixedFieldsLogger(opts.logger);
    this.idempotent = !opts.idempotencyDisabled;
    if (!this.idempotent) {
      this.log.error({ env: DISABLE_IDEMPOTENCY_ENV }, `${DISABLE_IDEMPOTENCY_ENV}=1: command_id is NOT used for deduplication; retried commands can be stored twice (test-only switch, never in production)`);
    }
    opts.projection?.onEvent((_state, event, seq) => {
      if (this.watchedEventIds.has(event.event_id)) this.watchedEventIds.set(event.event_id, seq);
      // The projection has caught up with this instance's own appends (or shows a later event of another writer).
      const ahead = this.ahead.get(event.aggregate_id);
      if (ahead && seq >= ahead.seq) this.ahead.delete(event.aggregate_id);
      const waiters = this.aggregateWaiters.get(event.aggregate_id);
      if (waiters) {
        for (const waiter of waiters) if (seq > waiter.afterSeq) waiter.resolve(true);
      }
    });
  }

  /**
   * Runs one command. Never throws: every outcome is a Reply. `now` (RFC 3339) overrides the clock
   * (the expiry sweeper passes the time it observed).
   */
  async execute(name: CommandName, rawPayload: Uint8Array | string, now?: string): Promise<Reply> {
    return this.run(name, rawPayload, now, false);
  }

  /** Runs a command another instance forwarded to this one (its aggregate's owner): here, never forwarded again. */
  executeForwarded(name: CommandName, rawPayload: Uint8Array): Promise<Reply> {
    this.counters.forwardedHere++;
    return this.run(name, rawPayload, undefined, true);
  }

  private async run(name: CommandName, rawPayload: Uint8Array | string, now: string | undefined, forwarded: boolean): Promise<Reply> {
    const started = Date.now();
    this.counters.executed++;
    try {
      const reply = await this.executeUnsafe(name, rawPayload, now, forwarded);
      const ms = Date.now() - started;
      // After the reply has left (the caller sends it in this turn): the line is not on the client's wait.
      setImmediate(() => this.handledLog.info({ command: name, ok: reply.ok, ...(reply.ok ? { aggregate_id: reply.aggregate_id, version: reply.version } : { code: reply.error.code }), ms, ...(forwarded ? { forwarded: true } : {}) }, "command handled"));
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

  private async executeUnsafe(name: CommandName, rawPayload: Uint8Array | string, now: string | undefined, forwarded: boolean): Promise<Reply> {
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
      payload = { ...payload, [route.idField]: generatedAggregateId(name, payload.command_id, this.idempotent) };
    }
    // An aggregate several instances write: its owner runs the command, validation included (only ids of aggregates
    // this instance lost a race on are contended, so an invalid id never is). The sweeper's commands, with their own
    // clock, run here; so does a forwarded command, whatever this instance thinks of its owner.
    const targetId = isPlainObject(payload) ? payload[route.idField] : undefined;
    const owner = forwarded || now !== undefined || typeof targetId !== "string" ? null : this.ownerIfContended(targetId);
    if (owner) {
      const reply = await this.forward(owner, name, rawPayload);
      if (reply) return reply;
    }
    const parsed = parseCommand(name, payload);
    if (!parsed.ok) return { ok: false, error: parsed.error };
    const { command, meta } = parsed;
    const deadline = Date.now() + UNAVAILABLE_DEADLINE_MS;
    const commandId = this.idempotent ? meta.command_id : null;
    // Hashed only after validation (bounded depth and size); the hash covers the payload as sent, before id injection.
    const payloadHash = commandId ? canonicalSha256(original) : "";

    if (commandId) {
      // Remembered refusals (and, for a payload check, replies) live in the bucket. It is one layer of several (see
      // docs/concurrency.md): if the bucket does not answer soon, go on; the event check below still holds.
      const remembered = await this.recall(commandId, Math.min(deadline, Date.now() + RECALL_DEADLINE_MS)).catch((err: unknown) => {
        this.log.warn({ err, command_id: commandId }, "idempotency record not readable; relying on the stream's checks");
        return null;
      });
      if (remembered) {
        this.counters.replayedReplies++;
        if (remembered.payload_sha256 !== payloadHash) {
          return reusedFailure(commandId);
        }
        return remembered.reply;
      }
    }
    // One command per aggregate at a time on this instance, from its decision to its publish's ack: the next one
    // decides against the state the previous one left (AheadOfProjection), instead of losing an append race to it.
    // The reply still waits (settle) for the idempotency record and for this instance's projection to apply the event.
    // Commands waiting behind one that is about to publish may join its append as one atomic batch (takeFollowers).
    const { reply, settle, afterReply } = await this.enqueue(aggregateIdOf(command), { command, commandId, meta, payloadHash, now, deadline });
    await settle;
    // Outcomes that stored no event need a record. A stored event answers a retry itself (its reply is rebuilt from
    // it, its COMMAND_HASH_HEADER tells a different payload apart), see docs/concurrency.md, except on an older
    // build: while one may serve the stream, a replayed stored command gets its record too (a fresh one writes it
    // in `appended`), so a retry landing there finds it.
    if (commandId && (reply.ok ? reply.events.length === 0 || this.successRecords() : REMEMBERED_FAILURES.has(reply.error.code)) && !reply.recorded) {
      await this.remember(commandId, { payload_sha256: payloadHash, reply: withoutMark(reply) });
    }
    if (afterReply) setImmediate(afterReply);
    return withoutMark(reply);
  }

  private async decideAndAppend(job: QueuedCommand): Promise<Outcome> {
    const { command, commandId, meta, payloadHash, now: nowOverride, deadline } = job;
    const { store } = this.opts;
    const aggregateId = aggregateIdOf(command);
    const route = COMMAND_ROUTES[command.name];
    // Event ids this execution has tried to publish: a publish that timed out may still have landed.
    const attemptedEventIds: string[] = [...(job.carried?.eventIds ?? [])];
    let fromStream = false;
    let previousLastSeq: number | null = job.carried?.afterSeq ?? null;
    /** Whether the own appends ahead of the projection (this.ahead) still stand when this run ends. */
    let appended = false;
    /** After a group append the server refused for another reason than the expectation: publish alone. */
    let alone = job.carried !== undefined;
    try {
      for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
        const current = await this.current(aggregateId, fromStream, deadline);
        // A retry of a command this instance appended moments ago, which its projection has not applied yet.
        const ownAppend = commandId ? current.ownAppends.find((a) => a.commandId === commandId) : undefined;
        if (ownAppend) {
          this.counters.duplicates++;
          this.counters.replayedReplies++;
          appended = true; // nothing written, nothing learned: the own appends ahead of the projection still stand
          if (ownAppend.payloadHash !== payloadHash) return { reply: { ...reusedFailure(commandId!), recorded: true } };
          return { reply: this.replayed(ownAppend.reply, true) };
        }
        // Was this command stored already (a retry, elsewhere or here; a publish whose ack was lost)? The check covers
        // every event of the aggregate at seq ≤ current.lastSeq, which is exactly what the append's expectation pins.
        const mine = await this.storedBefore(aggregateId, commandId, attemptedEventIds, current, previousLastSeq, deadline);
        if (mine === "elsewhere") {
          return { reply: { ...failure("conflict", `command_id ${commandId} was already used for a command on another aggregate`), recorded: true } };
        }
        if (mine) {
          this.counters.duplicates++;
          if (commandId) this.counters.replayedReplies++;
          if (commandId && reusedFor(mine, payloadHash)) return { reply: { ...reusedFailure(commandId), recorded: true } };
          return { reply: this.replayed(replyFrom(mine), storedFor(mine, payloadHash)) };
        }
        // Aggregates the decision only reads are not guarded by the append: make sure they are as fresh as a load.
        const refIds = [...new Set(referencedIds(command))].filter((id) => id !== aggregateId);
        const refsFromStream = current.source === "stream" || (refIds.length > 0 && !(await this.fresh(refIds, deadline)));
        const refs = new Map<string, AggregateState | undefined>([[aggregateId, current.state]]);
        for (const refId of refIds) refs.set(refId, await this.referenced(refId, refsFromStream, deadline));
        const now = nowOverride ?? (this.opts.clock ?? (() => new Date()))().toISOString();
        const decision = decide(current.state, command, { now, refs });
        if (!decision.ok || decision.events.length === 0) {
          // A refusal (or a no-op) writes nothing, so no expectation checks it: confirm that the state it was decided
          // against is the aggregate's latest, else decide again.
          if (current.source === "ahead") {
            // Decided on own appends the projection has not applied yet: let it apply them, then decide again against
            // it (and confirm that as below). Rare: a refusal right after an accepted command on the same aggregate.
            this.ahead.delete(aggregateId);
            if (!(await this.opts.projection!.waitForSeq(current.lastSeq, Math.min(PROJECTION_WAIT_MS, Math.max(0, deadline - Date.now()))))) fromStream = true;
            continue;
          }
          if (current.source === "memory") {
            if (!(await this.fresh([aggregateId], deadline))) fromStream = true;
            else if ((this.opts.projection!.get(aggregateId)?.seq ?? 0) !== current.lastSeq) continue;
            if (fromStream) continue;
          }
          if (!decision.ok) return { reply: { ok: false, error: decision.error } };
          return { reply: { ok: true, aggregate_id: aggregateId, version: current.version, events: [] } };
        }

        const envelopes: EventEnvelope[] = decision.events.map((e, i) => ({
          event_id: uuidv7(),
          event_type: e.event_type,
          aggregate_type: route.aggregateType,
          aggregate_id: aggregateId,
          version: current.version + i + 1,
          occurred_at: now,
          // The client's command_id, also when the test-only switch ignores it for deduplication.
          command_id: meta.command_id,
          correlation_id: meta.correlation_id,
          causation_id: meta.command_id,
          data: e.data,
        }));
        // The expected sequence is part of the id: a re-send of the same write deduplicates, while a re-decision after a
        // lost race uses a fresh id (nats-server 2.11 keeps an id rejected by the sequence check "in process" on
        // clustered streams, blocking it for the duplicate window). Exactly-once does not rest on it (see docs).
        for (const e of envelopes) {
          attemptedEventIds.push(e.event_id);
          this.watchedEventIds.set(e.event_id, 0);
        }
        const grouping = this.opts.groupAppends === "atomic" && this.opts.atomicBatches ? "atomic"
          : this.opts.groupAppends === "chained" && envelopes.length === 1 && store.chainable ? "chained" : null;
        // Only when commands wait behind this one: deciding on the state after it costs an evolve.
        const followers = !alone && grouping && current.source !== "stream" && envelopes.length > 0 && (this.aggregateQueues.get(aggregateId)?.length ?? 0) > 0
          ? this.takeFollowers(aggregateId, current, evolveAll(current.state, envelopes), envelopes, commandId, grouping === "chained")
          : [];
        // An atomic group carries no Nats-Msg-Id: the server refuses a batch with an id it holds (10201) rather than
        // answering a duplicate ack, and exactly-once does not rest on the id (a re-sent batch that did land fails the
        // check). A chain links its messages by their ids: a follower's is its event id (fresh; never re-sent).
        // Each event carries its own command's payload hash (COMMAND_HASH_HEADER): what a retry compares its own with.
        const hashes = [...envelopes.map(() => payloadHash), ...followers.flatMap((f) => f.envelopes.map(() => f.job.payloadHash))];
        const msgIdOf = (envelope: EventEnvelope, i: number): string => {
          if (followers.length > 0 && grouping === "atomic") return "";
          if (followers.length > 0 && i > 0) return envelope.event_id; // a link of a chain after its head
          return commandId ? `${commandId}:${i}:${current.lastSeq}` : envelope.event_id;
        };
        const toAppend = [...envelopes, ...followers.flatMap((f) => f.envelopes)].map((envelope, i) => ({
          envelope, msgId: msgIdOf(envelope, i), ...(hashes[i] ? { commandHash: hashes[i] } : {}),
        }));
        let acks: PubAck[];
        try {
          acks = followers.length > 0 && grouping === "chained"
            ? await this.appendChain(aggregateId, current.lastSeq, toAppend, followers, deadline)
            // The same envelopes (same Nats-Msg-Id) are re-sent on a timeout, so a write that did land is deduplicated.
            : await this.retryTransient(() => store.append(aggregateId, current.lastSeq, toAppend, this.opts.atomicBatches), deadline);
        } catch (err) {
          // The followers go back to the front of the queue and run on their own, looking for their events first.
          this.requeue(aggregateId, followers, current.lastSeq);
          if (followers.length > 0 && !(err instanceof ConcurrencyError) && err instanceof JetStreamApiError) {
            this.log.warn({ err, aggregate_id: aggregateId, commands: followers.length + 1 }, "atomic batch refused; publishing one command at a time");
            alone = true;
            previousLastSeq ??= current.lastSeq;
            continue;
          }
          if (!(err instanceof ConcurrencyError)) throw err;
          this.counters.conflictRetries++;
          this.markContended(aggregateId);
          this.log.debug({ aggregate_id: aggregateId, command: command.name, expected_seq: current.lastSeq, source: current.source, attempt }, "lost an append race; catching up");
          previousLastSeq ??= current.lastSeq;
          this.ahead.delete(aggregateId);
          if (current.source !== "stream") fromStream = !(await this.catchUp(aggregateId, current.lastSeq, deadline));
          if (attempt > 0) await sleep(backoffDelay(attempt - 1, { initialMs: 5, maxMs: 250 }));
          continue;
        }
        if (acks.some((a) => a.duplicate)) {
          this.counters.duplicates++;
          // Same Nats-Msg-Id (command_id and expectation): an attempt of this command_id, maybe with another payload.
          const stored = await this.eventsAt(acks.map((a) => a.seq), deadline);
          if (commandId && reusedFor(stored, payloadHash)) return { reply: { ...reusedFailure(commandId), recorded: true } };
          return { reply: this.replayed(replyFrom(stored), storedFor(stored, payloadHash)) };
        }
        appended = true;
        const head = this.appended(aggregateId, commandId, payloadHash, current.version, current.state, envelopes, acks.slice(0, envelopes.length));
        const ownAppends = [...current.ownAppends, head.own];
        let state = head.state;
        let offset = envelopes.length;
        for (const f of followers) {
          const done = this.appended(aggregateId, f.job.commandId, f.job.payloadHash, state!.version, state, f.envelopes, acks.slice(offset, offset + f.envelopes.length));
          offset += f.envelopes.length;
          state = done.state;
          ownAppends.push(done.own);
          for (const e of f.envelopes) this.watchedEventIds.delete(e.event_id);
          f.job.finish(Promise.resolve(done.outcome));
        }
        // The next command queued on this aggregate decides against this state and expects this sequence, without
        // waiting for the projection. Only on top of the projection's state (or of earlier own appends on top of it):
        // the command-id check of that next command relies on the projection's index for every event up to that state.
        const projection = this.opts.projection;
        const lastAckSeq = acks[acks.length - 1]!.seq;
        const projectedSeq = projection?.get(aggregateId)?.seq ?? 0;
        if (projection && current.source !== "stream" && state && projectedSeq < lastAckSeq && ownAppends.length <= MAX_AHEAD_OF_PROJECTION) {
          this.ahead.set(aggregateId, { state, seq: lastAckSeq, appends: ownAppends.filter((a) => a.seq > projectedSeq) });
        }
        return head.outcome;
      }
    } finally {
      for (const id of attemptedEventIds) this.watchedEventIds.delete(id);
      // Anything but a fresh append (a refusal, a duplicate, a conflict, an error): the next command decides against
      // the projection again. Always safe: at worst it loses a race and catches up.
      if (!appended) this.ahead.delete(aggregateId);
    }
    this.counters.conflicts++;
    return { reply: failure("conflict", `aggregate ${aggregateId} kept changing; gave up after ${MAX_CONFLICT_RETRIES + 1} attempts (retry with the same command_id)`) };
  }

  /** This instance lost a race on the aggregate: its commands go to the aggregate's owner from now on (ownerIfContended). */
  private markContended(aggregateId: string): void {
    if (!this.opts.router) return;
    const known = this.contended.get(aggregateId);
    if (known) {
      known.until = Date.now() + CONTENDED_MS;
      return;
    }
    if (this.contended.size >= CONTENDED_MAX) this.contended.delete(this.contended.keys().next().value!);
    this.contended.set(aggregateId, { until: Date.now() + CONTENDED_MS, owner: null, generation: -1 });
  }

  /** The owner to forward a command on this aggregate to; null: run it here (not contended, or this instance owns it). */
  private ownerIfContended(aggregateId: string): string | null {
    const router = this.opts.router;
    const entry = router ? this.contended.get(aggregateId) : undefined;
    if (!router || !entry) return null;
    const now = Date.now();
    if (now > entry.until) {
      this.contended.delete(aggregateId);
      return null;
    }
    entry.until = now + CONTENDED_MS;
    if (entry.generation !== router.generation) {
      entry.owner = router.ownerOf(aggregateId);
      entry.generation = router.generation;
    }
    return entry.owner === router.token ? null : entry.owner;
  }

  /**
   * The owner's reply to a forwarded command; null: the owner is gone (NATS "no responders": it never got the
   * command), run it here. Any other failure answers `unavailable`, never runs it here: the owner may have stored it.
   */
  private async forward(owner: string, name: CommandName, rawPayload: Uint8Array | string): Promise<Reply | null> {
    this.counters.forwarded++;
    const payload = typeof rawPayload === "string" ? new TextEncoder().encode(rawPayload) : rawPayload;
    let answer: { json: string } | null;
    try {
      answer = await this.opts.router!.forward(owner, name, payload, FORWARD_TIMEOUT_MS);
    } catch (err) {
      this.counters.unavailable++;
      this.log.warn({ err, command: name, owner }, "the aggregate's owner did not answer a forwarded command; replying unavailable");
      return failure("unavailable", "the instance handling this aggregate did not answer in time; retry with the same command_id");
    }
    if (answer === null) {
      this.counters.forwardFallbacks++;
      return null;
    }
    try {
      return JSON.parse(answer.json) as Reply;
    } catch (err) {
      this.counters.internal++;
      this.log.error({ err, command: name, owner }, "the aggregate's owner answered a forwarded command with something other than JSON");
      return failure("internal", "internal error");
    }
  }

  /** A command appended (acknowledged): its reply, what the reply waits for, and the state after it. */
  private appended(
    aggregateId: string, commandId: string | null, payloadHash: string, previousVersion: number, previous: AggregateState | undefined,
    envelopes: EventEnvelope[], acks: PubAck[],
  ): { outcome: Outcome; own: OwnAppend; state: AggregateState | undefined } {
    const state = evolveAll(previous, envelopes);
    const seq = acks[acks.length - 1]!.seq;
    const reply: SuccessReply = {
      ok: true,
      aggregate_id: aggregateId,
      version: envelopes[envelopes.length - 1]!.version,
      events: envelopes.map((e, i) => ({ type: e.event_type, subject: aggregateSubject(aggregateId, e.event_type), seq: acks[i]!.seq })),
    };
    // Before the reply (outside the aggregate's queue): this instance's projection applying the event
    // (read-your-writes here). No idempotency record (the stored event, with its payload hash, answers a retry)
    // unless an older build may serve the stream: then the record too, concurrently, as 0.9.0 did.
    const projection = this.opts.projection;
    const record = commandId && this.successRecords() ? this.remember(commandId, { payload_sha256: payloadHash, reply }) : undefined;
    const projected = projection?.caughtUp ? projection.waitForSeq(seq, PROJECTION_WAIT_MS) : undefined;
    const settle = record ? Promise.all([record, projected]) : projected;
    const outcome: Outcome = { reply: { ...reply, recorded: true }, settle, afterReply: () => this.opts.store.maybeSnapshot(aggregateId, previousVersion, reply.version, () => state, seq) };
    return { outcome, own: { seq, commandId, payloadHash, reply }, state };
  }

  /**
   * One command per aggregate at a time on this instance (from its decision to its append's ack): the next one
   * decides against the state the previous one left instead of losing an append race to it.
   */
  private enqueue(aggregateId: string, fields: Omit<QueuedCommand, "finish">): Promise<Outcome> {
    return new Promise<Outcome>((resolve, reject) => {
      const job: QueuedCommand = { ...fields, finish: (outcome) => { outcome.then(resolve, reject); } };
      const queue = this.aggregateQueues.get(aggregateId);
      if (queue) {
        queue.push(job);
        return;
      }
      const fresh = [job];
      this.aggregateQueues.set(aggregateId, fresh);
      void this.drain(aggregateId, fresh);
    });
  }

  private async drain(aggregateId: string, queue: QueuedCommand[]): Promise<void> {
    while (queue.length > 0) {
      const job = queue.shift()!;
      const outcome = this.decideAndAppend(job);
      job.finish(outcome);
      await outcome.catch(() => undefined);
    }
    this.aggregateQueues.delete(aggregateId);
  }

  /**
   * The commands waiting behind this one on its aggregate that can share its append (one atomic batch, expectation
   * on the first message): taken from the front of the queue while each is decided, against the state the previous
   * one leaves, into at least one event, reads no other aggregate, and its command_id is provably not stored yet:
   * not in the projection's index (which covers the aggregate's events up to the expectation, see storedBefore), not
   * among the own appends ahead of it, not earlier in the group. The first one that does not qualify (a refusal, a
   * no-op, a possible retry) stops the group and runs on its own afterwards, through every check.
   */
  private takeFollowers(
    aggregateId: string, current: Current, afterHead: AggregateState | undefined, headEnvelopes: EventEnvelope[], headCommandId: string | null,
    oneEventEach: boolean,
  ): { job: QueuedCommand; envelopes: EventEnvelope[] }[] {
    const queue = this.aggregateQueues.get(aggregateId);
    const projection = this.opts.projection;
    const out: { job: QueuedCommand; envelopes: EventEnvelope[] }[] = [];
    if (!queue || !projection || !afterHead) return out;
    const ids = new Set<string>(headCommandId ? [headCommandId] : []);
    let state: AggregateState | undefined = afterHead;
    let version = headEnvelopes[headEnvelopes.length - 1]!.version;
    while (queue.length > 0 && out.length < MAX_GROUP - 1) {
      const job = queue[0]!;
      const { command, commandId, meta } = job;
      if (job.carried) break;
      if (commandId && (ids.has(commandId) || current.ownAppends.some((a) => a.commandId === commandId) || projection.commandSeqs(commandId))) break;
      if (referencedIds(command).some((id) => id !== aggregateId)) break;
      const now = job.now ?? (this.opts.clock ?? (() => new Date()))().toISOString();
      const decision = decide(state, command, { now, refs: new Map([[aggregateId, state]]) });
      if (!decision.ok || decision.events.length === 0) break;
      // A chain stores a prefix of its messages: a command of several events could be torn.
      if (oneEventEach && decision.events.length > 1) break;
      const route = COMMAND_ROUTES[command.name];
      const envelopes: EventEnvelope[] = decision.events.map((e, i) => ({
        event_id: uuidv7(), event_type: e.event_type, aggregate_type: route.aggregateType, aggregate_id: aggregateId,
        version: version + i + 1, occurred_at: now, command_id: meta.command_id, correlation_id: meta.correlation_id, causation_id: meta.command_id, data: e.data,
      }));
      queue.shift();
      for (const e of envelopes) this.watchedEventIds.set(e.event_id, 0);
      if (commandId) ids.add(commandId);
      out.push({ job, envelopes });
      state = evolveAll(state, envelopes);
      version += envelopes.length;
    }
    return out;
  }

  /**
   * A chained group append (groupAppends "chained"): the acks of the stored prefix. The followers after it are taken
   * out of `followers` and requeued (each looks for its event first: its ack may be what was lost). When not even
   * the head is known stored, all followers are requeued and the head goes on as a single append would: a wrong
   * expectation is thrown, a transient failure re-sends the head alone (same envelope, same Nats-Msg-Id).
   */
  private async appendChain(
    aggregateId: string, expectedLastSeq: number, toAppend: EventToAppend[], followers: { job: QueuedCommand; envelopes: EventEnvelope[] }[], deadline: number,
  ): Promise<PubAck[]> {
    const { acks, stoppedBy } = await this.opts.store.appendChained(aggregateId, expectedLastSeq, toAppend);
    const unstored = followers.splice(Math.max(0, acks.length - 1));
    if (unstored.length > 0) {
      this.counters.chainBreaks += acks.length > 0 && !acks[0]!.duplicate ? 1 : 0;
      this.requeue(aggregateId, unstored, expectedLastSeq);
    }
    if (acks.length > 0) return acks;
    if (!isTransient(stoppedBy)) throw stoppedBy;
    return this.retryTransient(() => this.opts.store.append(aggregateId, expectedLastSeq, toAppend.slice(0, 1), this.opts.atomicBatches), deadline);
  }

  /** Followers of a group append that failed: back to the front of the queue, each looking for its events first. */
  private requeue(aggregateId: string, followers: { job: QueuedCommand; envelopes: EventEnvelope[] }[], afterSeq: number): void {
    if (followers.length === 0) return;
    const queue = this.aggregateQueues.get(aggregateId)!;
    queue.unshift(...followers.map(({ job, envelopes }) => ({
      ...job, carried: { eventIds: [...(job.carried?.eventIds ?? []), ...envelopes.map((e) => e.event_id)], afterSeq },
    })));
  }

  /** The aggregate as this instance knows it: from the projection once it has caught up, else from the stream. */
  private async current(aggregateId: string, fromStream: boolean, deadline: number): Promise<Current> {
    const projection = this.opts.projection;
    if (projection && projection.caughtUp && !fromStream) {
      const known = projection.get(aggregateId);
      const ahead = this.ahead.get(aggregateId);
      // Own appends the projection has not applied yet, and no later event of another writer in the projection.
      if (ahead && (known?.seq ?? 0) < ahead.seq) {
        return { state: ahead.state, lastSeq: ahead.seq, version: ahead.state.version, source: "ahead", tail: [], snapshotSeq: 0, ownAppends: ahead.appends };
      }
      if (ahead) this.ahead.delete(aggregateId);
      return known
        ? { state: known.state, lastSeq: known.seq, version: known.state.version, source: "memory", tail: [], snapshotSeq: 0, ownAppends: [] }
        : { state: undefined, lastSeq: 0, version: 0, source: "memory", tail: [], snapshotSeq: 0, ownAppends: [] };
    }
    this.counters.streamLoads++;
    const loaded = await this.retryTransient(() => this.opts.store.load(aggregateId), deadline);
    return { state: loaded.state, lastSeq: loaded.lastSeq, version: loaded.version, source: "stream", tail: loaded.tail, snapshotSeq: loaded.snapshotSeq, ownAppends: [] };
  }

  private async referenced(refId: string, fromStream: boolean, deadline: number): Promise<AggregateState | undefined> {
    if (!fromStream) return this.opts.projection!.get(refId)?.state;
    return (await this.retryTransient(() => this.opts.store.load(refId), deadline)).state;
  }

  /**
   * Waits until the projection holds each aggregate's last event in the stream (asked of the stream leader); false
   * when it does not get there in time or could not apply one of them (then the stream is read instead).
   */
  private async fresh(ids: string[], deadline: number): Promise<boolean> {
    const projection = this.opts.projection!;
    const actual = await Promise.all(ids.map((id) => this.retryTransient(() => this.opts.store.lastSeqOf(id), deadline)));
    const wanted = Math.max(0, ...actual);
    if (!(await projection.waitForSeq(wanted, Math.min(PROJECTION_WAIT_MS, Math.max(0, deadline - Date.now()))))) return false;
    return ids.every((id, i) => (projection.get(id)?.seq ?? 0) >= actual[i]!);
  }

  /**
   * After a lost race decided against the projection at `afterSeq`: the stream holds a later event of the aggregate;
   * waits until the projection has applied one. False when that does not happen in time (the projection is stuck, or
   * could not apply the event): the next attempt reads the stream instead.
   */
  private catchUp(aggregateId: string, afterSeq: number, deadline: number): Promise<boolean> {
    if ((this.opts.projection!.get(aggregateId)?.seq ?? 0) > afterSeq) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      let waiters = this.aggregateWaiters.get(aggregateId);
      if (!waiters) this.aggregateWaiters.set(aggregateId, (waiters = new Set()));
      const waiter = {
        afterSeq,
        resolve: (ok: boolean) => {
          clearTimeout(timer);
          waiters.delete(waiter);
          if (waiters.size === 0) this.aggregateWaiters.delete(aggregateId);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => waiter.resolve(false), Math.min(PROJECTION_WAIT_MS, Math.max(0, deadline - Date.now())));
      waiters.add(waiter);
    });
  }

  /**
   * The events of this command already stored on the aggregate at seq ≤ current.lastSeq, if any; "elsewhere" when the
   * command_id was used on another aggregate. Sources, in order of cost:
   *   - the projection's command-id index, once the projection has applied every event up to current.lastSeq
   *     (window: docs/concurrency.md); for an "ahead" state, every event up to the projection's state it was built
   *     on (the events after it are this instance's own appends, checked by the caller);
   *   - otherwise every event of the aggregate up to current.lastSeq, read from the stream (never only those after a
   *     snapshot: a snapshot may cover the first attempt's event).
   * Without a command_id, only this execution's own publishes (a lost ack) are looked for.
   */
  private async storedBefore(
    aggregateId: string, commandId: string | null, attemptedEventIds: string[], current: Current, previousLastSeq: number | null, deadline: number,
  ): Promise<StoredEvent[] | "elsewhere" | null> {
    const projection = this.opts.projection;
    if (commandId) {
      if (projection && (current.source === "ahead" || projection.lastSeq >= current.lastSeq)) {
        const seqs = projection.commandSeqs(commandId);
        if (!seqs) return null;
        const events = await this.eventsAt(seqs, deadline);
        return events.some((e) => e.envelope.aggregate_id === aggregateId) ? events.filter((e) => e.envelope.aggregate_id === aggregateId) : "elsewhere";
      }
      if (current.lastSeq === 0) return null;
      const covered = current.source === "stream" && current.snapshotSeq > 0
        ? await this.retryTransient(() => this.opts.store.readEvents(aggregateId, 1, current.snapshotSeq), deadline)
        : [];
      const all = current.source === "stream"
        ? [...covered, ...current.tail]
        : await this.retryTransient(() => this.opts.store.readEvents(aggregateId, 1, current.lastSeq), deadline);
      const mine = all.filter((e) => e.envelope.command_id === commandId);
      return mine.length > 0 ? mine : null;
    }
    if (attemptedEventIds.length === 0 || previousLastSeq === null) return null;
    if (current.source !== "stream") {
      const seqs = attemptedEventIds.map((id) => this.watchedEventIds.get(id) ?? 0).filter((seq) => seq > 0);
      return seqs.length > 0 ? this.eventsAt(seqs, deadline) : null;
    }
    // Whatever beat us has seq > previousLastSeq; read it even if a snapshot now covers it.
    let recent = current.tail;
    if (current.snapshotSeq > previousLastSeq) {
      const from = previousLastSeq + 1;
      recent = [...(await this.retryTransient(() => this.opts.store.readEvents(aggregateId, from, current.snapshotSeq), deadline)), ...current.tail];
    }
    const mine = recent.filter((e) => attemptedEventIds.includes(e.envelope.event_id));
    return mine.length > 0 ? mine : null;
  }

  private async eventsAt(seqs: readonly number[], deadline: number): Promise<StoredEvent[]> {
    const events: StoredEvent[] = [];
    for (const seq of seqs) {
      // The event is known to be stored (the projection saw it, or the server acked it). A stream leader elected
      // moments ago can still answer "no message" for it (seen in scripts/faults after leader kills): ask again
      // until the command's deadline before calling it an internal error.
      let stored = await this.retryTransient(() => this.opts.store.eventAt(seq), deadline);
      for (let attempt = 0; !stored && Date.now() < deadline; attempt++) {
        await sleep(Math.min(backoffDelay(attempt, { initialMs: 50, maxMs: 500, jitter: 0.5 }), Math.max(0, deadline - Date.now())));
        stored = await this.retryTransient(() => this.opts.store.eventAt(seq), deadline);
      }
      if (!stored) throw new Error(`the projection saw an event at sequence ${seq}, but no message is stored there`);
      events.push(stored);
    }
    return events;
  }

  private async recall(commandId: string, deadline: number): Promise<IdempotencyRecord | null> {
    const lookup = this.opts.recordLookup ?? this.opts.commands;
    const entry = await this.retryTransient(() => lookup.get(commandId), deadline);
    if (!entry || entry.operation !== "PUT" || entry.length === 0) return null;
    try {
      const record = entry.json<IdempotencyRecord>();
      return record && typeof record.payload_sha256 === "string" && record.reply && typeof record.reply.ok === "boolean" ? record : null;
    } catch {
      this.log.warn({ command_id: commandId }, "unreadable idempotency record ignored");
      return null;
    }
  }

  private successRecords(): boolean {
    return this.opts.successRecords?.() ?? false;
  }

  /**
   * The original reply of a stored command, for a retry with the same payload. Marked as needing no record, unless
   * an older build may serve the stream and the events are known to be this payload's (`verified`): then the retry
   * writes the record a first attempt stored without.
   */
  private replayed(reply: SuccessReply, verified: boolean): SuccessReply & { recorded?: true } {
    return verified && this.successRecords() ? reply : { ...reply, recorded: true };
  }

  private async remember(commandId: string, record: IdempotencyRecord): Promise<void> {
    try {
      await this.opts.commands.put(commandId, JSON.stringify(record));
    } catch (err) {
      // Not fatal: a stored command is recognised by its events; a refusal is then decided again on retry.
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

function evolveAll(state: AggregateState | undefined, envelopes: EventEnvelope[]): AggregateState | undefined {
  for (const e of envelopes) state = evolve(state, e);
  return state;
}

/**
 * Whether these stored events of a command_id were stored for another payload than `payloadHash`. Events without the
 * hash header (earlier releases) do not tell: their writer kept an idempotency record, which was consulted first.
 */
function reusedFor(events: StoredEvent[], payloadHash: string): boolean {
  return events.some((e) => typeof e.commandHash === "string" && e.commandHash !== payloadHash);
}

/** Whether every one of these stored events carries `payloadHash` (stored for this very payload, by this build). */
function storedFor(events: StoredEvent[], payloadHash: string): boolean {
  return events.length > 0 && events.every((e) => e.commandHash === payloadHash);
}

function reusedFailure(commandId: string): Reply {
  return failure("conflict", `command_id ${commandId} was already used for a different payload`);
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

/** Drops the internal "already remembered" mark before a reply leaves the handler. */
function withoutMark(reply: Reply & { recorded?: true }): Reply {
  if (!reply.recorded) return reply;
  const { recorded: _recorded, ...rest } = reply;
  return rest as Reply;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

