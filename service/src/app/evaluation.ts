// evaluate / check_compliance: the policy (or set) as it stood at `at` against a JSON context.
// Present `at` (the default) reads the projection: no stream round trip, rules compiled once per (id, version).
// A past `at` rebuilds the aggregates from their history up to `at` (cached per (id, version), see HistoryCache).
// Every evaluation is handed to the audit sink after the result is built; publishing happens off the reply path.
import { randomUUID } from "node:crypto";
import { z } from "zod";
import type { AggregateState, DomainError, ExemptionState, PolicySetState, PolicyState } from "../domain/index.js";
import { parseDateTime, replay } from "../domain/index.js";
import { evaluatePolicy, requestEntity, type PolicyEvaluation } from "../domain/evaluation/evaluate.js";
import { ADHOC_COMPOSITION, composeSet, type CompositionSpec, type SetMember } from "../domain/evaluation/compose.js";
import { CompiledPolicyCache } from "../domain/rules/compile.js";
import type { HistoryCache } from "../adapters/nats/history.js";
import type { Projection } from "../adapters/nats/projection.js";
import { auditTypeFor, type AuditSink } from "../adapters/nats/audit.js";
import { parsePlain, validationError } from "./queries.js";
import { DateTimeSchema, UuidSchema } from "../domain/commands.js";

/** `json`: the whole reply body already serialised (an evaluate answer), sent as it is. */
export type EvaluationReply =
  | { ok: true; result: Record<string, unknown> }
  | { ok: true; json: string }
  | { ok: false; error: DomainError };

// The commands' own schemas: one definition of an id and a date-time (strict: 2025-02-30 is refused, not a 500).
const at = DateTimeSchema;
const context = z.record(z.string(), z.unknown());
const label = z.string().min(1).max(256);
const common = {
  context,
  at: at.optional(),
  entity_id: z.string().min(1).max(256).optional(),
  requester: label.optional(),
  purpose: label.optional(),
  command_id: UuidSchema.optional(),
  correlation_id: z.string().min(1).max(128).optional(),
};
export const EvaluateRequest = z.strictObject({ policy_id: UuidSchema, ...common });
const CheckComplianceRequest = z
  .strictObject({
    policy_set_id: UuidSchema.optional(),
    policy_ids: z.array(UuidSchema).min(1).max(256).optional(),
    ...common,
  })
  .refine((r) => (r.policy_set_id === undefined) !== (r.policy_ids === undefined), {
    message: "needs exactly one of policy_set_id or policy_ids",
    path: [],
  });

type EvaluateRequestData = z.output<typeof EvaluateRequest>;

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A Map, not an object literal: a key such as "__proto__" or "toString" must not find anything. */
const OPTIONAL_TEXT_MAX: ReadonlyMap<string, number> = new Map([["entity_id", 256], ["requester", 256], ["purpose", 256], ["correlation_id", 128]]);

/** An object as JSON.parse makes it (what zod's record and object accept without further questions). */
function isPlainRecord(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return (proto === Object.prototype || proto === null)
    && !Object.hasOwn(value, "constructor") && Object.getOwnPropertySymbols(value).length === 0;
}

/**
 * The common, valid evaluate request checked by hand (zod's generic parse was 8 % of an evaluation's CPU in the
 * profile, see docs/performance.md), with exactly the output EvaluateRequest would give; undefined for anything
 * else, which then goes through zod, so every refusal and its message come from the schema as before.
 */
