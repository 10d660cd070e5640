// In-memory read model of every aggregate, fed by an ordered consumer on the event stream.
// Every instance reads the same stream from the start, so all instances converge on the same state
// without coordinating; the stream is the only source of truth.
import type { JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import { evolve, type AggregateState, type EventEnvelope } from "../../domain/index.js";
import { omitNullFields, StateCompactor, withNullFields } from "../../support/compact-state.js";
import { decodeCheckpoint, encodeCheckpoint, encodeCheckpointInSlices, writeCheckpointFile, type CheckpointBody, type CheckpointHeader } from "../../support/checkpoint-file.js";
import { StreamFollower, type FollowerLogger } from "./stream-follower.js";
import { readFile } from "node:fs/promises";

export const EVENT_SUBJECT_FILTER = "events.policy.>";
/**
 * Messages the consumer keeps requested ahead. With the client's default (100, a new pull every 25 messages) 18 % of
 * a replay's CPU went to socket writes of pull requests (docs/performance.md). More ahead means more bytes in flight
 * on the consumer's connection: runtime.ts gives the projection a connection of its own, so commands do not wait
 * behind them.
 */
export const PROJECTION_PULL_BATCH = 2048;
/** While catching up, the loop yields to the event loop after this many events, so requests are not starved. */
const CATCH_UP_YIELD_EVERY = 500;

export interface ProjectionLogger extends FollowerLogger {
  debug(obj: object, msg?: string): void;
}

export interface ProjectedAggregate {
  /** Stored (see the class comment) where the projection holds it; full where get() hands it out. */
  state: AggregateState;
  /** Stream sequence of the aggregate's last applied event. */
  seq: number;
}

type Listener = (state: AggregateState, event: EventEnvelope, seq: number) => void;

export interface ProjectionOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  streamName: string;
  logger: ProjectionLogger;
  /**
   * How long (ms, by the event's occurred_at) the command-id index keeps an event: the idempotency window
   * of docs/concurrency.md. 0 keeps nothing.
   */
  commandWindowMs?: number;
  now?: () => number;
  /**
   * The read-model checkpoint (docs/operations.md): where the state is written at shutdown and now and then, and
   * read at start. `build` is this build's version: a checkpoint written by another build is never used.
   */
  checkpoint?: { path: string; build: string };
}

/** Why a checkpoint is written: every READ_MODEL_CHECKPOINT_INTERVAL_S while running, or at a graceful stop. */
export type CheckpointWriteReason = "periodic" | "shutdown";

/** Why a checkpoint was not used at start (logged with the reason in words); "used" when it was. */
export type CheckpointOutcome =
  | "used"
  | "checkpoint_off"
  | "checkpoint_absent"
  | "checkpoint_unreadable"
  | "checkpoint_truncated"
  | "checkpoint_checksum_mismatch"
  | "checkpoint_format_mismatch"
  | "checkpoint_build_mismatch"
  | "checkpoint_other_stream"
  | "checkpoint_stream_recreated"
  | "checkpoint_stream_trimmed"
  | "checkpoint_window_shorter"
  | "checkpoint_event_gone"
  | "checkpoint_event_differs";

/** Reads a field of a domain state without binding this module to every state shape. */
export function stateField(state: AggregateState | undefined, name: string): unknown {
  return state === undefined ? undefined : (state as unknown as Record<string, unknown>)[name];
}

export function stateString(state: AggregateState | undefined, name: string): string | undefined {
  const value = stateField(state, name);
  return typeof value === "string" ? value : undefined;
}

/**
 * States are held in their stored form (support/compact-state.ts, omitNullFields): every field reads as in the full
 * state, but null fields are no own properties. getState(), all(), ofType() and the lists hand out stored states, for
 * reading fields (queries' filters, evaluation, expiry, metrics); whatever serialises, spreads or decides on one takes
 * withNullFields() of it first (queries' replies, the checkpoint's encoding). get() (the command path) and the event
 * listeners receive full states.
 */
