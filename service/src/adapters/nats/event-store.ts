// The event store on one JetStream stream: each aggregate's events live on `events.policy.<id>.<event_type>`.
//
// Loading ALWAYS terminates: the aggregate's last stream sequence is looked up first (STREAM.MSG.GET with
// last_by_subj on the stream leader: read-after-write), then exactly the events up to that sequence are read
// (direct-get batches; a replica that lags is retried, then the rest is read from the stream leader). The read
// side's history queries read the same way (AggregateReader).
// Appending carries the per-aggregate optimistic-concurrency check: the expected stream sequence of the
// aggregate's last event, matched against every subject `events.policy.<id>.*` (nats-server ≥ 2.11).
import { DeliverPolicy, JetStreamApiError, JetStreamError, type JetStreamClient, type JetStreamManager, type PubAck, type StoredMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { headers, nuid, TimeoutError, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { z } from "zod";
import { evolve, type AggregateState, type EventEnvelope } from "../../domain/index.js";
import type { Logger } from "../../support/logger.js";
import { sleep } from "../../support/backoff.js";
import { batchedRequest, batchedWrite } from "./write-batch.js";

// Snapshots carry the domain's schema version: one of another shape is ignored (full replay).
export { SNAPSHOT_SCHEMA_VERSION } from "../../domain/index.js";
import { SNAPSHOT_SCHEMA_VERSION } from "../../domain/index.js";

export function aggregateSubject(aggregateId: string, eventType: string): string {
  return `events.policy.${aggregateId}.${eventType}`;
}
export function aggregateFilter(aggregateId: string): string {
  return `events.policy.${aggregateId}.*`;
}

/**
 * Header on an event stored for a command with a command_id: the sha256 of the command's canonical payload, so a
 * retry is told apart from a reuse of the command_id for another payload without an idempotency record. A header, not
 * an envelope field: the envelope is the durable contract. Events of earlier releases have none (their writer kept a
 * record in the COMMANDS bucket instead).
 */
export const COMMAND_HASH_HEADER = "Policy-Command-Sha256";

export interface StoredEvent {
  seq: number;
  subject: string;
  envelope: EventEnvelope;
  /** The COMMAND_HASH_HEADER of the stored message; null or absent when it has none (no command_id, an earlier release). */
  commandHash?: string | null;
}

/** One event to append: its Nats-Msg-Id ("" for none) and, for a command with a command_id, its payload hash. */
export interface EventToAppend { envelope: EventEnvelope; msgId: string; commandHash?: string }

export interface LoadedAggregate {
  aggregateId: string;
  state: AggregateState | undefined;
  /** Stream sequence of the aggregate's last event (0 = no events): the expectation for the next append. */
  lastSeq: number;
  version: number;
  snapshotSeq: number;
  /** Events read from the stream (after the snapshot, if one was used). */
  eventsRead: number;
  /** Those events themselves (callers look for their own command's events in them, see commands.ts). */
  tail: StoredEvent[];
}

export class ConcurrencyError extends Error {
  readonly expectedLastSeq: number;
  constructor(aggregateId: string, expectedLastSeq: number, cause: unknown) {
    super(`aggregate ${aggregateId} changed since sequence ${expectedLastSeq}`, { cause });
    this.name = "ConcurrencyError";
    this.expectedLastSeq = expectedLastSeq;
  }
}

/** Direct reads of one range before the rest is read from the stream leader (each goes to any replica). */
const DIRECT_READ_ATTEMPTS = 3;

/** How long one direct-get batch may take before the read counts as incomplete (a replica that does not answer). */
const DIRECT_GET_DEADLINE_MS = 1500;

/** A direct get's 404 status ("message not found"; the library's own isMessageNotFound covers API errors only). */
function isDirectGetNotFound(err: unknown): boolean {
  return err instanceof JetStreamError && (err as { code?: unknown }).code === 404;
}

/** Wrong last (subject) sequence: 10071 (classic) and 10164 (≥ 2.11, clustered in-flight check). */
export function isConcurrencyFailure(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === 10071 || err.code === 10164);
}

const snapshotSchema = z.object({
  schema_version: z.number().int(),
  aggregate_id: z.string(),
  version: z.number().int().positive(),
  seq: z.number().int().positive(),
  state: z.record(z.string(), z.unknown()),
});
export type Snapshot = z.infer<typeof snapshotSchema>;

const envelopeShape = z.object({
  event_id: z.string(),
  event_type: z.string(),
  aggregate_type: z.string(),
  aggregate_id: z.string(),
  version: z.number().int().positive(),
  occurred_at: z.string(),
  data: z.record(z.string(), z.unknown()),
}).loose();

/** What reading an aggregate's events takes: a JetStream client and manager on one connection, the stream, a logger. */
export interface AggregateReaderOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  streamName: string;
  logger: Logger;
  /** Read path: "direct" (direct-get batches, default) or "consumer" (ordered consumer, for comparison). */
  readMode?: "direct" | "consumer";
}

