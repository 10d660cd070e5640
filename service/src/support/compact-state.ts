// The in-memory representation of the read side's states (issue 12, memory): the same values as evolve() returns,
// with fewer copies of them. Every instance holds every aggregate, so bytes per state are multiplied by the number
// of aggregates (about 0.8 KiB per policy with 100,000 policies before this, most of it strings and small arrays).
import type { AggregateState } from "../domain/index.js";

/**
 * Fields whose values repeat across aggregates (enumerations, actors, tags): each distinct value is kept once.
 * Every string JSON.parse returns is a fresh copy; with 100,000 policies the copies of "Organization" alone are 3 MiB.
 */
const SHARED_VALUE_FIELDS = new Set([
  "policy_type", "enforcement", "scope", "status", "owner", "created_by", "updated_by", "approved_by", "activated_by",
  "suspended_by", "revoked_by", "archived_by", "granted_by", "policy_id",
]);
/** Distinct shared values kept at most (then values are stored as they come): bounds the table, not the state. */
const MAX_SHARED_VALUES = 50_000;
/** The one empty array every state with an empty list points at (frozen: the domain never mutates a state). */
const EMPTY_LIST: readonly never[] = Object.freeze([]);

/**
 * Leaner in-memory representation of a state, the same values: a repeated string is kept once (the shared-value
 * table, the aggregate's id as its map key holds it, a timestamp equal to updated_at), an empty list is the shared
 * empty array. Changes no value, only which copy of it the state points at.
 */
export class StateCompactor {
  private readonly shared = new Map<string, string>();

  compact(state: AggregateState, previous: AggregateState | undefined): AggregateState {
    const record = state as unknown as Record<string, unknown>;
    if (previous !== undefined && previous.aggregate_id === state.aggregate_id) record.aggregate_id = previous.aggregate_id;
    const updatedAt = record.updated_at;
    for (const key of Object.keys(record)) {
      const value = record[key];
      if (typeof value === "string") {
        if (key !== "updated_at" && value === updatedAt) record[key] = updatedAt;
        else if (SHARED_VALUE_FIELDS.has(key)) record[key] = this.share(value);
      } else if (Array.isArray(value)) {
        if (value.length === 0) {
          if (!Object.isFrozen(value)) record[key] = EMPTY_LIST;
        } else if (key === "tags" && !Object.isFrozen(value)) {
          for (let i = 0; i < value.length; i++) if (typeof value[i] === "string") value[i] = this.share(value[i] as string);
        }
      }
    }
    return state;
  }

  get sharedValues(): number {
    return this.shared.size;
  }

  private share(value: string): string {
    const known = this.shared.get(value);
    if (known !== undefined) return known;
    if (this.shared.size < MAX_SHARED_VALUES && value.length <= 200) this.shared.set(value, value);
    return value;
  }
}
