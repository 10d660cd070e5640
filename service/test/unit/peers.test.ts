// The success-record gate (adapters/nats/peers.ts): records while an instance without the payload-hash capability
// serves the stream, for holdMs after it was last seen, before the first discovery round, after a failed round,
// and always with COMMAND_RECORDS=always. The discovery itself ($SRV.PING) is exercised against a real
// nats-server in test/integration/success-records.test.ts and the rolling-upgrade test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { SuccessRecordGate, type PeerIdentity } from "../../src/adapters/nats/peers.js";

const HOLD_MS = 1_200_000;
const self: PeerIdentity = { id: "self", version: "0.9.0", metadata: { stream: "POLICY_EVENTS", command_hash: "1" } };
const newPeer: PeerIdentity = { id: "new", version: "0.9.0", metadata: { stream: "POLICY_EVENTS", command_hash: "1" } };
const oldPeer: PeerIdentity = { id: "old", version: "0.9.0", metadata: { stream: "POLICY_EVENTS", server_version: "2.14.9" } };

function gate(mode: "auto" | "always" = "auto") {
  let now = 1_000_000;
  let peers: PeerIdentity[] | Error = [self];
  const g = new SuccessRecordGate({
    selfId: () => "self", streamName: "POLICY_EVENTS", mode, holdMs: HOLD_MS, logger: pino({ level: "silent" }),
    discover: () => (peers instanceof Error ? Promise.reject(peers) : Promise.resolve(peers)),
    clock: () => now,
  });
  return { g, setPeers: (p: PeerIdentity[] | Error) => { peers = p; }, advance: (ms: number) => { now += ms; } };
}

test("records before the first round; none once only instances with the capability answer", async () => {
  const { g, setPeers } = gate();
  assert.equal(g.successRecords(), true, "start-up: an older peer may be there");
  setPeers([self, newPeer]);
  await g.round();
  assert.equal(g.successRecords(), false);
});

test("an older peer (no command_hash in its metadata): records while it answers and for holdMs after it was last seen", async () => {
  const { g, setPeers, advance } = gate();
  setPeers([self, newPeer, oldPeer]);
  await g.round();
  assert.equal(g.successRecords(), true);
  advance(HOLD_MS / 2);
  await g.round(); // still there: the hold starts again
  setPeers([self, newPeer]);
  advance(HOLD_MS - 1);
  await g.round();
  assert.equal(g.successRecords(), true, "within holdMs of the last sighting");
  advance(1);
  assert.equal(g.successRecords(), false, "holdMs after the last sighting");
});

test("a peer without metadata counts as older; one serving another stream does not", async () => {
  const { g, setPeers } = gate();
  setPeers([self, { ...oldPeer, metadata: { stream: "OTHER_EVENTS" } }]);
  await g.round();
  assert.equal(g.successRecords(), false, "another stream's instances do not answer this stream's retries");
  const bare = gate();
  bare.setPeers([self, { id: "bare", version: "0.8.0", metadata: null }]);
  await bare.g.round();
  assert.equal(bare.g.successRecords(), true);
});

test("a failed round counts as an older peer seen", async () => {
  const { g, setPeers, advance } = gate();
  setPeers([self]);
  await g.round();
  assert.equal(g.successRecords(), false);
  setPeers(new Error("timeout"));
  await g.round();
  assert.equal(g.successRecords(), true);
  setPeers([self]);
  advance(HOLD_MS);
  await g.round();
  assert.equal(g.successRecords(), false);
  // Its own answer missing (the server refused the ping: no publish permission) is a failed round too.
  setPeers([newPeer]);
  await g.round();
  assert.equal(g.successRecords(), true);
});

test("COMMAND_RECORDS=always: records whatever the peers", async () => {
  const { g, setPeers } = gate("always");
  setPeers([self, newPeer]);
  await g.round();
  assert.equal(g.successRecords(), true);
  await g.start(); // no discovery loop to stop
  await g.stop();
});

test("a failing discovery is warned about once (it repeats every 2 s), again after a round succeeded", async () => {
  const levels: string[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => { const l = JSON.parse(line) as { level: number; msg: string }; if (l.msg.startsWith("peer discovery failed")) levels.push(l.level === 40 ? "warn" : "debug"); } });
  let peers: PeerIdentity[] | Error = new Error("Permissions Violation for Publish to \"$SRV.PING.policy-service\"");
  const g = new SuccessRecordGate({
    selfId: () => "self", streamName: "POLICY_EVENTS", mode: "auto", holdMs: HOLD_MS, logger,
    discover: () => (peers instanceof Error ? Promise.reject(peers) : Promise.resolve(peers)),
  });
  await g.round();
  await g.round();
  await g.round();
  peers = [self];
  await g.round();
  peers = new Error("timeout");
  await g.round();
  assert.deepEqual(levels, ["warn", "debug", "debug", "warn"]);
  assert.equal(g.successRecords(), true, "a failed round keeps the records on");
});