/**
 * Reads one aggregate's events, in the common case without creating a consumer: in a cluster every consumer
 * created is a proposal through the JetStream meta leader that every node applies, whereas direct gets are answered
 * by a replica of the stream (the node's own, if it has one). The command path's loads and the read side's history
 * queries share it.
 */
export class AggregateReader {
  private readonly opts: AggregateReaderOptions;

  constructor(opts: AggregateReaderOptions) {
    this.opts = opts;
  }

  /** Stream sequence of the aggregate's last event, from the stream leader; 0 when it has none. */
  async lastSeqOf(aggregateId: string): Promise<number> {
    const msg = await this.opts.jsm.streams.getMessage(this.opts.streamName, { last_by_subj: aggregateFilter(aggregateId) });
    return msg ? msg.seq : 0;
  }

  /** Every event of the aggregate up to its last one on the stream leader, in order; [] when it has none. */
  async history(aggregateId: string): Promise<StoredEvent[]> {
    const lastSeq = await this.lastSeqOf(aggregateId);
    return lastSeq === 0 ? [] : this.readEvents(aggregateId, 1, lastSeq);
  }

  /** The aggregate's events with fromSeq ≤ seq ≤ toSeq, in order; throws if the range cannot be read completely. */
  async readEvents(aggregateId: string, fromSeq: number, toSeq: number): Promise<StoredEvent[]> {
    if (fromSeq > toSeq) return [];
    if (this.opts.readMode === "consumer") return this.readWithConsumer(aggregateId, fromSeq, toSeq);
    // Direct gets are answered by any replica, which may not have applied toSeq yet (a replica that fell behind keeps
    // answering): retry briefly, then read what is still missing from the stream leader, which has it; at once when
    // the replica did not answer at all.
    let longest: StoredEvent[] = [];
    for (let attempt = 0; attempt < DIRECT_READ_ATTEMPTS; attempt++) {
      const { events, silent } = await this.readDirect(aggregateId, fromSeq, toSeq);
      if (events.length > 0 && events[events.length - 1]!.seq === toSeq) return events;
      // What a replica has is a prefix of the leader's (one raft log).
      if (events.length > longest.length) longest = events;
      this.opts.logger.debug({ aggregate_id: aggregateId, to_seq: toSeq, got: events.at(-1)?.seq ?? 0, attempt, silent }, "direct read incomplete; retrying");
      // A silent replica has already cost DIRECT_GET_DEADLINE_MS; another try may go to it again.
      if (silent) break;
      if (attempt + 1 < DIRECT_READ_ATTEMPTS) await sleep(20 * (attempt + 1));
    }
    const from = longest.length > 0 ? longest[longest.length - 1]!.seq + 1 : fromSeq;
    const rest = await this.readFromLeader(aggregateId, from, toSeq);
    this.opts.logger.debug({ aggregate_id: aggregateId, to_seq: toSeq, from_replicas: longest.length, from_leader: rest.length }, "direct read completed from the stream leader");
    return longest.concat(rest);
  }

