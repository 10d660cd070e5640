// One Node.js floor, many places: service/package.json's engines is the source; the version scripts/ensure-tools
// tests as the oldest, scripts/run's check and the README's prerequisites must name the same floor, and the
// process running this test must satisfy it. The npm test scripts use glob patterns: `node --test DIR/` treats
// the directory as a module on Node >= 22 (MODULE_NOT_FOUND).
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

// Compiled to service/.build/test/unit/, so the service root is three levels up.
const SERVICE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const REPO_ROOT = join(SERVICE_ROOT, "..");
const pkg = JSON.parse(readFileSync(join(SERVICE_ROOT, "package.json"), "utf8")) as { engines: { node: string }; scripts: Record<string, string> };

const floorMatch = /^>=(\d+)\.(\d+)\.(\d+)$/.exec(pkg.engines.node);
const inRepository = existsSync(join(REPO_ROOT, "flake.nix"));

test("engines.node is a plain lower bound on a maintained LTS line (22 or newer)", () => {
  assert.ok(floorMatch, `engines.node "${pkg.engines.node}" is of the form >=X.Y.Z`);
  assert.ok(Number(floorMatch[1]) >= 22, "Node 20 reached end of life on 2026-04-30; nixpkgs 26.05 refuses it");
});

test("this process runs on a Node that engines allows", () => {
  const [major, minor, patch] = process.versions.node.split(".").map(Number) as [number, number, number];
  const [fMajor, fMinor, fPatch] = floorMatch!.slice(1).map(Number) as [number, number, number];
  const ok = major !== fMajor ? major > fMajor : minor !== fMinor ? minor > fMinor : patch >= fPatch;
  assert.ok(ok, `node ${process.version} is below engines ${pkg.engines.node}`);
});

test("the test scripts pass glob patterns to node --test, never a directory", () => {
  for (const name of ["test", "test:unit", "test:integration"]) {
    const script = pkg.scripts[name];
    assert.ok(script, `script ${name} exists (service/package.nix calls it)`);
    assert.doesNotMatch(script, /node --test[^&]*\s\.build\/test\/[a-z]+\/(\s|$)/, `${name}: a directory argument fails on Node >= 22`);
    assert.match(script, /'\.build\/test\/[a-z]+\/\*\*\/\*\.test\.js'/, `${name}: a quoted glob pattern`);
  }
});

test("ensure-tools' oldest Node, scripts/run's check and the README name the engines floor", (t) => {
  if (!inRepository) {
    t.skip("not in the repository (the Nix package builds from service/ alone)");
    return;
  }
  const [, fMajor, fMinor, fPatch] = floorMatch!;
  const ensureTools = readFileSync(join(REPO_ROOT, "scripts", "ensure-tools"), "utf8");
  assert.match(ensureTools, new RegExp(`^NODE_OLDEST_VERSION="${fMajor}\\.${fMinor}\\.${fPatch}"$`, "m"), "scripts/ensure-tools tests the floor itself as the oldest Node");
  assert.match(ensureTools, /^NODE_VERSION="24\.\d+\.\d+"$/m, "scripts/ensure-tools pins a Node 24 (nixpkgs 26.05's default)");
  const run = readFileSync(join(REPO_ROOT, "scripts", "run"), "utf8");
  assert.match(run, new RegExp(`a === ${fMajor} && b >= ${fMinor}`), "scripts/run checks the same floor");
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  assert.match(readme, new RegExp(`Node\\.js ≥ ${fMajor}\\.${fMinor}\\b`), "README prerequisites name the floor");
  assert.doesNotMatch(readme, /Node\.js ≥ 20\b/, "README still names Node 20");
});

test("the V8 heap settings the launchers give the service are allowed in NODE_OPTIONS", async () => {
  // package.json "config.nodeOptions" becomes NODE_OPTIONS (scripts/run, the Nix modules, the benchmark); Node
  // refuses to start with a V8 flag it does not allow there (such as --heap-growing-percent: see HEAP_GROWING_PERCENT).
  const { spawnSync } = await import("node:child_process");
  const nodeOptions = (JSON.parse(readFileSync(join(SERVICE_ROOT, "package.json"), "utf8")) as { config?: { nodeOptions?: string } }).config?.nodeOptions;
  assert.ok(nodeOptions, "package.json config.nodeOptions is set");
  const run = spawnSync(process.execPath, ["-e", "console.log(require('v8').getHeapStatistics().total_available_size > 0)"], {
    env: { ...process.env, NODE_OPTIONS: nodeOptions }, encoding: "utf8",
  });
  assert.equal(run.status, 0, run.stderr);
});
