// Issue 12: step 2's command-id record lookups (docs/concurrency.md) of one event-loop turn go out as one
// `multi_last` direct get (one replica); on a replicated bucket each asks the bucket's stream leader. Real parts: a
// nats-server, a KV bucket written through the KV client, the documented service user's permissions, and the service
// answering retries of remembered refusals that arrive together. (At R3 with a replica behind: cluster.test.ts.)
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { BatchedRecordLookup } from "../../src/adapters/nats/record-lookup.js";
import { requestEnded, requestStarted } from "../../src/adapters/nats/write-batch.js";
import { isTransient } from "../../src/support/transient.js";
import { startNatsServer, type NatsServer } from "../helpers/nats.js";
import { call, callOk, policyBody, readAllEvents, singleNode, type Json } from "../helpers/client.js";
import { documentedPermissionsText, serviceAndTesterAuthorization } from "../helpers/permissions.js";

/** Messages a connection (by name) has sent to the server: its requests. */
async function sentBy(server: NatsServer, name: string): Promise<number> {
  const connz = await server.monitor<{ connections?: { name?: string; in_msgs: number }[] }>("/connz?limit=1024");
  return (connz.connections ?? []).filter((c) => c.name === name).reduce((sum, c) => sum + c.in_msgs, 0);
}

describe("BatchedRecordLookup against a real bucket", () => {
  let server: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  let kv: KV | undefined;
  let jsm: JetStreamManager | undefined;
  const NAME = "record-lookup-test";

  before(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: NAME });
    jsm = await jetstreamManager(nc);
    kv = await new Kvm(nc).create("LOOKUP_TEST", { history: 1, ttl: 120_000 });
    await kv.put("a", JSON.stringify({ n: 1 }));
    await kv.put("a", JSON.stringify({ n: 2 })); // the last value is the record
    await kv.put("b", JSON.stringify({ n: 3 }));
    await kv.put("gone", JSON.stringify({ n: 4 }));
    await kv.delete("gone");
  });
  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  test("the lookups of one turn are one request, each answered with its own record, a deleted or missing key with none or its marker", async () => {
    const lookup = new BatchedRecordLookup({ nc: nc!, kv: kv!, jsm: jsm!, replicated: false, bucket: "LOOKUP_TEST", timeoutMs: 3000 });
    const before = await sentBy(server!, NAME);
    // As the service's request loop does while several requests are in flight: their writes wait for the turn's end.
    requestStarted();
    requestStarted();
    let results;
    try {
      results = await Promise.all(["a", "missing", "b", "gone", "a", "other-missing"].map((k) => lookup.get(k)));
    } finally {
      requestEnded();
      requestEnded();
    }
    assert.deepEqual(lookup.counters, { requests: 1, keys: 5, behind: 0, fromLeader: 0 }, "five distinct keys, one request");
    assert.equal((await sentBy(server!, NAME)) - before, 1, "the server saw one request from this connection");
    const [a, missing, b, gone, aAgain, otherMissing] = results;
    assert.equal(a?.operation, "PUT");
    assert.deepEqual(a?.json(), { n: 2 });
    assert.equal(aAgain, a, "two lookups of one key in a turn share its answer");
    assert.deepEqual(b?.json(), { n: 3 });
    assert.equal(missing, null);
    assert.equal(otherMissing, null);
    assert.equal(gone?.operation, "DEL", "a deleted key reads as its delete marker, as KV's get reads it");
    assert.equal(gone?.length, 0);
  });

  test("a lookup alone in flight is the bucket's plain get", async () => {
    const lookup = new BatchedRecordLookup({ nc: nc!, kv: kv!, jsm: jsm!, replicated: false, bucket: "LOOKUP_TEST", timeoutMs: 3000 });
    const found = await lookup.get("b");
    assert.deepEqual(found?.json(), { n: 3 });
    assert.equal(await lookup.get("missing"), null);
    assert.deepEqual(lookup.counters, { requests: 2, keys: 2, behind: 0, fromLeader: 0 });
  });

  test("when none of the keys has a record, every lookup answers null", async () => {
    const lookup = new BatchedRecordLookup({ nc: nc!, kv: kv!, jsm: jsm!, replicated: false, bucket: "LOOKUP_TEST", timeoutMs: 3000 });
    requestStarted();
    requestStarted();
    try {
      assert.deepEqual(await Promise.all(["x", "y", "z"].map((k) => lookup.get(k))), [null, null, null]);
    } finally {
      requestEnded();
      requestEnded();
    }
    assert.deepEqual(lookup.counters, { requests: 1, keys: 3, behind: 0, fromLeader: 0 });
  });

  test("a bucket nobody serves fails the batch with a transient error (retried within the command's deadline)", async () => {
    const lookup = new BatchedRecordLookup({ nc: nc!, kv: kv!, jsm: jsm!, replicated: false, bucket: "NO_SUCH_BUCKET", timeoutMs: 3000 });
    requestStarted();
    requestStarted();
    let outcomes;
    try {
      outcomes = await Promise.allSettled(["a", "b"].map((k) => lookup.get(k)));
    } finally {
      requestEnded();
      requestEnded();
    }
    for (const outcome of outcomes) {
      assert.equal(outcome.status, "rejected");
      assert.ok(isTransient((outcome as PromiseRejectedResult).reason), String((outcome as PromiseRejectedResult).reason));
    }
  });

  test("more keys than one request holds are split over several requests of the turn", async () => {
    const lookup = new BatchedRecordLookup({ nc: nc!, kv: kv!, jsm: jsm!, replicated: false, bucket: "LOOKUP_TEST", timeoutMs: 3000, maxKeys: 2 });
    requestStarted();
    requestStarted();
    let results;
    try {
      results = await Promise.all(["a", "b", "missing", "gone", "b"].map((k) => lookup.get(k)));
    } finally {
      requestEnded();
      requestEnded();
    }
    assert.deepEqual(lookup.counters, { requests: 2, keys: 4, behind: 0, fromLeader: 0 });
    assert.deepEqual(results.map((r) => (r ? [r.operation, r.length > 0 ? r.json() : null] : null)),
      [["PUT", { n: 2 }], ["PUT", { n: 3 }], null, ["DEL", null], ["PUT", { n: 3 }]]);
  });
});

