// The forwarder's bookkeeping without a server: who owns an aggregate (rendezvous hashing), the member set that the
// discovery rounds feed (a late answer is not a departure, another stream's instances do not count), and a forward
// that ends when its owner leaves instead of at its timeout. The NATS side (probe, forwarding, "no responders",
// permissions) runs against a real nats-server in test/integration/forward.test.ts.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { NatsConnection } from "@nats-io/nats-core";
import { CommandForwarder, FORWARD_METADATA, rendezvousOrder, rendezvousOwner } from "../../src/adapters/nats/forward.js";
import type { PeerIdentity } from "../../src/adapters/nats/peers.js";
import { createLogger } from "../../src/support/logger.js";

const STREAM = "POLICY_EVENTS";

/** A connection whose probe is answered and whose forwards never are. */
function fakeConnection(): NatsConnection {
  const nc = {
    subscribe: () => ({ unsubscribe() {}, drain: async () => {}, isClosed: () => false }),
    flush: async () => {},
    request: (subject: string) => (subject.endsWith("._probe") ? Promise.resolve({ string: () => "ok" }) : new Promise(() => undefined)),
  };
  return nc as unknown as NatsConnection;
}

async function startedForwarder(): Promise<CommandForwarder> {
  const f = new CommandForwarder({ nc: fakeConnection(), streamName: STREAM, logger: createLogger("error") });
  await f.start(async () => "{}", 100);
  assert.equal(f.capable, true);
  return f;
}

const peer = (token: string | undefined, stream = STREAM): PeerIdentity => ({
  id: randomUUID(), version: "0.10.0", metadata: { stream, ...(token ? { [FORWARD_METADATA]: token } : {}) },
});

test("rendezvous: the same owner whatever the order of the members; removing another member keeps it", () => {
  const members = ["a1", "b2", "c3", "d4"];
  for (let i = 0; i < 200; i++) {
    const id = randomUUID();
    const owner = rendezvousOwner(members, id);
    assert.equal(rendezvousOwner([...members].reverse(), id), owner);
    const others = members.filter((m) => m !== owner);
    assert.equal(rendezvousOwner([owner, ...others.slice(1)], id), owner, "a departure elsewhere moves nothing");
  }
});

test("rendezvous: aggregates spread over the members", () => {
  const members = ["x", "y", "z"];
  const counts = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const owner = rendezvousOwner(members, randomUUID());
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  for (const m of members) assert.ok((counts.get(m) ?? 0) > 800 && (counts.get(m) ?? 0) < 1200, JSON.stringify([...counts]));
});

test("rendezvous order: the owner first, the same whatever the members' order; a departure keeps the others' order", () => {
  const members = ["a1", "b2", "c3", "d4"];
  for (let i = 0; i < 200; i++) {
    const id = randomUUID();
    const order = rendezvousOrder(members, id);
    assert.deepEqual([...order].sort(), members);
    assert.equal(order[0], rendezvousOwner(members, id));
    assert.deepEqual(rendezvousOrder([...members].reverse(), id), order);
    assert.deepEqual(rendezvousOrder(members.filter((m) => m !== order[0]), id), order.slice(1), "the owner gone: the next one takes over");
  }
});

test("an instance's rank for an aggregate: its place in the rendezvous order; none while alone", async () => {
  const f = await startedForwarder();
  const id = randomUUID();
  assert.equal(f.rankOf(id), null);
  f.updatePeers([peer(f.token), peer("TokenA"), peer("TokenB")]);
  const ranks = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const other = randomUUID();
    const rank = f.rankOf(other)!;
    assert.equal(rank, rendezvousOrder(["TokenA", "TokenB", f.token].sort(), other).indexOf(f.token));
    assert.equal(rank === 0, f.ownerOf(other) === f.token);
    ranks.add(rank);
  }
  assert.deepEqual([...ranks].sort(), [0, 1, 2]);
});

test("alone, nobody to forward to; with peers, the owner is the rendezvous of every member's token", async () => {
  const f = await startedForwarder();
  const id = randomUUID();
  assert.equal(f.ownerOf(id), null);
  f.updatePeers([peer(f.token), peer("TokenA"), peer("TokenB"), peer(undefined), peer("TokenC", "OTHER_EVENTS")]);
  assert.equal(f.ownerOf(id), rendezvousOwner(["TokenA", "TokenB", f.token].sort(), id));
  const owners = new Set(Array.from({ length: 100 }, () => f.ownerOf(randomUUID())));
  assert.deepEqual([...owners].sort(), ["TokenA", "TokenB", f.token].sort(), "an older build (no token) and another stream's instance are never owners");
});

test("a member leaves after missing two rounds in a row; a failed round removes nobody", async () => {
  const f = await startedForwarder();
  f.updatePeers([peer(f.token), peer("TokenA")]);
  const generation = f.generation;
  const ownedByA = Array.from({ length: 200 }, () => randomUUID()).find((id) => f.ownerOf(id) === "TokenA")!;
  f.updatePeers([peer(f.token)]);
  assert.equal(f.ownerOf(ownedByA), "TokenA", "one missed round: still a member");
  f.updatePeers(null);
  assert.equal(f.ownerOf(ownedByA), "TokenA", "a failed round says nothing about the members");
  f.updatePeers([peer(f.token)]);
  assert.equal(f.ownerOf(ownedByA), null, "two missed rounds: gone, and alone again");
  assert.ok(f.generation > generation, "owners cached against the old set are computed again");
});

test("a forward waiting for an owner that leaves fails then, not at its timeout", async () => {
  const f = await startedForwarder();
  f.updatePeers([peer(f.token), peer("TokenA")]);
  const waiting = f.forward("TokenA", "update", new TextEncoder().encode("{}"), 60_000);
  let settled = false;
  waiting.catch(() => undefined).finally(() => { settled = true; });
  f.updatePeers([peer(f.token)]);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, "still a member after one missed round");
  f.updatePeers([peer(f.token)]);
  await assert.rejects(waiting, /left while a forwarded command waited/);
});
