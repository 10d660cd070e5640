// Command parsing at the edge: the seed payloads pass exactly as printed; hostile input is refused with
// validation_failed and [{path, message}] details, never with a thrown error or a raw ZodError.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import {
  COMMAND_NAMES, COMMAND_ROUTES, PUBLIC_COMMANDS, aggregateIdOf, parseCommand, parseDateTime, referencedIds,
  type CommandName,
} from "../../src/domain/index.js";
import { createPayload, rule, uuid } from "./domainHarness.js";

const SEED_CREATE = `{"policy_id":"550e8400-e29b-41d4-a716-446655440000","name":"Data Retention Policy","description":"All customer data must be retained for 7 years","policy_type":"Retention","enforcement":"Mandatory","scope":"Organization"}`;
const SEED_APPROVE = `{"policy_id":"550e8400-e29b-41d4-a716-446655440000","approved_by":"compliance-officer","approval_date":"2025-11-08T10:00:00Z"}`;
const SEED_GRANT = `{"exemption_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","policy_id":"550e8400-e29b-41d4-a716-446655440000","entity_id":"6fa459ea-ee8a-3ca4-894e-db77e160355e","reason":"Legacy system migration","granted_by":"data-officer","expires_at":"2026-02-08T10:00:00Z"}`;

function parsedOk(name: CommandName, payload: unknown) {
  const result = parseCommand(name, payload);
  assert.ok(result.ok, `${name} refused: ${JSON.stringify(!result.ok && result.error)}`);
  return result;
}

function refused(name: CommandName, payload: unknown, pathPart?: string): { path: string; message: string }[] {
  const result = parseCommand(name, payload);
  if (result.ok) assert.fail(`${name} accepted ${JSON.stringify(result.command).slice(0, 200)}`);
  assert.equal(result.error.code, "validation_failed");
  const details = result.error.details as { path: string; message: string }[];
  assert.ok(Array.isArray(details) && details.length > 0, "details list the issues");
  for (const detail of details) {
    assert.deepEqual(Object.keys(detail).sort(), ["message", "path"]);
    assert.equal(typeof detail.path, "string");
    assert.equal(typeof detail.message, "string");
  }
  if (pathPart !== undefined) {
    assert.ok(details.some((d) => d.path.includes(pathPart)), `an issue at ${pathPart}: ${JSON.stringify(details)}`);
  }
  return details;
}

describe("routes", () => {
  test("every command has a route; PUBLIC_COMMANDS is every command but expire_exemption", () => {
    assert.equal(COMMAND_NAMES.length, 17);
    assert.deepEqual([...PUBLIC_COMMANDS].sort(), COMMAND_NAMES.filter((n) => n !== "expire_exemption").sort());
    for (const name of COMMAND_NAMES) assert.ok(COMMAND_ROUTES[name]);
    assert.deepEqual(COMMAND_NAMES.filter((n) => COMMAND_ROUTES[n].creates).sort(), ["create", "create_set", "grant_exemption"]);
  });
});

describe("seed payloads are accepted exactly as printed", () => {
  test("create", () => {
    const { command, meta } = parsedOk("create", JSON.parse(SEED_CREATE));
    assert.equal(command.name, "create");
    assert.equal(aggregateIdOf(command), "550e8400-e29b-41d4-a716-446655440000");
    assert.deepEqual(meta, { command_id: null, correlation_id: null });
  });
  test("approve", () => {
    parsedOk("approve", JSON.parse(SEED_APPROVE));
  });
  test("grant_exemption, whose referenced policy decide must see", () => {
    const { command } = parsedOk("grant_exemption", JSON.parse(SEED_GRANT));
    assert.deepEqual(referencedIds(command), ["550e8400-e29b-41d4-a716-446655440000"]);
  });
});