describe("BatchedRecordLookup on a replicated bucket: misses checked against the bucket's stream leader", () => {
  // One server: its replica is the leader, so its answers are never behind; what is checked here is what each batch
  // asks, and the path taken when a replica's answer does not say how far it is. A replica really behind the leader
  // is cluster.test.ts's ("remembered refusals ... starved of CPU").
  let dir = "";
  let server: NatsServer | undefined;
  let tester: NatsConnection | undefined;
  const serviceUsers: NatsConnection[] = [];
  const BUCKET = "POLICY_EVENTS_COMMANDS"; // the name docs/security.md's permissions are written for
  const permissions = () => documentedPermissionsText("service");

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "record-lookup-"));
    server = await startNatsServer({ extraConfig: [`log_file: "${join(dir, "nats.log")}"`, ...serviceAndTesterAuthorization(permissions())].join("\n") });
    tester = await connect({ servers: server.url, user: "tester", pass: "tester-secret" });
    const kv = await new Kvm(tester).create(BUCKET, { history: 1, ttl: 120_000 });
    await kv.put("a", JSON.stringify({ n: 1 }));
    await kv.put("a", JSON.stringify({ n: 2 }));
    await kv.put("gone", JSON.stringify({ n: 3 }));
    await kv.delete("gone");
  });
  after(async () => {
    for (const c of serviceUsers) await c.close().catch(() => undefined);
    await tester?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A lookup on a connection of the service user, holding `servicePermissions` (a conf block). */
  async function lookupAs(servicePermissions: string): Promise<BatchedRecordLookup> {
    const user = await connect({ servers: server!.url, user: "policy-service", pass: "service-secret" });
    serviceUsers.push(user);
    const kv = await new Kvm(user).open(BUCKET);
    return new BatchedRecordLookup({ nc: user, kv, jsm: await jetstreamManager(user, { checkAPI: false }), replicated: true, bucket: BUCKET, timeoutMs: 3000 });
  }

  /** The lookups of `keys` as one turn's, and the requests they made: to the leader, and direct gets. */
  async function turn(lookup: BatchedRecordLookup, keys: string[]) {
    const asked = { leader: 0, direct: 0 };
    const watch = [
      tester!.subscribe(`$JS.API.STREAM.MSG.GET.KV_${BUCKET}`, { callback: () => { asked.leader++; } }),
      tester!.subscribe(`$JS.API.DIRECT.GET.KV_${BUCKET}.>`, { callback: () => { asked.direct++; } }),
      tester!.subscribe(`$JS.API.DIRECT.GET.KV_${BUCKET}`, { callback: () => { asked.direct++; } }),
    ];
    await tester!.flush();
    requestStarted();
    requestStarted();
    let results;
    try {
      results = await Promise.all(keys.map((k) => lookup.get(k)));
    } finally {
      requestEnded();
      requestEnded();
    }
    await tester!.flush();
    for (const w of watch) w.unsubscribe();
    return { results, asked };
  }

  test("with the documented permissions: a turn's lookups are one direct get and one request to the leader, together; a replica's misses count once it was at the leader's last record", async () => {
    const lookup = await lookupAs(permissions());
    assert.deepEqual(await lookup.probe(1_000), { leader: true, batching: true });
    const first = await turn(lookup, ["a", "missing", "gone", "a"]);
    const [a, missing, gone, aAgain] = first.results;
    assert.deepEqual(a?.json(), { n: 2 }, "the key's last record");
    assert.equal(aAgain, a, "two lookups of one key in a turn share its answer");
    assert.equal(missing, null);
    assert.equal(gone?.operation, "DEL", "a deleted key reads as its delete marker");
    assert.equal(gone?.length, 0);
    assert.deepEqual(first.asked, { leader: 1, direct: 1 }, "the leader's last record, and one multi_last");
    // None of these keys has a record: the key of the leader's last record, seen by the turn before, goes along, so
    // that the replica's answer says how far it is.
    const second = await turn(lookup, ["missing", "other-missing"]);
    assert.deepEqual(second.results, [null, null]);
    assert.deepEqual(second.asked, { leader: 1, direct: 1 });
    assert.deepEqual(lookup.counters, { requests: 2, keys: 5, behind: 0, fromLeader: 0 }, "no miss asked of the leader");
  });

  test("a replica's answer that does not say how far it is (none of the keys found, no record seen before): each miss is asked of the leader", async () => {
    const lookup = await lookupAs(permissions());
    await lookup.probe(1_000);
    const { results, asked } = await turn(lookup, ["x", "a", "y"]);
    assert.deepEqual(results.map((r) => (r ? r.json() : null)), [null, { n: 2 }, null]);
    assert.deepEqual(asked, { leader: 1, direct: 1 }, "a found key makes the replica say how far it is");
    const fresh = await lookupAs(permissions());
    await fresh.probe(1_000);
    const alone = await turn(fresh, ["x", "y"]);
    assert.deepEqual(alone.results, [null, null]);
    assert.deepEqual(alone.asked, { leader: 3, direct: 1 }, "the leader's last record, one multi_last (404: no position), then both misses of the leader");
    assert.deepEqual(fresh.counters, { requests: 1, keys: 2, behind: 1, fromLeader: 2 });
  });

  test("without the documented line for it: the probe says the leader did not answer, and misses are not checked (read from any replica, batched)", async () => {
    const line = /^\s*"\$JS\.API\.STREAM\.MSG\.GET\.KV_POLICY_EVENTS_COMMANDS"\n/m;
    assert.match(permissions(), line, "docs/security.md allows the bucket's STREAM.MSG.GET");
    // A second server: nats-server reads the permissions once, at start-up.
    const older = await startNatsServer({ extraConfig: serviceAndTesterAuthorization(permissions().replace(line, "")).join("\n") });
    const user = await connect({ servers: older.url, user: "policy-service", pass: "service-secret" });
    try {
      const kv = await new Kvm(user).create(BUCKET, { history: 1, ttl: 120_000 });
      await kv.put("a", JSON.stringify({ n: 1 }));
      const lookup = new BatchedRecordLookup({ nc: user, kv, jsm: await jetstreamManager(user, { checkAPI: false }), replicated: true, bucket: BUCKET, timeoutMs: 3000 });
      const probed = await lookup.probe(1_000);
      assert.equal(probed.leader, false);
      assert.ok(probed.leaderError, "with the reason");
      assert.equal(probed.batching, true);
      assert.deepEqual((await lookup.get("a"))?.json(), { n: 1 }, "read from a replica");
      assert.deepEqual(lookup.counters, { requests: 1, keys: 1, behind: 0, fromLeader: 0 }, "not asked of the leader");
    } finally {
      await user.close();
      await older.stop();
    }
  });

  test("the lookups never needed a permission docs/security.md does not grant (besides the probe refused above, on its own server)", () => {
    const violations = readFileSync(join(dir, "nats.log"), "utf8").split("\n").filter((l) => /(Publish|Subscription|Permissions) Violation/i.test(l));
    assert.deepEqual(violations, []);
  });
});

