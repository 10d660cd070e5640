// One version, many places: service/package.json is the source; everything else must agree with it.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { join, relative } from "node:path";
import { buildFingerprint, packageVersion } from "../../src/app/version.js";

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

/** nixpkgs lib source, as tests/nix/run-offline finds it (env var, else the ensure-tools cache). */
function nixpkgsLib(): string | undefined {
  const candidates = [
    process.env.POLICY_SERVICE_NIXPKGS_LIB,
    join(process.env.POLICY_SERVICE_CACHE ?? join(process.env.HOME ?? "/root", ".cache", "policy-service"), "nix-sources", "nixpkgs-lib"),
  ];
  return candidates.find((dir) => dir !== undefined && existsSync(join(dir, "lib", "default.nix")));
}

test("the Nix package (service/package.nix) evaluates to package.json's version", (t) => {
  const packageNix = join(SERVICE_ROOT, "package.nix");
  if (!existsSync(packageNix)) {
    t.skip("service/package.nix does not exist yet");
    return;
  }
  const flake = readFileSync(join(REPO_ROOT, "flake.nix"), "utf8");
  assert.match(flake, /callPackage \.\/service\/package\.nix/, "flake.nix builds its package from service/package.nix");
  const lib = nixpkgsLib();
  const nixInstantiate = spawnSync("nix-instantiate", ["--version"], { encoding: "utf8" });
  if (!lib || nixInstantiate.status !== 0) {
    t.skip(`cannot evaluate service/package.nix: ${!lib ? "nixpkgs lib source not found (POLICY_SERVICE_NIXPKGS_LIB or ~/.cache/policy-service/nix-sources/nixpkgs-lib)" : "nix-instantiate missing (apt-get install nix-bin)"}`);
    return;
  }
  // Call package.nix with stand-ins for every argument; buildNpmPackage returns its attributes.
  const expr = `
    let
      lib = import ${JSON.stringify(join(lib, "lib"))};
      f = import ${JSON.stringify(packageNix)};
      stubs = {
        inherit lib;
        buildNpmPackage = a: if builtins.isFunction a then a (a { }) else a;
        importNpmLock = { __functor = _: _: { }; npmConfigHook = null; };
      };
      args = builtins.mapAttrs (name: _: stubs.\${name} or { }) (builtins.functionArgs f);
    in (f args).version`;
  const out = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "-E", expr], { encoding: "utf8", timeout: 60_000 });
  assert.equal(out.status, 0, `nix-instantiate failed: ${out.stderr}`);
  assert.equal(JSON.parse(out.stdout), version, "service/package.nix version");
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

test("the build a checkpoint is bound to: the package version plus a digest of the compiled code, stable within a build", () => {
  const build = buildFingerprint();
  assert.match(build, new RegExp(`^${packageVersion().replaceAll(".", "\\.")}\\+[0-9a-f]{16}$`));
  assert.equal(buildFingerprint(), build);
});
