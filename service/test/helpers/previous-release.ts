/**
 * The previous release of policy-service, built from git (for the mixed-version test and the golden fixtures):
 *
 *   const prev = previousRelease();          // { ok: true, ref, commit, main } or { ok: false, reason }
 *   const prev = previousRelease("v0.9.0");  // a given ref
 *
 * The ref is POLICY_SERVICE_PREVIOUS_REF when set, else the newest `vX.Y.Z` tag reachable from HEAD that
 * does not point at HEAD itself; without such a tag (tags do not travel with every copy of the repository),
 * the newest release in tests/fixtures/release-commits.tsv whose commit is an ancestor of HEAD. Its `service/` tree is exported with `git archive` (the repository and its
 * worktrees are not touched) into $POLICY_SERVICE_CACHE/previous/<commit>/ (default
 * ~/.cache/policy-service), then `npm ci && npm run build` runs there once; later calls reuse the build.
 * Without git, a repository, or the ref, the result says why, for the caller to skip loudly.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { SERVICE_ROOT } from "./nats.js";

export const REPO_ROOT = resolve(SERVICE_ROOT, "..");

/** `missing`: no ref to build (the caller skips, loudly); `build_failed`: the ref exists but does not build (a failure). */
export type PreviousRelease =
  | { ok: true; ref: string; commit: string; main: string; root: string }
  | { ok: false; kind: "missing" | "build_failed"; reason: string };

function git(args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync("git", ["-C", REPO_ROOT, ...args], { encoding: "utf8" });
  return { ok: r.status === 0, out: (r.stdout ?? "").trim(), err: (r.stderr ?? r.error?.message ?? "").trim() };
}

const semver = (tag: string): number[] => tag.replace(/^v/, "").split(".").map(Number);
function byVersion(a: string, b: string): number {
  const [x, y] = [semver(a), semver(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
}

/** The ref to build: the environment's, else the newest release tag before HEAD; null with the reason when none. */
function chooseRef(explicit?: string): { ref: string; name?: string } | { reason: string } {
  const fromEnv = explicit ?? process.env.POLICY_SERVICE_PREVIOUS_REF;
  if (fromEnv) return { ref: fromEnv };
  const head = git(["rev-parse", "HEAD"]);
  if (!head.ok) return { reason: `${REPO_ROOT} is not a git checkout (${head.err || "git failed"}); set POLICY_SERVICE_PREVIOUS_REF in a clone` };
  const tags = git(["tag", "--merged", "HEAD", "--list", "v[0-9]*.[0-9]*.[0-9]*"]);
  const candidates = tags.out.split("\n").filter((t) => /^v\d+\.\d+\.\d+$/.test(t))
    .filter((t) => git(["rev-parse", `${t}^{commit}`]).out !== head.out)
    .sort(byVersion);
  const newest = candidates[candidates.length - 1];
  if (newest) return { ref: newest };
  const recorded = recordedReleases(head.out);
  const newestRecorded = recorded.sort((a, b) => byVersion(a.tag, b.tag))[recorded.length - 1];
  if (newestRecorded) return { ref: newestRecorded.commit, name: newestRecorded.tag };
  return { reason: `no release tag vX.Y.Z before HEAD (a shallow clone or a clone without tags? git fetch --tags), none of ${RELEASE_COMMITS} is an ancestor of HEAD, and POLICY_SERVICE_PREVIOUS_REF is not set` };
}

/** tests/fixtures/release-commits.tsv: `vX.Y.Z<TAB>commit` lines, for copies of the repository without tags. */
export const RELEASE_COMMITS = join(REPO_ROOT, "tests", "fixtures", "release-commits.tsv");

/** The recorded releases whose commit is in this clone, an ancestor of HEAD, and not HEAD itself. */
function recordedReleases(head: string): { tag: string; commit: string }[] {
  if (!existsSync(RELEASE_COMMITS)) return [];
  return readFileSync(RELEASE_COMMITS, "utf8").split("\n")
    .filter((line) => line.trim() !== "" && !line.startsWith("#"))
    .map((line) => { const [tag = "", commit = ""] = line.trim().split(/\s+/); return { tag, commit }; })
    .filter((r) => /^v\d+\.\d+\.\d+$/.test(r.tag) && /^[0-9a-f]{40}$/.test(r.commit) && r.commit !== head)
    .filter((r) => git(["merge-base", "--is-ancestor", r.commit, head]).ok);
}

export function previousRelease(explicitRef?: string): PreviousRelease {
  if (spawnSync("git", ["--version"]).status !== 0) return { ok: false, kind: "missing", reason: "git is not installed" };
  const chosen = chooseRef(explicitRef);
  if ("reason" in chosen) return { ok: false, kind: "missing", reason: chosen.reason };
  const commit = git(["rev-parse", "--verify", "--quiet", `${chosen.ref}^{commit}`]);
  if (!commit.ok || !commit.out) return { ok: false, kind: "missing", reason: `ref ${chosen.ref} does not exist in ${REPO_ROOT}` };
  const cache = process.env.POLICY_SERVICE_CACHE ?? join(homedir(), ".cache", "policy-service");
  const root = join(cache, "previous", commit.out);
  const serviceDir = join(root, "service");
  const main = join(serviceDir, "dist", "main.js");
  const marker = join(root, ".built");
  if (!existsSync(marker)) {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root, { recursive: true });
    const archive = spawnSync("sh", ["-c", `git -C "$1" archive "$2" service | tar -x -C "$3"`, "sh", REPO_ROOT, commit.out, root], { encoding: "utf8" });
    if (archive.status !== 0) return { ok: false, kind: "build_failed", reason: `git archive ${chosen.ref} failed: ${archive.stderr}` };
    for (const args of [["ci", "--no-audit", "--no-fund", "--loglevel=error"], ["run", "--silent", "build"]]) {
      const r = spawnSync("npm", args, { cwd: serviceDir, encoding: "utf8", timeout: 600_000 });
      if (r.status !== 0) return { ok: false, kind: "build_failed", reason: `npm ${args.join(" ")} in ${serviceDir} failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? "").slice(-2000)}` };
    }
    if (!existsSync(main)) return { ok: false, kind: "build_failed", reason: `the build of ${chosen.ref} has no ${main}` };
    writeFileSync(marker, `${chosen.ref} ${commit.out}\n`);
  }
  return { ok: true, ref: chosen.name ?? chosen.ref, commit: commit.out, main, root };
}
