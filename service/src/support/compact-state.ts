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

/**
 * A stored state without slots for its null fields (issue 12, memory): most fields of a policy are null in most of
 * its states (19 of 32 for a draft), and each field is an 8-byte slot in official Node builds (no pointer
 * compression). The stored object holds the non-null fields as its own, in the state's key order; its prototype is
 * a frozen object with null for every key of that order (its layout), so reading any field gives the same value as
 * the full state, and `in` answers the same. Spreads, Object.keys, JSON.stringify and Object.hasOwn see only the own
 * fields: whatever serialises, copies or decides on a stored state takes withNullFields() of it first.
 */
interface Layout {
  /** The full state's own keys, in its order. */
  readonly keys: readonly string[];
  /** The prototype of the layout's stored states: null under every key (then Object.prototype, as for any state). */
  readonly nulls: object;
  /**
   * The same nulls, not frozen (a spread of a frozen object is several times slower) and never handed out: the
   * start of every full state withNullFields() makes.
   */
  readonly template: Readonly<Record<string, null>>;
}

/** Layouts seen (a few per aggregate type: evolve() gives each type one key order), by key order and by prototype. */
const layoutsByKeys = new Map<string, Layout>();
const layoutsByNulls = new Map<object, Layout>();
/** Per aggregate type, the layout last found by its keys: the next state of that type likely has it too. */
const lastLayoutByType = new Map<unknown, Layout>();

/** Key orders kept at most (then states of a new order are stored as they are): bounds the table, not the states. */
const MAX_LAYOUTS = 64;

function layoutFor(keys: readonly string[]): Layout | undefined {
  const id = keys.join("\n");
  const known = layoutsByKeys.get(id);
  if (known !== undefined) return known;
  // "__proto__" as an own key would set the copy's prototype instead of a field: such a state is stored as it is.
  if (layoutsByKeys.size >= MAX_LAYOUTS || keys.includes("__proto__")) return undefined;
  // Built in one piece (fromEntries): a template grown key by key ends up a slow dictionary-mode object.
  const template = Object.fromEntries(keys.map((key) => [key, null])) as Record<string, null>;
  const layout: Layout = { keys: Object.freeze([...keys]), nulls: Object.freeze({ ...template }), template };
  layoutsByKeys.set(id, layout);
  layoutsByNulls.set(layout.nulls, layout);
  return layout;
}

/** The layout of a stored state, undefined for an ordinary (full) object. */
function layoutOf(state: unknown): Layout | undefined {
  return state !== null && typeof state === "object" ? layoutsByNulls.get(Object.getPrototypeOf(state) as object) : undefined;
}

/**
 * The stored form of a full state: its non-null fields as own properties, null fields read through the layout's
 * prototype. The state itself when it has no null field, is already stored, or is no ordinary object (kept as it is).
 * `previous` (the aggregate's stored state before) only saves the look-up of the layout.
 */
export function omitNullFields(state: AggregateState, previous?: AggregateState): AggregateState {
  if (Object.getPrototypeOf(state) !== Object.prototype) return state;
  const record = state as unknown as Record<string, unknown>;
  const hint = layoutOf(previous) ?? lastLayoutByType.get(record.aggregate_type);
  // The common case in one pass: the keys in the order of the layout seen last (for-in reads each value without
  // a look-up of its key; an inherited enumerable key would not match the layout). Else the general path.
  if (hint !== undefined) {
    const stored: Record<string, unknown> = {};
    let index = 0;
    let nulls = 0;
    let matches = true;
    for (const key in record) {
      if (hint.keys[index++] !== key) {
        matches = false;
        break;
      }
      const value = record[key];
      if (value === null) nulls++;
      else stored[key] = value;
    }
    if (matches && index === hint.keys.length) return nulls === 0 ? state : withLayout(stored, hint);
  }
  const keys = Object.keys(record);
  if (!keys.some((key) => record[key] === null)) return state;
  const layout = layoutFor(keys);
  if (layout === undefined) return state;
  lastLayoutByType.set(record.aggregate_type, layout);
  const stored: Record<string, unknown> = {};
  for (const key of keys) {
    const value = record[key];
    if (value !== null) stored[key] = value;
  }
  return withLayout(stored, layout);
}

function withLayout(stored: Record<string, unknown>, layout: Layout): AggregateState {
  // After the fields are set: a frozen prototype's fields would refuse assignments of the same names.
  Object.setPrototypeOf(stored, layout.nulls);
  return stored as unknown as AggregateState;
}

/**
 * The full state of a stored one: an ordinary object with every field, null ones included, in the order evolve()
 * gave them, so JSON, spreads and key lists are exactly those of the state before it was stored. Any other value is
 * returned as it is (a full state already, e.g. one rebuilt from history).
 */
export function withNullFields<T>(state: T): T {
  const layout = layoutOf(state);
  if (layout === undefined) return state;
  // Every key in the layout's order, null; then the own (non-null) fields over them: the order stays the layout's.
  return Object.assign({ ...layout.template }, state);
}