export class Projection {
  private readonly aggregates = new Map<string, ProjectedAggregate>();
  private readonly exemptionIdsByPolicy = new Map<string, Set<string>>();
  private readonly listeners = new Set<Listener>();
  private readonly compactor = new StateCompactor();
  private readonly seqWaiters = new Set<{ seq: number; resolve: () => void }>();
  private appliedSeq = 0;
  /** Events applied from the stream since start (not those restored from a checkpoint): what the catch-up replayed. */
  private appliedSinceStart = 0;
  private targetSeq = 0;
  private readyResolve: (() => void) | undefined;
  private readonly readyPromise: Promise<void>;
  private isCaughtUp = false;
  /** Follows the stream; its consumer is recreated when its server goes silent (stream-follower.ts). */
  private readonly follower: StreamFollower;
  private sinceYield = 0;

  /** command_id → stream sequences of the events that carry it (only events within the window). */
  private readonly commandIndex = new Map<string, number[]>();
  /** The indexed command ids in stream order, for eviction by age. */
  private readonly commandAges: { atMs: number; commandId: string; seq: number }[] = [];
  private commandAgesHead = 0;

  private readonly deps: ProjectionOptions;
  /** What start() did with the checkpoint. */
  checkpointOutcome: CheckpointOutcome = "checkpoint_off";
  private streamCreated = "";
  /** The stream's first sequence as this read model knows it: at its start, or its first event on an empty stream. */
  private streamFirstSeq = 0;
  private lastEventId: string | null = null;
  private checkpointedSeq = 0;
  private checkpointWrite: Promise<number> = Promise.resolve(0);

  constructor(deps: ProjectionOptions) {
    this.deps = deps;
    this.follower = new StreamFollower({
      js: deps.js,
      streamName: deps.streamName,
      filterSubject: EVENT_SUBJECT_FILTER,
      name: "projection",
      logger: deps.logger,
      pullBatch: PROJECTION_PULL_BATCH,
      onMessage: (msg) => this.onMessage(msg),
    });
    this.readyPromise = new Promise<void>((resolve) => {
      this.readyResolve = resolve;
    });
  }

  /** Starts following the stream; resolves once the consumer exists (use ready() to wait for catch-up). */
  async start(): Promise<void> {
    const info = await this.deps.jsm.streams.info(this.deps.streamName);
    this.targetSeq = info.state.last_seq;
    this.streamCreated = info.created;
    if (info.state.messages > 0) this.streamFirstSeq = info.state.first_seq;
    const fromSeq = await this.loadCheckpoint();
    if (info.state.messages === 0 || this.targetSeq === 0 || (fromSeq > 0 && this.appliedSeq >= this.targetSeq)) this.markReady();
    await this.follower.start(fromSeq);
  }

  private onMessage(msg: JsMsg): Promise<void> | undefined {
    this.apply(msg);
    if (this.isCaughtUp) return undefined;
    if (msg.seq >= this.targetSeq || msg.info.pending === 0) this.markReady();
    else if (++this.sinceYield >= CATCH_UP_YIELD_EVERY) {
      this.sinceYield = 0;
      return new Promise((resolve) => setImmediate(resolve));
    }
    return undefined;
  }

  /** Resolves when the projection has applied everything that was in the stream when it started. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  get caughtUp(): boolean {
    return this.isCaughtUp;
  }

  /** Consumers recreated since start because the one before went silent (stream-follower.ts). */
  get consumerRecreations(): number {
    return this.follower.consumerRecreations;
  }

  /** Stream sequence of the last event applied. */
  get lastSeq(): number {
    return this.appliedSeq;
  }

