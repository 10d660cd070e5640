// One version, many places: service/package.json is the source; everything else must agree with it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { join, relative } from "node:path";

// Compiled to service/.build/test/unit/, so the service root is three levels up.
const SERVICE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const REPO_ROOT = join(SERVICE_ROOT, "..");

const readJson = (path: string): Record<string, any> => JSON.parse(readFileSync(path, "utf8"));
const pkg = readJson(join(SERVICE_ROOT, "package.json"));
const version: string = pkg.version;

test("package.json has a semantic version", () => {
  assert.match(version, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
});

test("package-lock.json records the same version", () => {
  const lock = readJson(join(SERVICE_ROOT, "package-lock.json"));
  assert.equal(lock.version, version, "package-lock.json .version (run npm install --package-lock-only)");
  assert.equal(lock.packages?.[""]?.version, version, 'package-lock.json .packages[""].version');
});

/** Release headings of a Keep a Changelog file, newest first: "## [1.2.3] - 2026-11-25". */
function changelogReleases(text: string): { version: string; date: string }[] {
  const releases: { version: string; date: string }[] = [];
  for (const m of text.matchAll(/^## \[(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)\] - (\d{4}-\d{2}-\d{2})\s*$/gm)) {
    releases.push({ version: m[1]!, date: m[2]! });
  }
  return releases;
}

test("CHANGELOG.md is in Keep a Changelog form and its newest release is package.json's version", () => {
  const text = readFileSync(join(REPO_ROOT, "CHANGELOG.md"), "utf8");
  const headings = [...text.matchAll(/^## (.*)$/gm)].map((m) => m[1]!.trim());
  assert.equal(headings[0], "[Unreleased]", "the first section is ## [Unreleased]");
  const releases = changelogReleases(text);
  assert.ok(releases.length > 0, "at least one '## [x.y.z] - YYYY-MM-DD' release");
  assert.equal(headings.length, releases.length + 1, `every other section is a dated release: ${headings.join(" | ")}`);
  assert.equal(releases[0]!.version, version, "newest CHANGELOG release");
  assert.ok(!Number.isNaN(Date.parse(releases[0]!.date)), "release date is a real date");
  assert.match(text, new RegExp(`^\\[${version.replace(/\./g, "\\.")}\\]: \\S+`, "m"), "link reference for the newest release");
  assert.match(text, /^\[Unreleased\]: \S+/m, "link reference for [Unreleased]");
});

function nixFiles(): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      if (name.startsWith(".") || name === "node_modules" || name === "result") continue;
      const path = join(dir, name);
      const st = statSync(path);
      if (st.isDirectory()) walk(path);
      else if (name.endsWith(".nix")) found.push(path);
    }
  };
  walk(REPO_ROOT);
  return found;
}

test("the Nix package takes its version from package.json (or states the same one)", (t) => {
  // The package definition is the Nix file that builds the npm package.
  const packageFiles = nixFiles().filter((f) => /buildNpmPackage|importNpmLock|mkDerivation/.test(readFileSync(f, "utf8")));
  if (packageFiles.length === 0) {
    t.skip("no Nix package definition (buildNpmPackage/importNpmLock/mkDerivation) in the repository yet");
    return;
  }
  for (const file of packageFiles) {
    const text = readFileSync(file, "utf8");
    const where = relative(REPO_ROOT, file);
    const readsPackageJson = /(importJSON|fromJSON)[\s\S]{0,200}package\.json/.test(text);
    const literals = [...text.matchAll(/\bversion\s*=\s*"([^"]*)"/g)].map((m) => m[1]!);
    assert.ok(readsPackageJson || literals.length > 0, `${where} neither reads package.json nor sets a version`);
    for (const literal of literals) {
      // Literal versions are only acceptable when they equal package.json's; interpolations are checked above.
      if (!literal.includes("${")) assert.equal(literal, version, `${where}: version = "${literal}"`);
    }
  }
});

test("pinned tags in the README and the deployment guide name the current version", () => {
  for (const doc of ["README.md", "docs/leaf-node-deployment.md"]) {
    const path = join(REPO_ROOT, doc);
    if (!existsSync(path)) continue;
    const text = readFileSync(path, "utf8");
    for (const m of text.matchAll(/github:thecowboyai\/cim-domain-policy\/v(\d+\.\d+\.\d+)/g)) {
      assert.equal(m[1], version, `${doc} pins v${m[1]}`);
    }
  }
});

test("policy-service --version prints package.json's version", (t) => {
  const main = join(SERVICE_ROOT, "dist", "main.js");
  if (!existsSync(main)) {
    t.skip(`${relative(REPO_ROOT, main)} is not built (npm run build); npm test builds it first`);
    return;
  }
  const out = spawnSync(process.execPath, [main, "--version"], { encoding: "utf8", timeout: 15_000 });
  assert.equal(out.status, 0, `exit status; stderr: ${out.stderr}`);
  // Either the bare version or "policy-service <version>".
  assert.match(out.stdout.trim(), new RegExp(`^(policy-service )?v?${version.replace(/\./g, "\\.")}$`));
});
