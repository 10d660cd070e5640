// The command-id records of pipeline step 2 (docs/concurrency.md), looked up in batches: the lookups of the commands
// that arrive together (one socket read, one event-loop turn) go out as ONE direct get of the last message on each
// key's subject (`multi_last`, nats-server ≥ 2.11), not one request per command. A command with a `command_id` cost
// a lookup, a publish and a reply; at 64 in flight the lookups were a third of the messages the instance sent.
import { errors as natsErrors, type Msg, type NatsConnection } from "@nats-io/nats-core";
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
  timeoutMs: number;
  /** Most keys in one request (the rest go in further requests of the same turn). */
  maxKeys?: number;
}

interface Waiter {
  resolve(entry: RecordEntry | null): void;
  reject(err: unknown): void;
}

const UTF8 = new TextDecoder();

/** A direct-get reply as a record entry: KV-Operation DEL or PURGE marks a deleted key, as KV's get reads it. */
function entryOf(msg: Msg): RecordEntry {
  const op = msg.headers?.get("KV-Operation");
  const data = msg.data;
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
  /** Requests sent and keys asked for (tests and the benchmark read them to see the batching). */
  readonly counters = { requests: 0, keys: 0 };

  constructor(opts: BatchedRecordLookupOptions) {
    this.opts = { maxKeys: 256, ...opts };
    this.subjectPrefix = `$KV.${opts.bucket}.`;
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

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    const keys = [...batch.keys()];
    for (let i = 0; i < keys.length; i += this.opts.maxKeys) {
      const chunk = keys.slice(i, i + this.opts.maxKeys);
      const settle = (found: Map<string, RecordEntry>) => {
        for (const key of chunk) for (const w of batch.get(key)!) w.resolve(found.get(key) ?? null);
      };
      const fail = (err: unknown) => {
        for (const key of chunk) for (const w of batch.get(key)!) w.reject(err);
      };
      this.counters.requests++;
      this.counters.keys += chunk.length;
      if (chunk.length === 1) {
        this.opts.kv.get(chunk[0]!).then((entry) => settle(entry ? new Map([[chunk[0]!, entry]]) : new Map()), fail);
      } else {
        this.lastOf(chunk).then(settle, fail);
      }
    }
  }

  /** One `multi_last` direct get: a message per key that has one, then end of batch (or "no results"). */
  private async lastOf(keys: string[]): Promise<Map<string, RecordEntry>> {
    const found = new Map<string, RecordEntry>();
    const request = JSON.stringify({ multi_last: keys.map((k) => this.subjectPrefix + k), batch: keys.length });
    const replies = await this.opts.nc.requestMany(`$JS.API.DIRECT.GET.KV_${this.opts.bucket}`, request, {
      strategy: "sentinel",
      maxWait: this.opts.timeoutMs,
    });
    for await (const msg of replies) {
      if (msg.data.length === 0) {
        const code = msg.headers?.code ?? 0;
        // 204: end of the batch; 404: none of the keys has a record.
        if (code === 204 || code === 404) return found;
        if (code === 408) throw new natsErrors.TimeoutError();
        if (code === 503) throw new Error("no responders for the command records' direct get (503)");
        throw new Error(`direct get of command records failed: ${code} ${msg.headers?.description ?? ""}`.trim());
      }
      const subject = msg.headers?.get("Nats-Subject") ?? "";
      if (subject.startsWith(this.subjectPrefix)) found.set(subject.slice(this.subjectPrefix.length), entryOf(msg));
    }
    // The wait ran out before the end of the batch: as a timed-out request (transient, retried within the deadline).
    throw new natsErrors.TimeoutError();
  }
}