export function fastEvaluateRequest(payload: unknown): EvaluateRequestData | undefined {
  if (!isPlainRecord(payload)) return undefined;
  let policyId: string | undefined;
  let context: Record<string, unknown> | undefined;
  const optional = new Map<string, string>();
  for (const key in payload) {
    if (!Object.hasOwn(payload, key)) return undefined;
    const value = payload[key];
    if (key === "policy_id" || key === "command_id") {
      if (typeof value !== "string" || value.length > 36 || !UUID_TEXT.test(value)) return undefined;
      if (key === "policy_id") policyId = value.toLowerCase();
      else optional.set(key, value.toLowerCase());
    } else if (key === "context") {
      // zod copies a record key by key; "__proto__" would not survive the copy as a key, so zod decides it.
      if (!isPlainRecord(value) || Object.hasOwn(value, "__proto__")) return undefined;
      context = value;
    } else if (key === "at") {
      if (typeof value !== "string" || value.length > 40 || parseDateTime(value) === undefined) return undefined;
      optional.set(key, value);
    } else {
      const max = OPTIONAL_TEXT_MAX.get(key);
      if (max === undefined || typeof value !== "string" || value.length < 1 || value.length > max) return undefined;
      optional.set(key, value);
    }
  }
  if (policyId === undefined || context === undefined) return undefined;
  // Keys in the schema's order, as zod builds its output; the context copied as zod's record copies it.
  const request: Record<string, unknown> = { policy_id: policyId, context: { ...context } };
  for (const key of ["at", "entity_id", "requester", "purpose", "command_id", "correlation_id"]) {
    const value = optional.get(key);
    if (value !== undefined) request[key] = value;
  }
  return request as EvaluateRequestData;
}

/** EvaluateRequest's safeParse, by hand for the common valid request (see fastEvaluateRequest). */
export function parseEvaluateRequest(payload: unknown): z.ZodSafeParseResult<EvaluateRequestData> {
  const fast = fastEvaluateRequest(payload);
  return fast !== undefined ? { success: true, data: fast } : parsePlain(EvaluateRequest, payload);
}

function failure(code: DomainError["code"], message: string, details?: unknown): { ok: false; error: DomainError } {
  return details === undefined ? { ok: false, error: { code, message } } : { ok: false, error: { code, message, details } };
}

function withoutApplicable<T extends { applicable: boolean }>(result: T): Omit<T, "applicable"> {
  const { applicable: _applicable, ...rest } = result;
  return rest;
}

export interface EvaluationDeps {
  projection: Projection;
  history: HistoryCache;
  audit: AuditSink;
  cache?: CompiledPolicyCache;
  now?: () => number;
}

/**
 * Where one evaluation reads its aggregates from: the projection (now) or history up to a past instant.
 * The projection answers synchronously (no promise, no microtask per lookup); history and the stream fallback with one.
 */
interface Snapshot {
  atIso: string;
  atMs: number;
  past: boolean;
  state(id: string): AggregateState | undefined | Promise<AggregateState | undefined>;
  exemptionsFor(policyId: string, entity: string | undefined): ExemptionState[] | Promise<ExemptionState[]>;
}

export class Evaluation {
  private readonly deps: EvaluationDeps;
  private readonly cache: CompiledPolicyCache;

  constructor(deps: EvaluationDeps) {
    this.deps = deps;
    this.cache = deps.cache ?? new CompiledPolicyCache(4096);
  }

