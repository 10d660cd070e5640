/**
 * Test helpers: real nats-server processes and the built policy-service as a child process.
 *
 *   const server = await startNatsServer();            // JetStream on, temp store dir, free loopback ports
 *   server.url / server.port / server.httpPort / server.storeDir / server.pid / server.version
 *   await server.stop();    // SIGTERM, then SIGKILL after 5 s; waits for exit
 *   await server.kill();    // SIGKILL, waits for exit (data dir kept)
 *   await server.restart(); // start again on the same ports and data dir; waits for /healthz
 *
 *   const cluster = await startCluster(3);             // routes on loopback, unique server_name, meta leader elected
 *   cluster.servers[i], cluster.urls (comma separated for NATS_URL), await cluster.stop()
 *
 *   const svc = await startService({ NATS_URL: server.url });   // `node dist/main.js` with env (build first)
 *   svc.lines (parsed pino JSON lines), await svc.waitForLog(l => l.msg === "x"), svc.rawOutput,
 *   await svc.ready() (waits for the "ready" log line: needs LOG_LEVEL trace|debug|info),
 *   await svc.stop() → { code, signal, ms } (SIGTERM then SIGKILL after 15 s), await svc.kill()
 *
 *   runService(args, env) → { code, stdout, stderr } for one-shot invocations (--version, --check-config).
 *
 * Network namespaces (the fault-injection suite): `host`/`bindHost`/`wrap` (e.g. ["ip", "netns", "exec", "ns1"])
 * place a server in a namespace the test created; startCluster's `placement` does it per node; startService's
 * `{ wrap }` runs the service there. `ip netns exec` execs the command, so the PID stays the process's own.
 *
 * The nats-server binary comes from NATS_SERVER_BIN, else PATH, else the cache of `scripts/ensure-tools`.
 * Anything older than 2.11 is refused (Debian's 2.9.10 breaks the concurrency guarantees) with the install hint.
 * Every process started here is also SIGKILLed when the test process exits, so a failing test leaves nothing behind.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, accessSync, constants } from "node:fs";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { tmpdir, homedir } from "node:os";
import { join, delimiter } from "node:path";
import { fileURLToPath } from "node:url";

export const INSTALL_HINT = 'install a current nats-server with: eval "$(scripts/ensure-tools)"  (from the repository root)';
const MIN_SERVER: readonly [number, number] = [2, 11];

/** The service package root (…/service), from .build/test/helpers/nats.js. */
export const SERVICE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

const liveChildren = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of liveChildren) {
    try { child.kill("SIGKILL"); } catch { /* already gone */ }
  }
});

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Calls `onLine` with each non-blank line a child process writes (one JSON log line, one report, …). */
export function onLines(stream: Readable, onLine: (line: string) => void): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
    if (line.trim()) onLine(line);
  });
}

/**
 * The kernel's ephemeral range (net.ipv4.ip_local_port_range): the source ports of outgoing connections and of
 * listen(0). A port taken from it with listen(0) and released can be the source port of a route or client connection
 * (the cluster's own servers dial each other while they start) before its server binds it: "address already in use".
 */
export function ephemeralPortRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low! <= high!) return [low!, high!];
  } catch { /* not Linux: the IANA range macOS and others use */ }
  return [49152, 65535];
}

/** Ports handed out by this process: two calls never return the same port while both may still be unbound. */
const handedOut = new Set<number>();

/** Whether 127.0.0.1:port can be bound now (bound, then released). */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/**
 * A free TCP port on 127.0.0.1 below the ephemeral range (see ephemeralPortRange), so no outgoing connection can take
 * it before its server binds it; picked at random (another test process picks from the same range) and probed by
 * binding it. Two servers started at once can still race for one port only if they pick the same one.
 */
export async function freePort(): Promise<number> {
  const [ephemeralLow] = ephemeralPortRange();
  const low = 15_000;
  const high = Math.min(ephemeralLow, 65_536) - 1;
  if (high - low < 1000) throw new Error(`freePort: the ephemeral range starts at ${ephemeralLow}; no room below it for test ports`);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`freePort: no free port in 127.0.0.1:${low}-${high} after 200 tries`);
}