describe("ids and meta", () => {
  test("UUIDs are lower-cased", () => {
    const { command } = parsedOk("approve", { policy_id: "550E8400-E29B-41D4-A716-446655440000", approved_by: "x" });
    assert.equal(aggregateIdOf(command), "550e8400-e29b-41d4-a716-446655440000");
  });
  test("command_id and correlation_id are returned in meta, not in the payload", () => {
    const { command, meta } = parsedOk("approve", {
      policy_id: uuid(1), approved_by: "x", command_id: "0192F1A0-7B3C-7D4E-8F5A-6B7C8D9E0F4D", correlation_id: "req-42",
    });
    assert.deepEqual(meta, { command_id: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f4d", correlation_id: "req-42" });
    assert.equal("command_id" in command.payload, false);
    refused("approve", { policy_id: uuid(1), approved_by: "x", command_id: "not-a-uuid" }, "command_id");
    refused("approve", { policy_id: uuid(1), approved_by: "x", correlation_id: "x".repeat(129) }, "correlation_id");
    refused("approve", { policy_id: uuid(1), approved_by: "x", correlation_id: "has space" }, "correlation_id");
  });
  test("a creating command without its id (the app failed to inject one) is refused", () => {
    refused("create", createPayload(uuid(1), { policy_id: undefined }), "policy_id");
    refused("create_set", { name: "S", description: "d", policies: [], composition: "All", conflict_resolution: "LastWins" }, "policy_set_id");
  });
  for (const hostile of ["a.b", "*", ">", "550e8400-e29b-41d4-a716-44665544000>", "550e8400.e29b.41d4.a716.446655440000", "", " 550e8400-e29b-41d4-a716-446655440000"]) {
    test(`id ${JSON.stringify(hostile)} never reaches a subject`, () => {
      refused("approve", { policy_id: hostile, approved_by: "x" }, "policy_id");
      refused("add_to_set", { policy_set_id: uuid(1), policy_id: hostile }, "policy_id");
      refused("revoke_exemption", { exemption_id: hostile, revoked_by: "x", reason: "r" }, "exemption_id");
    });
  }
});

describe("hostile and malformed payloads", () => {
  test("not an object", () => {
    for (const payload of [null, 1, "x", [], [createPayload(uuid(1))], true]) refused("create", payload);
  });
  test("unknown keys are refused at every level", () => {
    refused("create", createPayload(uuid(1), { priority: 1 }));
    refused("create", createPayload(uuid(1), { rules: [{ ...rule("r1"), weight: 2 }] }));
    refused("create_set", { policy_set_id: uuid(2), name: "S", description: "d", policies: [], composition: { AtLeast: 1, extra: 1 }, conflict_resolution: "LastWins" });
  });
  test("__proto__, constructor and prototype keys are refused anywhere", () => {
    for (const key of ["__proto__", "constructor", "prototype"]) {
      refused("create", JSON.parse(`{"${key}":{"x":1},"policy_id":"${uuid(1)}"}`), key);
      const nested = JSON.parse(`{"policy_id":"${uuid(1)}","rule":{"name":"r","severity":"Low","expression":{"op":"equal","field":"a","value":{"${key}":{"polluted":true}}}}}`);
      refused("add_rule", nested, key);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined, "nothing was polluted");
  });
  test("missing required fields name each missing field", () => {
    const details = refused("create", { policy_id: uuid(1) });
    for (const field of ["name", "description", "policy_type", "enforcement", "scope"]) {
      assert.ok(details.some((d) => d.path === field), `missing ${field} reported`);
    }
  });
  test("wrong types and unknown enum values", () => {
    refused("create", createPayload(uuid(1), { name: 42 }), "name");
    refused("create", createPayload(uuid(1), { policy_type: "Astrology" }), "policy_type");
    refused("create", createPayload(uuid(1), { enforcement: "mandatory" }), "enforcement");
    refused("create", createPayload(uuid(1), { scope: "Galaxy" }), "scope");
    refused("create", createPayload(uuid(1), { scope: { Department: "a", Team: "b" } }), "scope");
    refused("create", createPayload(uuid(1), { scope: { Galaxy: "a" } }), "scope");
    refused("create", createPayload(uuid(1), { tags: ["a", "a"] }), "tags");
    refused("create_set", { policy_set_id: uuid(2), name: "S", description: "d", policies: [], composition: "Most", conflict_resolution: "LastWins" }, "composition");
    refused("create_set", { policy_set_id: uuid(2), name: "S", description: "d", policies: [uuid(1), uuid(1)], composition: "All", conflict_resolution: "LastWins" }, "policies");
    refused("archive", { policy_id: uuid(1), archived_by: "x", retention_period_days: 1.5 }, "retention_period_days");
    refused("archive", { policy_id: uuid(1), archived_by: "x", retention_period_days: 1e308 }, "retention_period_days");
  });
  test("the seed's scope string and a scope with an identifier are both accepted", () => {
    parsedOk("create", createPayload(uuid(1), { scope: "Organization" }));
    parsedOk("create", createPayload(uuid(1), { scope: { Department: "finance" } }));
    parsedOk("grant_exemption", { ...JSON.parse(SEED_GRANT), scope: { User: "alice" } });
    parsedOk("grant_exemption", { ...JSON.parse(SEED_GRANT), scope: "Global" });
    refused("grant_exemption", { ...JSON.parse(SEED_GRANT), scope: "Department" }, "scope");
  });
  test("strings are bounded and must not be blank or carry control characters", () => {
    parsedOk("create", createPayload(uuid(1), { name: "x".repeat(200), description: "y".repeat(4000) }));
    refused("create", createPayload(uuid(1), { name: "x".repeat(201) }), "name");
    refused("create", createPayload(uuid(1), { description: "y".repeat(4001) }), "description");
    refused("create", createPayload(uuid(1), { name: "   " }), "name");
    refused("create", createPayload(uuid(1), { name: "" }), "name");
    refused("create", createPayload(uuid(1), { name: "bell\u0007" }), "name");
    parsedOk("create", createPayload(uuid(1), { description: "line one\nline two\ttabbed" }));
    refused("approve", { policy_id: uuid(1), approved_by: "a".repeat(201) }, "approved_by");
  });
  test("arrays are bounded", () => {
    refused("create", createPayload(uuid(1), { rules: Array.from({ length: 101 }, (_, i) => rule(`r${i}`)) }), "rules");
    refused("create", createPayload(uuid(1), { tags: Array.from({ length: 33 }, (_, i) => `t${i}`) }), "tags");
    refused("create_set", { policy_set_id: uuid(2), name: "S", description: "d", policies: Array.from({ length: 101 }, (_, i) => uuid(i + 100)), composition: "All", conflict_resolution: "LastWins" }, "policies");
    refused("grant_exemption", { ...JSON.parse(SEED_GRANT), conditions: Array.from({ length: 33 }, () => ({ field: "a", operator: "exists" })) }, "conditions");
  });
  test("deeply nested JSON is refused before any recursive schema runs", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 10_000; i++) deep = [deep];
    refused("add_rule", { policy_id: uuid(1), rule: { ...rule("r"), expression: { op: "equal", field: "a", value: deep } } });
  });
  test("duplicate rule ids inside one create are refused", () => {
    refused("create", createPayload(uuid(1), { rules: [rule("r1"), rule("r1")] }), "rules");
  });
  test("update needs at least one field to change", () => {
    refused("update", { policy_id: uuid(1), updated_by: "x" });
    parsedOk("update", { policy_id: uuid(1), updated_by: "x", owner: null });
    refused("update", { policy_id: uuid(1), updated_by: "x", status: "Active" }, "");
  });
  test("update_rule: rule.rule_id must match rule_id", () => {
    refused("update_rule", { policy_id: uuid(1), rule_id: "r1", rule: rule("r2") }, "rule.rule_id");
    parsedOk("update_rule", { policy_id: uuid(1), rule_id: "r1", rule: rule("r1") });
  });
});

