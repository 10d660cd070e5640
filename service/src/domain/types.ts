// The shared domain vocabulary: envelopes, errors and decisions. Pure types, no runtime dependencies.

export type AggregateType = "Policy" | "PolicySet" | "PolicyExemption";

export const EVENT_TYPES = [
  "created", "updated", "approved", "activated", "suspended", "revoked", "archived",
  "rule_added", "rule_updated", "rule_removed", "rules_reordered",
  "set_created", "added_to_set", "removed_from_set",
  "exemption_granted", "exemption_revoked", "exemption_expired",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Stored event: the JSON body of each message on `events.policy.<aggregate_id>.<event_type>`. */
export interface EventEnvelope<D = Record<string, unknown>> {
  event_id: string;
  event_type: EventType;
  aggregate_type: AggregateType;
  aggregate_id: string;
  /** 1, 2, 3… per aggregate. */
  version: number;
  /** RFC 3339, taken from the command's `now`. */
  occurred_at: string;
  command_id: string | null;
  correlation_id: string | null;
  causation_id: string | null;
  /** Self-contained: replaying events rebuilds every field. */
  data: D;
}

/** What `decide` returns; the app layer wraps it in an envelope. */
export interface NewEvent {
  event_type: EventType;
  data: Record<string, unknown>;
}

export type ErrorCode =
  | "invalid_json" | "validation_failed" | "not_found" | "already_exists" | "invalid_transition"
  | "conflict" | "unavailable" | "internal" | "not_applicable";

export interface DomainError {
  code: ErrorCode;
  message: string;
  details?: unknown;
}

export type Decision = { ok: true; events: NewEvent[] } | { ok: false; error: DomainError };

export interface FieldChange {
  field: string;
  old: unknown;
  new: unknown;
}

export function accept(...events: NewEvent[]): Decision {
  return { ok: true, events };
}

export function reject(code: ErrorCode, message: string, details?: unknown): Decision {
  return details === undefined ? { ok: false, error: { code, message } } : { ok: false, error: { code, message, details } };
}

import type { PolicyState } from "./policy.js";
import type { PolicySetState } from "./policySet.js";
import type { ExemptionState } from "./exemption.js";

/** Each state carries aggregate_type, aggregate_id and version (the last applied event's). */
export type AggregateState = PolicyState | PolicySetState | ExemptionState;