  async evaluate(payload: unknown): Promise<EvaluationReply> {
    const started = process.hrtime.bigint();
    const parsed = parseEvaluateRequest(payload);
    if (!parsed.success) return validationError(parsed.error);
    const request = parsed.data;
    const view = this.snapshot(request.at);
    const found = view.state(request.policy_id);
    const policy = found instanceof Promise ? await found : found;
    if (!policy || policy.aggregate_type !== "Policy") {
      return failure("not_found", view.past
        ? `no policy with id ${request.policy_id} existed at ${view.atIso}`
        : `no policy with id ${request.policy_id}`);
    }
    const entity = requestEntity(request.context, request.entity_id);
    const matching = view.exemptionsFor(request.policy_id, entity);
    const exemptions = matching instanceof Promise ? await matching : matching;
    const evaluationId = randomUUID();
    const result = evaluatePolicy(policy as PolicyState, request.context, {
      at: view.atIso,
      atMs: view.atMs,
      exemptions,
      ...(request.entity_id !== undefined ? { entityId: request.entity_id } : {}),
      cache: this.cache,
      evaluatedAt: new Date().toISOString(),
    });
    const durationUs = Number(process.hrtime.bigint() - started) / 1000;
    const members = [{ policy_id: request.policy_id, result }];
    if (!result.applicable) {
      this.audit("evaluate", request.policy_id, request, entity, view.atIso, evaluationId, durationUs, members, JSON.stringify(result));
      return failure("not_applicable", `${result.reason}; nothing was evaluated`, {
        evaluation_id: evaluationId,
        policy_id: result.policy_id,
        policy_version: result.policy_version,
        status_of_policy: result.status_of_policy,
        at: view.atIso,
      });
    }
    // The result serialised once for both: the reply's is {evaluation_id, ...rest}, the record's the domain result
    // itself, {applicable: true, ...rest} (applicable is its first key; test/unit/evaluate-path.test.ts holds both
    // to the bytes JSON.stringify gave them before).
    const rest = JSON.stringify(withoutApplicable(result)).slice(1); // `"status":…}`: never empty, status is in it
    this.audit("evaluate", request.policy_id, request, entity, view.atIso, evaluationId, durationUs, members, `{"applicable":true,${rest}`);
    return { ok: true, json: `{"ok":true,"result":{"evaluation_id":${JSON.stringify(evaluationId)},${rest}}` };
  }

  async checkCompliance(payload: unknown): Promise<EvaluationReply> {
    const started = process.hrtime.bigint();
    const parsed = parsePlain(CheckComplianceRequest, payload);
    if (!parsed.success) return validationError(parsed.error);
    const request = parsed.data;
    const view = this.snapshot(request.at);
    let spec: CompositionSpec = ADHOC_COMPOSITION;
    let policyIds = request.policy_ids ?? [];
    if (request.policy_set_id !== undefined) {
      const set = await view.state(request.policy_set_id);
      if (!set || set.aggregate_type !== "PolicySet") {
        return failure("not_found", view.past
          ? `no policy set with id ${request.policy_set_id} existed at ${view.atIso}`
          : `no policy set with id ${request.policy_set_id}`);
      }
      const s = set as PolicySetState;
      spec = { aggregate_id: s.aggregate_id, version: s.version, composition: s.composition, conflict_resolution: s.conflict_resolution };
      policyIds = s.policies;
    }
    const entity = requestEntity(request.context, request.entity_id);
    const evaluatedAt = new Date().toISOString();
    const members: SetMember[] = [];
    const missing: string[] = [];
    for (const policyId of policyIds) {
      const policy = await view.state(policyId);
      if (!policy || policy.aggregate_type !== "Policy") {
        missing.push(policyId);
        continue;
      }
      const exemptions = await view.exemptionsFor(policyId, entity);
      members.push({
        policy_id: policyId,
        result: evaluatePolicy(policy as PolicyState, request.context, {
          at: view.atIso,
          atMs: view.atMs,
          exemptions,
          ...(request.entity_id !== undefined ? { entityId: request.entity_id } : {}),
          cache: this.cache,
          evaluatedAt,
        }),
      });
    }
    if (missing.length > 0 && request.policy_ids !== undefined) {
      return failure("not_found", `no policy with id ${missing.join(", ")}`, { missing });
    }
    const composed = composeSet(spec, members);
    const evaluationId = randomUUID();
    const durationUs = Number(process.hrtime.bigint() - started) / 1000;
    this.audit("check_compliance", request.policy_set_id ?? "adhoc", request, entity, view.atIso, evaluationId, durationUs, members, JSON.stringify(composed), composed.applicable ? composed.status : "not_applicable", composed);
    const unknownMembers = missing.length > 0 ? { unknown_policies: missing } : {};
    if (!composed.applicable) {
      return failure("not_applicable", `${composed.reason}; nothing was evaluated`, {
        evaluation_id: evaluationId,
        policy_set_id: composed.policy_set_id,
        not_applicable: composed.not_applicable,
        at: view.atIso,
        ...unknownMembers,
      });
    }
    return {
      ok: true,
      result: {
        evaluation_id: evaluationId,
        ...withoutApplicable(composed),
        members: composed.members.map((m) => ({ applicable: m.result.applicable, ...withoutApplicable(m.result) })),
        evaluated_at: evaluatedAt,
        at: view.atIso,
        ...unknownMembers,
      },
    };
  }