function parseVersion(text: string): [number, number, number] | null {
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

function onPath(binary: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, binary);
    try { accessSync(candidate, constants.X_OK); return candidate; } catch { /* next */ }
  }
  return null;
}

const binCache = new Map<string, { path: string; version: string }>();

/**
 * Resolves a nats-server binary ≥ 2.11. `envVar` names the override (NATS_SERVER_BIN, or NATS_SERVER_OLDEST_BIN).
 * Throws with the install hint when missing or too old.
 */
export function resolveNatsServer(envVar = "NATS_SERVER_BIN"): { path: string; version: string } {
  const cached = binCache.get(envVar);
  if (cached) return cached;
  const cacheRoot = process.env.POLICY_SERVICE_CACHE ?? join(homedir(), ".cache", "policy-service");
  let path = process.env[envVar] || null;
  if (!path && envVar === "NATS_SERVER_BIN") {
    path = onPath("nats-server");
    if (!path) {
      const cachedBuild = join(cacheRoot, "tools", "nats-server-v2.14.9", "bin", "nats-server");
      if (existsSync(cachedBuild)) path = cachedBuild;
    }
  }
  if (!path) throw new Error(`nats-server not found (${envVar} unset and not on PATH); ${INSTALL_HINT}`);
  const out = spawnSync(path, ["--version"], { encoding: "utf8" });
  const version = parseVersion(`${out.stdout ?? ""}${out.stderr ?? ""}`);
  if (out.status !== 0 || !version) throw new Error(`${path} --version failed; ${INSTALL_HINT}`);
  const [major, minor] = version;
  if (major < MIN_SERVER[0] || (major === MIN_SERVER[0] && minor < MIN_SERVER[1])) {
    throw new Error(`${path} is nats-server ${version.join(".")}, older than ${MIN_SERVER.join(".")}; ${INSTALL_HINT}`);
  }
  const resolved = { path, version: version.join(".") };
  binCache.set(envVar, resolved);
  return resolved;
}

export interface StartServerOptions {
  /** Binary path; default resolveNatsServer(). */
  bin?: string;
  /** Server name (default generated). */
  name?: string;
  /** Extra config text appended to the generated config. */
  extraConfig?: string;
  /** `jetstream { sync_interval: always }` (slower; production setting). */
  syncAlways?: boolean;
  /** Client port (default: a free one), e.g. to start a server where a service already waits. */
  port?: number;
  /** Monitoring port (default: a free one). */
  httpPort?: number;
  /** Address clients, routes and the monitor use (default 127.0.0.1). */
  host?: string;
  /** Address the client and monitoring listeners bind (default: host; routes listen on host), e.g. 0.0.0.0 inside a network namespace the test created. */
  bindHost?: string;
  /** Command prefix that execs the server (e.g. ["ip", "netns", "exec", "ns1"]). */
  wrap?: string[];
}

/** Where node `i` of startCluster runs (default: loopback, free ports, no wrapper). */
export interface NodePlacement { host: string; bindHost?: string; wrap?: string[]; port?: number; httpPort?: number; clusterPort?: number; extraConfig?: string }

export interface NatsServer {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly httpPort: number;
  readonly clusterPort: number | null;
  readonly storeDir: string;
  readonly version: string;
  readonly pid: number;
  readonly running: boolean;
  /** SIGTERM, then SIGKILL after 5 s. Removes the temp dir unless keepData. */
  stop(opts?: { keepData?: boolean }): Promise<void>;
  /** SIGKILL; the data dir is kept for restart(). */
  kill(): Promise<void>;
  /** Starts again on the same ports and data dir. */
  restart(): Promise<void>;
  /** GET http://127.0.0.1:<httpPort><path> as JSON. */
  monitor<T = any>(path: string): Promise<T>;
}

interface ServerSpec {
  bin: string;
  version: string;
  name: string;
  dir: string;
  port: number;
  httpPort: number;
  clusterPort: number | null;
  /** host:port of every route. */
  routes: string[];
  extraConfig: string;
  syncAlways: boolean;
  host: string;
  bindHost: string;
  wrap: string[];
}

