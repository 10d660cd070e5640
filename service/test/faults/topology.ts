// Where the suite's three nodes live.
//
// netns (root with `ip netns`): a hub namespace holds a bridge and the orchestrator; each node namespace holds one
// nats-server, one service instance and one client worker, linked to the bridge by a veth pair. Every address is in
// a private /24 inside these namespaces; the host's own namespace gets none. A partition is the node's link going
// down: its server, service and clients keep running and keep talking to each other on their side.
// loopback (otherwise): everything on 127.0.0.1 with free ports; no partition fault (it is reported as skipped).
import { spawnSync } from "node:child_process";

export interface NodeSlot {
  /** Address the others use for this node. */
  host: string;
  bindHost: string;
  /** Command prefix placing a process in this node's namespace ([] on loopback). */
  wrap: string[];
  port: number;
  httpPort: number;
  clusterPort: number;
  /** URL of this node's server from inside its own namespace (the service's NATS_URL). */
  localUrl: string;
  /** Advertised client address: the service on this node reconnects only to its own server, as on a leaf. */
  clientAdvertise: string;
  namespace: string | null;
}

export interface NetnsPlan {
  prefix: string;
  hub: string;
  hubAddress: string;
  nodes: { namespace: string; address: string }[];
}

function ip(args: string[]): string {
  const out = spawnSync("ip", args, { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`ip ${args.join(" ")}: ${(out.stderr || out.stdout || String(out.error)).trim()}`);
  return out.stdout;
}

/** Why namespaces cannot be used here, or null when they can (probed by creating and deleting one). */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return "not root (ip netns needs CAP_SYS_ADMIN)";
  const probe = `pfault-probe-${process.pid}`;
  try {
    ip(["netns", "add", probe]);
  } catch (err) {
    return `ip netns add failed: ${(err as Error).message}`;
  }
  try { ip(["netns", "del", probe]); } catch { /* best effort */ }
  return null;
}

/** Creates hub + 3 node namespaces with a bridge; throws (after removing what it made) on any failure. */
export function createNetns(nodes: number): NetnsPlan {
  const prefix = `pfault-${process.pid}`;
  // 10.201-250.x.0/24: private, and only ever configured inside our own namespaces.
  const net = `10.${201 + (process.pid % 50)}.${Math.floor(process.pid / 50) % 250}`;
  const plan: NetnsPlan = {
    prefix,
    hub: `${prefix}-hub`,
    hubAddress: `${net}.254`,
    nodes: Array.from({ length: nodes }, (_, i) => ({ namespace: `${prefix}-n${i + 1}`, address: `${net}.${i + 1}` })),
  };
  try {
    ip(["netns", "add", plan.hub]);
    ip(["-n", plan.hub, "link", "set", "lo", "up"]);
    ip(["-n", plan.hub, "link", "add", "br0", "type", "bridge"]);
    ip(["-n", plan.hub, "addr", "add", `${plan.hubAddress}/24`, "dev", "br0"]);
    ip(["-n", plan.hub, "link", "set", "br0", "up"]);
    plan.nodes.forEach((node, i) => {
      ip(["netns", "add", node.namespace]);
      ip(["-n", node.namespace, "link", "set", "lo", "up"]);
      ip(["-n", plan.hub, "link", "add", `v${i + 1}`, "type", "veth", "peer", "name", "eth0", "netns", node.namespace]);
      ip(["-n", plan.hub, "link", "set", `v${i + 1}`, "master", "br0", "up"]);
      ip(["-n", node.namespace, "addr", "add", `${node.address}/24`, "dev", "eth0"]);
      ip(["-n", node.namespace, "link", "set", "eth0", "up"]);
    });
  } catch (err) {
    deleteNetns(plan);
    throw err;
  }
  return plan;
}

/** PIDs of the processes inside one of our namespaces. */
export function pidsIn(namespace: string): number[] {
  try {
    return ip(["netns", "pids", namespace]).split(/\s+/).filter(Boolean).map(Number).filter((n) => n > 0 && n !== process.pid);
  } catch {
    return [];
  }
}

/** Kills whatever still runs in our namespaces (only processes this suite started live there), then deletes them. */
export function deleteNetns(plan: NetnsPlan): string[] {
  const left: string[] = [];
  for (const ns of [...plan.nodes.map((n) => n.namespace), plan.hub]) {
    for (const pid of pidsIn(ns)) {
      left.push(`${ns}:${pid}`);
      try { process.kill(pid, "SIGCONT"); process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
  }
  for (const ns of [...plan.nodes.map((n) => n.namespace), plan.hub]) {
    for (let i = 0; i < 20 && pidsIn(ns).length > 0; i++) spawnSync("sleep", ["0.1"]);
    try { ip(["netns", "del", ns]); } catch { /* not created */ }
  }
  return left;
}

/** Namespaces left by an earlier run of this suite whose process is gone (it was SIGKILLed): removed. */
export function removeStaleNetns(): string[] {
  let names: string[] = [];
  try { names = ip(["netns", "list"]).split("\n").map((l) => l.split(" ")[0]!).filter((n) => /^pfault-\d+-(hub|n\d+)$/.test(n)); } catch { return []; }
  const removed: string[] = [];
  for (const name of names) {
    const owner = Number(name.split("-")[1]);
    let alive = true;
    try { process.kill(owner, 0); } catch { alive = false; }
    if (alive) continue;
    for (const pid of pidsIn(name)) { try { process.kill(pid, "SIGCONT"); process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
    try { ip(["netns", "del", name]); removed.push(name); } catch { /* busy */ }
  }
  return removed;
}

export function netnsSlots(plan: NetnsPlan): NodeSlot[] {
  return plan.nodes.map((node) => ({
    host: node.address,
    bindHost: "0.0.0.0", // inside the node's own namespace: its loopback and its veth only
    wrap: ["ip", "netns", "exec", node.namespace],
    port: 4222,
    httpPort: 8222,
    clusterPort: 6222,
    localUrl: "nats://127.0.0.1:4222",
    clientAdvertise: "127.0.0.1:4222",
    namespace: node.namespace,
  }));
}

/** Cuts (down) or restores (up) one node's only link. */
export function setLink(namespace: string, up: boolean): void {
  ip(["-n", namespace, "link", "set", "eth0", up ? "up" : "down"]);
}