  /**
   * The aggregate's events from fromSeq to toSeq, one STREAM.MSG.GET (next_by_subj) each, answered by the stream
   * leader: slower than direct-get batches, but never behind. Only for what the replicas did not have.
   */
  private async readFromLeader(aggregateId: string, fromSeq: number, toSeq: number): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    for (let next = fromSeq; next <= toSeq;) {
      const query = { seq: next, next_by_subj: aggregateFilter(aggregateId) };
      const msg = await this.opts.jsm.streams.getMessage(this.opts.streamName, query);
      if (msg === null || msg.seq > toSeq) break;
      out.push(toStoredEvent(msg));
      next = msg.seq + 1;
    }
    if (out.at(-1)?.seq !== toSeq) throw new Error(`events of ${aggregateId} up to sequence ${toSeq} are not on the stream leader (the stream was purged or recreated?)`);
    return out;
  }

  /** The events a replica gave; `silent` when it stopped answering (DIRECT_GET_DEADLINE_MS). */
  private async readDirect(aggregateId: string, fromSeq: number, toSeq: number): Promise<{ events: StoredEvent[]; silent: boolean }> {
    let silent = false;
    const out: StoredEvent[] = [];
    let next = fromSeq;
    while (next <= toSeq) {
      const batch = Math.min(1000, toSeq - next + 1);
      const iter = await this.opts.jsm.direct.getBatch(this.opts.streamName, { seq: next, batch, next_by_subj: aggregateFilter(aggregateId) });
      let got = 0;
      let done = false;
      // The library waits 5 s for a replica that does not answer (a stalled one): a client's own request (5 s by
      // default) would time out before the read is tried again.
      const deadline = setTimeout(() => iter.stop(new TimeoutError()), DIRECT_GET_DEADLINE_MS);
      try {
        for await (const msg of iter) {
          got++;
          if (msg.seq > toSeq) { done = true; break; }
          out.push(toStoredEvent(msg));
          next = msg.seq + 1;
          if (msg.seq === toSeq) { done = true; break; }
        }
      } catch (err) {
        // A replica that has none of the aggregate's events from `next` on (it has not applied them yet) answers 404
        // "message not found"; one that is stalled does not answer (DIRECT_GET_DEADLINE_MS). Either way the read is
        // incomplete: readEvents asks again, or (silent) asks the stream leader. Before, both failed the read
        // (cluster.test.ts, "history reads while a replica is starved of CPU": `internal` replies).
        if (err instanceof TimeoutError) silent = true;
        else if (!isDirectGetNotFound(err)) throw err;
      } finally {
        clearTimeout(deadline);
      }
      iter.stop();
      if (done || got === 0 || silent) break;
    }
    return { events: out, silent };
  }

  private async readWithConsumer(aggregateId: string, fromSeq: number, toSeq: number): Promise<StoredEvent[]> {
    const consumer = await this.opts.js.consumers.get(this.opts.streamName, {
      filter_subjects: [aggregateFilter(aggregateId)],
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: fromSeq,
    });
    const out: StoredEvent[] = [];
    try {
      while (true) {
        const iter = await consumer.fetch({ max_messages: 1000, expires: 2000 });
        let got = 0;
        for await (const m of iter) {
          got++;
          if (m.seq > toSeq) { iter.stop(); return out; }
          out.push({ seq: m.seq, subject: m.subject, envelope: parseEnvelope(m.data, m.seq), commandHash: commandHashOf(m.headers) });
          if (m.seq === toSeq) { iter.stop(); return out; }
        }
        if (got === 0) throw new Error(`events of ${aggregateId} up to sequence ${toSeq} are not readable (stream leader lagging?)`);
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
  }
}

export interface EventStoreOptions extends AggregateReaderOptions {
  snapshots: KV;
  snapshotFrequency: number;
  /**
   * The connection of `js`: an atomic batch is written on it in one round trip (its messages before the commit are
   * sent without waiting for an answer; the server answers the commit, also with a failed expectation). Not the
   * client library's batch publisher: it waits for the first message too, and it reports a failed expectation as
   * "batch didn't contain number of published messages", not as the conflict it is (batch-expectation.test.ts).
   */
  nc: NatsConnection;
}

export class EventStore {
  private readonly opts: EventStoreOptions;
  private readonly log: Logger;
  private readonly pendingSnapshots = new Set<Promise<void>>();
  private readonly reader: AggregateReader;

  constructor(opts: EventStoreOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.reader = new AggregateReader(opts);
  }

  get streamName(): string { return this.opts.streamName; }

  /** Stream sequence of the aggregate's last event, from the stream leader; 0 when it has none. */
  lastSeqOf(aggregateId: string): Promise<number> { return this.reader.lastSeqOf(aggregateId); }

  /** One stored message by sequence, from the leader (used to answer a duplicate command with its original outcome). */
  async eventAt(seq: number): Promise<StoredEvent | null> {
    const msg = await this.opts.jsm.streams.getMessage(this.opts.streamName, { seq });
    return msg ? toStoredEvent(msg) : null;
  }

  async load(aggregateId: string): Promise<LoadedAggregate> {
    const lastSeq = await this.lastSeqOf(aggregateId);
    if (lastSeq === 0) return { aggregateId, state: undefined, lastSeq: 0, version: 0, snapshotSeq: 0, eventsRead: 0, tail: [] };
    const snapshot = await this.readSnapshot(aggregateId, lastSeq);
    if (snapshot) {
      const events = await this.readEvents(aggregateId, snapshot.seq + 1, lastSeq);
      const first = events[0];
      if (events.length === 0 && snapshot.seq === lastSeq || first && first.envelope.version === snapshot.version + 1) {
        try {
          const state = this.applyAll(snapshot.state as unknown as AggregateState, events);
          return { aggregateId, state, lastSeq, version: state?.version ?? 0, snapshotSeq: snapshot.seq, eventsRead: events.length, tail: events };
        } catch (err) {
          this.log.warn({ err, aggregate_id: aggregateId }, "snapshot could not be continued; full replay");
        }
      } else {
        this.log.warn({ aggregate_id: aggregateId, snapshot_seq: snapshot.seq, snapshot_version: snapshot.version, next_version: first?.envelope.version ?? null },
          "snapshot does not line up with the stream; full replay");
      }
    }
    const events = await this.readEvents(aggregateId, 1, lastSeq);
    const state = this.applyAll(undefined, events);
    return { aggregateId, state, lastSeq, version: state?.version ?? 0, snapshotSeq: 0, eventsRead: events.length, tail: events };
  }

  private applyAll(from: AggregateState | undefined, events: StoredEvent[]): AggregateState | undefined {
    let state = from;
    for (const e of events) state = evolve(state, e.envelope);
    return state;
  }

  /** The aggregate's events with fromSeq ≤ seq ≤ toSeq, in order; throws if the range cannot be read completely. */
  readEvents(aggregateId: string, fromSeq: number, toSeq: number): Promise<StoredEvent[]> {
    return this.reader.readEvents(aggregateId, fromSeq, toSeq);
  }

  /**
   * Appends events after `expectedLastSeq` (the aggregate's last stream sequence, 0 for a new aggregate).
   * Throws ConcurrencyError when the aggregate moved on. One event per command is the design; several (one command's,
   * or consecutive commands' on one aggregate, see commands.ts) are written as one atomic batch (server ≥ 2.12 with
   * allow_atomic), never partially. An empty msgId sends no Nats-Msg-Id (the server refuses a batch that repeats an
   * id it holds, error 10201, instead of answering a duplicate ack).
   */
  async append(aggregateId: string, expectedLastSeq: number, events: EventToAppend[], atomicBatches: boolean): Promise<PubAck[]> {
    if (events.length === 0) return [];
    const expect = { lastSubjectSequence: expectedLastSeq, lastSubjectSequenceSubject: aggregateFilter(aggregateId) };
    try {
      if (events.length === 1) {
        const { envelope, msgId, commandHash } = events[0]!;
        const body = JSON.stringify(envelope);
        return [await batchedRequest(() => this.opts.js.publish(aggregateSubject(aggregateId, envelope.event_type), body, { msgID: msgId, expect, timeout: 3000, headers: hashHeader(commandHash) }))];
      }
      if (!atomicBatches) throw new Error(`a command produced ${events.length} events; writing several events atomically needs nats-server ≥ 2.12`);
      // The expectation goes on EVERY message of the batch, not only the first. nats-server 2.14.9 marks the
      // aggregate's filter "in process" until the message that last carried the expectation is applied; with it on
      // the first message only, the mark was gone while the rest of the batch was still being applied, and another
      // instance whose projection had seen only the batch's first event could append after it: two events with one
      // version (scripts/faults caught it; server/jetstream_batching.go checkMsgHeadersPreClusteredProposal and
      // jetstream_cluster.go's clear after apply). The server checks the repeats against the state before the batch.
      const nc = this.opts.nc;
      const batchId = nuid.next();
      const ack = await batchedRequest(async () => {
        events.forEach(({ envelope, msgId, commandHash }, i) => {
          if (i === events.length - 1) return;
          nc.publish(aggregateSubject(aggregateId, envelope.event_type), JSON.stringify(envelope), { headers: batchHeaders(batchId, i + 1, msgId, commandHash, expect, false) });
        });
        const { envelope, msgId, commandHash } = events[events.length - 1]!;
        const reply = await nc.request(aggregateSubject(aggregateId, envelope.event_type), JSON.stringify(envelope), { timeout: 5000, headers: batchHeaders(batchId, events.length, msgId, commandHash, expect, true) });
        return parseBatchAck(reply.json<unknown>(), events.length);
      });
      // The batch ack names the last sequence; earlier events sit right before it, in order.
      return events.map((_, i) => ({ stream: ack.stream, seq: ack.seq - (events.length - 1 - i), duplicate: false }) as PubAck);
    } catch (err) {
      if (isConcurrencyFailure(err)) throw new ConcurrencyError(aggregateId, expectedLastSeq, err);
      throw err;
    }
  }

  /** See `chainable`. */
  private singleReplica = false;

  /**
   * Whether the stream was found with one replica at the last check (checkReplicas): the only place a chain is safe.
   * On a replicated stream the leader checks another writer's expectation before the links in flight are applied,
   * and they carry none, so that writer could append after a link its decision never saw. A failed check counts as
   * replicated (no chains until the next one).
   */
  get chainable(): boolean {
    return this.singleReplica;
  }

  async checkReplicas(): Promise<void> {
    try {
      this.noteReplicas((await this.opts.jsm.streams.info(this.opts.streamName)).config.num_replicas);
    } catch {
      this.singleReplica = false;
    }
  }

  /** The stream's replicas as just read elsewhere (its stream info at provisioning). */
  noteReplicas(replicas: number): void {
    this.singleReplica = replicas === 1;
  }

  /**
   * Keeps `chainable` current, checking every `everyMs`: the replicas can change under a running instance (another
   * instance started with another STREAM_REPLICAS aligns the stream, or an operator edits it). Returns the stop.
   */
  watchReplicas(everyMs: number): () => void {
    let checking = false;
    const timer = setInterval(() => {
      if (checking) return;
      checking = true;
      void this.checkReplicas().finally(() => { checking = false; });
    }, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /**
   * Appends one event per command, for consecutive commands on one aggregate, as a chain of plain acknowledged
   * publishes sent in one write without waiting: the first carries the aggregate's expectation, each later one
   * `Nats-Expected-Last-Msg-Id` = the Nats-Msg-Id of the one before it, so the server stores it only if the last
   * message of the WHOLE stream is its predecessor (nothing of anyone else in between, and its predecessor stored).
   * So what is stored is always a prefix of the chain, each event right after the one it was decided after.
   * For R1 streams (no raft group: the server applies one stream's messages in arrival order, and the check is made
   * as the message is stored), where an atomic batch costs milliseconds of file-system work (docs/performance.md).
   * Every message needs a non-empty msgId. Never throws for a refused message: returns the acks of the stored prefix
   * (a duplicate head ends it) and, when the chain stopped short, why (the head's wrong expectation as
   * ConcurrencyError). A message after the prefix may still have landed (its ack lost): the caller looks for it.
   */
  async appendChained(aggregateId: string, expectedLastSeq: number, events: EventToAppend[]): Promise<{ acks: PubAck[]; stoppedBy?: unknown }> {
    if (events.some((e) => !e.msgId)) throw new Error("a chained append needs a Nats-Msg-Id on every event");
    const nc = this.opts.nc;
    const replies = await new Promise<Promise<Msg>[]>((resolve) => {
      // One synchronous run: the chain's messages leave contiguous, in order, on this connection.
      batchedWrite(() => {
        const sent: Promise<Msg>[] = [];
        for (const [i, { envelope }] of events.entries()) {
          try {
            sent.push(nc.request(aggregateSubject(aggregateId, envelope.event_type), JSON.stringify(envelope), { timeout: 3000, headers: chainHeaders(i) }));
          } catch (err) {
            sent.push(Promise.reject(err)); // e.g. the connection closed: the rest would only fail the chain
            break;
          }
        }
        resolve(sent);
      });
      function chainHeaders(i: number): MsgHdrs {
        const { msgId, commandHash } = events[i]!;
        const h = headers();
        h.set("Nats-Msg-Id", msgId);
        if (commandHash) h.set(COMMAND_HASH_HEADER, commandHash);
        if (i === 0) {
          h.set("Nats-Expected-Last-Subject-Sequence", String(expectedLastSeq));
          h.set("Nats-Expected-Last-Subject-Sequence-Subject", aggregateFilter(aggregateId));
        } else {
          h.set("Nats-Expected-Last-Msg-Id", events[i - 1]!.msgId);
        }
        return h;
      }
    });
    const settled = await Promise.allSettled(replies);
    const acks: PubAck[] = [];
    for (const [i, result] of settled.entries()) {
      try {
        if (result.status === "rejected") throw result.reason;
        const ack = parsePubAck(result.value.json<unknown>());
        acks.push(ack);
        if (ack.duplicate) return { acks };
      } catch (err) {
        return { acks, stoppedBy: i === 0 && isConcurrencyFailure(err) ? new ConcurrencyError(aggregateId, expectedLastSeq, err) : err };
      }
    }
    return { acks };
  }

  // ----- snapshots: a cache; anything doubtful means full replay, never a wrong state -----

  private async readSnapshot(aggregateId: string, lastSeq: number): Promise<Snapshot | null> {
    let raw: unknown;
    try {
      const entry = await this.opts.snapshots.get(aggregateId);
      if (!entry || entry.operation !== "PUT" || entry.length === 0) return null;
      raw = JSON.parse(entry.string());
    } catch (err) {
      this.log.warn({ err, aggregate_id: aggregateId }, "snapshot unreadable; full replay");
      return null;
    }
    const parsed = snapshotSchema.safeParse(raw);
    if (!parsed.success) {
      this.log.warn({ aggregate_id: aggregateId, issues: parsed.error.issues.slice(0, 3) }, "snapshot invalid; full replay");
      return null;
    }
    const snap = parsed.data;
    const state = snap.state as { aggregate_id?: unknown; version?: unknown };
    if (snap.schema_version !== SNAPSHOT_SCHEMA_VERSION || snap.aggregate_id !== aggregateId || state.aggregate_id !== aggregateId ||
        state.version !== snap.version || snap.seq > lastSeq) {
      this.log.warn({ aggregate_id: aggregateId, schema_version: snap.schema_version, snapshot_seq: snap.seq, last_seq: lastSeq },
        "snapshot stale or from another schema; full replay");
      return null;
    }
    return snap;
  }

  /** After an append that crossed a multiple of SNAPSHOT_FREQUENCY; runs in the background, failures only logged. */
  maybeSnapshot(aggregateId: string, previousVersion: number, version: number, stateAt: () => AggregateState | undefined, seq: number): void {
    const f = this.opts.snapshotFrequency;
    if (Math.floor(version / f) === Math.floor(previousVersion / f)) return;
    const state = stateAt();
    if (!state) return;
    const task: Promise<void> = this.writeSnapshot(aggregateId, state, seq)
      .then(() => undefined, (err) => this.log.warn({ err, aggregate_id: aggregateId, version: state.version }, "snapshot write failed (not fatal)"))
      .finally(() => this.pendingSnapshots.delete(task));
    this.pendingSnapshots.add(task);
  }

  /** Writes with compare-and-set so an older snapshot never replaces a newer one. */
  async writeSnapshot(aggregateId: string, state: AggregateState, seq: number): Promise<boolean> {
    const body: Snapshot = { schema_version: SNAPSHOT_SCHEMA_VERSION, aggregate_id: aggregateId, version: state.version, seq, state: state as unknown as Record<string, unknown> };
    const payload = JSON.stringify(body);
    for (let attempt = 0; attempt < 3; attempt++) {
      const current = await this.opts.snapshots.get(aggregateId);
      if (current && current.operation === "PUT" && current.length > 0) {
        let currentSeq = 0;
        try { currentSeq = Number((JSON.parse(current.string()) as { seq?: unknown }).seq) || 0; } catch { /* garbage: overwrite */ }
        if (currentSeq >= seq) return false;
      }
      try {
        if (current) await this.opts.snapshots.update(aggregateId, payload, current.revision);
        else await this.opts.snapshots.create(aggregateId, payload);
        this.log.debug({ aggregate_id: aggregateId, version: state.version, seq }, "snapshot written");
        return true;
      } catch (err) {
        if (attempt === 2) throw err;
      }
    }
    return false;
  }

  async flushSnapshots(): Promise<void> {
    // A command's snapshot check runs right after its reply (setImmediate, commands.ts): let the last ones start.
    await new Promise<void>((resolve) => setImmediate(resolve));
    await Promise.allSettled([...this.pendingSnapshots]);
  }
}

function batchHeaders(batchId: string, sequence: number, msgId: string, commandHash: string | undefined, expect: { lastSubjectSequence: number; lastSubjectSequenceSubject: string }, commit: boolean): MsgHdrs {
  const h = headers();
  h.set("Nats-Batch-Id", batchId);
  h.set("Nats-Batch-Sequence", String(sequence));
  if (commit) h.set("Nats-Batch-Commit", "1");
  if (msgId) h.set("Nats-Msg-Id", msgId);
  if (commandHash) h.set(COMMAND_HASH_HEADER, commandHash);
  h.set("Nats-Expected-Last-Subject-Sequence", String(expect.lastSubjectSequence));
  h.set("Nats-Expected-Last-Subject-Sequence-Subject", expect.lastSubjectSequenceSubject);
  return h;
}

/** The commit's answer: `{stream, seq, count}`, or a JetStream API error (10071: the expectation failed). */
function parseBatchAck(body: unknown, count: number): { stream: string; seq: number } {
  const ack = body as { stream?: unknown; seq?: unknown; count?: unknown; error?: { code: number; err_code?: number; description?: string } };
  if (ack.error) throw new JetStreamApiError(ack.error as ConstructorParameters<typeof JetStreamApiError>[0]);
  if (typeof ack.stream !== "string" || typeof ack.seq !== "number" || ack.count !== count) {
    throw new Error(`unexpected atomic batch ack ${JSON.stringify(body)} for ${count} messages`);
  }
  return { stream: ack.stream, seq: ack.seq };
}

/** A publish's answer: `{stream, seq, duplicate?}`, or a JetStream API error (10070: not after the expected message). */
function parsePubAck(body: unknown): PubAck {
  const ack = body as { stream?: unknown; seq?: unknown; duplicate?: unknown; error?: { code: number; err_code?: number; description?: string } };
  if (ack.error) throw new JetStreamApiError(ack.error as ConstructorParameters<typeof JetStreamApiError>[0]);
  if (typeof ack.stream !== "string" || typeof ack.seq !== "number") throw new Error(`unexpected publish ack ${JSON.stringify(body)}`);
  return { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate === true } as PubAck;
}

/** Headers for a single publish: only the hash (the client adds Nats-Msg-Id and the expectation to them). */
function hashHeader(commandHash: string | undefined): MsgHdrs | undefined {
  if (!commandHash) return undefined;
  const h = headers();
  h.set(COMMAND_HASH_HEADER, commandHash);
  return h;
}

/** The stored envelope itself once its shape is checked (not the validator's copy: history shows what is stored). */
function parseEnvelope(data: Uint8Array, seq: number): EventEnvelope {
  const stored: unknown = JSON.parse(new TextDecoder().decode(data));
  if (!envelopeShape.safeParse(stored).success) throw new Error(`stored message ${seq} is not an event envelope`);
  return stored as EventEnvelope;
}

function toStoredEvent(msg: StoredMsg): StoredEvent {
  return { seq: msg.seq, subject: msg.subject, envelope: parseEnvelope(msg.data, msg.seq), commandHash: commandHashOf(msg.header) };
}

function commandHashOf(h: MsgHdrs | undefined): string | null {
  const value = h?.get(COMMAND_HASH_HEADER);
  return value ? value : null;
}
