// States in the projection without slots for their null fields (support/compact-state.ts: omitNullFields,
// withNullFields). Every field must read as in evolve()'s state, and every state that leaves the projection for
// something that serialises, copies or decides on it must have evolve()'s shape exactly: prototype, key order, values.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { evolve, replay, type AggregateState, type EventEnvelope } from "../../src/domain/index.js";
import { omitNullFields, StateCompactor, withNullFields } from "../../src/support/compact-state.js";
import { Projection } from "../../src/adapters/nats/projection.js";
import { decodeCheckpoint } from "../../src/support/checkpoint-file.js";
import { everyAggregateTypeLog } from "./domainHarness.js";

type Fields = Record<string, unknown>;

/** The shape a reader can see: prototype, own keys in order, values, JSON. */
function assertFullShape(actual: AggregateState, plain: AggregateState, what: string): void {
  assert.equal(Object.getPrototypeOf(actual), Object.prototype, `${what}: an ordinary object`);
  assert.deepEqual(Object.keys(actual), Object.keys(plain), `${what}: keys in evolve()'s order`);
  assert.deepEqual(actual, plain, what);
  assert.deepEqual({ ...actual }, { ...plain }, `${what}: spread`);
  assert.equal(JSON.stringify(actual), JSON.stringify(plain), `${what}: JSON`);
  for (const key of Object.keys(plain)) assert.ok(Object.hasOwn(actual, key), `${what}: own ${key}`);
}

/** A stored state reads every field as the plain one does, and holds no own slot for a null field. */
function assertReadsLike(stored: AggregateState, plain: AggregateState, what: string): void {
  const fields = plain as unknown as Fields;
  for (const key of Object.keys(fields)) {
    assert.deepEqual((stored as unknown as Fields)[key], fields[key], `${what}: ${key}`);
    assert.ok(key in stored, `${what}: ${key} in`);
  }
  const nonNull = Object.keys(fields).filter((key) => fields[key] !== null);
  assert.deepEqual(Object.keys(stored), nonNull, `${what}: own keys are the non-null fields`);
}

test("a stored state reads like evolve()'s, and withNullFields gives evolve()'s shape back, after every event of every type", () => {
  const log = everyAggregateTypeLog();
  const compactor = new StateCompactor();
  let withNulls = 0;
  for (const events of log.streams.values()) {
    let plain: AggregateState | undefined;
    let stored: AggregateState | undefined;
    for (const event of events) {
      plain = evolve(plain, event);
      const previous = stored;
      // The projection's path: evolve the full state, compact, store without nulls.
      stored = omitNullFields(compactor.compact(evolve(previous && withNullFields(previous), JSON.parse(JSON.stringify(event)) as EventEnvelope), previous), previous);
      const what = `${event.aggregate_type} after ${event.event_type} v${event.version}`;
      assertReadsLike(stored, plain, what);
      assertFullShape(withNullFields(stored), plain, what);
      if (Object.values(plain as unknown as Fields).includes(null)) {
        withNulls++;
        assert.notEqual(Object.getPrototypeOf(stored), Object.prototype, `${what}: stored without its nulls`);
        assert.ok(Object.isFrozen(Object.getPrototypeOf(stored)), `${what}: the nulls are frozen`);
      }
    }
  }
  assert.ok(withNulls > 5, `${withNulls} states with null fields`);
});

test("a state without null fields, or of an unknown shape, is stored as it is", () => {
  const noNulls = { aggregate_type: "PolicySet", aggregate_id: "a", version: 1, updated_at: "t" } as unknown as AggregateState;
  assert.equal(omitNullFields(noNulls), noNulls);
  const odd = JSON.parse('{"aggregate_type":"Policy","__proto__":{"x":1},"owner":null}') as AggregateState;
  assert.equal(omitNullFields(odd), odd, "an own __proto__ key is never copied as a field");
  const notPlain = Object.assign(Object.create(null) as object, { owner: null }) as AggregateState;
  assert.equal(omitNullFields(notPlain), notPlain);
  assert.equal(withNullFields(noNulls), noNulls, "a full state is returned as it is");
});

/** A fake stream for the projection: the log's events in order, as an ordered consumer would deliver them. */
function fakeStream(events: EventEnvelope[]) {
  const created = "2026-01-01T00:00:00Z";
  const messages = events.map((event, i) => ({
    seq: i + 1,
    subject: `events.policy.${event.aggregate_id}.${event.event_type}`,
    info: { pending: events.length - i - 1 },
    json: () => JSON.parse(JSON.stringify(event)) as EventEnvelope,
  }));
  const jsm = {
    streams: {
      info: async () => ({ created, state: { last_seq: events.length, messages: events.length, first_seq: 1 } }),
      getMessage: async (_stream: string, { seq }: { seq: number }) => (seq <= events.length ? { json: () => events[seq - 1] } : null),
    },
  };
  const js = {
    consumers: {
      get: async (_stream: string, opts: { opt_start_seq?: number }) => ({
        consume: async () => {
          let stopped = false;
          return {
            stop() { stopped = true; },
            async *[Symbol.asyncIterator]() {
              for (const msg of messages.slice((opts.opt_start_seq ?? 1) - 1)) {
                if (stopped) return;
                yield msg;
              }
            },
          };
        },
      }),
    },
  };
  return { js, jsm };
}

const silent = { info() {}, warn() {}, error() {}, debug() {} };

test("the projection hands out full states to commands, listeners and the checkpoint; its stored states read alike; restored from a checkpoint, the same", async () => {
  const log = everyAggregateTypeLog();
  const events = [...log.streams.values()].flat();
  const plain = new Map([...log.streams].map(([id, stream]) => [id, replay(stream)!]));
  const dir = mkdtempSync(join(tmpdir(), "stored-state-"));
  try {
    const checkpoint = { path: join(dir, "checkpoint"), build: "test" };
    const { js, jsm } = fakeStream(events);
    const first = new Projection({ js: js as never, jsm: jsm as never, streamName: "S", logger: silent, checkpoint });
    const heard = new Map<string, AggregateState>();
    first.onEvent((state) => heard.set(state.aggregate_id, state));
    await first.start();
    await first.ready();
    const check = (projection: Projection, when: string) => {
      for (const [id, state] of plain) {
        assertFullShape(projection.get(id)!.state, state, `get ${id} ${when}`);
        assertReadsLike(projection.getState(id)!, state, `getState ${id} ${when}`);
        assertFullShape(withNullFields(projection.getState(id)!), state, `withNullFields(getState) ${id} ${when}`);
      }
      assert.equal([...projection.all()].length, plain.size);
    };
    check(first, "after the replay");
    for (const [id, state] of plain) assertFullShape(heard.get(id)!, state, `listener ${id}`);

    const content = first.checkpointContent()!;
    const decoded = decodeCheckpoint(content, "test");
    assert.ok(decoded.ok);
    for (const [id, , state] of decoded.checkpoint.body.aggregates) {
      assert.equal(JSON.stringify(state), JSON.stringify(plain.get(id)), `checkpoint entry ${id}: the plain state`);
    }
    await first.stop();

    writeFileSync(checkpoint.path, content);
    const second = new Projection({ js: js as never, jsm: jsm as never, streamName: "S", logger: silent, checkpoint });
    await second.start();
    await second.ready();
    assert.equal(second.checkpointOutcome, "used");
    check(second, "after a restore");
    assert.equal(second.checkpointContent(), undefined, "nothing new to write");
    await second.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
