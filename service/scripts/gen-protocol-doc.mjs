#!/usr/bin/env node
// Generates docs/protocol.md from the service's own code: the zod command schemas, the example
// payloads (src/protocol/examples.ts), the error-status table, and events produced by running the
// examples through the pure domain (decide/evolve) with a fixed clock. Nothing is typed by hand
// except prose and the query examples below, which the integration test sends to a real service.
//
//   cd service && npm run build && node scripts/gen-protocol-doc.mjs          # rewrite docs/protocol.md
//   node scripts/gen-protocol-doc.mjs --check                                 # exit 1 when stale
//
// PROTOCOL_DOC_DIST points at another build of src/ (default: ../dist).
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { dirname, join } from "node:path";
import { z } from "zod";

const here = dirname(fileURLToPath(import.meta.url));
export const SERVICE_ROOT = join(here, "..");
export const DOC_PATH = join(SERVICE_ROOT, "..", "docs", "protocol.md");
const DIST = process.env.PROTOCOL_DOC_DIST || join(SERVICE_ROOT, "dist");
const load = (path) => import(pathToFileURL(join(DIST, path)).href);
const { AUDIT_LINGER_MS, AUDIT_MIN_BATCH } = await load("adapters/nats/audit.js");

/**
 * The clock of the generated event examples. Every date the examples carry that must lie ahead (an exemption's
 * expires_at, an effective_until) is in 2099, so the story is accepted at this instant and by a real service today.
 */
export const DOC_NOW = "2026-03-02T09:00:00Z";
/** The sweeper's exemption_expired example happens this long after the exemption's expires_at (any delay ≥ 0 will do). */
const EXPIRY_DELAY_MS = 60_000;

/** Queries, sent after the command story (docs and the integration test share this list). */
export const QUERY_EXAMPLES = [
  {
    query: "get",
    title: "Current state of one aggregate (policy, set or exemption)",
    payload: { id: "550e8400-e29b-41d4-a716-446655440000" },
    replyKeys: ["ok", "aggregate_type", "aggregate_id", "version", "state"],
  },
  {
    query: "list",
    title: "Filtered, paged list (`limit` 1–500, default 100; pass `next_cursor` back as `cursor`)",
    payload: { aggregate_type: "Policy", policy_type: "Retention", limit: 10 },
    replyKeys: ["ok", "items", "next_cursor", "projection_seq"],
  },
  {
    query: "history",
    title: "Stored events of one aggregate, oldest first (`limit` 1–1000)",
    payload: { id: "550e8400-e29b-41d4-a716-446655440000", from_version: 1, limit: 5 },
    replyKeys: ["ok", "aggregate_id", "aggregate_type", "version", "events", "next_from_version"],
  },
  {
    query: "applicable",
    title: "Active policies in force (optionally for one scope) and the exemptions valid for an entity",
    payload: { entity_id: "6fa459ea-ee8a-3ca4-894e-db77e160355e", scope: "Organization" },
    replyKeys: ["ok", "at", "policies", "exemptions"],
  },
];

/**
 * Evaluation, sent after the queries. The story leaves the seed policy Archived and the second policy a
 * Draft, so the test first makes the second one Active with EVALUATION_SETUP (documented too).
 */
