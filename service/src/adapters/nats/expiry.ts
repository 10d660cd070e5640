// Exemption expiry: every instance sweeps its projection and issues the internal `expire_exemption` command for
// exemptions whose `expires_at` has passed. Duplicates are impossible rather than unlikely (see docs/expiry.md):
// the command carries a command_id derived from the exemption id (the same Nats-Msg-Id on every instance), the
// append is guarded by the aggregate's expected last sequence, and the domain emits `exemption_expired` only while the
// exemption is still Granted. Racing instances therefore lose with a duplicate ack, a conflict or invalid_transition.
// They do not race while every instance is up: the exemption's owner (the instance its commands are forwarded to,
// forward.ts) expires it at `expires_at`, the next instance in the exemption's rendezvous order `takeoverMs` later,
// every other one twice that, each only if its projection still shows the exemption Granted.
import { uuidV5 } from "../../support/ids.js";
import type { AggregateState } from "../../domain/index.js";
import { stateString, type Projection, type ProjectionLogger } from "./projection.js";

/** The slice of CORE's CommandHandler the sweeper needs. */
export interface CommandExecutor {
  execute(name: "expire_exemption", payload: string, now?: string): Promise<unknown>;
}

// Fixed namespace for the deterministic expiry command ids (a random UUID chosen once for this purpose).
const EXPIRY_NAMESPACE = "6f0c8a52-3c1e-4a53-9d55-2a8c1b7f4e10";

/** The command_id every instance uses to expire one exemption: same id → same Nats-Msg-Id → stored once. */
export function expiryCommandId(exemptionId: string): string {
  return uuidV5(`expire:${exemptionId}`, EXPIRY_NAMESPACE);
}

/** A Granted exemption's `expires_at` (ms since epoch); null for anything else. */
function grantedExpiry(state: AggregateState): number | null {
  if (state.aggregate_type !== "PolicyExemption") return null;
  if (stateString(state, "status") !== "Granted") return null;
  const expiresAt = stateString(state, "expires_at");
  const expiresAtMs = expiresAt ? Date.parse(expiresAt) : NaN;
  return Number.isFinite(expiresAtMs) ? expiresAtMs : null;
}

/**
 * How long after `expires_at` the instance next after the exemption's owner expires it itself (and each later one
 * after that, up to MAX_TAKEOVER_TURNS). Longer than an owner takes to store the event (10–20 ms, docs/expiry.md),
 * short against the promise of "within 5 s".
 */
export const EXPIRY_TAKEOVER_MS = 1000;
/** Instances after the second in the exemption's order all go at this many takeovers (a bound on the delay). */
const MAX_TAKEOVER_TURNS = 2;

export interface ExpirySweeperOptions {
  projection: Projection;
  commands: CommandExecutor;
  logger: ProjectionLogger;
  /**
   * This instance's place in the exemption's order: 0 for its owner, or when no owner is known (it expires it at
   * `expires_at`), 1 for the next (`takeoverMs` later), 2 or more for the rest (twice that). Default: 0, every
   * instance at once.
   */
  expiryRank?: (exemptionId: string) => number;
  /** See EXPIRY_TAKEOVER_MS. */
  takeoverMs?: number;
  /** Sweep period (ms); the timer at the earliest expiry makes expiry prompt, the sweep makes it certain. */
  sweepIntervalMs?: number;
  now?: () => number;
}

export class ExpirySweeper {
  private readonly opts: Required<ExpirySweeperOptions>;
  private sweepTimer: NodeJS.Timeout | undefined;
  private nextTimer: NodeJS.Timeout | undefined;
  private nextAtMs = Infinity;
  private readonly inFlight = new Set<string>();
  /** Exemption id → earliest time to try again after a failed attempt. */
  private readonly backoffUntil = new Map<string, number>();
  private unsubscribe: (() => void) | undefined;
  private stopped = false;

  constructor(opts: ExpirySweeperOptions) {
    this.opts = { expiryRank: () => 0, takeoverMs: EXPIRY_TAKEOVER_MS, sweepIntervalMs: 1000, now: Date.now, ...opts };
  }

