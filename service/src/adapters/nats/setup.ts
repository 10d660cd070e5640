// Start-up provisioning: the event stream and the two KV buckets, created or updated in place.
// An existing stream is never deleted, purged or shortened; one that does not look like ours is refused.
import { JetStreamApiError, type JetStreamClient, type JetStreamManager, type StreamConfig, type StreamInfo } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { nanos, type NatsConnection } from "@nats-io/nats-core";
import type { Config } from "../../support/config.js";
import type { Logger } from "../../support/logger.js";

export const EVENT_SUBJECTS = "events.policy.>";
const DAY_NS = 24 * 3600 * 1e9;
export const EVENT_MAX_AGE_NS = 365 * DAY_NS;
/** The COMMANDS bucket keeps replies for this many duplicate windows (a retry after the window still finds its reply). */
export const COMMANDS_TTL_FACTOR = 10;

export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}

export interface ServerVersion { major: number; minor: number; patch: number; text: string }

export function parseServerVersion(text: string | undefined): ServerVersion | null {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(text ?? "");
  return m ? { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text: text! } : null;
}

export function atLeast(v: ServerVersion, major: number, minor: number): boolean {
  return v.major > major || (v.major === major && v.minor >= minor);
}

/**
 * nats-server 2.11 is the floor: older servers silently ignore Nats-Expected-Last-Subject-Sequence-Subject,
 * so two writers could both append to one aggregate (lost updates, duplicate versions) even on R1.
 * We refuse to run on them at all rather than run with a guarantee we cannot keep.
 */
export function checkServerVersion(versionText: string | undefined, replicas: number): ServerVersion {
  const v = parseServerVersion(versionText);
  if (!v) throw new StartupError(`cannot parse the NATS server version ${JSON.stringify(versionText)}`);
  if (!atLeast(v, 2, 11)) {
    throw new StartupError(
      `nats-server ${v.text} is too old: 2.11.0 or newer is required. On ${v.text} the per-aggregate concurrency check ` +
        `(Nats-Expected-Last-Subject-Sequence-Subject) is silently ignored, so concurrent commands on one aggregate could both be stored ` +
        `(lost updates, repeated versions)` +
        (replicas > 1 ? `; on replicated streams servers before 2.9.21 even accept several writers with the same expected sequence` : "") +
        `, and direct-get batches used for loading are missing. Refusing to start.`,
    );
  }
  return v;
}

function isApiError(err: unknown, code?: number): err is JetStreamApiError {
  return err instanceof JetStreamApiError && (code === undefined || err.code === code);
}

function sameSubjects(a: readonly string[] | undefined, b: readonly string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((s, i) => s === b[i]);
}

/** Creates the event stream or brings an existing one to the configured replicas / duplicate window. */
export async function ensureEventStream(jsm: JetStreamManager, config: Config, server: ServerVersion, logger: Logger): Promise<StreamInfo> {
  const duplicateWindow = nanos(config.duplicateWindowSeconds * 1000);
  const wanted: Partial<StreamConfig> & { name: string } = {
    name: config.streamName,
    description: "policy-service events (event-sourced; never delete or purge)",
    subjects: [EVENT_SUBJECTS],
    storage: "file" as StreamConfig["storage"],
    retention: "limits" as StreamConfig["retention"],
    max_age: EVENT_MAX_AGE_NS,
    num_replicas: config.streamReplicas,
    duplicate_window: duplicateWindow,
    allow_direct: true,
    deny_delete: true,
    deny_purge: true,
    ...(atLeast(server, 2, 12) ? { allow_atomic: true } : {}),
  };
  let existing: StreamInfo | null = null;
  try {
    existing = await jsm.streams.info(config.streamName);
  } catch (err) {
    if (!isApiError(err, 10059)) throw err;
  }
  if (!existing) {
    try {
      const info = await jsm.streams.add(wanted);
      logger.info({ stream: config.streamName, replicas: config.streamReplicas, duplicate_window_s: config.duplicateWindowSeconds }, "event stream created");
      return info;
    } catch (err) {
      if (isApiError(err, 10065)) {
        throw new StartupError(`cannot create stream ${config.streamName}: its subjects ${EVENT_SUBJECTS} overlap with another stream (${err.message}); refusing to start`);
      }
      if (isApiError(err, 10058)) return ensureEventStream(jsm, config, server, logger); // created concurrently by another instance
      throw err;
    }
  }
  const current = existing.config;
  if (!sameSubjects(current.subjects, [EVENT_SUBJECTS])) {
    throw new StartupError(
      `stream ${config.streamName} exists with subjects ${JSON.stringify(current.subjects ?? [])}, expected ["${EVENT_SUBJECTS}"]; ` +
        `refusing to start (the stream is left untouched; point STREAM_NAME at another stream or fix it by hand)`,
    );
  }
  if (current.storage !== "file") logger.warn({ stream: config.streamName, storage: current.storage }, "event stream is not file-backed; cannot change storage in place");
  const update: Partial<StreamConfig> = {};
  if (current.num_replicas !== config.streamReplicas) update.num_replicas = config.streamReplicas;
  if (current.duplicate_window !== duplicateWindow) update.duplicate_window = duplicateWindow;
  if (!current.allow_direct) update.allow_direct = true;
  // Never shorten retention: only raise a shorter max age to a year; an unlimited one (0) stays.
  if (current.max_age !== 0 && current.max_age < EVENT_MAX_AGE_NS) update.max_age = EVENT_MAX_AGE_NS;
  if (wanted.allow_atomic && !current.allow_atomic) update.allow_atomic = true;
  if (Object.keys(update).length === 0) return existing;
  const info = await jsm.streams.update(config.streamName, { ...current, ...update });
  logger.info({ stream: config.streamName, changed: Object.keys(update) }, "event stream updated");
  return info;
}

/** Opens (creating if needed) a KV bucket and aligns replicas and max age with the configuration. */
export async function ensureBucket(nc: NatsConnection | JetStreamClient, jsm: JetStreamManager, bucket: string, replicas: number, ttlMs: number, logger: Logger): Promise<KV> {
  const kvm = new Kvm(nc);
  const kv = await kvm.create(bucket, { replicas, history: 1, ttl: ttlMs, storage: "file" as never });
  const streamName = `KV_${bucket}`;
  const info = await bucketStreamInfo(jsm, streamName);
  const update: Partial<StreamConfig> = {};
  if (info.config.num_replicas !== replicas) update.num_replicas = replicas;
  if (info.config.max_age !== nanos(ttlMs)) update.max_age = nanos(ttlMs);
  if (Object.keys(update).length > 0) {
    await jsm.streams.update(streamName, { ...info.config, ...update });
    logger.info({ bucket, changed: Object.keys(update) }, "KV bucket updated");
  }
  return kv;
}

/**
 * The bucket's stream, just created or opened. When several instances start at once on a forming
 * cluster, the stream's info can answer "stream not found" (10059) for a moment after the create
 * succeeded (seen about one start in eight with three instances): ask again briefly before giving up.
 */
async function bucketStreamInfo(jsm: JetStreamManager, streamName: string): Promise<StreamInfo> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await jsm.streams.info(streamName);
    } catch (err) {
      if (!isApiError(err, 10059) || attempt >= 20) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 + 50 * attempt));
    }
  }
}

export function commandsTtlMs(config: Config): number {
  return config.duplicateWindowSeconds * 1000 * COMMANDS_TTL_FACTOR;
}