  /** Waits until the event with this stream sequence has been applied (read-your-writes). */
  waitForSeq(seq: number, timeoutMs: number): Promise<boolean> {
    if (this.appliedSeq >= seq) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const waiter = {
        seq,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer = setTimeout(() => {
        this.seqWaiters.delete(waiter);
        resolve(false);
      }, timeoutMs);
      this.seqWaiters.add(waiter);
    });
  }

  /**
   * Stream sequences of the events that carry `commandId`, among every event applied so far (lastSeq) whose
   * occurred_at lies within the command window; undefined when none.
   */
  commandSeqs(commandId: string): readonly number[] | undefined {
    this.evictCommands();
    return this.commandIndex.get(commandId);
  }

  get indexedCommands(): number {
    return this.commandIndex.size;
  }

  onEvent(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The aggregate with its full state (what decide and evolve are given). */
  get(id: string): ProjectedAggregate | undefined {
    const entry = this.aggregates.get(id);
    if (entry === undefined) return undefined;
    const state = withNullFields(entry.state);
    return state === entry.state ? entry : { state, seq: entry.seq };
  }

  /** The stored state: read its fields; withNullFields() before serialising or copying it. */
  getState(id: string): AggregateState | undefined {
    return this.aggregates.get(id)?.state;
  }

  all(): IterableIterator<ProjectedAggregate> {
    return this.aggregates.values();
  }

  ofType(aggregateType: AggregateState["aggregate_type"]): AggregateState[] {
    const out: AggregateState[] = [];
    for (const { state } of this.aggregates.values()) if (state.aggregate_type === aggregateType) out.push(state);
    return out;
  }

  policies(): AggregateState[] {
    return this.ofType("Policy");
  }

  sets(): AggregateState[] {
    return this.ofType("PolicySet");
  }

  exemptions(): AggregateState[] {
    return this.ofType("PolicyExemption");
  }

  exemptionsForPolicy(policyId: string): AggregateState[] {
    const ids = this.exemptionIdsByPolicy.get(policyId);
    if (!ids) return [];
    const out: AggregateState[] = [];
    for (const id of ids) {
      const state = this.aggregates.get(id)?.state;
      if (state) out.push(state);
    }
    return out;
  }

  async stop(): Promise<void> {
    await this.follower.stop();
    for (const waiter of this.seqWaiters) waiter.resolve();
    this.seqWaiters.clear();
  }

  /**
   * Restores the state from the checkpoint when it is this stream's, this build's, intact, and the event it ends at
   * is still in the stream with the same event_id; returns the sequence to resume at, 0 for a full replay.
   * Nothing of the checkpoint is applied unless every check passed.
   */
  private async loadCheckpoint(): Promise<number> {
    const options = this.deps.checkpoint;
    if (!options) return 0;
    const reject = (outcome: CheckpointOutcome, reason: string): number => {
      this.checkpointOutcome = outcome;
      const log = outcome === "checkpoint_absent" ? this.deps.logger.info : this.deps.logger.warn;
      log.call(this.deps.logger, { code: outcome, path: options.path, reason }, "read-model checkpoint not used: full replay");
      return 0;
    };
    let text: string;
    try {
      text = await readFile(options.path, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return reject("checkpoint_absent", "no checkpoint file (first start, or it was deleted)");
      return reject("checkpoint_unreadable", `cannot read the file (${code ?? String(err)})`);
    }
    const decoded = decodeCheckpoint(text, options.build);
    if (!decoded.ok) return reject(decoded.code, decoded.reason);
    const { header, body } = decoded.checkpoint;
    if (header.stream !== this.deps.streamName) {
      return reject("checkpoint_other_stream", `written for stream ${header.stream}, this instance reads ${this.deps.streamName}`);
    }
    if (header.streamCreated !== this.streamCreated) {
      return reject("checkpoint_stream_recreated", `stream created ${header.streamCreated} in the checkpoint, ${this.streamCreated} now: another stream of the same name`);
    }
    if (this.streamFirstSeq > header.firstSeq) {
      return reject("checkpoint_stream_trimmed", `the stream's first sequence was ${header.firstSeq} in the checkpoint and is ${this.streamFirstSeq} now: events were removed since (a purge, or the stream's max_age), and a full replay shows the stream as it is`);
    }
    const windowMs = this.deps.commandWindowMs ?? 0;
    if (header.commandWindowMs < windowMs) {
      return reject("checkpoint_window_shorter", `written with a command-id window of ${header.commandWindowMs} ms, this instance keeps ${windowMs} ms: its index may lack retries the longer window must recognise`);
    }
    let storedId: string | null | undefined;
    try {
      const stored = await this.deps.jsm.streams.getMessage(this.deps.streamName, { seq: header.seq });
      if (stored) {
        try {
          storedId = stored.json<EventEnvelope>().event_id ?? null;
        } catch {
          storedId = null;
        }
      }
    } catch (err) {
      // A missing message is an error of the direct get (10037), not a null.
      storedId = undefined;
      this.deps.logger.debug({ err, seq: header.seq }, "checkpoint: get of the event at its sequence failed");
    }
    if (storedId === undefined) return reject("checkpoint_event_gone", `the event at sequence ${header.seq} is no longer in the stream`);
    if (storedId !== header.eventId) {
      return reject("checkpoint_event_differs", `the event at sequence ${header.seq} is ${storedId}, the checkpoint recorded ${header.eventId}`);
    }
    this.restore(body, header.seq, header.eventId, header.firstSeq);
    this.checkpointOutcome = "used";
    this.deps.logger.info({ path: options.path, seq: header.seq, aggregates: this.aggregates.size, commands: this.commandIndex.size }, "read-model checkpoint used: replay from the next sequence");
    return header.seq + 1;
  }

  private restore(body: CheckpointBody, seq: number, eventId: string | null, firstSeq: number): void {
    for (const [id, aggregateSeq, rawState] of body.aggregates) {
      const state = omitNullFields(this.compactor.compact(rawState as AggregateState, undefined));
      this.aggregates.set(id, { state, seq: aggregateSeq });
      this.indexExemption(id, state);
    }
    // The same rule as while applying: entries older than the window now are not indexed.
    for (const [atMs, commandId, commandSeq] of body.commands) this.indexCommandAt(commandId, atMs, commandSeq);
    this.evictCommands();
    this.appliedSeq = seq;
    this.lastEventId = eventId;
    this.checkpointedSeq = seq;
    this.streamFirstSeq = firstSeq;
  }

  /**
   * The state as a checkpoint file's content, or undefined when there is nothing new to write. A projection still
   * catching up has a valid state too: that of the stream up to lastSeq.
   */
  checkpointContent(): string | undefined {
    const captured = this.captureCheckpoint();
    return captured && encodeCheckpoint(captured.header, captured.body);
  }

  /**
   * What a checkpoint holds, captured synchronously (states are replaced, never mutated: the references suffice). The
   * states are stored ones: the encoding writes each with its null fields (withNullFields), the file is as before.
   */
  private captureCheckpoint(): { header: Omit<CheckpointHeader, "sha256" | "format">; body: CheckpointBody } | undefined {
    const options = this.deps.checkpoint;
    if (!options || this.appliedSeq === 0 || this.appliedSeq === this.checkpointedSeq || this.streamCreated === "") return undefined;
    const aggregates: CheckpointBody["aggregates"] = [];
    for (const [id, { state, seq }] of this.aggregates) aggregates.push([id, seq, state]);
    this.evictCommands();
    const commands: CheckpointBody["commands"] = [];
    for (let i = this.commandAgesHead; i < this.commandAges.length; i++) {
      const entry = this.commandAges[i]!;
      if (this.commandIndex.get(entry.commandId)?.includes(entry.seq)) commands.push([entry.atMs, entry.commandId, entry.seq]);
    }
    return {
      header: { build: options.build, stream: this.deps.streamName, streamCreated: this.streamCreated, firstSeq: this.streamFirstSeq, commandWindowMs: this.deps.commandWindowMs ?? 0, seq: this.appliedSeq, eventId: this.lastEventId },
      body: { aggregates, commands },
    };
  }

  /**
   * Writes the checkpoint (atomically) when there is something new; returns the sequence written, or 0. Serialised in
   * slices with turns of the event loop between them: the longest synchronous stretch is logged as pause_ms.
   * `reason` (why it is written: the periodic timer or the graceful stop) is logged with it.
   */
  writeCheckpoint(reason: CheckpointWriteReason): Promise<number> {
    // One write at a time (the periodic one and the one at shutdown share the temporary file's name).
    const next = this.checkpointWrite.then(() => this.writeCheckpointNow(reason), () => this.writeCheckpointNow(reason));
    this.checkpointWrite = next.catch(() => 0);
    return next;
  }

  private async writeCheckpointNow(reason: CheckpointWriteReason): Promise<number> {
    const options = this.deps.checkpoint;
    const started = performance.now();
    const captured = this.captureCheckpoint();
    const captureMs = performance.now() - started;
    if (!options || captured === undefined) return 0;
    const { parts, longestSliceMs } = await encodeCheckpointInSlices(captured.header, captured.body);
    await writeCheckpointFile(options.path, parts);
    const seq = captured.header.seq;
    this.checkpointedSeq = Math.max(this.checkpointedSeq, seq);
    const bytes = parts.reduce((n, part) => n + Buffer.byteLength(part), 0);
    this.deps.logger.info({
      reason, path: options.path, seq, aggregates: captured.body.aggregates.length, bytes,
      pause_ms: +Math.max(captureMs, longestSliceMs).toFixed(1), capture_ms: +captureMs.toFixed(1), ms: +(performance.now() - started).toFixed(1),
    }, "read-model checkpoint written");
    return seq;
  }

  private markReady(): void {
    if (this.isCaughtUp) return;
    this.isCaughtUp = true;
    this.deps.logger.info({ seq: this.appliedSeq, aggregates: this.aggregates.size, replayed: this.appliedSinceStart }, "projection caught up");
    this.readyResolve?.();
  }

  private apply(msg: JsMsg): void {
    this.appliedSeq = msg.seq;
    this.appliedSinceStart++;
    if (this.streamFirstSeq === 0) this.streamFirstSeq = msg.seq;
    this.lastEventId = null;
    let event: EventEnvelope;
    try {
      event = msg.json<EventEnvelope>();
      this.lastEventId = typeof event.event_id === "string" ? event.event_id : null;
    } catch (err) {
      this.deps.logger.warn({ err, seq: msg.seq, subject: msg.subject }, "projection skipped an unreadable event");
      this.releaseWaiters();
      return;
    }
    if (typeof event.command_id === "string") this.indexCommand(event.command_id, event.occurred_at, msg.seq);
    const previous = this.aggregates.get(event.aggregate_id)?.state;
    try {
      const full = this.compactor.compact(evolve(previous === undefined ? undefined : withNullFields(previous), event), previous);
      const state = omitNullFields(full, previous);
      this.aggregates.set(event.aggregate_id, { state, seq: msg.seq });
      this.indexExemption(event.aggregate_id, state);
      for (const listener of this.listeners) {
        try {
          listener(full, event, msg.seq);
        } catch (err) {
          this.deps.logger.error({ err }, "projection listener failed");
        }
      }
    } catch (err) {
      this.deps.logger.warn({ err, seq: msg.seq, subject: msg.subject }, "projection could not apply an event");
    }
    this.releaseWaiters();
  }

  private indexExemption(id: string, state: AggregateState): void {
    if (state.aggregate_type !== "PolicyExemption") return;
    const policyId = stateString(state, "policy_id");
    if (!policyId) return;
    let ids = this.exemptionIdsByPolicy.get(policyId);
    if (!ids) this.exemptionIdsByPolicy.set(policyId, (ids = new Set()));
    ids.add(id);
  }

  private indexCommand(commandId: string, occurredAt: string, seq: number): void {
    this.indexCommandAt(commandId, Date.parse(occurredAt), seq);
  }

  private indexCommandAt(commandId: string, atMs: number, seq: number): void {
    const windowMs = this.deps.commandWindowMs ?? 0;
    const nowMs = (this.deps.now ?? Date.now)();
    // Older than the window (or unparseable): outside the documented guarantee, not worth the memory.
    if (!(atMs >= nowMs - windowMs)) return;
    const seqs = this.commandIndex.get(commandId);
    if (seqs) seqs.push(seq);
    else this.commandIndex.set(commandId, [seq]);
    this.commandAges.push({ atMs, commandId, seq });
    if ((this.commandAges.length & 1023) === 0) this.evictCommands();
  }

  /** Drops index entries older than the window (in stream order; clocks of other instances may differ a little). */
  private evictCommands(): void {
    const horizon = (this.deps.now ?? Date.now)() - (this.deps.commandWindowMs ?? 0);
    const ages = this.commandAges;
    while (this.commandAgesHead < ages.length && ages[this.commandAgesHead]!.atMs < horizon) {
      this.commandIndex.delete(ages[this.commandAgesHead]!.commandId);
      this.commandAgesHead++;
    }
    if (this.commandAgesHead > 4096 && this.commandAgesHead * 2 > ages.length) {
      ages.splice(0, this.commandAgesHead);
      this.commandAgesHead = 0;
    }
  }

  private releaseWaiters(): void {
    for (const waiter of this.seqWaiters) {
      if (waiter.seq <= this.appliedSeq) {
        this.seqWaiters.delete(waiter);
        waiter.resolve();
      }
    }
  }
}
