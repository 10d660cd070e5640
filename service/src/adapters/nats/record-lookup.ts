// The command-id records of pipeline step 2 (docs/concurrency.md), looked up in batches: the lookups of the commands
// that arrive together (one socket read, one event-loop turn) go out as ONE direct get of the last message on each
// key's subject (`multi_last`, nats-server ≥ 2.11), not one request per command. A direct get is answered by any
// replica, also one that has fallen behind, and a replica without the record of a refusal made its retry be decided
// again (cluster.test.ts, "remembered refusals while a replica ... is starved"). So on a replicated bucket each batch
// also asks the bucket's stream leader for its last record, and a batch's misses count only when the replica that
// answered was at or past it; otherwise they are asked of the leader.
import { createInbox, errors as natsErrors, nuid, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Logger } from "../../support/logger.js";
import { batchedWrite } from "./write-batch.js";

/** What step 2 reads of a record: the fields of a KvEntry it uses. */
export interface RecordEntry {
  operation: "PUT" | "DEL" | "PURGE";
  length: number;
  json<T>(): T;
}

export interface RecordLookup {
  get(key: string): Promise<RecordEntry | null>;
}

export interface BatchedRecordLookupOptions {
  nc: NatsConnection;
  /** The bucket: a lookup alone in its turn is its plain `get` (one request, one reply), unless misses are checked. */
  kv: KV;
  bucket: string;
  /** Asks the bucket's stream leader (STREAM.MSG.GET) when `replicated`. */
  jsm: JetStreamManager;
  /** Whether the bucket has more than one replica: then misses are checked against its leader (once probe() found that allowed). */
  replicated: boolean;
  logger?: Pick<Logger, "debug">;
  timeoutMs: number;
  /** Most keys in one request (the rest go in further requests of the same turn). */
  maxKeys?: number;
}

/** What one `multi_last` request found, and how far the replica that answered was (null: it did not say). */
interface LastOf {
  found: Map<string, RecordEntry>;
  upTo: number | null;
}

/** The bucket leader's last record: its sequence and key (null: the bucket is empty). */
interface LeaderLast {
  seq: number;
  key: string;
}

interface Waiter {
  resolve(entry: RecordEntry | null): void;
  reject(err: unknown): void;
}

const UTF8 = new TextDecoder();

/** A stored record as an entry: KV-Operation DEL or PURGE marks a deleted key, as KV's get reads it. */
function entryOf(headers: MsgHdrs | undefined, data: Uint8Array): RecordEntry {
  const op = headers?.get("KV-Operation");
  return {
    operation: op === "DEL" || op === "PURGE" ? op : "PUT",
    length: data.length,
    json: <T>() => JSON.parse(UTF8.decode(data)) as T,
  };
}

export class BatchedRecordLookup implements RecordLookup {
  private readonly opts: Required<Omit<BatchedRecordLookupOptions, "logger">> & Pick<BatchedRecordLookupOptions, "logger">;
  private readonly subjectPrefix: string;
  private pending = new Map<string, Waiter[]>();
  private scheduled = false;
  /**
   * Requests sent and keys asked for (the tests read them to see the batching); on a replicated bucket also the
   * batches whose answering replica was behind the leader (or did not say), and the keys asked of the leader one by
   * one (those batches' misses, and lone lookups).
   */
  readonly counters = { requests: 0, keys: 0, behind: 0, fromLeader: 0 };
  /** Whether several keys go in one request; off once probe() found the server refusing them (every key its own get). */
  private batching = true;
  /** Whether misses are checked against the bucket's leader (replicated buckets, once probe() found that allowed). */
  private checked: boolean;
  /**
   * A key the bucket had (the leader's last record, seen by the batch before): asked in every checked batch, so that
   * the replica's answer carries its position (Nats-UpTo-Sequence), which it gives only when it found a key.
   */
  private anchor: string | null = null;

  private readonly inbox: string;
  private readonly inFlight = new Map<string, (msg: Msg) => void>();
  private nextToken = 0;

