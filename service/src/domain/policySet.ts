// The PolicySet aggregate: an ordered list of policy ids with a composition and a conflict resolution.
import type { CommandOf, Composition, ConflictResolution } from "./commands.js";
import { LIMITS } from "./commands.js";
import { accept, reject } from "./types.js";
import type { AggregateState, Decision, EventEnvelope } from "./types.js";
import type { PolicyState } from "./policy.js";

// ================================================================ Events

export interface SetCreatedData {
  name: string;
  description: string;
  /** Order matters: FirstWins / LastWins resolve conflicts by it. */
  policies: string[];
  composition: Composition;
  conflict_resolution: ConflictResolution;
  created_at: string;
}
export interface AddedToSetData { policy_id: string; position: number }
export interface RemovedFromSetData { policy_id: string; position: number }

// ================================================================ State

/** The created event's fields, as membership events change `policies`. */
export interface PolicySetState extends SetCreatedData {
  aggregate_type: "PolicySet";
  aggregate_id: string;
  version: number;
  updated_at: string;
}

// ================================================================ Evolve

export function evolvePolicySet(state: PolicySetState | undefined, event: EventEnvelope): PolicySetState {
  const base = { aggregate_id: event.aggregate_id, version: event.version, updated_at: event.occurred_at };
  if (event.event_type === "set_created") {
    const d = event.data as unknown as SetCreatedData;
    return {
      aggregate_type: "PolicySet",
      ...base,
      name: d.name,
      description: d.description,
      policies: d.policies,
      composition: d.composition,
      conflict_resolution: d.conflict_resolution,
      created_at: d.created_at,
    };
  }
  if (state === undefined) throw new Error(`policy set ${event.aggregate_id}: ${event.event_type} before set_created`);
  switch (event.event_type) {
    case "added_to_set": {
      const d = event.data as unknown as AddedToSetData;
      const policies = [...state.policies];
      policies.splice(d.position, 0, d.policy_id);
      return { ...state, ...base, policies };
    }
    case "removed_from_set": {
      const d = event.data as unknown as RemovedFromSetData;
      return { ...state, ...base, policies: state.policies.filter((id) => id !== d.policy_id) };
    }
    default:
      return state;
  }
}

// ================================================================ Decide

type SetCommand = CommandOf<"create_set" | "add_to_set" | "remove_from_set">;

/** A policy may join a set unless it is missing or archived. */
function memberProblem(id: string, ref: AggregateState | undefined): Decision | undefined {
  if (ref === undefined || ref.aggregate_type !== "Policy") {
    return reject("not_found", `policy ${id} not found`, { policy_id: id });
  }
  if ((ref as PolicyState).status === "Archived") {
    return reject("invalid_transition", `policy ${id} is Archived and cannot join a set`, { policy_id: id, status: "Archived" });
  }
  return undefined;
}

export function decidePolicySet(
  state: PolicySetState | undefined,
  command: SetCommand,
  now: string,
  refs: ReadonlyMap<string, AggregateState | undefined>,
): Decision {
  if (command.name === "create_set") {
    const p = command.payload;
    if (state !== undefined) return reject("already_exists", `policy set ${p.policy_set_id} already exists`);
    for (const id of p.policies) {
      const problem = memberProblem(id, refs.get(id));
      if (problem !== undefined) return problem;
    }
    const data: SetCreatedData = {
      name: p.name,
      description: p.description,
      policies: p.policies,
      composition: p.composition,
      conflict_resolution: p.conflict_resolution,
      created_at: now,
    };
    return accept({ event_type: "set_created", data: { ...data } });
  }
  if (state === undefined) return reject("not_found", `policy set ${command.payload.policy_set_id} not found`);

  switch (command.name) {
    case "add_to_set": {
      const { policy_id } = command.payload;
      if (state.policies.includes(policy_id)) {
        return reject("already_exists", `policy ${policy_id} is already in set ${state.aggregate_id}`);
      }
      if (state.policies.length >= LIMITS.setPolicies) {
        return reject("validation_failed", `policy set ${state.aggregate_id} already has ${LIMITS.setPolicies} policies`, [
          { path: "policy_id", message: `a set holds at most ${LIMITS.setPolicies} policies` },
        ]);
      }
      const problem = memberProblem(policy_id, refs.get(policy_id));
      if (problem !== undefined) return problem;
      const data: AddedToSetData = { policy_id, position: state.policies.length };
      return accept({ event_type: "added_to_set", data: { ...data } });
    }
    case "remove_from_set": {
      const { policy_id } = command.payload;
      const position = state.policies.indexOf(policy_id);
      if (position < 0) return reject("not_found", `policy ${policy_id} is not in set ${state.aggregate_id}`);
      const composition = state.composition;
      if (typeof composition === "object" && state.policies.length - 1 < composition.AtLeast) {
        return reject(
          "invalid_transition",
          `set ${state.aggregate_id} requires AtLeast ${composition.AtLeast} policies; removing ${policy_id} would leave ${state.policies.length - 1}`,
        );
      }
      const data: RemovedFromSetData = { policy_id, position };
      return accept({ event_type: "removed_from_set", data: { ...data } });
    }
    default: {
      const exhaustive: never = command;
      return reject("internal", `unhandled policy set command ${JSON.stringify(exhaustive)}`);
    }
  }
}