function serverConfig(spec: ServerSpec): string {
  const lines = [
    `server_name: ${spec.name}`,
    `listen: ${spec.bindHost}:${spec.port}`,
    `http: ${spec.bindHost}:${spec.httpPort}`,
    `jetstream {`,
    `  store_dir: "${join(spec.dir, "data")}"`,
    ...(spec.syncAlways ? ["  sync_interval: always"] : []),
    `}`,
  ];
  if (spec.clusterPort !== null) {
    lines.push(
      `cluster {`,
      `  name: policy-test-cluster`,
      `  listen: ${spec.host}:${spec.clusterPort}`,
      `  routes: [`,
      ...spec.routes.map((r) => `    nats-route://${r}`),
      `  ]`,
      `}`,
    );
  }
  lines.push(spec.extraConfig);
  return lines.join("\n") + "\n";
}

async function httpJson<T>(host: string, port: number, path: string, timeoutMs = 2000): Promise<T> {
  const res = await fetch(`http://${host}:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  return (await res.json()) as T;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => { clearTimeout(timer); resolve(true); });
  });
}

class ServerProcess implements NatsServer {
  private child: ChildProcess | null = null;
  private log: string[] = [];
  private readonly spec: ServerSpec;
  constructor(spec: ServerSpec) { this.spec = spec; }
  get name() { return this.spec.name; }
  get url() { return `nats://${this.spec.host}:${this.spec.port}`; }
  get port() { return this.spec.port; }
  get httpPort() { return this.spec.httpPort; }
  get clusterPort() { return this.spec.clusterPort; }
  get storeDir() { return join(this.spec.dir, "data"); }
  get version() { return this.spec.version; }
  get pid() { return this.child?.pid ?? -1; }
  get running() { return this.child !== null && this.child.exitCode === null && this.child.signalCode === null; }
  /** Last lines of the server's own log (for failure messages). */
  tail(n = 20): string { return this.log.slice(-n).join(""); }

  async spawn(waitHealthy: boolean): Promise<void> {
    const confPath = join(this.spec.dir, "server.conf");
    writeFileSync(confPath, serverConfig(this.spec));
    const [cmd, ...args] = [...this.spec.wrap, this.spec.bin, "-c", confPath];
    const child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    liveChildren.add(child);
    child.once("exit", () => liveChildren.delete(child));
    const keep = (b: Buffer) => { this.log.push(b.toString()); if (this.log.length > 200) this.log.shift(); };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    if (waitHealthy) await this.waitHealthy();
  }

  /** /healthz answers 200 (for a clustered node: also once JetStream is ready). */
  async waitHealthy(timeoutMs = 20_000, path = "/healthz"): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`nats-server ${this.name} exited: ${this.tail()}`);
      try {
        const res = await fetch(`http://${this.spec.host}:${this.spec.httpPort}${path}`, { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      } catch { /* not up yet */ }
      await sleep(50);
    }
    throw new Error(`nats-server ${this.name} not healthy after ${timeoutMs} ms: ${this.tail()}`);
  }

  monitor<T = any>(path: string): Promise<T> { return httpJson<T>(this.spec.host, this.spec.httpPort, path); }

  private async signal(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill(sig);
    if (!(await waitExit(child, graceMs))) {
      child.kill("SIGKILL");
      await waitExit(child, 5000);
    }
  }

  async stop(opts: { keepData?: boolean } = {}): Promise<void> {
    await this.signal("SIGTERM", 5000);
    if (!opts.keepData) rmSync(this.spec.dir, { recursive: true, force: true });
  }
  async kill(): Promise<void> { await this.signal("SIGKILL", 5000); }
  async restart(): Promise<void> {
    if (this.running) await this.stop({ keepData: true });
    await this.spawn(true);
  }
}