  constructor(opts: BatchedRecordLookupOptions) {
    this.opts = { maxKeys: 256, ...opts };
    this.checked = opts.replicated;
    this.subjectPrefix = `$KV.${opts.bucket}.`;
    this.inbox = createInbox(); // under _INBOX., which the service user may subscribe to (docs/security.md)
    opts.nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return; // the connection's own errors are the connection's to report
        this.inFlight.get(msg.subject.slice(this.inbox.length + 1))?.(msg);
      },
    });
  }

  get(key: string): Promise<RecordEntry | null> {
    return new Promise((resolve, reject) => {
      const waiters = this.pending.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else this.pending.set(key, [{ resolve, reject }]);
      if (!this.scheduled) {
        this.scheduled = true;
        // Alone in flight it goes out at once; otherwise at the end of the turn, with every lookup of the turn.
        batchedWrite(() => this.flush());
      }
    });
  }

  /**
   * Checks, once at start-up, that this user may ask what the lookups ask (the server drops a refused publish
   * silently, so without the permission every lookup would wait out its timeout). The batched get: two keys that do
   * not exist, on `$JS.API.DIRECT.GET.KV_<bucket>` (besides `…KV_<bucket>.>`); no answer: batching off (one get per
   * key, as before batching). On a replicated bucket also the leader's last record (STREAM.MSG.GET, which the
   * permissions block of docs/security.md allows since 0.10); no answer: misses are not checked (`leader: false`,
   * with the error), as before.
   */
  async probe(timeoutMs: number): Promise<{ leader: boolean; leaderError?: unknown; batching: boolean; error?: unknown }> {
    const [leader, batched] = await Promise.allSettled([
      // Any JetStream answer will do: the user may ask, and the leader answers.
      this.opts.replicated
        ? this.opts.nc.request(`$JS.API.STREAM.MSG.GET.KV_${this.opts.bucket}`, JSON.stringify({ last_by_subj: `${this.subjectPrefix}>` }), { timeout: timeoutMs })
        : Promise.reject(new Error("one replica: its answers are the leader's")),
      this.lastOf([`probe-${nuid.next()}`, `probe-${nuid.next()}`], timeoutMs),
    ]);
    this.checked = leader.status === "fulfilled";
    this.batching = batched.status === "fulfilled";
    return {
      leader: this.checked,
      ...(leader.status === "rejected" && this.opts.replicated ? { leaderError: leader.reason } : {}),
      batching: this.batching,
      ...(batched.status === "rejected" ? { error: batched.reason } : {}),
    };
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    const keys = [...batch.keys()];
    // Without batching (probe), every key is a chunk of its own.
    const chunkSize = this.batching ? this.opts.maxKeys : 1;
    for (let i = 0; i < keys.length; i += chunkSize) {
      const chunk = keys.slice(i, i + chunkSize);
      const settle = (found: Map<string, RecordEntry>) => {
        for (const key of chunk) for (const w of batch.get(key)!) w.resolve(found.get(key) ?? null);
      };
      const fail = (err: unknown) => {
        for (const key of chunk) for (const w of batch.get(key)!) w.reject(err);
      };
      this.counters.requests++;
      this.counters.keys += chunk.length;
      if (this.checked) {
        this.checkedLastOf(chunk).then(settle, fail);
      } else if (chunk.length === 1) {
        this.opts.kv.get(chunk[0]!).then((entry) => settle(entry ? new Map([[chunk[0]!, entry]]) : new Map()), fail);
      } else {
        this.lastOf(chunk).then(({ found }) => settle(found), fail);
      }
    }
  }

  /**
   * A batch on a replicated bucket. The record of an earlier attempt was stored before that attempt's reply, so
   * before this lookup: at or before the leader's last record, asked now. A replica whose answer shows it at or past
   * that sequence had the record; a miss in it is real. Otherwise (behind, or it did not say) the misses are asked of
   * the leader, one STREAM.MSG.GET each. Both requests go out together: no round trip is added.
   */
  private async checkedLastOf(keys: string[]): Promise<Map<string, RecordEntry>> {
    // A lone key: one request to the leader answers it (a replica's answer would need the leader's too). Without
    // batching (probe) a replica would not say how far it is: the leader alone.
    if (keys.length === 1 || !this.batching) return this.allFromLeader(keys, new Map());
    const anchor = this.anchor;
    const asked = anchor === null || keys.includes(anchor) ? keys : [...keys, anchor];
    const [leader, replica] = await Promise.all([this.leaderLast(), this.lastOf(asked)]);
    if (leader === null) return replica.found; // the bucket is empty on the leader: every miss is real
    this.anchor = leader.key;
    if (replica.upTo !== null && replica.upTo >= leader.seq) return replica.found;
    this.counters.behind++;
    const missing = keys.filter((k) => !replica.found.has(k));
    this.opts.logger?.debug({ replica_up_to: replica.upTo, leader_last_seq: leader.seq, missing: missing.length }, "command-record lookup answered by a replica behind the bucket's leader; asking the leader");
    return this.allFromLeader(missing, new Map(replica.found));
  }

  /** `found`, with the records of `keys` the bucket's leader has added: one STREAM.MSG.GET each. */
  private async allFromLeader(keys: string[], found: Map<string, RecordEntry>): Promise<Map<string, RecordEntry>> {
    await Promise.all(keys.map(async (key) => {
      const entry = await this.fromStreamLeader(key);
      if (entry) found.set(key, entry);
    }));
    return found;
  }

  /** The bucket's last record on its stream leader: STREAM.MSG.GET with last_by_subj of every key. */
  private async leaderLast(): Promise<LeaderLast | null> {
    const msg = await this.opts.jsm.streams.getMessage(`KV_${this.opts.bucket}`, { last_by_subj: `${this.subjectPrefix}>` });
    return msg ? { seq: msg.seq, key: msg.subject.slice(this.subjectPrefix.length) } : null;
  }

  /** The key's last record on the bucket's stream leader (read-after-write): null when it has none. */
  private async fromStreamLeader(key: string): Promise<RecordEntry | null> {
    this.counters.fromLeader++;
    const msg = await this.opts.jsm.streams.getMessage(`KV_${this.opts.bucket}`, { last_by_subj: this.subjectPrefix + key });
    return msg ? entryOf(msg.header, msg.data) : null;
  }

  /**
   * One `multi_last` direct get: a message per key that has a record (a delete marker has an empty body), then a
   * status: 204 end of batch (with the replica's last sequence, Nats-UpTo-Sequence), or 404 when none has. The
   * replies come to this lookup's own wildcard inbox (one subscription for the instance's life, a token per
   * request), not to a subscription per request.
   */
  private lastOf(keys: string[], timeoutMs = this.opts.timeoutMs): Promise<LastOf> {
    return new Promise((resolve, reject) => {
      const token = String(++this.nextToken);
      const found = new Map<string, RecordEntry>();
      const timer = setTimeout(() => {
        this.inFlight.delete(token);
        reject(new natsErrors.TimeoutError());
      }, timeoutMs);
      this.inFlight.set(token, (msg) => {
        const code = msg.headers?.code ?? 0;
        if (code === 0) {
          const subject = msg.headers?.get("Nats-Subject") ?? "";
          if (subject.startsWith(this.subjectPrefix)) found.set(subject.slice(this.subjectPrefix.length), entryOf(msg.headers, msg.data));
          return;
        }
        clearTimeout(timer);
        this.inFlight.delete(token);
        // The 204 says how far the replica was (its last sequence when it answered); a 404 (none found) does not.
        const upTo = code === 204 ? Number(msg.headers?.get("Nats-UpTo-Sequence") || NaN) : NaN;
        if (code === 204 || code === 404) resolve({ found, upTo: Number.isFinite(upTo) ? upTo : null });
        else if (code === 408) reject(new natsErrors.TimeoutError());
        else if (code === 503) reject(new Error("no responders for the command records' direct get (503)"));
        else reject(new Error(`direct get of command records failed: ${code} ${msg.headers?.description ?? ""}`.trim()));
      });
      const request = JSON.stringify({ multi_last: keys.map((k) => this.subjectPrefix + k), batch: keys.length });
      try {
        this.opts.nc.publish(`$JS.API.DIRECT.GET.KV_${this.opts.bucket}`, request, { reply: `${this.inbox}.${token}` });
      } catch (err) {
        clearTimeout(timer);
        this.inFlight.delete(token);
        reject(err);
      }
    });
  }
}
