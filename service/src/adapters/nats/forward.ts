// One writer per hot aggregate (docs/concurrency.md, "Several instances on the same aggregates"). Instances that
// write the same aggregate lose append races to each other: the winner keeps the aggregate while its queue lasts, the
// others catch up and lose again. So an instance that has lost a race on an aggregate hands that aggregate's commands
// to ONE instance, the same for every instance: the highest rendezvous hash of the aggregate id over the instances
// that take forwarded commands (found by the `$SRV.PING` rounds of peers.ts). The owner runs a forwarded command as
// if a client had sent it there and never forwards it again; the reply goes back through the forwarder.
// Nothing here carries a guarantee: the server's expected-sequence check does, whoever writes.
import { createHash } from "node:crypto";
import { NoRespondersError, RequestError, nuid, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import type { Logger } from "../../support/logger.js";
import type { PeerIdentity } from "./peers.js";
import { withTimeout } from "./service.js";
import { batchedRequest, batchedWrite, requestEnded, requestStarted } from "./write-batch.js";

/** Metadata key of an instance that takes forwarded commands; its value is the instance's forward token. */
export const FORWARD_METADATA = "command_forward";
/** `<prefix>.<token>.<command name>`: the subject an instance takes forwarded commands on. */
export const FORWARD_SUBJECT_PREFIX = "policy.internal.commands";
/** The request an instance sends itself at start-up: does the server let it take (and send) forwarded commands? */
const PROBE = "_probe";
/** A peer leaves the set after missing this many discovery rounds in a row (one late answer is not a departure). */
const MISSED_ROUNDS_TO_LEAVE = 2;

/** What the owner answers; `null` when nobody takes the forward subject (the owner is gone): run it here. */
export type ForwardResult = { json: string } | null;

/** Runs a forwarded command on this instance and gives its reply as JSON text. Never throws. */
export type ForwardedCommandHandler = (name: string, payload: Uint8Array) => Promise<string>;

export interface CommandForwarderOptions {
  nc: NatsConnection;
  streamName: string;
  logger: Logger;
}

export class CommandForwarder {
  /** This instance's token: random per start, so a restarted instance is a new member (its old subject is gone). */
  readonly token = nuid.next();
  private readonly opts: CommandForwarderOptions;
  private sub: Subscription | undefined;
  private handler: ForwardedCommandHandler | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  /** Whether the server let this instance take its forward subject and send a request to it (start()). */
  private enabled = false;
  /** Tokens of the members (this one included), with the rounds each has missed in a row. */
  private readonly members = new Map<string, number>();
  private ordered: string[] = [];
  /** Forwards waiting for each owner's answer: a member that leaves fails them (the caller answers `unavailable`). */
  private readonly waitingOn = new Map<string, Set<(err: Error) => void>>();
  /** Grows whenever the member set changes: owners cached against an older one are computed again. */
  private generationCount = 0;

  constructor(opts: CommandForwarderOptions) {
    this.opts = opts;
  }

  get subject(): string {
    return `${FORWARD_SUBJECT_PREFIX}.${this.token}`;
  }

  /** Whether this instance takes forwarded commands (and so may forward): advertise FORWARD_METADATA only then. */
  get capable(): boolean {
    return this.enabled;
  }

  get generation(): number {
    return this.generationCount;
  }

  /**
   * Takes the forward subject and sends one request to itself on it. Only when that request is answered does this
   * instance take part: a user without the permissions of docs/security.md (the block before 0.10) has its
   * subscription or its publish refused by the server, which drops a refused publish silently (the requester only
   * times out), so advertising the capability then would lose every command forwarded to it.
   */
  async start(handler: ForwardedCommandHandler, probeTimeoutMs: number): Promise<void> {
    this.handler = handler;
    const { nc, logger } = this.opts;
    try {
      this.sub = nc.subscribe(`${this.subject}.*`, { callback: (err, msg) => { if (!err) this.take(msg); } });
      await nc.flush();
      const answer = await nc.request(`${this.subject}.${PROBE}`, "", { timeout: probeTimeoutMs });
      if (answer.string() !== "ok") throw new Error(`unexpected probe answer ${JSON.stringify(answer.string().slice(0, 80))}`);
      this.enabled = true;
      this.members.set(this.token, 0);
      this.refresh();
      logger.debug({ subject: this.subject }, "takes commands forwarded by other instances");
    } catch (err) {
      this.enabled = false;
      this.sub?.unsubscribe();
      this.sub = undefined;
      logger.warn({ err, subject: `${FORWARD_SUBJECT_PREFIX}.>` }, `command forwarding off: this user may not subscribe and publish to ${FORWARD_SUBJECT_PREFIX}.> (docs/security.md); instances writing the same aggregates then race for them`);
    }
  }

  /**
   * One discovery round's answer (peers.ts): the members are the instances serving this stream that advertise a
   * token, and this one. `null`: the round failed; the set is kept (its members are dropped as they miss rounds).
   */
  updatePeers(peers: readonly PeerIdentity[] | null): void {
    if (!this.enabled) return;
    const seen = new Set<string>([this.token]);
    if (peers) {
      for (const p of peers) {
        const token = p.metadata?.[FORWARD_METADATA];
        const stream = p.metadata?.stream;
        if (typeof token === "string" && /^[A-Za-z0-9]+$/.test(token) && stream === this.opts.streamName) seen.add(token);
      }
    }
    for (const [token, missed] of [...this.members]) {
      if (seen.has(token)) this.members.set(token, 0);
      else if (peers !== null) {
        if (missed + 1 >= MISSED_ROUNDS_TO_LEAVE) this.members.delete(token);
        else this.members.set(token, missed + 1);
      }
    }
    for (const token of seen) if (!this.members.has(token)) this.members.set(token, 0);
    this.refresh();
  }

  private refresh(): void {
    // A member gone (it missed its rounds, or "no responders"): its in-flight forwards end now, not at their timeout.
    for (const [token, waiting] of this.waitingOn) {
      if (this.members.has(token)) continue;
      const err = new Error(`the instance owning the aggregate (forward token ${token}) left while a forwarded command waited for its answer`);
      for (const leave of [...waiting]) leave(err);
    }
    const sorted = [...this.members.keys()].sort();
    if (sorted.length === this.ordered.length && sorted.every((t, i) => t === this.ordered[i])) return;
    this.ordered = sorted;
    this.generationCount++;
    this.opts.logger.info({ instances: sorted.length }, "instances taking forwarded commands changed");
  }

  /** The owner of an aggregate: a member's token, this instance's own included. Null when there is nobody to forward to. */
  ownerOf(aggregateId: string): string | null {
    if (!this.enabled || this.ordered.length < 2) return null;
    return rendezvousOwner(this.ordered, aggregateId);
  }

  /**
   * This instance's place among the members for an aggregate (rendezvousOrder): 0 for its owner, 1 for the next, ….
   * Null when there is nobody to forward to (as ownerOf).
   */
  rankOf(aggregateId: string): number | null {
    if (!this.enabled || this.ordered.length < 2) return null;
    const rank = rendezvousOrder(this.ordered, aggregateId).indexOf(this.token);
    return rank < 0 ? null : rank;
  }

  /**
   * Sends a command to its owner and waits for the owner's reply. `null`: no instance takes that subject (the owner
   * stopped; the server answered "no responders", so it never got the command) and the caller runs it itself.
   * A timeout throws: the owner may have stored the command, so the caller must not run it again.
   */
  async forward(owner: string, name: string, payload: Uint8Array, timeoutMs: number): Promise<ForwardResult> {
    const request = batchedRequest(() => this.opts.nc.request(`${FORWARD_SUBJECT_PREFIX}.${owner}.${name}`, payload, { timeout: timeoutMs }));
    request.catch(() => undefined); // when the owner's departure settles the race first
    let leave!: (err: Error) => void;
    const left = new Promise<never>((_resolve, reject) => { leave = reject; });
    const waiting = this.waitingOn.get(owner) ?? new Set();
    waiting.add(leave);
    this.waitingOn.set(owner, waiting);
    try {
      const msg = await Promise.race([request, left]);
      return { json: msg.string() };
    } catch (err) {
      if (isNoResponders(err)) {
        this.dropMember(owner);
        return null;
      }
      throw err;
    } finally {
      waiting.delete(leave);
      if (waiting.size === 0 && this.waitingOn.get(owner) === waiting) this.waitingOn.delete(owner);
    }
  }

  /** The owner is gone: forwards stop until a discovery round shows it again. */
  private dropMember(token: string): void {
    if (token === this.token || !this.members.has(token)) return;
    this.members.delete(token);
    this.refresh();
  }

  private take(msg: Msg): void {
    const name = msg.subject.slice(this.subject.length + 1);
    if (!msg.reply) return;
    if (name === PROBE) {
      msg.respond("ok");
      return;
    }
    requestStarted();
    const task = this.run(name, msg).finally(() => {
      requestEnded();
      this.inFlight.delete(task);
    });
    this.inFlight.add(task);
  }

  private async run(name: string, msg: Msg): Promise<void> {
    let json: string;
    try {
      json = await this.handler!(name, msg.data);
    } catch (err) {
      this.opts.logger.error({ err, command: name }, "forwarded command failed");
      json = JSON.stringify({ ok: false, error: { code: "internal", message: "internal error" } });
    }
    batchedWrite(() => {
      try {
        msg.respond(json);
      } catch (err) {
        this.opts.logger.warn({ err, command: name }, "could not answer a forwarded command");
      }
    });
  }

  /** Takes no more forwarded commands and finishes the ones in flight (up to `timeoutMs`). */
  async stop(timeoutMs: number): Promise<void> {
    this.enabled = false;
    const sub = this.sub;
    this.sub = undefined;
    // Drain: a command the server routed here before it saw the UNSUB is still run and answered.
    const drained = sub && !sub.isClosed() ? sub.drain().catch(() => undefined) : Promise.resolve();
    await withTimeout(drained.then(() => Promise.allSettled([...this.inFlight])).then(() => undefined), timeoutMs);
  }
}

function rendezvousScore(member: string, aggregateId: string): bigint {
  return createHash("sha256").update(member).update("\0").update(aggregateId).digest().readBigUInt64BE(0);
}

/** The member with the highest hash of (member, aggregate id): every instance with the same members picks the same one. */
export function rendezvousOwner(members: readonly string[], aggregateId: string): string {
  let best = members[0]!;
  let bestScore = -1n;
  for (const member of members) {
    const score = rendezvousScore(member, aggregateId);
    if (score > bestScore) {
      bestScore = score;
      best = member;
    }
  }
  return best;
}

/** The members by falling hash of (member, aggregate id): the owner first (rendezvousOwner), then who is next. */
export function rendezvousOrder(members: readonly string[], aggregateId: string): string[] {
  const scored = members.map((member) => ({ member, score: rendezvousScore(member, aggregateId) }));
  // Stable: equal scores keep the members' order, as rendezvousOwner does.
  scored.sort((a, b) => (a.score > b.score ? -1 : a.score < b.score ? 1 : 0));
  return scored.map((x) => x.member);
}

function isNoResponders(err: unknown): boolean {
  if (err instanceof NoRespondersError) return true;
  return err instanceof RequestError && err.isNoResponders();
}
