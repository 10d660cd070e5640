// HistoryCache: each read follows the stream leader's last sequence of the aggregate (never a projection), and
// reads from the stream only the events after what it holds. The reader here is an in-memory stream of genuine
// envelopes (the domain's decide); the real reader's reads are tested on real servers (cluster.test.ts, queries).
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { StoredEvent } from "../../src/adapters/nats/event-store.js";
import { HistoryCache, type HistoryReader } from "../../src/adapters/nats/history.js";
import { History } from "./history.js";

/** A stream of the events in `history`, appended in the order asked for, with the calls the cache makes. */
class RecordingStream implements HistoryReader {
  readonly stored: StoredEvent[] = [];
  readonly calls: string[] = [];
  private readonly taken = new Map<string, number>();
  private readonly history: History;
  constructor(history: History) { this.history = history; }

  /** Appends the aggregate's events that the history holds and the stream does not yet. */
  sync(id: string): void {
    const all = this.history.events.get(id) ?? [];
    for (const envelope of all.slice(this.taken.get(id) ?? 0)) {
      const seq = this.stored.length + 1;
      this.stored.push({ seq, subject: `events.policy.${id}.${envelope.event_type}`, envelope });
    }
    this.taken.set(id, all.length);
  }

  async lastSeqOf(id: string): Promise<number> {
    this.calls.push(`last ${id.slice(0, 4)}`);
    return this.stored.filter((e) => e.envelope.aggregate_id === id).at(-1)?.seq ?? 0;
  }

  async readEvents(id: string, fromSeq: number, toSeq: number): Promise<StoredEvent[]> {
    this.calls.push(`read ${id.slice(0, 4)} ${fromSeq}-${toSeq}`);
    return this.stored.filter((e) => e.envelope.aggregate_id === id && e.seq >= fromSeq && e.seq <= toSeq);
  }
}

const T = (minute: number) => `2026-01-01T00:${String(minute).padStart(2, "0")}:00Z`;

function createPolicy(history: History, minute: number): string {
  return history.run("create", {
    policy_id: randomUUID(), name: "Retention", description: "d", policy_type: "Retention",
    enforcement: "Mandatory", scope: "Organization",
  }, T(minute));
}

function fixture(): { history: History; stream: RecordingStream; cache: HistoryCache } {
  const history = new History();
  const stream = new RecordingStream(history);
  return { history, stream, cache: new HistoryCache(stream) };
}

describe("HistoryCache", () => {
  test("an aggregate without events: one last-sequence lookup, nothing read", async () => {
    const stream = new RecordingStream(new History());
    const id = randomUUID();
    assert.deepEqual(await new HistoryCache(stream).history(id), []);
    assert.deepEqual(stream.calls, [`last ${id.slice(0, 4)}`]);
  });

  test("every read follows the stream: a cached history is returned only while the stream has nothing newer, then only the new events are read", async () => {
    const { history, stream, cache } = fixture();
    const id = createPolicy(history, 0);
    const other = createPolicy(history, 0);
    stream.sync(id);
    stream.sync(other); // another aggregate's event between this one's
    history.run("update", { policy_id: id, updated_by: "u", name: "second" }, T(1));
    stream.sync(id);
    const short = id.slice(0, 4);

    const first = await cache.history(id);
    assert.deepEqual(first.map((e) => [e.seq, e.envelope.version]), [[1, 1], [3, 2]]);
    assert.deepEqual(stream.calls.splice(0), [`last ${short}`, `read ${short} 1-3`]);

    assert.equal(await cache.history(id), first, "nothing newer on the stream: the cached history itself");
    assert.deepEqual(stream.calls.splice(0), [`last ${short}`]);

    // Written through another instance: this one's cache still holds two events, the stream three.
    history.run("approve", { policy_id: id, approved_by: "officer" }, T(2));
    stream.sync(id);
    const grown = await cache.history(id);
    assert.deepEqual(grown.map((e) => [e.seq, e.envelope.version, e.envelope.event_type]), [[1, 1, "created"], [3, 2, "updated"], [4, 3, "approved"]]);
    assert.deepEqual(stream.calls.splice(0), [`last ${short}`, `read ${short} 4-4`], "only the events after the cached ones");
    assert.deepEqual(first.length, 2, "the history handed out before is not changed");
  });

  test("a cached history ahead of the stream (a stream recreated under the service) is read again in full", async () => {
    const { history, stream, cache } = fixture();
    const id = createPolicy(history, 0);
    history.run("update", { policy_id: id, updated_by: "u", name: "second" }, T(1));
    stream.sync(id);
    assert.equal((await cache.history(id)).length, 2);
    stream.stored.splice(1); // only the first event is on the stream now
    stream.calls.length = 0;
    assert.deepEqual((await cache.history(id)).map((e) => e.envelope.version), [1]);
    assert.deepEqual(stream.calls, [`last ${id.slice(0, 4)}`, `read ${id.slice(0, 4)} 1-1`]);
  });

  test("stateAt rebuilds the state from the events that occurred at or before the moment, also after the aggregate grew", async () => {
    const { history, stream, cache } = fixture();
    const id = createPolicy(history, 0);
    history.run("update", { policy_id: id, updated_by: "u", name: "renamed" }, T(10));
    stream.sync(id);
    assert.equal(await cache.stateAt(id, "2025-12-31T23:59:59Z"), undefined, "before the first event");
    assert.deepEqual(await cache.stateAt(id, T(5)), history.stateAt(id, T(5)));
    assert.equal((await cache.stateAt(id, T(5)))?.version, 1);
    history.run("approve", { policy_id: id, approved_by: "officer" }, T(20));
    stream.sync(id);
    assert.deepEqual(await cache.stateAt(id, T(15)), history.stateAt(id, T(15)));
    assert.deepEqual(await cache.stateAt(id, T(25)), history.stateAt(id, T(25)));
    assert.equal((await cache.stateAt(id, T(25)))?.version, 3);
  });
});
