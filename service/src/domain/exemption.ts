// The PolicyExemption aggregate: Granted → Revoked | Expired. Granted only while its policy is Active.
import type { ExemptionCondition } from "./rules/schema.js";
import type { CommandOf, ExemptionScope } from "./commands.js";
import { accept, reject } from "./types.js";
import type { AggregateState, Decision, EventEnvelope } from "./types.js";
import type { PolicyState } from "./policy.js";
import { parseDateTime, toMillis } from "./time.js";

// ================================================================ Events

export interface ExemptionGrantedData {
  policy_id: string;
  entity_id: string;
  reason: string;
  justification: string | null;
  risk_acceptance: string | null;
  granted_by: string;
  granted_at: string;
  valid_from: string;
  expires_at: string;
  scope: ExemptionScope;
  conditions: ExemptionCondition[];
}
export interface ExemptionRevokedData { revoked_by: string; revoked_at: string; reason: string }
export interface ExemptionExpiredData { expired_at: string; expires_at: string }

// ================================================================ State

export const EXEMPTION_STATUSES = ["Granted", "Revoked", "Expired"] as const;
export type ExemptionStatus = (typeof EXEMPTION_STATUSES)[number];

/** Every field of the grant, unchanged for the exemption's life, plus what revocation or expiry records. */
export interface ExemptionState extends ExemptionGrantedData {
  aggregate_type: "PolicyExemption";
  aggregate_id: string;
  version: number;
  status: ExemptionStatus;
  revoked_by: string | null;
  revoked_at: string | null;
  revocation_reason: string | null;
  expired_at: string | null;
  updated_at: string;
}

// ================================================================ Evolve

export function evolveExemption(state: ExemptionState | undefined, event: EventEnvelope): ExemptionState {
  const base = { aggregate_id: event.aggregate_id, version: event.version, updated_at: event.occurred_at };
  if (event.event_type === "exemption_granted") {
    const d = event.data as unknown as ExemptionGrantedData;
    return {
      aggregate_type: "PolicyExemption",
      ...base,
      status: "Granted",
      policy_id: d.policy_id,
      entity_id: d.entity_id,
      reason: d.reason,
      justification: d.justification,
      risk_acceptance: d.risk_acceptance,
      granted_by: d.granted_by,
      granted_at: d.granted_at,
      valid_from: d.valid_from,
      expires_at: d.expires_at,
      scope: d.scope,
      conditions: d.conditions,
      revoked_by: null,
      revoked_at: null,
      revocation_reason: null,
      expired_at: null,
    };
  }
  if (state === undefined) throw new Error(`exemption ${event.aggregate_id}: ${event.event_type} before exemption_granted`);
  switch (event.event_type) {
    case "exemption_revoked": {
      const d = event.data as unknown as ExemptionRevokedData;
      return { ...state, ...base, status: "Revoked", revoked_by: d.revoked_by, revoked_at: d.revoked_at, revocation_reason: d.reason };
    }
    case "exemption_expired": {
      const d = event.data as unknown as ExemptionExpiredData;
      return { ...state, ...base, status: "Expired", expired_at: d.expired_at };
    }
    default:
      return state;
  }
}

// ================================================================ Decide

/**
 * Why a grant's validity window is empty, in plain words, or undefined when it is not: an exemption whose
 * expires_at is not after valid_from, or not after now, would never apply, so it is refused instead of stored
 * (and immediately expired). `now` is the command's clock; the domain reads no clock of its own.
 */
export function expiryProblem(expiresAt: string, validFrom: string | undefined, now: string): string | undefined {
  const expires = toMillis(expiresAt);
  if (validFrom !== undefined && expires <= toMillis(validFrom)) {
    return `expires_at must be after valid_from (expires_at ${expiresAt}, valid_from ${validFrom})`;
  }
  if (expires <= toMillis(now)) {
    return `expires_at must be in the future (${expiresAt} has passed): an exemption that has already expired would never apply`;
  }
  return undefined;
}

type ExemptionCommand = CommandOf<"grant_exemption" | "revoke_exemption" | "expire_exemption">;

export function decideExemption(
  state: ExemptionState | undefined,
  command: ExemptionCommand,
  now: string,
  refs: ReadonlyMap<string, AggregateState | undefined>,
): Decision {
  if (command.name === "grant_exemption") {
    const p = command.payload;
    const refused = expiryProblem(p.expires_at, p.valid_from, now);
    if (refused !== undefined) return reject("validation_failed", `grant_exemption: ${refused}`, [{ path: "expires_at", message: refused }]);
    if (state !== undefined) return reject("already_exists", `exemption ${p.exemption_id} already exists`);
    const policy = refs.get(p.policy_id);
    if (policy === undefined || policy.aggregate_type !== "Policy") {
      return reject("not_found", `policy ${p.policy_id} not found`, { policy_id: p.policy_id });
    }
    const status = (policy as PolicyState).status;
    if (status !== "Active") {
      return reject("invalid_transition", `exemptions are granted only while the policy is Active; policy ${p.policy_id} is ${status}`, {
        policy_id: p.policy_id,
        status,
      });
    }
    // Without an explicit valid_from the window starts now (expiryProblem made sure expires_at lies after both).
    const validFrom = p.valid_from ?? now;
    const data: ExemptionGrantedData = {
      policy_id: p.policy_id,
      entity_id: p.entity_id,
      reason: p.reason,
      justification: p.justification ?? null,
      risk_acceptance: p.risk_acceptance ?? null,
      granted_by: p.granted_by,
      granted_at: now,
      valid_from: validFrom,
      expires_at: p.expires_at,
      scope: p.scope ?? "Global",
      conditions: (p.conditions ?? []) as ExemptionCondition[],
    };
    return accept({ event_type: "exemption_granted", data: { ...data } });
  }
  if (state === undefined) return reject("not_found", `exemption ${command.payload.exemption_id} not found`);

  switch (command.name) {
    case "revoke_exemption": {
      if (state.status !== "Granted") {
        return reject("invalid_transition", `cannot revoke exemption ${state.aggregate_id} while it is ${state.status}`, {
          status: state.status,
          allowed_from: ["Granted"],
        });
      }
      const p = command.payload;
      const data: ExemptionRevokedData = { revoked_by: p.revoked_by, revoked_at: now, reason: p.reason };
      return accept({ event_type: "exemption_revoked", data: { ...data } });
    }
    case "expire_exemption": {
      // No event unless still Granted and due: repeating the command (any instance, any time) stores at most one expiry.
      if (state.status !== "Granted" || toMillis(now) < toMillis(state.expires_at)) return accept();
      const data: ExemptionExpiredData = { expired_at: now, expires_at: state.expires_at };
      return accept({ event_type: "exemption_expired", data: { ...data } });
    }
    default: {
      const exhaustive: never = command;
      return reject("internal", `unhandled exemption command ${JSON.stringify(exhaustive)}`);
    }
  }
}

// ================================================================ Queries

/** The one expiry check every code path uses: Granted (not revoked, not expired) and valid_from <= at < expires_at. */
export function isExemptionValidAt(exemption: ExemptionState, at: string | number): boolean {
  if (exemption.status !== "Granted") return false;
  const when = typeof at === "number" ? at : parseDateTime(at);
  if (when === undefined) return false;
  return toMillis(exemption.valid_from) <= when && when < toMillis(exemption.expires_at);
}