describe("date-times", () => {
  const valid = ["2025-11-08T10:00:00Z", "2024-02-29T00:00:00Z", "2025-11-08T10:00:00.123456+05:30", "2025-11-08t10:00:00z"];
  const invalid = [
    "2025-02-30T10:00:00Z", "2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-13-01T00:00:00Z", "2025-01-01T24:00:00Z",
    "2025-01-01T23:60:00Z", "2025-01-01T23:59:60Z", "2025-01-01T00:00:00", "2025-01-01", "2025-01-01T00:00:00+24:00",
    "yesterday", "2025-01-01T00:00:00Z ", "1735689600",
  ];
  for (const value of valid) {
    test(`accepts ${value}`, () => {
      assert.notEqual(parseDateTime(value), undefined);
      parsedOk("approve", { policy_id: uuid(1), approved_by: "x", approval_date: value });
    });
  }
  for (const value of invalid) {
    test(`refuses ${JSON.stringify(value)}`, () => {
      assert.equal(parseDateTime(value), undefined);
      refused("approve", { policy_id: uuid(1), approved_by: "x", approval_date: value }, "approval_date");
    });
  }
  test("windows: effective_until after effective_from, expires_at after valid_from", () => {
    refused("create", createPayload(uuid(1), { effective_from: "2026-01-01T00:00:00Z", effective_until: "2026-01-01T00:00:00Z" }), "effective_until");
    refused("activate", { policy_id: uuid(1), activated_by: "x", effective_from: "2026-01-01T00:00:00+01:00", effective_until: "2025-12-31T22:30:00Z" }, "effective_until");
    // Compared as instants, not as text: 23:30Z is after 00:00+01:00.
    parsedOk("activate", { policy_id: uuid(1), activated_by: "x", effective_from: "2026-01-01T00:00:00+01:00", effective_until: "2025-12-31T23:30:00Z" });
    refused("grant_exemption", { ...JSON.parse(SEED_GRANT), valid_from: "2026-03-01T00:00:00Z" }, "expires_at");
  });
});

