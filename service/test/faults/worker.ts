// A client worker of the fault-injection suite: one process per node (inside that node's network namespace when
// there are namespaces), running `clients` logical clients. Each client sends a stream of mixed commands over NATS
// request/reply, retries every command with its command_id (timeout, bounded tries) through a random server, and
// reports each outcome as one JSON line on stdout. The first stdin line is the WorkerConfig; a later "stop" line
// ends the load (every client finishes the command it is on, retries included). Only the wire protocol is used.
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { isDeepStrictEqual } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { deriveRuleId } from "../../src/domain/index.js";
import { rng, type Rng } from "./rng.js";

export interface WorkerConfig {
  index: number;
  seed: number;
  clients: number;
  /** Client URLs this worker can reach (its own node's first). */
  servers: string[];
  hotPolicies: string[];
  timeoutMs: number;
  maxTries: number;
  /** Probability of re-sending an acknowledged command (as if its reply had been lost) to compare the replies. */
  resendProbability: number;
  shortExpiryMs: [number, number];
  longExpiryMs: number;
}

/** Domain refusals: final answers. Everything else (conflict, unavailable, internal, timeouts) is retried. */
const FINAL_CODES = new Set(["invalid_json", "validation_failed", "not_found", "already_exists", "invalid_transition", "not_applicable"]);

export interface Ack { aggregate_id: string; version: number; seqs: number[] }

/** One line per command. `outcome`: ok (acknowledged), refused (a domain refusal), failed (no answer within maxTries). */
export interface CommandReport {
  t: "cmd";
  worker: number;
  client: number;
  name: string;
  command_id: string;
  outcome: "ok" | "refused" | "failed";
  /** The refusal's code, or the last problem of a failed command. */
  code?: string;
  tries: number;
  /** Problem of every try that did not end the command (timeout, no_responders, unavailable, conflict, …). */
  problems: string[];
  ack?: Ack;
  /** Re-sent after the ack: did the second reply equal the first? */
  resend?: { consistent: boolean; second?: unknown };
  /** When it was sent and answered (ms since epoch): the orchestrator relates them to faults. */
  started: number;
  ended: number;
  /** grant_exemption: its expiry. */
  expires_at?: string;
}

type Reply = { ok: true; aggregate_id: string; version: number; events: { type: string; subject: string; seq: number }[] } | { ok: false; error: { code: string; message: string } };

interface Op {
  name: string;
  body: Record<string, unknown>;
  /** On ack: update the client's model. */
  onAck?: (reply: Extract<Reply, { ok: true }>) => void;
  /** Not acknowledged: the model can no longer predict this aggregate; forget it. */
  onUnknown?: () => void;
  expires_at?: string;
}

type PolicyStatus = "Draft" | "Approved" | "Active" | "Suspended" | "Revoked" | "Archived";
const EDITABLE: PolicyStatus[] = ["Draft", "Approved", "Active", "Suspended"];

