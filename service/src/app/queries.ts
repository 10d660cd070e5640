// Read side: get / list / history / applicable over the projection (current state) and the stream (history, as-of).
import { z } from "zod";
import { DateTimeSchema, UuidSchema } from "../domain/commands.js";
import { describeIssues, PLAIN } from "../domain/validationMessages.js";
import type { AggregateState, DomainError, ExemptionState, PolicyState } from "../domain/index.js";
import { isExemptionValidAt, policyInForceAt, replay } from "../domain/index.js";
import type { StoredEvent } from "../adapters/nats/event-store.js";
import type { HistoryCache } from "../adapters/nats/history.js";
import { stateField, stateString, type Projection } from "../adapters/nats/projection.js";
import { withNullFields } from "../support/compact-state.js";

export type QueryReply = ({ ok: true } & Record<string, unknown>) | { ok: false; error: DomainError };

// The commands' own schemas: ids normalised like the command side, strict date-times (2025-02-30 is refused).
const uuid = UuidSchema;
const rfc3339 = DateTimeSchema;
const shortString = z.string().min(1).max(128);

const GetQuery = z.strictObject({ id: uuid, at: rfc3339.optional() });
const ListQuery = z.strictObject({
  aggregate_type: z.enum(["Policy", "PolicySet", "PolicyExemption"]).optional(),
  /** Either an aggregate type or a policy_type. */
  type: shortString.optional(),
  policy_type: shortString.optional(),
  status: shortString.optional(),
  scope: shortString.optional(),
  enforcement: shortString.optional(),
  policy_id: uuid.optional(),
  limit: z.number().int().min(1).max(500).optional(),
  cursor: z.string().max(200).optional(),
});
const HistoryQuery = z.strictObject({
  id: uuid,
  from_version: z.number().int().min(1).optional(),
  limit: z.number().int().min(1).max(1000).optional(),
});
const ApplicableQuery = z.strictObject({
  entity_id: shortString.optional(),
  scope: shortString.optional(),
  at: rfc3339.optional(),
});

/** `validation_failed` in plain words; `error` comes from a parse with PLAIN (see parsePlain). */
export function validationError(error: z.ZodError): { ok: false; error: DomainError } {
  const details = describeIssues(error);
  return { ok: false, error: { code: "validation_failed", message: details.map((d) => d.message).join("; "), details } };
}

/** safeParse with the plain-language messages every query and evaluation reply uses. */
export function parsePlain<T extends z.ZodType>(schema: T, payload: unknown): z.ZodSafeParseResult<z.output<T>> {
  return schema.safeParse(payload, PLAIN);
}

function notFound(id: string): { ok: false; error: DomainError } {
  return { ok: false, error: { code: "not_found", message: `no policy, policy set or exemption with id ${id}` } };
}

/** A state as replies show it: the projection's stored states with their null fields (the reply is JSON). */
function view(state: AggregateState): Record<string, unknown> {
  return { aggregate_type: state.aggregate_type, aggregate_id: state.aggregate_id, version: state.version, state: withNullFields(state) };
}

/** A scope is "Organization" or one level with an identifier ({"Department": "finance"}); a filter names a level or "Level:id". */
export function scopeMatches(scope: unknown, filter: string): boolean {
  if (typeof scope === "string") return scope === filter;
  if (scope === null || typeof scope !== "object") return false;
  const [level, id] = Object.entries(scope as Record<string, unknown>)[0] ?? [];
  return level === filter || `${String(level)}:${String(id)}` === filter;
}

/** Active and inside its effective window at `atMs` (the domain's check, shared with evaluation). */
export function policyInForce(state: AggregateState | undefined, atMs: number): boolean {
  return state !== undefined && state.aggregate_type === "Policy" && policyInForceAt(state as PolicyState, atMs);
}

/** Granted and inside its validity window at `atMs` (the domain's one expiry check). */
export function exemptionValidAt(state: AggregateState | undefined, atMs: number): boolean {
  return state !== undefined && state.aggregate_type === "PolicyExemption" && isExemptionValidAt(state as ExemptionState, atMs);
}

/** Replies must fit NATS's max_payload (1 MiB by default): pages stop early, and say so with their cursor. */
export const REPLY_BUDGET_BYTES = 512 * 1024;

function withinReplyBudget<T>(items: T[], shape: (item: T) => unknown): T[] {
  let bytes = 0;
  for (let i = 0; i < items.length; i++) {
    bytes += Buffer.byteLength(JSON.stringify(shape(items[i]!))) + 1;
    // Always at least one item, so paging makes progress.
    if (bytes > REPLY_BUDGET_BYTES && i > 0) return items.slice(0, i);
  }
  return items;
}

function encodeCursor(id: string): string {
  return Buffer.from(id, "utf8").toString("base64url");
}

function decodeCursor(cursor: string): string | null {
  const id = Buffer.from(cursor, "base64url").toString("utf8");
  return /^[0-9a-f-]{36}$/i.test(id) ? id : null;
}

export interface QueryDeps {
  projection: Projection;
  history: HistoryCache;
  now?: () => number;
}

export class Queries {
  private readonly deps: QueryDeps;

  constructor(deps: QueryDeps) {
    this.deps = deps;
  }