describe("every command's schema is strict", () => {
  const minimal: Record<CommandName, Record<string, unknown>> = {
    create: createPayload(uuid(1)),
    update: { policy_id: uuid(1), updated_by: "x", name: "n" },
    approve: { policy_id: uuid(1), approved_by: "x" },
    activate: { policy_id: uuid(1), activated_by: "x" },
    suspend: { policy_id: uuid(1), suspended_by: "x", reason: "r" },
    revoke: { policy_id: uuid(1), revoked_by: "x", reason: "r" },
    archive: { policy_id: uuid(1), archived_by: "x" },
    add_rule: { policy_id: uuid(1), rule: rule("r1") },
    update_rule: { policy_id: uuid(1), rule_id: "r1", rule: rule(undefined) },
    remove_rule: { policy_id: uuid(1), rule_id: "r1" },
    reorder_rules: { policy_id: uuid(1), rule_ids: ["r1"] },
    create_set: { policy_set_id: uuid(2), name: "S", description: "d", policies: [], composition: "All", conflict_resolution: "LastWins" },
    add_to_set: { policy_set_id: uuid(2), policy_id: uuid(1) },
    remove_from_set: { policy_set_id: uuid(2), policy_id: uuid(1) },
    grant_exemption: JSON.parse(SEED_GRANT),
    revoke_exemption: { exemption_id: uuid(3), revoked_by: "x", reason: "r" },
    expire_exemption: { exemption_id: uuid(3) },
  };
  for (const name of COMMAND_NAMES) {
    test(`${name}: minimal payload passes, an extra key or a missing id fails`, () => {
      const { command } = parsedOk(name, minimal[name]);
      assert.equal(command.name, name);
      refused(name, { ...minimal[name], unexpected: true });
      const { [COMMAND_ROUTES[name].idField]: _id, ...withoutId } = minimal[name];
      refused(name, withoutId, COMMAND_ROUTES[name].idField);
    });
  }
});
