// The command-id records of pipeline step 2 (docs/concurrency.md). On a replicated bucket every lookup asks the
// bucket's stream leader (STREAM.MSG.GET, last_by_subj): a direct get is answered by any replica, also one that has
// fallen behind, and a replica without the record of a refusal made its retry be decided again (stored an event
// where the original reply was a refusal; cluster.test.ts, "remembered refusals while a replica ... is starved").
// On one replica (R1) that replica is the leader: the lookups of the commands that arrive together (one socket read,
// one event-loop turn) go out as ONE direct get of the last message on each key's subject (`multi_last`,
// nats-server ≥ 2.11), not one request per command.
import { createInbox, errors as natsErrors, nuid, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
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
  /** The bucket: a lookup alone in its turn is its plain `get` (one request, one reply, as before). */
  kv: KV;
  bucket: string;
  /** Asks the bucket's stream leader (STREAM.MSG.GET) when `replicated`. */
  jsm: JetStreamManager;
  /** Whether the bucket has more than one replica: then every lookup goes to its leader (once probe() found it allowed). */
  replicated: boolean;
  timeoutMs: number;
  /** Most keys in one request (the rest go in further requests of the same turn). */
  maxKeys?: number;
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
  private readonly opts: Required<BatchedRecordLookupOptions>;
  private readonly subjectPrefix: string;
  private pending = new Map<string, Waiter[]>();
  private scheduled = false;
  /** Requests sent and keys asked for (the tests read them to see the batching). */
  readonly counters = { requests: 0, keys: 0 };
  /** Whether several keys go in one request; off once probe() found the server refusing them (every key its own get). */
  private batching = true;
  /** Whether each key is asked of the stream leader (replicated buckets, once probe() found that allowed). */
  private fromLeader: boolean;

  private readonly inbox: string;
  private readonly inFlight = new Map<string, (msg: Msg) => void>();
  private nextToken = 0;

  constructor(opts: BatchedRecordLookupOptions) {
    this.opts = { maxKeys: 256, ...opts };
    this.fromLeader = opts.replicated;
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
   * Checks, once at start-up, that this user may ask what each lookup asks (the server drops a refused publish
   * silently, so without the permission every lookup would wait out its timeout). On a replicated bucket: one
   * STREAM.MSG.GET of a key that does not exist, which the permissions block of docs/security.md allows since 0.10.
   * Without it, lookups read from any replica, as before (`leader: false`, with the error), batched if allowed. The
   * batched get: two keys that do not exist, on `$JS.API.DIRECT.GET.KV_<bucket>` (besides `…KV_<bucket>.>`); no
   * answer: batching stays off (one get per key, as before batching).
   */
  async probe(timeoutMs: number): Promise<{ leader: boolean; leaderError?: unknown; batching: boolean; error?: unknown }> {
    let leaderError: unknown;
    if (this.opts.replicated) {
      try {
        // Any JetStream answer will do (here "no message found"): the user may ask, the leader answers.
        await this.opts.nc.request(`$JS.API.STREAM.MSG.GET.KV_${this.opts.bucket}`, JSON.stringify({ last_by_subj: `${this.subjectPrefix}probe-${nuid.next()}` }), { timeout: timeoutMs });
        this.fromLeader = true;
        return { leader: true, batching: false };
      } catch (error) {
        this.fromLeader = false;
        leaderError = error;
      }
    }
    const leader = { leader: false, ...(leaderError === undefined ? {} : { leaderError }) };
    try {
      await this.lastOf([`probe-${nuid.next()}`, `probe-${nuid.next()}`], timeoutMs);
      this.batching = true;
      return { ...leader, batching: true };
    } catch (error) {
      this.batching = false;
      return { ...leader, batching: false, error };
    }
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    const keys = [...batch.keys()];
    // From the leader, or without batching (probe), every key is a chunk of its own.
    const chunkSize = this.batching && !this.fromLeader ? this.opts.maxKeys : 1;
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
      if (this.fromLeader) {
        this.fromStreamLeader(chunk[0]!).then((entry) => settle(entry ? new Map([[chunk[0]!, entry]]) : new Map()), fail);
      } else if (chunk.length === 1) {
        this.opts.kv.get(chunk[0]!).then((entry) => settle(entry ? new Map([[chunk[0]!, entry]]) : new Map()), fail);
      } else {
        this.lastOf(chunk).then(settle, fail);
      }
    }
  }

  /** The key's last record on the bucket's stream leader (read-after-write): null when it has none. */
  private async fromStreamLeader(key: string): Promise<RecordEntry | null> {
    const msg = await this.opts.jsm.streams.getMessage(`KV_${this.opts.bucket}`, { last_by_subj: this.subjectPrefix + key });
    return msg ? entryOf(msg.header, msg.data) : null;
  }

  /**
   * One `multi_last` direct get: a message per key that has a record (a delete marker has an empty body), then a
   * status: 204 end of batch, or 404 when none has. The replies come to this lookup's own wildcard inbox (one
   * subscription for the instance's life, a token per request), not to a subscription per request.
   */
  private lastOf(keys: string[], timeoutMs = this.opts.timeoutMs): Promise<Map<string, RecordEntry>> {
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
        if (code === 204 || code === 404) resolve(found);
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
