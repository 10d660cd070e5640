// Follows a stream with an ordered consumer, and recreates that consumer when it goes silent.
//
// An ordered consumer is an R1 consumer: the meta leader places it on one of the stream's peers. When that server
// stalls or is cut off while its routes stay up (a VM paused or starved; the routes' pings fail only minutes later),
// the consumer misses its heartbeats, and the client library (@nats-io/jetstream 3.4: the idle-heartbeat monitor of
// lib/consumer.js) only re-sends its pulls and asks that same server for the consumer's info, again and again. It
// recreates the consumer only on "consumer not found" or a sequence gap, so what follows the stream stands still for
// the whole stall. The projection froze that way (cluster.test.ts, "the projection's consumer on a stalled server"),
// and so did `ctl events` (cluster.test.ts, "`ctl events` on a stalled server").
import { DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type ConsumerMessages, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import { backoffDelay, sleep } from "../../support/backoff.js";

/** Pull expiry of a follower's consumer; the server sends heartbeats every half of it while there is nothing new. */
export const FOLLOW_PULL_EXPIRES_MS = 5000;
/**
 * Heartbeats missed in a row after which the consumer is recreated: with FOLLOW_PULL_EXPIRES_MS, about 5 s after its
 * server went silent (with the library's default 30 s expiry it would be 30 s).
 */
export const FOLLOW_MISSED_HEARTBEATS = 2;
/** Recreations in a row refused with "stream not found" after which the stream is taken as deleted. */
const STREAM_MISSING_ATTEMPTS = 3;

export interface FollowerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface StreamFollowerOptions {
  js: JetStreamClient;
  streamName: string;
  filterSubject: string;
  /** Who follows, at the start of the log lines ("projection consumer silent …"). */
  name: string;
  logger: FollowerLogger;
  /** Messages kept requested ahead (the library's default when absent). */
  pullBatch?: number;
  /**
   * Called for every message, in stream order, each once (also across a recreation). A promise it returns is
   * awaited before the next message; it must not throw.
   */
  onMessage(msg: JsMsg): void | Promise<void>;
}

export class StreamFollower {
  private readonly options: StreamFollowerOptions;
  private stopped = false;
  /** The sequence the next consumer starts at: after the last message handed to onMessage (0: the stream's start). */
  private nextSeq = 0;
  private iterator: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  /** The consumer replaceConsumer stopped: its loop's end is expected. */
  private retired: ConsumerMessages | undefined;
  /** A consumer being recreated (replaceConsumer), awaited by stop(). */
  private replacing: Promise<void> | undefined;
  private recreations = 0;

  private endedResolve: () => void = () => undefined;
  /**
   * Resolves when the consumer ended by itself (not after stop() or a recreation), or could not be recreated because
   * the stream no longer exists: nothing more will be handed on.
   */
  readonly ended: Promise<void> = new Promise((resolve) => (this.endedResolve = resolve));

  constructor(options: StreamFollowerOptions) {
    this.options = options;
  }

  /** Creates the consumer, from `fromSeq` (0: the stream's start); resolves once it exists. */
  async start(fromSeq: number): Promise<void> {
    this.nextSeq = fromSeq;
    await this.follow();
  }

  /** Consumers recreated since start because the one before went silent. */
  get consumerRecreations(): number {
    return this.recreations;
  }

  /** Stops following; resolves when no onMessage call is under way or will come. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.iterator?.stop();
    // A consumer created meanwhile is stopped by follow() itself (it checks `stopped`).
    await this.replacing;
    await this.loop;
  }

  private async follow(): Promise<void> {
    const { js, streamName, filterSubject, pullBatch } = this.options;
    const fromSeq = this.nextSeq;
    const consumer = await js.consumers.get(streamName, {
      filter_subjects: filterSubject,
      ...(fromSeq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq } : { deliver_policy: DeliverPolicy.All }),
    });
    const messages = await consumer.consume({ expires: FOLLOW_PULL_EXPIRES_MS, ...(pullBatch !== undefined ? { max_messages: pullBatch } : {}) });
    if (this.stopped) {
      messages.stop();
      return;
    }
    this.iterator = messages;
    this.watchHeartbeats(messages, () => consumer.delete());
    this.loop = (async () => {
      for await (const msg of messages) {
        const handled = this.options.onMessage(msg);
        this.nextSeq = msg.seq + 1;
        if (handled !== undefined) await handled;
      }
    })().catch((err: unknown) => {
      if (!this.stopped) this.options.logger.error({ err }, `${this.options.name} consumer ended unexpectedly`);
    }).then(() => {
      // Without stop() or a recreation (the connection closed, or the loop failed): nothing more will come.
      if (!this.stopped && this.retired !== messages) this.endedResolve();
    });
  }

  private watchHeartbeats(messages: ConsumerMessages, deleteConsumer: () => Promise<unknown>): void {
    void (async () => {
      for await (const status of messages.status()) {
        if (status.type !== "heartbeats_missed" || status.count < FOLLOW_MISSED_HEARTBEATS) continue;
        if (this.stopped || this.iterator !== messages) return;
        this.replacing = this.replaceConsumer(messages, deleteConsumer, status.count);
        return;
      }
    })().catch(() => undefined);
  }

  private async replaceConsumer(stale: ConsumerMessages, deleteConsumer: () => Promise<unknown>, missed: number): Promise<void> {
    const { logger, name } = this.options;
    logger.warn({ missed_heartbeats: missed, next_seq: this.nextSeq }, `${name} consumer silent (its server stalled or cut off?): recreating it`);
    // What it had delivered is handed on before its loop ends (the library queues the stop behind it); the new
    // consumer starts after the last message handed on, so nothing is handed on twice or skipped.
    this.retired = stale;
    stale.stop();
    await this.loop;
    // The meta leader removes its assignment even while its server is silent (that server drops it when it resumes).
    deleteConsumer().catch(() => undefined);
    let streamMissing = 0;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.follow();
        this.recreations++;
        logger.info({ next_seq: this.nextSeq, attempts: attempt + 1 }, `${name} consumer recreated`);
        return;
      } catch (err) {
        // The stream is gone (deleted): nothing more will come, and a stream created again under its name starts its
        // sequences anew, so following it from here would skip or misplace its events. Said three times in a row
        // (about a second), not once: a server that has just restarted may not know the stream yet.
        streamMissing = err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound ? streamMissing + 1 : 0;
        if (streamMissing >= STREAM_MISSING_ATTEMPTS) {
          logger.error({ err, stream: this.options.streamName, next_seq: this.nextSeq }, `${name}: the stream no longer exists; not following it any more`);
          this.endedResolve();
          return;
        }
        // No meta leader (the silent server may have been it) until the others elect one.
        logger.warn({ err, attempt }, `${name} consumer not recreated yet; retrying`);
        await sleep(backoffDelay(attempt, { initialMs: 250, maxMs: 5000 }));
      }
    }
  }
}
