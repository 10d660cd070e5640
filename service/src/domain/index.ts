// The public barrel of the pure policy domain: decide / evolve / replay over the three aggregates,
// command parsing and routing, and the time helpers the read side shares. No I/O, clock or randomness.
import type { Command } from "./commands.js";
import { COMMAND_ROUTES } from "./commands.js";
import type { AggregateState, AggregateType, Decision, EventEnvelope, EventType } from "./types.js";
import { reject } from "./types.js";
import { decidePolicy, evolvePolicy } from "./policy.js";
import type { PolicyState } from "./policy.js";
import { decidePolicySet, evolvePolicySet } from "./policySet.js";
import type { PolicySetState } from "./policySet.js";
import { decideExemption, evolveExemption } from "./exemption.js";
import type { ExemptionState } from "./exemption.js";
import { parseDateTime } from "./time.js";

export type {
  AggregateState, AggregateType, Decision, DomainError, ErrorCode, EventEnvelope, EventType, FieldChange, NewEvent,
} from "./types.js";
export { EVENT_TYPES } from "./types.js";
export type { PolicyState, PolicyStatus } from "./policy.js";
export { POLICY_STATUSES, EDITABLE_STATUSES, policyInForceAt } from "./policy.js";
export type { PolicySetState } from "./policySet.js";
export type { ExemptionState, ExemptionStatus } from "./exemption.js";
export { EXEMPTION_STATUSES, isExemptionValidAt } from "./exemption.js";
export { parseDateTime } from "./time.js";
export { deriveRuleId } from "./ruleIds.js";
export type {
  Command, CommandName, CommandOf, CommandPayloads, CommandMeta, CommandRoute, ParseResult, IssueDetail,
  PolicyType, EnforcementLevel, Scope, ScopeLevel, ExemptionScope, ExemptionScopeLevel, Composition, ConflictResolution,
} from "./commands.js";
export {
  COMMAND_ROUTES, COMMAND_NAMES, PUBLIC_COMMANDS, parseCommand, aggregateIdOf,
  POLICY_TYPES, ENFORCEMENT_LEVELS, SCOPE_LEVELS, EXEMPTION_SCOPE_LEVELS, CONFLICT_RESOLUTIONS,
} from "./commands.js";

/**
 * Bumped whenever the shape of a state changes, so a stored snapshot of an older shape is ignored
 * (the loader falls back to full replay) instead of being read as a wrong state.
 */
export const SNAPSHOT_SCHEMA_VERSION = 1;

/** Which aggregate type stores each event type. */
export const EVENT_AGGREGATE: Record<EventType, AggregateType> = {
  created: "Policy",
  updated: "Policy",
  approved: "Policy",
  activated: "Policy",
  suspended: "Policy",
  revoked: "Policy",
  archived: "Policy",
  rule_added: "Policy",
  rule_updated: "Policy",
  rule_removed: "Policy",
  rules_reordered: "Policy",
  set_created: "PolicySet",
  added_to_set: "PolicySet",
  removed_from_set: "PolicySet",
  exemption_granted: "PolicyExemption",
  exemption_revoked: "PolicyExemption",
  exemption_expired: "PolicyExemption",
};

/** Ids of other aggregates `decide` must see in `ctx.refs` (the app loads them first). */
export function referencedIds(command: Command): string[] {
  switch (command.name) {
    case "grant_exemption":
    case "add_to_set":
      return [command.payload.policy_id];
    case "create_set":
      return [...command.payload.policies];
    default:
      return [];
  }
}

export interface DecideContext {
  /** RFC 3339: the only clock the domain sees. */
  now: string;
  /** States of `referencedIds(command)`; an absent or undefined entry means "does not exist". */
  refs: ReadonlyMap<string, AggregateState | undefined>;
}

/**
 * Decides which events a command produces against the current state (undefined or version 0: no events yet).
 * Never throws for bad input: every refusal is a DomainError.
 */
export function decide(state: AggregateState | undefined, command: Command, ctx: DecideContext): Decision {
  if (parseDateTime(ctx.now) === undefined) return reject("internal", `decide: ctx.now is not an RFC 3339 date-time: ${ctx.now}`);
  const route = COMMAND_ROUTES[command.name];
  const id = (command.payload as unknown as Record<string, string>)[route.idField];
  const existing = state === undefined || state.version === 0 ? undefined : state;
  // An id that belongs to another aggregate type is, for this command, an id that does not exist.
  if (existing !== undefined && existing.aggregate_type !== route.aggregateType) {
    if (route.creates) return reject("already_exists", `${id} already exists as a ${existing.aggregate_type}`);
    return reject("not_found", `${route.aggregateType} ${id} not found (the id is a ${existing.aggregate_type})`);
  }
  switch (command.name) {
    case "create":
    case "update":
    case "approve":
    case "activate":
    case "suspend":
    case "revoke":
    case "archive":
    case "add_rule":
    case "update_rule":
    case "remove_rule":
    case "reorder_rules":
      return decidePolicy(existing as PolicyState | undefined, command, ctx.now);
    case "create_set":
    case "add_to_set":
    case "remove_from_set":
      return decidePolicySet(existing as PolicySetState | undefined, command, ctx.now, ctx.refs);
    case "grant_exemption":
    case "revoke_exemption":
    case "expire_exemption":
      return decideExemption(existing as ExemptionState | undefined, command, ctx.now, ctx.refs);
    default: {
      const exhaustive: never = command;
      return reject("internal", `unknown command ${JSON.stringify(exhaustive)}`);
    }
  }
}

/** Applies one stored event. Throws on an event that cannot follow `state` (a corrupt stream is not a domain error). */
export function evolve(state: AggregateState | undefined, event: EventEnvelope): AggregateState {
  const current = state === undefined || state.version === 0 ? undefined : state;
  if (current !== undefined && current.aggregate_id !== event.aggregate_id) {
    throw new Error(`event for ${event.aggregate_id} applied to state of ${current.aggregate_id}`);
  }
  if (current !== undefined && event.version !== current.version + 1) {
    throw new Error(`aggregate ${event.aggregate_id}: event version ${event.version} does not follow ${current.version}`);
  }
  if (current === undefined && event.version !== 1) {
    throw new Error(`aggregate ${event.aggregate_id}: first event has version ${event.version}, expected 1`);
  }
  const type = EVENT_AGGREGATE[event.event_type];
  if (type === undefined || type !== event.aggregate_type) {
    throw new Error(`event ${event.event_id}: ${event.event_type} is not a ${event.aggregate_type} event`);
  }
  if (current !== undefined && current.aggregate_type !== type) {
    throw new Error(`event ${event.event_id}: ${type} event applied to a ${current.aggregate_type}`);
  }
  switch (type) {
    case "Policy":
      return evolvePolicy(current as PolicyState | undefined, event);
    case "PolicySet":
      return evolvePolicySet(current as PolicySetState | undefined, event);
    case "PolicyExemption":
      return evolveExemption(current as ExemptionState | undefined, event);
  }
}

/** Folds events over `from` (a snapshot, or nothing). */
export function replay(events: Iterable<EventEnvelope>, from?: AggregateState): AggregateState | undefined {
  let state = from;
  for (const event of events) state = evolve(state, event);
  return state;
}