describe("retries of remembered refusals arriving together", () => {
  const node = singleNode();

  test("each is answered with its remembered refusal, nothing is stored, and their lookups share requests", async () => {
    const RETRIES = 32;
    const policyId = randomUUID();
    const commandIds = Array.from({ length: RETRIES }, () => randomUUID());
    const approve = (commandId: string) => ({ policy_id: policyId, approved_by: "officer", command_id: commandId });
    // First attempts, one at a time: the policy does not exist yet, so each is refused (not_found) and remembered.
    const first: Json[] = [];
    for (const id of commandIds) {
      const { reply } = await call(node.nc, "approve", approve(id));
      assert.equal(reply.error?.code, "not_found", JSON.stringify(reply));
      first.push(reply);
    }
    // Now an approve would succeed: a retry that missed its record would store an event.
    await callOk(node.nc, "create", policyBody({ policy_id: policyId }));
    const serviceName = (await node.server.monitor<{ connections?: { name?: string }[] }>("/connz?limit=1024"))
      .connections?.map((c) => c.name ?? "").find((n) => n.startsWith("policy-service@") && !n.endsWith("/projection"));
    assert.ok(serviceName, "the service's connection is listed");
    const sentBefore = await sentBy(node.server, serviceName);
    const retries = await Promise.all(commandIds.map((id) => call(node.nc, "approve", approve(id))));
    const sent = (await sentBy(node.server, serviceName)) - sentBefore;
    retries.forEach(({ reply }, i) => assert.deepEqual(reply, first[i], `retry ${i} answers its first attempt's refusal`));
    const approved = (await readAllEvents(node.nc, "POLICY_EVENTS")).filter((e) => e.envelope.aggregate_id === policyId && e.envelope.event_type === "approved");
    assert.equal(approved.length, 0, "no retry was stored");
    // Each retry sends its reply; one lookup request each would double that. Sent together, they share requests
    // (how many arrive in one socket read depends on the machine's timing; a few reads are fine, 32 lookups are not).
    assert.ok(sent < RETRIES + RETRIES / 2, `${sent} messages for ${RETRIES} retries: ${RETRIES} replies and ${sent - RETRIES} lookup requests`);
  });
});