async function makeSpec(opts: StartServerOptions, clusterPort: number | null, routes: string[]): Promise<ServerSpec> {
  const resolved = opts.bin ? { path: opts.bin, version: "unknown" } : resolveNatsServer();
  const dir = mkdtempSync(join(tmpdir(), "policy-nats-"));
  return {
    bin: resolved.path,
    version: resolved.version,
    name: opts.name ?? `n-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    dir,
    port: opts.port ?? (await freePort()),
    httpPort: opts.httpPort ?? (await freePort()),
    clusterPort,
    routes,
    extraConfig: opts.extraConfig ?? "",
    syncAlways: opts.syncAlways ?? false,
    host: opts.host ?? "127.0.0.1",
    bindHost: opts.bindHost ?? opts.host ?? "127.0.0.1",
    wrap: opts.wrap ?? [],
  };
}

/** One standalone JetStream server on free loopback ports, healthy on return. */
export async function startNatsServer(opts: StartServerOptions = {}): Promise<NatsServer> {
  const server = new ServerProcess(await makeSpec(opts, null, []));
  await server.spawn(true);
  return server;
}

/** Like startNatsServer, with an explicit binary found through an env var (e.g. NATS_SERVER_OLDEST_BIN); null when unset. */
export function serverBinFromEnv(envVar: string): { path: string; version: string } | null {
  if (!process.env[envVar]) return null;
  return resolveNatsServer(envVar);
}

export interface NatsCluster {
  readonly servers: NatsServer[];
  /** All client URLs, comma separated (usable as NATS_URL). */
  readonly urls: string;
  /** Name of the JetStream meta leader, as seen by `servers[0]` (or the first running node). */
  metaLeader(): Promise<string | null>;
  /** Waits until a meta leader is elected and every running node reports it. */
  waitMetaLeader(timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/**
 * `n` nodes routed on loopback (nats.md §4), unique server_name, waits for a JetStream meta leader.
 * `placement(i)` puts node i elsewhere (an address and wrapper of a network namespace the test created).
 */
export async function startCluster(n = 3, opts: Omit<StartServerOptions, "name"> = {}, placement?: (i: number) => NodePlacement): Promise<NatsCluster> {
  const places: NodePlacement[] = [];
  for (let i = 0; i < n; i++) {
    const p = placement?.(i) ?? { host: "127.0.0.1" };
    places.push({ ...p, clusterPort: p.clusterPort ?? (await freePort()) });
  }
  const routes = places.map((p) => `${p.host}:${p.clusterPort}`);
  const servers: ServerProcess[] = [];
  const tag = Math.random().toString(36).slice(2, 6);
  for (let i = 0; i < n; i++) {
    const { clusterPort, ...place } = places[i]!;
    servers.push(new ServerProcess(await makeSpec({ ...opts, ...place, name: `n${i + 1}-${tag}` }, clusterPort!, routes)));
  }
  try {
    await Promise.all(servers.map((s) => s.spawn(false)));
    await Promise.all(servers.map((s) => s.waitHealthy(30_000, "/varz")));
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
  const cluster: NatsCluster = {
    servers,
    urls: servers.map((s) => s.url).join(","),
    async metaLeader() {
      for (const s of servers) {
        if (!s.running) continue;
        try {
          const jsz = await s.monitor<{ meta_cluster?: { leader?: string } }>("/jsz");
          return jsz.meta_cluster?.leader || null;
        } catch { /* try the next node */ }
      }
      return null;
    },
    async waitMetaLeader(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const leaders = new Set<string>();
        let answered = 0;
        for (const s of servers) {
          if (!s.running) continue;
          try {
            const jsz = await s.monitor<{ meta_cluster?: { leader?: string } }>("/jsz");
            answered++;
            if (jsz.meta_cluster?.leader) leaders.add(jsz.meta_cluster.leader);
          } catch { /* not ready */ }
        }
        if (answered > 0 && leaders.size === 1 && answered === servers.filter((s) => s.running).length) {
          // every running node agrees; /healthz also requires JetStream to be current
          for (const s of servers) if (s.running) await s.waitHealthy(Math.max(1000, deadline - Date.now()));
          return [...leaders][0]!;
        }
        await sleep(100);
      }
      throw new Error(`no JetStream meta leader after ${timeoutMs} ms`);
    },
    async stop() { await Promise.all(servers.map((s) => s.stop())); },
  };
  try {
    await cluster.waitMetaLeader();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

// ---------------------------------------------------------------------------------------------
// The built service as a child process

export interface ServiceLogLine { level: number; msg?: string; component?: string; [key: string]: unknown }

export interface ServiceProcess {
  readonly pid: number;
  /** Parsed JSON lines of stdout, in order. */
  readonly lines: ServiceLogLine[];
  /** Non-JSON stdout lines and all of stderr. */
  readonly rawOutput: string[];
  readonly running: boolean;
  waitForLog(pred: (line: ServiceLogLine) => boolean, timeoutMs?: number): Promise<ServiceLogLine>;
  /** Waits for the "ready" log line (service endpoints registered). */
  ready(timeoutMs?: number): Promise<void>;
  /** SIGTERM (or `signal`), SIGKILL after `graceMs` (15 s); resolves with how it ended and how long that took. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  kill(): Promise<void>;
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export const SERVICE_MAIN = join(SERVICE_ROOT, "dist", "main.js");

function serviceEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  // Start from a clean slate of our own variables so the developer's shell cannot leak config into tests.
  const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) base[k] = v;
  return base;
}

/**
 * Starts `node dist/main.js` with `env` (plus PATH/HOME only), collecting its stdout log lines.
 * `main`: another build's entry point (e.g. the previous release's, for the mixed-version test).
 * `wrap` is a command prefix that execs the service (e.g. ["ip", "netns", "exec", "ns1"]).
 */
export function startService(env: Record<string, string | undefined>, args: string[] = [], main: string = SERVICE_MAIN, opts: { wrap?: string[] } = {}): ServiceProcess {
  if (!existsSync(main)) throw new Error(`${main} missing: run \`npm run build\` first`);
  const [cmd, ...prefix] = [...(opts.wrap ?? []), process.execPath];
  const child = spawn(cmd!, [...prefix, main, ...args], { cwd: SERVICE_ROOT, env: serviceEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  liveChildren.add(child);
  const lines: ServiceLogLine[] = [];
  const rawOutput: string[] = [];
  const waiters = new Set<() => void>();
  onLines(child.stdout!, (line) => {
    try { lines.push(JSON.parse(line) as ServiceLogLine); } catch { rawOutput.push(line); }
    for (const w of waiters) w();
  });
  child.stderr!.on("data", (chunk: Buffer) => { rawOutput.push(chunk.toString()); });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      liveChildren.delete(child);
      for (const w of waiters) w();
      resolve({ code, signal });
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const proc: ServiceProcess = {
    pid: child.pid ?? -1,
    lines,
    rawOutput,
    get running() { return running(); },
    waitForLog(pred, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        let index = 0;
        const check = () => {
          for (; index < lines.length; index++) {
            if (pred(lines[index]!)) { done(); resolve(lines[index]!); return; }
          }
          if (!running()) { done(); reject(new Error(`service exited before the expected log line; output:\n${tailOf(lines, rawOutput)}`)); }
        };
        const timer = setTimeout(() => { done(); reject(new Error(`timed out after ${timeoutMs} ms waiting for a log line; output:\n${tailOf(lines, rawOutput)}`)); }, timeoutMs);
        const done = () => { clearTimeout(timer); waiters.delete(check); };
        waiters.add(check);
        check();
      });
    },
    async ready(timeoutMs = 30_000) {
      if (env.LOG_LEVEL === "warn" || env.LOG_LEVEL === "error") throw new Error(`ready() waits for the info-level "ready" line; LOG_LEVEL=${env.LOG_LEVEL} hides it`);
      await proc.waitForLog((l) => l.msg === "ready", timeoutMs);
    },
    async stop(signal = "SIGTERM", graceMs = 15_000) {
      const started = Date.now();
      if (running()) {
        child.kill(signal);
        if (!(await waitExit(child, graceMs))) {
          child.kill("SIGKILL");
          await waitExit(child, 5000);
        }
      }
      const result = await exit;
      return { ...result, ms: Date.now() - started };
    },
    async kill() {
      if (running()) child.kill("SIGKILL");
      await exit;
    },
    exited: () => exit,
  };
  return proc;
}

function tailOf(lines: ServiceLogLine[], raw: string[]): string {
  return [...lines.slice(-15).map((l) => JSON.stringify(l)), ...raw.slice(-10)].join("\n");
}

/** Runs the built service once (e.g. `--version`) and returns its exit code and output. */
export function runService(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 15_000): { code: number | null; stdout: string; stderr: string } {
  const out = spawnSync(process.execPath, [SERVICE_MAIN, ...args], { cwd: SERVICE_ROOT, env: serviceEnv(env), encoding: "utf8", timeout: timeoutMs });
  return { code: out.status, stdout: out.stdout ?? "", stderr: out.stderr ?? "" };
}
