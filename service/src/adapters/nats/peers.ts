// The success-record gate (rolling upgrades, docs/operations.md): a command that stored an event writes no
// idempotency record only while this instance knows that every instance serving its stream answers a retry from
// the event's payload-hash header. Builds before the header (0.9.0) answer retries from the record, so while one of
// them is around, and for `holdMs` after the last one was seen, success records are written as before.
// Peers are found the way nats-server gates features by peer API level: each instance advertises the capability in
// its micro-service metadata (COMMAND_HASH_METADATA); `$SRV.PING.<name>` lists every instance with its metadata,
// and an instance without the key is an older build.
import type { NatsConnection } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import type { CommandRecordsMode } from "../../support/config.js";
import type { Logger } from "../../support/logger.js";
import { SERVICE_NAME } from "./service.js";

/** Metadata key (value "1") of a build whose stored events answer retries themselves (Policy-Command-Sha256). */
export const COMMAND_HASH_METADATA = "command_hash";
/** Every few seconds: an old instance started during the roll (or a rollback) is seen within this. */
export const PEER_DISCOVERY_INTERVAL_MS = 2000;
/** A round ends this long after the last reply (the client's "stall" strategy), at most PEER_PING_MAX_MS after it began. */
const PEER_PING_STALL_MS = 250;
const PEER_PING_MAX_MS = 1500;

/** What `$SRV.PING` says of one instance. */
export interface PeerIdentity { id: string; version: string; metadata?: Record<string, string> | null }


export interface SuccessRecordGateOptions {
  selfId: () => string;
  streamName: string;
  mode: CommandRecordsMode;
  /** How long records continue after the last old peer was seen: the COMMANDS bucket's TTL (the idempotency window). */
  holdMs: number;
  /** One discovery round: every instance of the service that answers (this one included). */
  discover: () => Promise<PeerIdentity[]>;
  /** Every round's answer (null: the round failed), for the command forwarder's member set (forward.ts). */
  onRound?: (peers: PeerIdentity[] | null) => void;
  logger: Logger;
  clock?: () => number;
}

export class SuccessRecordGate {
  private readonly opts: SuccessRecordGateOptions;
  private readonly clock: () => number;
  private roundsDone = 0;
  /** When an instance without the capability (or a failed round) was last seen; null: never. */
  private oldSeenAt: number | null = null;
  private lastOld: PeerIdentity | null = null;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;
  private reported: boolean | undefined;
  /** A failing discovery is warned about once until a round succeeds again (it repeats every 2 s). */
  private failureWarned = false;

  constructor(opts: SuccessRecordGateOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? Date.now;
  }

  /**
   * Whether a stored command must also write its idempotency record now. Until the first round has answered: yes
   * (an old peer may be there).
   */
  successRecords(): boolean {
    if (this.opts.mode === "always" || this.roundsDone === 0) return true;
    return this.oldSeenAt !== null && this.clock() - this.oldSeenAt < this.opts.holdMs;
  }

  /**
   * One discovery round. A round that fails, or in which this instance did not hear its own answer (a ping the
   * server refused: a user without publish permission on `$SRV.PING.policy-service`, docs/security.md), counts as
   * an old peer seen: records are the safe side.
   */
  async round(): Promise<void> {
    const self = this.opts.selfId();
    let peers: PeerIdentity[];
    try {
      peers = await this.opts.discover();
      if (!peers.some((p) => p.id === self)) throw new Error(`no answer from this instance itself (${peers.length} others answered): is publishing to $SRV.PING.policy-service allowed?`);
    } catch (err) {
      const log = this.failureWarned ? this.opts.logger.debug : this.opts.logger.warn;
      log.call(this.opts.logger, { err }, "peer discovery failed; writing success records as if an older instance were present");
      this.failureWarned = true;
      this.oldSeenAt = this.clock();
      this.roundsDone++;
      this.report();
      this.opts.onRound?.(null);
      return;
    }
    this.failureWarned = false;
    const old = peers.find((p) => p.id !== self && servesStream(p, this.opts.streamName) && p.metadata?.[COMMAND_HASH_METADATA] !== "1");
    if (old) {
      this.oldSeenAt = this.clock();
      this.lastOld = old;
    }
    this.roundsDone++;
    this.report();
    this.opts.onRound?.(peers);
  }

  /** Runs a first round (awaited, bounded by PEER_PING_MAX_MS), then one every PEER_DISCOVERY_INTERVAL_MS. */
  async start(): Promise<void> {
    if (this.opts.mode === "always") {
      this.opts.logger.info({ mode: this.opts.mode }, "COMMAND_RECORDS=always: every stored command writes its idempotency record");
      // The rounds still find the instances that take forwarded commands.
      if (!this.opts.onRound) return;
    }
    await this.tick();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.running = this.round();
    await this.running;
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), PEER_DISCOVERY_INTERVAL_MS);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private report(): void {
    if (this.opts.mode === "always") return;
    const on = this.successRecords();
    if (on === this.reported) return;
    this.reported = on;
    if (on) {
      this.opts.logger.info({ peer: this.lastOld ?? undefined, hold_ms: this.opts.holdMs }, "an instance without the payload-hash capability serves this stream: stored commands write idempotency records");
    } else {
      this.opts.logger.info({ hold_ms: this.opts.holdMs }, "every instance serving this stream answers retries from the event's payload hash: stored commands write no idempotency record");
    }
  }
}

/** An instance that names another stream in its metadata serves another stream; one that names none may serve this one. */
function servesStream(peer: PeerIdentity, streamName: string): boolean {
  const stream = peer.metadata?.stream;
  return typeof stream !== "string" || stream === streamName;
}

/** `$SRV.PING.<SERVICE_NAME>`: every instance that answers within the round. */
export function pingPeers(nc: NatsConnection): () => Promise<PeerIdentity[]> {
  const client = new Svcm(nc).client({ strategy: "stall", maxWait: PEER_PING_MAX_MS, stall: PEER_PING_STALL_MS });
  return async () => {
    const peers: PeerIdentity[] = [];
    for await (const identity of await client.ping(SERVICE_NAME)) peers.push(identity as PeerIdentity);
    return peers;
  };
}