  private snapshot(atText: string | undefined): Snapshot {
    const nowMs = (this.deps.now ?? Date.now)();
    const atMs = atText === undefined ? nowMs : Date.parse(atText);
    const atIso = atText === undefined ? new Date(nowMs).toISOString() : atText;
    // `at` as the domain reads it (what evaluatePolicy would parse from atIso), handed over so it is parsed once.
    const asOfMs = atText === undefined ? nowMs : (parseDateTime(atText) ?? atMs);
    const { projection, history } = this.deps;
    if (atMs >= nowMs) {
      return {
        atIso,
        atMs: asOfMs,
        past: false,
        state(id) {
          const projected = projection.getState(id);
          if (projected) return projected;
          // Not in this instance's projection yet (a write moments ago): read it from the stream.
          return history.history(id).then((events) => (events.length > 0 ? replay(events.map((e) => e.envelope)) : undefined));
        },
        exemptionsFor(policyId, entity) {
          if (entity === undefined) return [];
          const out: ExemptionState[] = [];
          for (const state of projection.exemptionsForPolicy(policyId)) {
            if ((state as ExemptionState).entity_id === entity) out.push(state as ExemptionState);
          }
          return out;
        },
      };
    }
    const pastIso = new Date(atMs).toISOString();
    return {
      atIso,
      atMs: asOfMs,
      past: true,
      state: (id) => history.stateAt(id, pastIso),
      async exemptionsFor(policyId, entity) {
        if (entity === undefined) return [];
        const out: ExemptionState[] = [];
        // Exemption ids come from the projection (an exemption never changes its policy or entity); states from history.
        for (const current of projection.exemptionsForPolicy(policyId)) {
          if ((current as ExemptionState).entity_id !== entity) continue;
          const then = await history.stateAt(current.aggregate_id, pastIso);
          if (then && then.aggregate_type === "PolicyExemption") out.push(then as ExemptionState);
        }
        return out;
      },
    };
  }

  private audit(
    request: "evaluate" | "check_compliance",
    subjectId: string,
    body: { context: unknown; requester?: string | undefined; purpose?: string | undefined },
    entityId: string | undefined,
    atIso: string,
    evaluationId: string,
    durationUs: number,
    members: readonly SetMember[],
    /** The record's `result` (the composed result, else the one member's) as JSON. */
    resultJson: string,
    overallStatus?: string,
    overall?: unknown,
  ): void {
    const single: PolicyEvaluation | undefined = members.length === 1 && overall === undefined ? members[0]!.result : undefined;
    const status = overallStatus ?? (single ? (single.applicable ? single.status : "not_applicable") : "not_applicable");
    const policies = members.map((m) => ({ id: m.policy_id, version: m.result.policy_version }));
    const exemptions = members.flatMap((m) =>
      m.result.applicable && m.result.exemption_id !== undefined ? [{ id: m.result.exemption_id, version: m.result.exemption_version ?? 0 }] : [],
    );
    const blocking = overall !== undefined
      ? ((overall as { blocking?: boolean }).blocking ?? null)
      : single && single.applicable ? single.blocking : null;
    this.deps.audit.record({
      type: auditTypeFor(status),
      evaluation_id: evaluationId,
      request,
      subject_id: subjectId,
      context: body.context,
      status,
      blocking,
      result_json: resultJson,
      duration_us: Math.round(durationUs),
      evaluated_at: new Date().toISOString(),
      at: atIso,
      requester: body.requester ?? null,
      purpose: body.purpose ?? null,
      entity_id: entityId ?? null,
      policies,
      exemptions,
    });
  }
}