  /** Current state (projection, falling back to the stream for a write the projection has not seen yet) or as of `at`. */
  async get(payload: unknown): Promise<QueryReply> {
    const parsed = parsePlain(GetQuery, payload);
    if (!parsed.success) return validationError(parsed.error);
    const { id, at } = parsed.data;
    if (at !== undefined) {
      const state = await this.deps.history.stateAt(id, at);
      return state ? { ok: true, at, ...view(state) } : notFound(id);
    }
    const projected = this.deps.projection.getState(id);
    if (projected) return { ok: true, ...view(projected) };
    const events = await this.deps.history.history(id);
    const state = events.length > 0 ? replay(events.map((e) => e.envelope)) : undefined;
    return state ? { ok: true, ...view(state) } : notFound(id);
  }

  list(payload: unknown): QueryReply {
    const parsed = parsePlain(ListQuery, payload ?? {});
    if (!parsed.success) return validationError(parsed.error);
    const q = parsed.data;
    const limit = q.limit ?? 100;
    let after: string | null = null;
    if (q.cursor !== undefined) {
      after = decodeCursor(q.cursor);
      if (after === null) {
        const message = "cursor must be a next_cursor returned by list, passed back unchanged";
        return { ok: false, error: { code: "validation_failed", message, details: [{ path: "cursor", message }] } };
      }
    }
    const matches = (state: AggregateState): boolean => {
      if (q.aggregate_type && state.aggregate_type !== q.aggregate_type) return false;
      if (q.type && state.aggregate_type !== q.type && stateString(state, "policy_type") !== q.type) return false;
      if (q.policy_type && stateString(state, "policy_type") !== q.policy_type) return false;
      if (q.status && stateString(state, "status") !== q.status) return false;
      if (q.scope && !scopeMatches(stateField(state, "scope"), q.scope)) return false;
      if (q.enforcement && stateString(state, "enforcement") !== q.enforcement) return false;
      if (q.policy_id && stateString(state, "policy_id") !== q.policy_id) return false;
      return true;
    };
    const selected: AggregateState[] = [];
    for (const { state } of this.deps.projection.all()) {
      if ((after === null || state.aggregate_id > after) && matches(state)) selected.push(state);
    }
    // Ids are UUIDv7 when the service assigned them, so id order is creation order.
    selected.sort((a, b) => (a.aggregate_id < b.aggregate_id ? -1 : a.aggregate_id > b.aggregate_id ? 1 : 0));
    const page = withinReplyBudget(selected.slice(0, limit).map(view), (item) => item);
    const more = selected.length > page.length;
    return {
      ok: true,
      items: page,
      next_cursor: more && page.length > 0 ? encodeCursor(page[page.length - 1]!.aggregate_id as string) : null,
      projection_seq: this.deps.projection.lastSeq,
    };
  }

  /** The aggregate's events, read from the stream up to its last event (terminates, also for unknown ids). */
  async history(payload: unknown): Promise<QueryReply> {
    const parsed = parsePlain(HistoryQuery, payload);
    if (!parsed.success) return validationError(parsed.error);
    const { id, from_version = 1, limit = 1000 } = parsed.data;
    const events: StoredEvent[] = await this.deps.history.history(id);
    if (events.length === 0) return notFound(id);
    const page = withinReplyBudget(events.filter((e) => e.envelope.version >= from_version).slice(0, limit), (e) => e.envelope);
    const last = page[page.length - 1];
    const more = last !== undefined && last.envelope.version < events[events.length - 1]!.envelope.version;
    return {
      ok: true,
      aggregate_id: id,
      aggregate_type: events[0]!.envelope.aggregate_type,
      version: events[events.length - 1]!.envelope.version,
      events: page.map((e) => ({ seq: e.seq, subject: e.subject, ...e.envelope })),
      next_from_version: more ? last.envelope.version + 1 : null,
    };
  }

  /** Active policies in force at `at` (optionally of one scope) and the exemptions valid then (optionally for one entity). */
  async applicable(payload: unknown): Promise<QueryReply> {
    const parsed = parsePlain(ApplicableQuery, payload ?? {});
    if (!parsed.success) return validationError(parsed.error);
    const { entity_id, scope, at } = parsed.data;
    const nowMs = (this.deps.now ?? Date.now)();
    const atMs = at !== undefined ? Date.parse(at) : nowMs;
    const past = at !== undefined && atMs < nowMs;
    const stateOf = async (state: AggregateState): Promise<AggregateState | undefined> =>
      past ? this.deps.history.stateAt(state.aggregate_id, new Date(atMs).toISOString()) : state;

    const policies: AggregateState[] = [];
    for (const current of this.deps.projection.policies()) {
      const state = await stateOf(current);
      if (!policyInForce(state, atMs)) continue;
      if (scope !== undefined && !scopeMatches(stateField(state, "scope"), scope)) continue;
      policies.push(state!);
    }
    const inForce = new Set(policies.map((p) => p.aggregate_id));
    const exemptions: AggregateState[] = [];
    for (const current of this.deps.projection.exemptions()) {
      if (!inForce.has(stateString(current, "policy_id") ?? "")) continue;
      if (entity_id !== undefined && stateString(current, "entity_id") !== entity_id) continue;
      const state = await stateOf(current);
      if (exemptionValidAt(state, atMs)) exemptions.push(state!);
    }
    return {
      ok: true,
      at: new Date(atMs).toISOString(),
      policies: policies.map(view),
      exemptions: exemptions.map(view),
    };
  }
}