function emit(line: unknown): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function problemOf(err: unknown): string {
  const text = `${(err as Error)?.name ?? ""} ${(err as Error)?.message ?? String(err)}`.toLowerCase();
  if (text.includes("timeout")) return "timeout";
  if (text.includes("no responders") || text.includes("503")) return "no_responders";
  if (text.includes("closed") || text.includes("disconnect")) return "disconnected";
  return `error:${text.trim().slice(0, 60)}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

class LogicalClient {
  private readonly policies = new Map<string, { status: PolicyStatus; rules: string[] }>();
  private readonly sets = new Map<string, string[]>();
  private readonly longExemptions = new Set<string>();
  private readonly hotRules = new Map<string, string[]>();
  private n = 0;
  private readonly cfg: WorkerConfig;
  private readonly id: number;
  private readonly r: Rng;
  private readonly conns: NatsConnection[];

  constructor(cfg: WorkerConfig, id: number, r: Rng, conns: NatsConnection[]) {
    this.cfg = cfg;
    this.id = id;
    this.r = r;
    this.conns = conns;
  }

  private uid(): string {
    return `w${this.cfg.index}c${this.id}n${++this.n}`;
  }

  async run(stopping: () => boolean): Promise<void> {
    while (!stopping()) {
      const op = this.nextOp();
      await this.send(op);
    }
  }

  /** A weighted choice among the commands the model says are valid now. */
  private nextOp(): Op {
    const r = this.r;
    const choices: [number, () => Op][] = [];
    const hot = r.pick(this.cfg.hotPolicies);
    const hotRules = this.hotRules.get(hot) ?? [];
    this.hotRules.set(hot, hotRules);
    // Contended: every client writes the same few (Draft) policies, with values no one else sends.
    choices.push([25, () => ({ name: "update", body: { policy_id: hot, updated_by: `client-${this.cfg.index}-${this.id}`, name: `hot ${this.uid()}`, description: `revision ${this.uid()}` } })]);
    if (hotRules.length < 2) {
      // Without a rule_id: the domain derives it from the new version, so a command decided twice adds two rules.
      choices.push([10, () => ({
        name: "add_rule",
        body: { policy_id: hot, rule: { name: `rule ${this.uid()}`, severity: r.pick(["Low", "Medium", "High"]), expression: { op: "exists", field: "record.owner" } } },
        onAck: (reply) => hotRules.push(deriveRuleId(hot, reply.version, 0)),
      })]);
    }
    if (hotRules.length > 0) {
      const ruleId = r.pick(hotRules);
      choices.push([5, () => ({ name: "update_rule", body: { policy_id: hot, rule_id: ruleId, rule: { name: `renamed ${this.uid()}`, severity: "Critical", expression: { op: "exists", field: "record.id" } } } })]);
      choices.push([6, () => ({
        name: "remove_rule",
        body: { policy_id: hot, rule_id: ruleId },
        onAck: () => hotRules.splice(hotRules.indexOf(ruleId), 1),
        onUnknown: () => hotRules.splice(hotRules.indexOf(ruleId), 1),
      })]);
    }
    // Owned: this client is the only writer, so its model predicts every answer.
    if (this.policies.size < 4) {
      choices.push([8, () => {
        const explicit = r.chance(0.5) ? randomUUID() : undefined;
        return {
          name: "create",
          body: { ...(explicit ? { policy_id: explicit } : {}), name: `owned ${this.uid()}`, description: "fault-injection suite", policy_type: r.pick(["Security", "Privacy", "Retention"]), enforcement: r.pick(["Advisory", "Mandatory"]), scope: "Organization" },
          onAck: (reply) => this.policies.set(reply.aggregate_id, { status: "Draft", rules: [] }),
        };
      }]);
    }
    const owned = [...this.policies.entries()];
    if (owned.length > 0) {
      const [pid, p] = r.pick(owned);
      const lifecycle = this.lifecycleOp(pid, p);
      if (lifecycle) choices.push([20, () => lifecycle]);
      if (EDITABLE.includes(p.status) && p.rules.length < 3) {
        const ruleId = `r-${this.uid()}`;
        choices.push([5, () => ({ name: "add_rule", body: { policy_id: pid, rule: { rule_id: ruleId, name: "owned rule", severity: "Info", expression: { op: "equal", field: "a", value: 1 } } }, onAck: () => p.rules.push(ruleId), onUnknown: () => this.policies.delete(pid) })]);
      }
      if (EDITABLE.includes(p.status) && p.rules.length > 0) {
        const ruleId = r.pick(p.rules);
        choices.push([3, () => ({ name: "remove_rule", body: { policy_id: pid, rule_id: ruleId }, onAck: () => p.rules.splice(p.rules.indexOf(ruleId), 1), onUnknown: () => this.policies.delete(pid) })]);
      }
      if (p.status === "Active") {
        choices.push([12, () => this.grantOp(pid, true)]);
        choices.push([5, () => this.grantOp(pid, false)]);
      }
    }
    if (this.longExemptions.size > 0) {
      const eid = r.pick([...this.longExemptions]);
      choices.push([6, () => ({ name: "revoke_exemption", body: { exemption_id: eid, revoked_by: "suite", reason: "no longer needed" }, onAck: () => this.longExemptions.delete(eid), onUnknown: () => this.longExemptions.delete(eid) })]);
    }
    const joinable = owned.filter(([, p]) => p.status !== "Archived").map(([id]) => id);
    if (this.sets.size < 2 && joinable.length > 0) {
      choices.push([4, () => {
        const members = r.shuffle([...joinable]).slice(0, r.int(1, Math.min(2, joinable.length)));
        const explicit = r.chance(0.5) ? randomUUID() : undefined;
        return {
          name: "create_set",
          body: { ...(explicit ? { policy_set_id: explicit } : {}), name: `set ${this.uid()}`, description: "fault-injection suite", policies: members, composition: "Any", conflict_resolution: "MostRestrictive" },
          onAck: (reply) => this.sets.set(reply.aggregate_id, [...members]),
        };
      }]);
    }
    if (this.sets.size > 0) {
      const [sid, members] = r.pick([...this.sets.entries()]);
      const candidates = [...joinable, ...this.cfg.hotPolicies].filter((id) => !members.includes(id));
      if (candidates.length > 0) {
        const pid = r.pick(candidates);
        choices.push([4, () => ({ name: "add_to_set", body: { policy_set_id: sid, policy_id: pid }, onAck: () => members.push(pid), onUnknown: () => this.sets.delete(sid) })]);
      }
      if (members.length > 0) {
        const pid = r.pick(members);
        choices.push([3, () => ({ name: "remove_from_set", body: { policy_set_id: sid, policy_id: pid }, onAck: () => members.splice(members.indexOf(pid), 1), onUnknown: () => this.sets.delete(sid) })]);
      }
    }
    const total = choices.reduce((sum, [w]) => sum + w, 0);
    let x = r.next() * total;
    for (const [w, make] of choices) {
      x -= w;
      if (x < 0) return make();
    }
    return choices[0]![1]();
  }

  private lifecycleOp(pid: string, p: { status: PolicyStatus }): Op | null {
    const r = this.r;
    const to = (name: string, body: Record<string, unknown>, status: PolicyStatus): Op => ({
      name,
      body: { policy_id: pid, ...body },
      onAck: () => { p.status = status; if (status === "Archived") this.policies.delete(pid); },
      onUnknown: () => this.policies.delete(pid),
    });
    switch (p.status) {
      case "Draft": return to("approve", { approved_by: "suite" }, "Approved");
      case "Approved": return to("activate", { activated_by: "suite" }, "Active");
      case "Active":
        // Stay Active for a while: exemptions are granted only then.
        if (!r.chance(0.3)) return null;
        return r.chance(0.7) ? to("suspend", { suspended_by: "suite", reason: "fault drill" }, "Suspended") : to("revoke", { revoked_by: "suite", reason: "fault drill" }, "Revoked");
      case "Suspended": {
        const x = r.next();
        if (x < 0.5) return to("activate", { activated_by: "suite" }, "Active");
        if (x < 0.75) return to("archive", { archived_by: "suite" }, "Archived");
        return to("revoke", { revoked_by: "suite", reason: "fault drill" }, "Revoked");
      }
      case "Revoked": return to("archive", { archived_by: "suite", retention_period_days: 30 }, "Archived");
      default: return null;
    }
  }

  /** Short exemptions are left to expire (the service's sweeper); long ones are revoked by this client. */
  private grantOp(pid: string, short: boolean): Op {
    const [lo, hi] = this.cfg.shortExpiryMs;
    const expiresAt = new Date(Date.now() + (short ? this.r.int(lo, hi) : this.cfg.longExpiryMs)).toISOString();
    const explicit = this.r.chance(0.5) ? randomUUID() : undefined;
    return {
      name: "grant_exemption",
      body: { ...(explicit ? { exemption_id: explicit } : {}), policy_id: pid, entity_id: `entity-${this.uid()}`, reason: "fault drill", granted_by: "suite", expires_at: expiresAt },
      expires_at: expiresAt,
      ...(short ? {} : { onAck: (reply: Extract<Reply, { ok: true }>) => this.longExemptions.add(reply.aggregate_id) }),
    };
  }

  private async request(conn: NatsConnection, name: string, payload: string): Promise<Reply> {
    const msg = await conn.request(`policy.commands.${name}`, payload, { timeout: this.cfg.timeoutMs });
    return msg.json<Reply>();
  }

  private async send(op: Op): Promise<void> {
    const commandId = randomUUID();
    const payload = JSON.stringify({ ...op.body, command_id: commandId });
    const report: CommandReport = { t: "cmd", worker: this.cfg.index, client: this.id, name: op.name, command_id: commandId, outcome: "failed", tries: 0, problems: [], started: Date.now(), ended: 0 };
    if (op.expires_at) report.expires_at = op.expires_at;
    let conn = this.r.pick(this.conns);
    for (let attempt = 0; attempt < this.cfg.maxTries; attempt++) {
      report.tries++;
      if (attempt > 0) {
        await sleep(Math.min(2000, 200 * 2 ** (attempt - 1)) * (0.5 + this.r.next()));
        conn = this.r.pick(this.conns);
      }
      let reply: Reply;
      try {
        reply = await this.request(conn, op.name, payload);
      } catch (err) {
        report.problems.push(problemOf(err));
        continue;
      }
      if (reply.ok) {
        report.outcome = "ok";
        report.ack = { aggregate_id: reply.aggregate_id, version: reply.version, seqs: reply.events.map((e) => e.seq) };
        if (this.r.chance(this.cfg.resendProbability)) {
          // As if the reply had been lost: the same command again, through another server, retried like any
          // command while the answer is transient; the first definitive answer must be the original reply.
          const other = this.conns.filter((c) => c !== conn);
          for (let resendTry = 0; resendTry < this.cfg.maxTries; resendTry++) {
            if (resendTry > 0) await sleep(Math.min(2000, 200 * 2 ** (resendTry - 1)) * (0.5 + this.r.next()));
            try {
              const second = await this.request(other.length > 0 ? this.r.pick(other) : conn, op.name, payload);
              if (!second.ok && !FINAL_CODES.has(second.error.code)) { report.problems.push(`resend:${second.error.code}`); continue; }
              report.resend = isDeepStrictEqual(second, reply) ? { consistent: true } : { consistent: false, second };
              break;
            } catch (err) {
              report.problems.push(`resend:${problemOf(err)}`);
            }
          }
        }
        op.onAck?.(reply);
        break;
      }
      if (FINAL_CODES.has(reply.error.code)) {
        report.outcome = "refused";
        report.code = reply.error.code;
        report.problems.push(`${reply.error.code}: ${reply.error.message.slice(0, 200)}`);
        break;
      }
      report.problems.push(reply.error.code);
    }
    if (report.outcome === "failed") report.code = report.problems[report.problems.length - 1] ?? "none";
    if (report.outcome !== "ok") op.onUnknown?.();
    report.ended = Date.now();
    emit(report);
  }
}

async function main(): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  const iterator = lines[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) throw new Error("worker: no configuration on stdin");
  const cfg = JSON.parse(first.value) as WorkerConfig;
  let stop = false;
  void (async () => {
    for (;;) {
      const next = await iterator.next();
      if (next.done || next.value.trim() === "stop") { stop = true; return; }
    }
  })();
  // One connection per server, pinned to it (no discovered servers): a try goes exactly where it was sent.
  const conns = await Promise.all(cfg.servers.map((url) => connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 250, ignoreClusterUpdates: true, timeout: 10_000 })));
  const base = rng(cfg.seed).fork(1000 + cfg.index);
  const clients = Array.from({ length: cfg.clients }, (_, i) => new LogicalClient(cfg, i, base.fork(i), conns));
  emit({ t: "ready", worker: cfg.index });
  await Promise.all(clients.map((c) => c.run(() => stop)));
  await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
  emit({ t: "done", worker: cfg.index });
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`worker failed: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