export const EVALUATION_SETUP = [
  { command: "approve", payload: { policy_id: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f1a", approved_by: "security-officer" } },
  { command: "activate", payload: { policy_id: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f1a", activated_by: "security-officer" } },
];
export const EVALUATION_EXAMPLES = [
  {
    endpoint: "evaluate",
    title: "A context that satisfies every rule",
    payload: {
      policy_id: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f1a",
      context: { user: { department: "finance", employee_id: "E-1042" } },
      requester: "ledger-export-job",
    },
    expect: { ok: true, status: "Compliant", blocking: false },
  },
  {
    endpoint: "evaluate",
    title: "A violation of a Critical rule: NonCompliant, and blocking because enforcement is Critical",
    payload: {
      policy_id: "0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f1a",
      context: { user: { department: "sales" } },
    },
    expect: { ok: true, status: "NonCompliant", blocking: true },
  },
  {
    endpoint: "check_compliance",
    title: "Several policies at once (or `policy_set_id` for a set)",
    payload: {
      policy_ids: ["0192f1a0-7b3c-7d4e-8f5a-6b7c8d9e0f1a"],
      context: { user: { department: "finance", employee_id: "E-1042" } },
    },
    expect: { ok: true },
  },
  {
    endpoint: "evaluate",
    title: "A policy that is not in force (the archived seed policy) is not evaluated",
    payload: { policy_id: "550e8400-e29b-41d4-a716-446655440000", context: {} },
    expect: { ok: false, code: "not_applicable" },
  },
];

const EVALUATION_FIELDS = [
  ["policy_id", "evaluate: yes", "UUID of the policy"],
  ["policy_set_id / policy_ids", "check_compliance: exactly one", "UUID of a policy set, or 1–256 policy UUIDs (composed as All, MostRestrictive)"],
  ["context", "yes", "JSON object the rules' `field` paths read"],
  ["at", "no", "RFC 3339 date-time with offset: evaluate the policy as it stood then (default: now)"],
  ["entity_id", "no", "entity for exemption matching (default: the context's `entity_id` or `entity.id`)"],
  ["requester", "no", "who asks (≤ 256 characters; recorded in the audit stream)"],
  ["purpose", "no", "why (≤ 256 characters; recorded in the audit stream)"],
  ["command_id", "no", "UUID"],
  ["correlation_id", "no", "string, ≤ 128 characters"],
];

/**
 * Every field of an audit event (src/adapters/nats/audit.ts, AuditEvent), in the order the service writes them.
 * The generator fails when the captured example has a field missing from this list or lacks one of it.
 */
const AUDIT_FIELDS = [
  ["schema_version", "integer", "Format version of this event (currently `1`); the message carries the same number."],
  ["audit_id", "UUID", "Unique id of this audit event (random; not a JetStream message id)."],
  ["instance", "string", "Id of the service instance that evaluated (its NATS micro-service id, as in `nats service info policy-service`)."],
  ["context_hash", "hex string", "sha256 of the request's `context` as canonical JSON (object keys sorted at every level, no whitespace). The context itself is not stored: hash your own copy the same way to match a record."],
  ["type", "string", "`violation_detected` (status `NonCompliant` or `PartiallyCompliant`), `compliance_passed` (`Compliant` or `CompliantWithExemption`) or `evaluated` (nothing was evaluated: `not_applicable`). Also the subject's last token."],
  ["evaluation_id", "UUID", "The `evaluation_id` the caller received in the reply (also in a `not_applicable` error's `details`)."],
  ["request", "string", "`evaluate` or `check_compliance`: the endpoint that was called."],
  ["subject_id", "string", "The evaluated policy id (`evaluate`), policy set id (`check_compliance` with `policy_set_id`) or `adhoc` (`check_compliance` with `policy_ids`). Also the subject's fourth token."],
  ["status", "string", "The overall status: `Compliant`, `CompliantWithExemption`, `PartiallyCompliant`, `NonCompliant`, or `not_applicable`."],
  ["blocking", "boolean or null", "Whether the outcome blocks (not compliant under `Mandatory`/`Critical` enforcement); `null` when nothing was evaluated."],
  ["result", "object", "The full result as computed: for `evaluate` the policy's evaluation (`applicable`, `status`, `blocking`, `enforcement`, `rules`, `violations`, `policy_id`, `policy_version`, `evaluated_at`; with an exemption also `exemption_id`, `exemption_version`, `waived_violations`; when nothing was evaluated `applicable: false`, `status_of_policy`, `reason`); for `check_compliance` the composed result with each member's evaluation."],
  ["duration_us", "integer", "Microseconds the service spent on the evaluation (request parsing to result), excluding NATS transport."],
  ["evaluated_at", "RFC 3339 date-time", "When the evaluation finished (the service's clock)."],
  ["at", "RFC 3339 date-time", "The instant the policies were evaluated as of: the request's `at`, or the time of the request."],
  ["requester", "string or null", "The request's `requester`, if given."],
  ["purpose", "string or null", "The request's `purpose`, if given."],
  ["entity_id", "string or null", "The entity used for exemption matching: the request's `entity_id`, else the context's `entity_id` or `entity.id`; `null` when none."],
  ["policies", "array of {id, version}", "Every policy evaluated, at the version that was in force."],
  ["exemptions", "array of {id, version}", "Exemptions that applied (waived failures), at their version."],
];

/** Fields of the query payloads (src/app/queries.ts); the examples above are checked against the service. */
const QUERY_FIELDS = {
  get: [
    ["id", "yes", "UUID of a policy, policy set or exemption"],
    ["at", "no", "RFC 3339 date-time: the state as of that instant (rebuilt from the stream)"],
  ],
  list: [
    ["aggregate_type", "no", "one of: Policy, PolicySet, PolicyExemption"],
    ["type", "no", "an aggregate type or a policy_type"],
    ["policy_type", "no", "e.g. Retention"],
    ["status", "no", "e.g. Draft, Approved, Active, Suspended, Revoked, Archived; Granted, Revoked, Expired"],
    ["scope", "no", "a scope level (`Organization`) or `Level:id` (`Department:finance`)"],
    ["enforcement", "no", "Advisory, Recommended, Mandatory, Critical"],
    ["policy_id", "no", "UUID: exemptions or sets of this policy"],
    ["limit", "no", "integer 1–500 (default 100)"],
    ["cursor", "no", "`next_cursor` of the previous page"],
  ],
  history: [
    ["id", "yes", "UUID of the aggregate"],
    ["from_version", "no", "integer ≥ 1 (default 1)"],
    ["limit", "no", "integer 1–1000 (default 1000); `next_from_version` continues"],
  ],
  applicable: [
    ["entity_id", "no", "only exemptions for this entity (≤ 128 characters)"],
    ["scope", "no", "only policies of this scope (level or `Level:id`)"],
    ["at", "no", "RFC 3339 date-time (default: now)"],
  ],
};

const ERROR_MEANINGS = {
  invalid_json: "The request body is not JSON.",
  validation_failed: "The JSON does not match the command's schema, or asks for what can never hold (an exemption whose `expires_at` has passed). `message` names the field and what it needs in plain words; `details` lists each `{path, message}`.",
  not_found: "The aggregate (or a referenced one) does not exist.",
  already_exists: "A create command names an id that is already taken.",
  invalid_transition: "The command is not allowed in the aggregate's current state; nothing was written.",
  conflict: "Other writers kept changing the aggregate and the service gave up after its retries (resend with the same `command_id`), or the `command_id` was already used for a different payload.",
  not_applicable: "Evaluation: the policy is not Active or not in its effective window at the evaluated instant.",
  unavailable: "JetStream or a dependency is unreachable or has no quorum; retry later (with the same `command_id`).",
  internal: "A bug or an unexpected server response; the message says what failed.",
};

// ------------------------------------------------------------------ helpers

const json = (value) => JSON.stringify(value, null, 2);
const fence = (lang, text) => "```" + lang + "\n" + text + "\n```";
const cell = (text) => String(text).replace(/\|/g, "\\|").replace(/\n/g, " ");

const UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/** JSON schemas of the named building blocks (UUID, date-time), recognised wherever they appear. */
let namedSchemas = [];
const sameSchema = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** A one-line description of a JSON-schema node. */
function describe(node, depth = 0) {
  if (!node || Object.keys(node).length === 0 || depth > 3) return "JSON value";
  const named = namedSchemas.find(([schema]) => sameSchema(schema, node));
  if (named) return named[1];
  if (node.anyOf || node.oneOf) return (node.anyOf ?? node.oneOf).map((n) => describe(n, depth + 1)).join(", or ");
  const bounds = (min, max, unit) =>
    min !== undefined && max !== undefined ? ` (${min}–${max}${unit})` : max !== undefined ? ` (≤ ${max}${unit})` : min !== undefined ? ` (≥ ${min}${unit})` : "";
  switch (node.type) {
    case "string":
      if (node.enum) return `one of: ${node.enum.map((v) => `\`${v}\``).join(", ")}`;
      if (node.const !== undefined) return `\`${node.const}\``;
      if (node.pattern === UUID_PATTERN) return "UUID";
      if (node.format === "date-time") return "RFC 3339 date-time";
      if (node.pattern) return `string matching \`${node.pattern}\`${bounds(node.minLength, node.maxLength, " chars")}`;
      return `string${bounds(node.minLength, node.maxLength, " chars")}`;
    case "integer":
    case "number":
      return `${node.type}${bounds(node.minimum, node.maximum, "")}`;
    case "boolean":
      return "boolean";
    case "null":
      return "`null` (clears it)";
    case "array":
      return `array of ${describe(node.items, depth + 1)}${bounds(node.minItems, node.maxItems, " items")}`;
    case "object":
      if (node.propertyNames?.enum) {
        return `object with one key of ${node.propertyNames.enum.map((v) => `\`${v}\``).join(", ")} → ${describe(node.additionalProperties, depth + 1)}`;
      }
      if (node.properties) return `object {${Object.keys(node.properties).join(", ")}}`;
      return "object";
    default:
      if (node.enum) return `one of: ${node.enum.map((v) => `\`${JSON.stringify(v)}\``).join(", ")}`;
      return "JSON value";
  }
}

function fieldTable(schema) {
  const required = new Set(schema.required ?? []);
  const rows = ["| Field | Required | Type |", "|---|---|---|"];
  for (const [name, node] of Object.entries(schema.properties ?? {})) {
    const dflt = node.default !== undefined ? ` (default \`${JSON.stringify(node.default)}\`)` : "";
    rows.push(`| \`${name}\` | ${required.has(name) ? "yes" : "no"} | ${cell(describe(node) + dflt)} |`);
  }
  return rows.join("\n");
}

// ------------------------------------------------------------------ the story, run through the domain

/** Runs VALID_EXAMPLES through parseCommand/decide/evolve: the events the service would store. */
function runStory(domain, examples) {
  const states = new Map();
  const events = [];
  let eventNo = 0;
  const apply = (name, payload, now, example) => {
    const parsed = domain.parseCommand(name, payload);
    if (!parsed.ok) throw new Error(`example "${example}" does not parse: ${JSON.stringify(parsed.error)}`);
    const route = domain.COMMAND_ROUTES[name];
    const id = parsed.command.payload[route.idField];
    const refs = new Map(domain.referencedIds(parsed.command).map((ref) => [ref, states.get(ref)]));
    const decision = domain.decide(states.get(id), parsed.command, { now, refs });
    if (!decision.ok) throw new Error(`example "${example}" is refused by the domain: ${JSON.stringify(decision.error)}`);
    decision.events.forEach((e, index) => {
      eventNo += 1;
      const state = states.get(id);
      const envelope = {
        event_id: `019ab3c0-0000-7000-8000-${String(eventNo).padStart(12, "0")}`,
        event_type: e.event_type,
        aggregate_type: route.aggregateType,
        aggregate_id: id,
        version: (state?.version ?? 0) + 1,
        occurred_at: now,
        command_id: parsed.meta.command_id,
        correlation_id: parsed.meta.correlation_id,
        causation_id: null,
        data: e.data,
      };
      states.set(id, domain.evolve(state, envelope));
      events.push({ envelope, msgId: parsed.meta.command_id ? `${parsed.meta.command_id}:${index}` : envelope.event_id });
    });
  };
  for (const ex of examples) apply(ex.command, ex.payload, DOC_NOW, ex.title);
  // The sweeper's internal command, just after the first exemption's expiry, so exemption_expired has an example.
  const grant = examples.find((ex) => ex.command === "grant_exemption");
  if (grant) {
    const expiredAt = new Date(Date.parse(grant.payload.expires_at) + EXPIRY_DELAY_MS).toISOString().replace(".000Z", "Z");
    apply("expire_exemption", { exemption_id: grant.payload.exemption_id }, expiredAt, "expire_exemption");
  }
  return events;
}

/** The events docs/protocol.md shows, in story order: [{ envelope, msgId }]. */
export async function documentedStory() {
  const commands = await load("domain/commands.js");
  const examples = await load("protocol/examples.js");
  const domain = await load("domain/index.js");
  return runStory({ ...domain, COMMAND_ROUTES: commands.COMMAND_ROUTES }, examples.VALID_EXAMPLES);
}

/**
 * One stored audit message, produced by the service's own code: the Evaluation handler and the real AuditPublisher
 * (publishing to a stub that captures the message instead of JetStream), fed the story's policies after
 * EVALUATION_SETUP. Two violating evaluations are recorded back to back, so they share one message, as they do
 * in the service. Random ids, the wall clock and timings are then replaced by fixed illustrative values.
 */
export async function documentedAuditMessage() {
  const commands = await load("domain/commands.js");
  const examples = await load("protocol/examples.js");
  const domain = await load("domain/index.js");
  const { Evaluation } = await load("app/evaluation.js");
  const { AuditPublisher, AUDIT_SUBJECT_PREFIX } = await load("adapters/nats/audit.js");
  const setup = EVALUATION_SETUP.map((step) => ({ ...step, title: `evaluation setup: ${step.command}` }));
  const states = new Map();
  for (const { envelope } of runStory({ ...domain, COMMAND_ROUTES: commands.COMMAND_ROUTES }, [...examples.VALID_EXAMPLES, ...setup])) {
    states.set(envelope.aggregate_id, domain.evolve(states.get(envelope.aggregate_id), envelope));
  }
  const captured = [];
  const js = {
    async publish(subject, data) {
      // The publisher sends the message as bytes (UTF-8), as it does to JetStream.
      captured.push({ subject, body: JSON.parse(typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data)) });
      return { stream: "POLICY_AUDIT", seq: captured.length, duplicate: false };
    },
  };
  const quiet = { info() {}, warn() {}, error() {}, debug() {} };
  const audit = new AuditPublisher({ js, logger: quiet, instance: "instance" });
  const projection = {
    getState: (id) => states.get(id),
    exemptionsForPolicy: (policyId) => [...states.values()].filter((s) => s.aggregate_type === "PolicyExemption" && s.policy_id === policyId),
  };
  const history = { history: async () => [], stateAt: async () => undefined };
  const evaluation = new Evaluation({ projection, history, audit, now: () => Date.parse(DOC_NOW) });
  const violation = EVALUATION_EXAMPLES.find((ex) => ex.endpoint === "evaluate" && ex.expect.blocking === true);
  const requests = [
    { ...violation.payload, requester: "ledger-export-job", purpose: "nightly ledger export" },
    { ...violation.payload, context: { user: { department: "marketing", employee_id: "E-2071" } } },
  ];
  for (const request of requests) {
    const reply = await evaluation.evaluate(request);
    // An ok evaluate reply is the body already serialised (`json`, sent as it is), as the endpoint sends it.
    const body = reply.ok && reply.json !== undefined ? JSON.parse(reply.json) : reply;
    if (!body.ok || body.result.status !== "NonCompliant") throw new Error(`audit example: unexpected reply ${JSON.stringify(body)}`);
  }
  await audit.close();
  if (captured.length !== 1 || captured[0].body.events?.length !== requests.length) {
    throw new Error(`audit example: expected one message with ${requests.length} events, got ${JSON.stringify(captured)}`);
  }
  const { subject, body } = captured[0];
  const { createHash } = await import("node:crypto");
  const plainHash = createHash("sha256").update(JSON.stringify(requests[0].context)).digest("hex");
  if (body.events[0].context_hash !== plainHash) throw new Error("audit example: context_hash is not sha256 of the example's (already sorted) context");
  if (!subject.startsWith(`${AUDIT_SUBJECT_PREFIX}.`)) throw new Error(`audit example: unexpected subject ${subject}`);
  body.events.forEach((event, i) => {
    const documented = AUDIT_FIELDS.map(([name]) => name);
    if (JSON.stringify(Object.keys(event)) !== JSON.stringify(documented)) {
      throw new Error(`audit event fields changed: ${Object.keys(event).join(", ")} (documented: ${documented.join(", ")}); update AUDIT_FIELDS`);
    }
    const n = i + 1;
    event.audit_id = `5d7c9e1a-3b2f-4c6d-9e8f-0a1b2c3d4e0${n}`;
    event.instance = "sHLbFWt0Yd2zQyGkP4uJ1c";
    event.evaluation_id = `8f14e45f-ceea-467f-a8f5-1c2b3a4d5e6${n}`;
    event.duration_us = [83, 61][i] ?? 70;
    event.evaluated_at = `2026-03-02T09:00:00.00${2 * n}Z`;
    if (event.result && typeof event.result === "object" && "evaluated_at" in event.result) {
      event.result.evaluated_at = `2026-03-02T09:00:00.00${2 * n - 1}Z`;
    }
  });
  return { subject, body, requests };
}

// ------------------------------------------------------------------ render

export async function renderProtocolDoc() {
  const commands = await load("domain/commands.js");
  const examples = await load("protocol/examples.js");
  const domain = await load("domain/index.js");
  const replies = await load("support/replies.js");
  const handler = await load("app/commands.js");
  const pkg = JSON.parse(readFileSync(join(SERVICE_ROOT, "package.json"), "utf8"));

  const toJson = (schema) => {
    const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" });
    return rest;
  };
  namedSchemas = [
    [toJson(commands.DateTimeSchema), "RFC 3339 date-time (`2025-11-08T10:00:00Z`)"],
    [toJson(commands.UuidSchema), "UUID"],
  ];
  const story = runStory({ ...domain, COMMAND_ROUTES: commands.COMMAND_ROUTES }, examples.VALID_EXAMPLES);
  const out = [];
  const push = (...lines) => out.push(...lines);

  push(
    "# Protocol reference",
    "",
    "<!-- GENERATED by service/scripts/gen-protocol-doc.mjs from the service's schemas and examples.",
    "     Do not edit by hand: change the code, then run `cd service && npm run build && node scripts/gen-protocol-doc.mjs`.",
    "     service/test/integration/protocol-doc.test.ts fails when this file is stale, and",
    "     service/test/integration/protocol-doc-examples.test.ts sends every example below to a real service. -->",
    "",
    `policy-service ${pkg.version} speaks JSON over NATS request/reply. It is a NATS micro service named`,
    "`policy-service` (discoverable with `nats service list`, `$SRV.PING|INFO|STATS.policy-service`), every",
    "endpoint in queue group `q`, so requests are spread over all running instances.",
    "",
    "## Contents",
    "",
    "- [Subjects](#subjects)",
    "- [Replies and errors](#replies-and-errors)",
    "- [Commands](#commands)",
    "- [Queries](#queries)",
    "- [Evaluation](#evaluation)",
    "- [Decision audit](#decision-audit)",
    "- [Events](#events)",
    "- [Invalid requests](#invalid-requests)",
    "",
    "## Subjects",
    "",
    "| Subject | Kind | Aggregate | Stores |",
    "|---|---|---|---|",
  );
  const eventsOf = (name) => [...new Set(examples.VALID_EXAMPLES.filter((e) => e.command === name).map((e) => e.event))];
  for (const name of commands.PUBLIC_COMMANDS) {
    const route = commands.COMMAND_ROUTES[name];
    push(`| [\`policy.commands.${name}\`](#${name}) | command | ${route.aggregateType} | ${eventsOf(name).map((e) => `\`${e}\``).join(", ")} |`);
  }
  for (const q of Object.keys(QUERY_FIELDS)) push(`| [\`policy.queries.${q}\`](#query-${q}) | query | any | — |`);
  push(
    "| [`policy.commands.evaluate`](#evaluation) | evaluation | Policy | — (audit record) |",
    "| [`policy.commands.check_compliance`](#evaluation) | evaluation | Policy, PolicySet | — (audit record) |",
    "| `events.policy.<aggregate_id>.<event_type>` | event (JetStream) | any | — |",
    "| [`audit.policy.<policy_or_set_id>.<type>`](#decision-audit) | audit record (JetStream, stream `POLICY_AUDIT`) | — | — |",
    "",
    "`nats service info policy-service` lists the endpoints a running instance serves; the integration test",
    "checks that they are exactly the subjects above.",
    "",
    "Try one with natscli against a local service (`scripts/run`):",
    "",
    fence("bash", `nats req policy.commands.create '${examples.exampleBody(examples.VALID_EXAMPLES[0])}'`),
    "",
    "## Replies and errors",
    "",
    "A command that succeeds answers with the aggregate's new version and the events it stored:",
    "",
  );
  const first = story[0].envelope;
  push(
    fence("json", json({
      ok: true,
      aggregate_id: first.aggregate_id,
      version: first.version,
      events: [{ type: first.event_type, subject: `events.policy.${first.aggregate_id}.${first.event_type}`, seq: 1 }],
    })),
    "",
    "Every failure has the same shape, and the same code is also in the NATS micro-service error headers",
    "(`Nats-Service-Error-Code`: the number below; `Nats-Service-Error`: the message), so generic NATS tools",
    "see the failure too:",
    "",
    fence("json", json({ ok: false, error: { code: "invalid_transition", message: "…", details: "optional, e.g. validation issues" } })),
    "",
    "| Code | `Nats-Service-Error-Code` | Meaning |",
    "|---|---|---|",
  );
  for (const [code, status] of Object.entries(replies.ERROR_STATUS)) {
    push(`| \`${code}\` | ${status} | ${cell(ERROR_MEANINGS[code] ?? "")} |`);
  }
  push(
    "",
    "Every command also accepts two optional fields, returned in the stored events:",
    "",
    "- `command_id` (UUID): idempotency key. Re-sending a command with the same `command_id`, to any instance,",
    "  writes nothing new and answers like the first time (also a first `not_found`, `already_exists`,",
    "  `invalid_transition` or `not_applicable`) for 10 × `DUPLICATE_WINDOW` (default 20 minutes) after the first",
    "  attempt (see docs/concurrency.md). Set it whenever you may retry (timeouts, `unavailable`).",
    "- `correlation_id` (string, ≤ 128 characters): your own tracing id.",
    "",
    "A create command (`create`, `create_set`, `grant_exemption`) may omit its id field; the service then",
    "assigns one and returns it as `aggregate_id`: a UUIDv7, or, when the command carries a `command_id`, a",
    "UUIDv5 derived from the command name and `command_id`, so that every retry addresses the same aggregate.",
    "",
    "## Commands",
    "",
    "Payloads are strict JSON objects: unknown fields, `__proto__`/`constructor`/`prototype` keys,",
    "non-UUID ids, blank or oversized strings and impossible dates are refused with `validation_failed`,",
    `and so is a request body over ${handler.MAX_PAYLOAD_BYTES / 1024} KiB. A command that loses a race with another writer on the`,
    `same aggregate is reloaded and decided again (up to ${handler.MAX_CONFLICT_RETRIES + 1} attempts) before it answers \`conflict\`.`,
    "The examples below form one story, sent in this order to an empty stream by the integration test.",
    "",
  );
  const expireRoute = commands.COMMAND_ROUTES.expire_exemption;
  for (const name of commands.PUBLIC_COMMANDS) {
    const route = commands.COMMAND_ROUTES[name];
    const schema = z.toJSONSchema(commands.COMMAND_SCHEMAS[name], { io: "input", unrepresentable: "any" });
    push(
      `### ${name}`,
      "",
      `Subject \`policy.commands.${name}\` · aggregate ${route.aggregateType} · id field \`${route.idField}\`` +
        (route.creates ? " (optional: the service assigns one)" : "") +
        ` · stores ${eventsOf(name).map((e) => `[\`${e}\`](#event-${e})`).join(", ")}`,
      "",
      fieldTable(schema),
      "",
    );
    for (const ex of examples.VALID_EXAMPLES.filter((e) => e.command === name)) {
      push(`**${ex.title}**${ex.seed ? " (from the deployment guide / domain reference, verbatim)" : ""}`, "", fence("json", json(ex.payload)), "");
    }
  }
  push(
    `The expiry sweeper sends an internal command, \`expire_exemption\` (\`{"exemption_id": …}\`, aggregate ${expireRoute.aggregateType}),`,
    "when an exemption's `expires_at` passes; it is not served on a public subject. See [expiry.md](expiry.md).",
    "",
    "### Rules",
    "",
    "`rules` (in `create`) and `rule` (in `add_rule`, `update_rule`) are objects with these fields:",
    "",
  );
  const createSchema = z.toJSONSchema(commands.COMMAND_SCHEMAS.create, { io: "input", unrepresentable: "any" });
  const ruleSchema = createSchema.properties?.rules?.items;
  if (ruleSchema) push(fieldTable(ruleSchema), "");
  push(
    "An `expression` is a JSON tree; each node has an `op`:",
    "",
    "| `op` | Other fields |",
    "|---|---|",
    "| `equal`, `not_equal` | `field`, `value` (any JSON) |",
    "| `greater_than`, `greater_than_or_equal`, `less_than`, `less_than_or_equal` | `field`, `value` (number or string) |",
    "| `in`, `not_in` | `field`, `values` (array) |",
    "| `matches` | `field`, `pattern` (RE2 syntax: linear time) |",
    "| `starts_with`, `ends_with` | `field`, `value` (string) |",
    "| `contains` | `field`, `value` |",
    "| `exists`, `not_exists` | `field` |",
    "| `and`, `or` | `args` (array of expressions) |",
    "| `not` | `arg` (an expression) |",
    "",
    "`field` is a dotted path into the evaluated context (`record.retention_days`).",
    "",
    "## Queries",
    "",
    "Queries read the service's projection (or the stream, for `history` and `at`) and never write.",
    "",
  );
  for (const q of QUERY_EXAMPLES) {
    push(
      `### <a id="query-${q.query}"></a>${q.query}`,
      "",
      `Subject \`policy.queries.${q.query}\`. ${q.title}.`,
      "",
      "| Field | Required | Meaning |",
      "|---|---|---|",
      ...QUERY_FIELDS[q.query].map(([f, r, m]) => `| \`${f}\` | ${r} | ${cell(m)} |`),
      "",
      fence("json", json(q.payload)),
      "",
      `Reply fields: ${q.replyKeys.map((k) => `\`${k}\``).join(", ")}.`,
      "",
    );
  }
  push(
    "## Evaluation",
    "",
    "`policy.commands.evaluate` checks one policy's rules against a JSON `context`;",
    "`policy.commands.check_compliance` checks several (or a policy set, with its composition and conflict",
    "resolution). Neither stores an event; each evaluation is recorded in the audit stream (see [Decision audit](#decision-audit))",
    "when auditing is on. A policy that is not Active or outside its effective window answers `not_applicable`.",
    "",
    "| Field | Required | Meaning |",
    "|---|---|---|",
    ...EVALUATION_FIELDS.map(([f, r, m]) => `| \`${f}\` | ${r} | ${cell(m)} |`),
    "",
    "A result's `status` is `Compliant`, `CompliantWithExemption` (failures waived by a matching exemption),",
    "`PartiallyCompliant` (only Info/Low/Medium rules failed and some passed) or `NonCompliant`; `blocking` is",
    "true when it is not compliant and the enforcement is `Mandatory` or `Critical`. Each failed rule is listed",
    "in `violations` with its `severity`, `message` and `remediation`.",
    "",
    "The examples run against the story's second policy after making it Active:",
    "",
    fence("bash", EVALUATION_SETUP.map((step) => `nats req policy.commands.${step.command} '${JSON.stringify(step.payload)}'`).join("\n")),
    "",
  );
  for (const ex of EVALUATION_EXAMPLES) {
    const outcome = ex.expect.ok
      ? `answers \`ok: true\`${ex.expect.status ? ` with \`status: "${ex.expect.status}"\`, \`blocking: ${ex.expect.blocking}\`` : ""}`
      : `answers \`${ex.expect.code}\``;
    push(`**${ex.title}** (\`policy.commands.${ex.endpoint}\`; ${outcome})`, "", fence("json", json(ex.payload)), "");
  }
  const auditExample = await documentedAuditMessage();
  const [firstAudit] = auditExample.body.events;
  push(
    "## Decision audit",
    "",
    "With auditing on (`AUDIT_ENABLED`, default true), every `evaluate` and `check_compliance` that gets as far as",
    "evaluating (including `not_applicable` outcomes; not requests refused as `validation_failed` or `not_found`)",
    "is recorded in its own JetStream stream, never in the event store:",
    "",
    "- Stream `POLICY_AUDIT` (`AUDIT_STREAM_NAME`), subjects `audit.policy.>`, file storage, limits retention,",
    "  max age `AUDIT_MAX_AGE_DAYS` (default 90 days), replicas `STREAM_REPLICAS`, `deny_delete`.",
    "- Subject `audit.policy.<policy_or_set_id>.<type>`: the evaluated policy id, the policy set id, or `adhoc`",
    "  (`check_compliance` with `policy_ids`), then the type: `violation_detected`, `compliance_passed` or `evaluated`.",
    "  For example, every violation of one policy: `audit.policy.<policy_id>.violation_detected`; every violation:",
    "  `audit.policy.*.violation_detected`.",
    "",
    "**Each message is a batch, not one evaluation.** Its JSON body is `{\"schema_version\": 1, \"events\": [AuditEvent, …]}`:",
    `an instance groups the audit events of one subject recorded within a few milliseconds (${AUDIT_LINGER_MS} ms linger, at most 256`,
    "events per message) into one acknowledged write. Consumers must iterate `events` in every message; counting",
    "messages does not count evaluations. Within a message, events are in the order the instance recorded them.",
    "",
    "```js",
    "for await (const msg of messages) {            // e.g. a JetStream consumer on POLICY_AUDIT",
    "  const { schema_version, events } = msg.json();",
    "  for (const event of events) handle(event);     // one AuditEvent per evaluation",
    "  msg.ack();",
    "}",
    "```",
    "",
    "Auditing never slows or fails an evaluation: the reply is sent first, and events wait in a bounded queue",
    "(10,000 per instance) for publishing. When the queue is full, new events are dropped (warning",
    "`audit queue full: audit events dropped`). A write the stream does not acknowledge within 5 s is not retried",
    "(warning `audit events not stored`; it may or may not have landed). So an event is stored at most once, and",
    "the audit trail can have gaps while the stream is unavailable or overloaded; the event store never does.",
    "",
    "**What a reply promises about its audit record.** An `ok` reply (or a `not_applicable` error) means the evaluation",
    "was handed to the instance's audit queue, or, if the queue was full, counted as dropped and logged; it does not mean",
    "the record is stored. The reply never waits for the record: it goes out first. The record's write starts at most",
    `${AUDIT_LINGER_MS} ms later (the linger; sooner when an earlier write is acknowledged while ${AUDIT_MIN_BATCH} or more records are queued; later`,
    "while 16 writes await their acks); until the stream acknowledges it, the",
    "record lives only in the instance's memory, so an instance that crashes loses what it had queued or in flight (a",
    "graceful shutdown writes the queue and waits up to 3 s for the acks). To know that a decision was recorded, read",
    "its `evaluation_id` from the audit stream.",
    "",
    `Example: the blocking evaluation above, sent twice in quick succession (the first with \`requester\` and`,
    "`purpose`), is stored as this one message (produced by the service's evaluation and audit code; ids, clock",
    "times and durations are illustrative):",
    "",
    `Subject \`${auditExample.subject}\``,
    "",
    fence("json", json(auditExample.body)),
    "",
    `Fields of each event in \`events\` (the reply's \`evaluation_id\`, here \`${firstAudit.evaluation_id}\`, links a caller's`,
    "answer to its audit event):",
    "",
    "| Field | Type | Meaning |",
    "|---|---|---|",
    ...AUDIT_FIELDS.map(([f, t, m]) => `| \`${f}\` | ${cell(t)} | ${cell(m)} |`),
    "",
    `To match a record to a context you hold: \`printf '%s' '${JSON.stringify(auditExample.requests[0].context)}' | sha256sum\` prints the first event's \`context_hash\`.`,
    "",
    "Read them with natscli, for example:",
    "",
    fence("bash", [
      "nats stream view POLICY_AUDIT --subject 'audit.policy.*.violation_detected'",
      `nats stream get POLICY_AUDIT --last-for '${auditExample.subject}' --json`,
    ].join("\n")),
    "",
  );
  push(
    "## Events",
    "",
    "Each event is one JetStream message on `events.policy.<aggregate_id>.<event_type>` in the stream",
    "`POLICY_EVENTS` (the `STREAM_NAME`), with this JSON body (`version` counts the aggregate's events from 1;",
    "`occurred_at` is the command's time; `data` is self-contained, so replaying the events rebuilds every field)",
    "and the header `Nats-Msg-Id` = `event_id`, or `<command_id>:<index>:<expected sequence>` when the command carried a `command_id`;",
    "then also `Policy-Command-Sha256` = the sha256 (hex) of the payload as sent, as JSON with sorted keys: it tells a retry",
    "from a reuse of the `command_id` for another payload (events of 0.9.0 have none; the body is the same either way).",
    "",
    `The examples are produced by running the command examples above through the domain at ${DOC_NOW}`,
    "(ids and times are illustrative).",
    "",
  );
  const seenTypes = new Set();
  for (const { envelope, msgId } of story) {
    if (seenTypes.has(envelope.event_type)) continue;
    seenTypes.add(envelope.event_type);
    push(
      `### <a id="event-${envelope.event_type}"></a>${envelope.event_type}`,
      "",
      `Subject \`events.policy.${envelope.aggregate_id}.${envelope.event_type}\` · Nats-Msg-Id \`${msgId}\``,
      "",
      fence("json", json(envelope)),
      "",
    );
  }
  const missing = domain.EVENT_TYPES.filter((t) => !seenTypes.has(t));
  if (missing.length > 0) throw new Error(`no example produces these event types: ${missing.join(", ")}`);
  push(
    "## Invalid requests",
    "",
    "Each is sent by the integration test after the story above and answers with the code and `error.message` shown.",
    "",
    "| Subject | Request | Code | Message |",
    "|---|---|---|---|",
  );
  for (const ex of examples.INVALID_EXAMPLES) {
    const body = examples.exampleBody(ex);
    const shown = body.length > 140 ? `${body.slice(0, 137)}…` : body;
    const seed = ex.seed ? " (from the domain reference, verbatim)" : "";
    const message = ex.message === undefined ? "" : cell(ex.message);
    push(`| \`policy.commands.${ex.command}\` | ${cell(ex.title)}${seed}: \`${cell(shown)}\` | \`${ex.expect}\` | ${message} |`);
  }
  push("");
  return out.join("\n");
}

// ------------------------------------------------------------------ CLI

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const check = process.argv.includes("--check");
  const text = await renderProtocolDoc();
  let current = "";
  try {
    current = readFileSync(DOC_PATH, "utf8");
  } catch {
    /* absent: stale */
  }
  if (check) {
    if (current !== text) {
      console.error(`${DOC_PATH} is stale: run (cd service && npm run build && node scripts/gen-protocol-doc.mjs)`);
      process.exit(1);
    }
    console.log(`${DOC_PATH} is up to date`);
  } else {
    writeFileSync(DOC_PATH, text);
    console.log(`wrote ${DOC_PATH}`);
  }
}
