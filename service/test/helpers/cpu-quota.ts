// A CPU quota on one process, as an overcommitted or throttled VM gives its guest: the process keeps running, at a
// fraction of a CPU. Through a cgroup the test creates (the v1 `cpu` controller, or v2's `cpu.max` where the
// unified hierarchy delegates the cpu controller), removed again by release().
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const V1_ROOT = "/sys/fs/cgroup/cpu";
const V2_ROOT = "/sys/fs/cgroup";
const PERIOD_US = 100_000;

interface Hierarchy { root: string; version: 1 | 2 }

function hierarchy(): Hierarchy | null {
  if (existsSync(join(V1_ROOT, "cpu.cfs_quota_us"))) return { root: V1_ROOT, version: 1 };
  const controllers = join(V2_ROOT, "cgroup.subtree_control");
  if (existsSync(controllers) && readFileSync(controllers, "utf8").split(/\s+/).includes("cpu")) return { root: V2_ROOT, version: 2 };
  return null;
}

function setQuota(h: Hierarchy, dir: string, percent: number): void {
  const quotaUs = Math.max(1000, Math.round((PERIOD_US * percent) / 100));
  if (h.version === 1) {
    writeFileSync(join(dir, "cpu.cfs_period_us"), String(PERIOD_US));
    writeFileSync(join(dir, "cpu.cfs_quota_us"), String(quotaUs));
  } else writeFileSync(join(dir, "cpu.max"), `${quotaUs} ${PERIOD_US}`);
}

/** Why no CPU quota can be set here (null when it can): the test that needs one skips with this reason. */
export function cpuQuotaUnavailable(): string | null {
  if (process.getuid?.() !== 0) return "not root (creating a cgroup needs it)";
  const h = hierarchy();
  if (h === null) return `no cgroup cpu controller to use (neither ${V1_ROOT}/cpu.cfs_quota_us nor "cpu" in ${V2_ROOT}/cgroup.subtree_control)`;
  const probe = join(h.root, `policy-service-probe-${process.pid}`);
  try {
    mkdirSync(probe);
    setQuota(h, probe, 50);
    return null;
  } catch (err) {
    return `cannot create a cgroup with a CPU quota under ${h.root}: ${(err as Error).message}`;
  } finally {
    try { rmdirSync(probe); } catch { /* not created */ }
  }
}

export interface CpuQuota {
  readonly percent: number;
  /** Moves the process back to the group it came from (if it still runs) and removes the quota's group. */
  release(): void;
}

/** The group `pid` is in now, as a directory of the hierarchy. */
function groupOf(h: Hierarchy, pid: number): string {
  for (const line of readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n")) {
    const [, controllers, path] = line.split(":");
    const mine = h.version === 1 ? controllers?.split(",").includes("cpu") : controllers === "";
    if (mine && path !== undefined) return join(h.root, path);
  }
  return h.root;
}

/** Holds `pid` to `percent` % of one CPU until release(). */
export function limitCpu(pid: number, percent: number): CpuQuota {
  const h = hierarchy();
  if (h === null) throw new Error(cpuQuotaUnavailable() ?? "no cgroup cpu controller");
  const origin = groupOf(h, pid);
  const dir = join(h.root, `policy-service-test-${process.pid}-${pid}`);
  mkdirSync(dir);
  setQuota(h, dir, percent);
  writeFileSync(join(dir, "cgroup.procs"), String(pid));
  let released = false;
  return {
    percent,
    release() {
      if (released) return;
      released = true;
      try { writeFileSync(join(origin, "cgroup.procs"), String(pid)); } catch { /* it has exited */ }
      rmdirSync(dir);
    },
  };
}
