// The documented examples are true: the valid story runs in order, each invalid example fails with its code.
// (Integration tests send the same examples to a real service over NATS.)
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { PUBLIC_COMMANDS, type CommandName } from "../../src/domain/index.js";
import { EXAMPLE_IDS, INVALID_EXAMPLES, VALID_EXAMPLES, exampleBody } from "../../src/protocol/examples.js";
import { EventLog } from "./domainHarness.js";

// Later than the seed grant's expires_at (2026-02-08), as it is in real life by now: that grant is refused.
const STORY_NOW = "2026-11-25T12:00:00Z";

const SEED_BODIES = [
  `{"policy_id":"550e8400-e29b-41d4-a716-446655440000","name":"Data Retention Policy","description":"All customer data must be retained for 7 years","policy_type":"Retention","enforcement":"Mandatory","scope":"Organization"}`,
  `{"policy_id":"550e8400-e29b-41d4-a716-446655440000","approved_by":"compliance-officer","approval_date":"2025-11-08T10:00:00Z"}`,
  `{"exemption_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","policy_id":"550e8400-e29b-41d4-a716-446655440000","entity_id":"6fa459ea-ee8a-3ca4-894e-db77e160355e","reason":"Legacy system migration","granted_by":"data-officer","expires_at":"2026-02-08T10:00:00Z"}`,
];

/** Sends a body as the service would receive it: bytes first, JSON second. */
function sendBody(log: EventLog, command: CommandName, body: string) {
  let payload: unknown;
  try {
    payload = JSON.parse(body);
  } catch {
    return { ok: false as const, code: "invalid_json", message: undefined, stored: 0 };
  }
  const result = log.send(command, payload as Record<string, unknown>, STORY_NOW);
  return result.decision.ok
    ? { ok: true as const, types: result.stored.map((e) => e.event_type), stored: result.stored.length }
    : { ok: false as const, code: result.decision.error.code, message: result.decision.error.message, stored: 0 };
}

function runStory(log: EventLog): void {
  for (const [index, example] of VALID_EXAMPLES.entries()) {
    const outcome = sendBody(log, example.command, exampleBody(example));
    assert.ok(outcome.ok, `story step ${index} (${example.title}) failed: ${JSON.stringify(outcome)}`);
    assert.deepEqual(outcome.types, [example.event], `story step ${index} (${example.title})`);
  }
}

describe("examples", () => {
  test("every public command has a valid example", () => {
    const covered = new Set(VALID_EXAMPLES.map((e) => e.command));
    for (const name of PUBLIC_COMMANDS) assert.ok(covered.has(name), `an example of ${name}`);
  });
  test("the seed payloads appear verbatim (the grant, whose expires_at has passed, among the refused ones)", () => {
    const seeds = [...VALID_EXAMPLES, ...INVALID_EXAMPLES].filter((e) => e.seed).map(exampleBody);
    assert.deepEqual(seeds, SEED_BODIES);
    assert.deepEqual(INVALID_EXAMPLES.filter((e) => e.seed).map((e) => e.expect), ["validation_failed"]);
  });
  test("every date a valid example carries that must lie ahead stays valid (2099)", () => {
    for (const example of VALID_EXAMPLES) {
      for (const field of ["expires_at", "effective_until", "expected_resume_date"]) {
        const value = example.payload[field];
        if (typeof value === "string") assert.ok(value.startsWith("2099-"), `${example.title}: ${field} ${value}`);
      }
    }
  });
  test("the valid story runs in order against an empty log", () => {
    const log = new EventLog();
    runStory(log);
    const policy = log.state(EXAMPLE_IDS.policy) as { status: string; rules: unknown[] };
    assert.equal(policy.status, "Archived");
  });
  test("each invalid example fails with its code after the story, and stores nothing", () => {
    const log = new EventLog();
    runStory(log);
    const codes = new Set<string>();
    for (const example of INVALID_EXAMPLES) {
      const outcome = sendBody(log, example.command, exampleBody(example));
      assert.equal(outcome.ok, false, `${example.title} should fail`);
      if (!outcome.ok) {
        assert.equal(outcome.code, example.expect, example.title);
        // JSON decoding is the app's (its message is checked against a real service); the rest is the domain's.
        if (example.expect === "validation_failed") assert.equal(outcome.message, example.message, `${example.title}: documented message`);
      }
      codes.add(example.expect);
    }
    for (const code of ["invalid_json", "validation_failed", "not_found", "already_exists", "invalid_transition"]) {
      assert.ok(codes.has(code), `an invalid example for ${code}`);
    }
  });
});