  start(): void {
    this.unsubscribe = this.opts.projection.onEvent((state) => {
      const expiresAtMs = grantedExpiry(state);
      if (expiresAtMs !== null) this.scheduleAt(expiresAtMs);
    });
    this.sweepTimer = setInterval(() => this.sweep(), this.opts.sweepIntervalMs);
    this.sweepTimer.unref();
    this.sweep();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.nextTimer) clearTimeout(this.nextTimer);
    const deadline = Date.now() + 5000;
    while (this.inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * One pass over the projection: expires what is due and this instance's turn (at once for the exemption's owner,
   * `takeoverMs` later for the next, twice that for the rest), and arms the timer for the earliest turn to come.
   */
  sweep(): void {
    if (this.stopped || !this.opts.projection.caughtUp) return;
    const nowMs = this.opts.now();
    for (const [id, until] of this.backoffUntil) if (until <= nowMs) this.backoffUntil.delete(id);
    let earliest = Infinity;
    for (const state of this.opts.projection.exemptions()) {
      const expiresAtMs = grantedExpiry(state);
      if (expiresAtMs === null) continue;
      // Whose turn it is only matters once due (the order's hashes cost more than the rest of the check).
      const turns = expiresAtMs > nowMs ? 0 : Math.max(0, Math.min(MAX_TAKEOVER_TURNS, this.opts.expiryRank(state.aggregate_id)));
      const turnAtMs = expiresAtMs + turns * this.opts.takeoverMs;
      if (turnAtMs <= nowMs) this.expire(state.aggregate_id, nowMs);
      else if (turnAtMs < earliest) earliest = turnAtMs;
    }
    if (earliest !== Infinity) this.scheduleAt(earliest);
  }

  private scheduleAt(atMs: number): void {
    if (this.stopped || atMs >= this.nextAtMs) return;
    if (this.nextTimer) clearTimeout(this.nextTimer);
    this.nextAtMs = atMs;
    // A few ms late so `now >= expires_at` holds in the domain's check.
    const delay = Math.max(0, Math.min(atMs - this.opts.now() + 5, 2 ** 31 - 1));
    this.nextTimer = setTimeout(() => {
      this.nextAtMs = Infinity;
      this.nextTimer = undefined;
      this.sweep();
    }, delay);
    this.nextTimer.unref();
  }

  private expire(exemptionId: string, nowMs: number): void {
    if (this.inFlight.has(exemptionId)) return;
    const retryAt = this.backoffUntil.get(exemptionId);
    if (retryAt !== undefined && retryAt > nowMs) return;
    this.inFlight.add(exemptionId);
    const payload = { exemption_id: exemptionId, command_id: expiryCommandId(exemptionId) };
    this.opts.commands
      .execute("expire_exemption", JSON.stringify(payload), new Date(nowMs).toISOString())
      .then((reply) => {
        const r = reply as { ok?: boolean; version?: number; events?: unknown[]; error?: { code?: string; message?: string } };
        if (r.ok) {
          this.backoffUntil.delete(exemptionId);
          // No event: already expired (by another instance) or revoked; the domain wrote nothing.
          if ((r.events?.length ?? 0) > 0) this.opts.logger.info({ exemption_id: exemptionId, version: r.version }, "exemption expired");
          else this.opts.logger.debug({ exemption_id: exemptionId }, "exemption expiry: nothing to do");
        } else if (r.error?.code === "invalid_transition") {
          // Another instance expired it first (or it was revoked); the projection will show that shortly.
          this.backoffUntil.set(exemptionId, nowMs + 2000);
          this.opts.logger.debug({ exemption_id: exemptionId, error: r.error }, "exemption expiry not needed");
        } else {
          this.backoffUntil.set(exemptionId, nowMs + 1000);
          this.opts.logger.warn({ exemption_id: exemptionId, error: r.error }, "exemption expiry failed; will retry");
        }
      })
      .catch((err: unknown) => {
        this.backoffUntil.set(exemptionId, nowMs + 1000);
        this.opts.logger.warn({ err, exemption_id: exemptionId }, "exemption expiry failed; will retry");
      })
      .finally(() => this.inFlight.delete(exemptionId));
  }
}
