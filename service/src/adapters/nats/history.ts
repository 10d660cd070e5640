// Aggregate histories for `policy.queries.history` and for states and evaluations at a past moment.
//
// Every read asks the stream leader for the aggregate's last sequence first, so a history holds every event
// acknowledged before the query was sent, whichever instance answers and however far its projection lags. What the
// cache holds is not read again: only the events after it (an aggregate's events are only ever appended).
import { replay, type AggregateState } from "../../domain/index.js";
import type { AggregateReader, StoredEvent } from "./event-store.js";

export type HistoryReader = Pick<AggregateReader, "lastSeqOf" | "readEvents">;

/** Bounded cache of aggregate histories keyed by (id, last seq), and of the states rebuilt from them. */
export class HistoryCache {
  private readonly entries = new Map<string, { seq: number; events: StoredEvent[] }>();
  private readonly asOfStates = new Map<string, AggregateState | undefined>();
  private readonly reader: HistoryReader;
  private readonly maxEntries: number;

  constructor(reader: HistoryReader, maxEntries = 1000) {
    this.reader = reader;
    this.maxEntries = maxEntries;
  }

  /** The aggregate's events up to its last one on the stream leader, oldest first; [] when it has none. */
  async history(aggregateId: string): Promise<StoredEvent[]> {
    const lastSeq = await this.reader.lastSeqOf(aggregateId);
    if (lastSeq === 0) return [];
    const cached = this.entries.get(aggregateId);
    if (cached && cached.seq === lastSeq) {
      this.touch(this.entries, aggregateId, cached);
      return cached.events;
    }
    // A cached history ahead of the stream (a stream recreated under the service) is read again in full.
    const known = cached && cached.seq < lastSeq ? cached : undefined;
    const read = await this.reader.readEvents(aggregateId, known ? known.seq + 1 : 1, lastSeq);
    const events = known ? known.events.concat(read) : read;
    this.touch(this.entries, aggregateId, { seq: lastSeq, events });
    return events;
  }

  /** State of an aggregate as it stood at `at` (RFC 3339): events that occurred at or before `at`. */
  async stateAt(aggregateId: string, at: string): Promise<AggregateState | undefined> {
    const atMs = Date.parse(at);
    const events = await this.history(aggregateId);
    let count = 0;
    while (count < events.length && Date.parse(events[count]!.envelope.occurred_at) <= atMs) count++;
    if (count === 0) return undefined;
    // The first `count` events stay the same as the aggregate grows.
    const key = `${aggregateId}@${count}`;
    if (this.asOfStates.has(key)) return this.asOfStates.get(key);
    const state = replay(events.slice(0, count).map((e) => e.envelope));
    this.touch(this.asOfStates, key, state);
    return state;
  }

  private touch<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    if (map.size > this.maxEntries) {
      const oldest = map.keys().next();
      if (!oldest.done) map.delete(oldest.value);
    }
  }
}
