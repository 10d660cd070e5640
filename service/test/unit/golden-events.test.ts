// Events are the durable contract between versions: every golden fixture that a released version wrote
// (tests/fixtures/events/<version>/<event_type>.json, recorded from a running service by
// test/tools/gen-event-fixtures.ts) must replay through this tree's `evolve` into the state that version's own
// service reported. A later version that renames a field, drops an event type or reads old events differently fails here.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { EVENT_AGGREGATE, EVENT_TYPES, replay, type EventEnvelope } from "../../src/domain/index.js";

// Compiled to service/.build/test/unit/, so the repository root is four levels up.
const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const FIXTURES = join(REPO_ROOT, "tests", "fixtures", "events");
const REGENERATE = "cd service && npm run fixtures:events -- --ref vX.Y.Z";

interface Fixture {
  event_type: string;
  written_by: { service: string };
  stream: { seq: number; subject: string; envelope: EventEnvelope }[];
  state: Record<string, unknown>;
}

const semver = (v: string) => v.split(".").map(Number);
const byVersion = (a: string, b: string) => {
  const [x, y] = [semver(a), semver(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
};

// The Nix package builds from service/ alone (no repository around it): there the fixtures cannot be read.
const inRepository = existsSync(join(REPO_ROOT, "flake.nix"));
const versions = inRepository && existsSync(FIXTURES)
  ? readdirSync(FIXTURES).filter((d) => /^\d+\.\d+\.\d+$/.test(d)).sort(byVersion)
  : [];

test("golden event fixtures exist, and the newest version's cover every event type of this code", (t) => {
  if (!inRepository) {
    t.skip(`not in the repository (no ${join(REPO_ROOT, "flake.nix")}): the fixtures live in tests/fixtures/events/`);
    return;
  }
  assert.ok(versions.length > 0, `no fixture directories tests/fixtures/events/<version>/ (generate: ${REGENERATE})`);
  const newest = versions[versions.length - 1]!;
  const types = readdirSync(join(FIXTURES, newest)).filter((f) => f.endsWith(".json")).map((f) => f.replace(/\.json$/, ""));
  const missing = EVENT_TYPES.filter((type) => !types.includes(type));
  assert.deepEqual(missing, [], `event types without a golden fixture in tests/fixtures/events/${newest}/ (generate: ${REGENERATE})`);
});

for (const version of versions) {
  describe(`events written by policy-service ${version}`, () => {
    const dir = join(FIXTURES, version);
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
      test(`${file}: replays into the state ${version} reported`, () => {
        const fixture = JSON.parse(readFileSync(join(dir, file), "utf8")) as Fixture;
        assert.equal(`${fixture.event_type}.json`, file, "file name is the event type");
        assert.ok((EVENT_TYPES as readonly string[]).includes(fixture.event_type), `${fixture.event_type} is still an event type of this code`);
        assert.match(fixture.written_by.service, new RegExp(`^policy-service ${version.replace(/\./g, "\\.")}$`), "written by the version its directory names");
        assert.ok(fixture.stream.length > 0, "the stream has events");
        const last = fixture.stream[fixture.stream.length - 1]!.envelope;
        assert.equal(last.event_type, fixture.event_type, "the stream ends with an event of this type");
        for (const { subject, envelope } of fixture.stream) {
          assert.equal(subject, `events.policy.${envelope.aggregate_id}.${envelope.event_type}`, "stored on the aggregate's subject");
          assert.equal(EVENT_AGGREGATE[envelope.event_type], envelope.aggregate_type, `${envelope.event_type} belongs to ${envelope.aggregate_type}`);
        }
        const state = replay(fixture.stream.map((e) => e.envelope));
        assert.deepEqual(state, fixture.state, `replaying ${version}'s ${fixture.event_type} stream gives a different state`);
      });
    }
  });
}
