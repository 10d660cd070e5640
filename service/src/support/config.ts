// Configuration: one schema over the environment, parsed once at start-up.
// Every problem is reported as ONE line naming the variable and what it accepts, so a
// misconfigured unit fails loudly in journald/launchd logs instead of half-starting.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Bounds the old generation to 1.3× the live heap (docs/performance.md "Memory": measured against V8's own factor). */
export const DEFAULT_HEAP_GROWING_PERCENT = 30;

/**
 * READ_MODEL_CHECKPOINT_INTERVAL_S: seconds between the read-model checkpoint's writes while running (only when there
 * are new events). A crash (no graceful stop) costs the next start the replay of at most this period's events; each
 * write serialises the whole read side (docs/performance.md, startup block), hence minutes, not seconds, by default.
 */
export const DEFAULT_CHECKPOINT_INTERVAL_S = 300;
export const MIN_CHECKPOINT_INTERVAL_S = 1;
export const MAX_CHECKPOINT_INTERVAL_S = 86_400;

/** Seconds; JetStream's own default duplicate window, and our floor (issue 2: "at least 2 minutes"). */
export const MIN_DUPLICATE_WINDOW_S = 120;

/**
 * COMMAND_RECORDS: whether a command that stored an event also writes its idempotency record. "auto": only while an
 * instance of an older build (without the payload-hash header) serves the stream, and for the records' TTL after
 * (adapters/nats/peers.ts); "always": the behaviour of 0.9.0, e.g. before a rollback to it (docs/operations.md).
 */
export type CommandRecordsMode = "auto" | "always";
export const COMMAND_RECORDS_MODES: readonly CommandRecordsMode[] = ["auto", "always"];

/**
 * COMMAND_FORWARDING: "auto": commands on an aggregate this instance lost append races on go to the one instance
 * that writes it (adapters/nats/forward.ts), when the user's permissions allow it; "off": every command runs where it
 * arrives and the instance takes no forwarded commands (the behaviour before 0.10).
 */
export type CommandForwardingMode = "auto" | "off";
export const COMMAND_FORWARDING_MODES: readonly CommandForwardingMode[] = ["auto", "off"];

export interface Config {
  natsUrl: string;
  natsServers: string[];
  streamName: string;
  logLevel: LogLevel;
  snapshotFrequency: number;
  streamReplicas: number;
  duplicateWindowSeconds: number;
  maxInFlight: number;
  commandRecords: CommandRecordsMode;
  commandForwarding: CommandForwardingMode;
  /**
   * HEAP_GROWING_PERCENT: after a full GC, V8 lets the old generation grow to (1 + p/100) × what survived before the
   * next one (V8's --heap-growing-percent); 0 leaves V8's own factor (up to 4× under a high allocation rate).
   */
  heapGrowingPercent: number;
  audit: { enabled: boolean; streamName: string; maxAgeDays: number };
  /** The Prometheus /metrics and /ready HTTP endpoint (METRICS_LISTEN); null: off (the default). */
  metricsListen: { host: string; port: number } | null;
  /** READ_MODEL_CHECKPOINT: the read-model checkpoint's file (docs/operations.md); null: off (the default). */
  checkpointPath: string | null;
  /** READ_MODEL_CHECKPOINT_INTERVAL_S: seconds between periodic checkpoint writes (used only with checkpointPath). */
  checkpointIntervalSeconds: number;
  /** Paths only; contents are read by readCredentials() and never logged. */
  credentialFiles: {
    creds?: string | undefined;
    nkeySeed?: string | undefined;
    user?: string | undefined;
    password?: string | undefined;
    token?: string | undefined;
    ca?: string | undefined;
    cert?: string | undefined;
    key?: string | undefined;
  };
  /** Derived names. */
  snapshotBucket: string;
  commandsBucket: string;
}

export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.variable = variable;
    this.name = "ConfigError";
  }
}

const shown = (value: string) => JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);

// A stream name becomes part of API subjects and KV bucket names: no dots, wildcards, spaces.
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const URL_SCHEMES = new Set(["nats:", "tls:", "ws:", "wss:"]);

type Env = Record<string, string | undefined>;

function text(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw === "" ? fallback : raw;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = text(env, name, String(fallback)).trim();
  const parsed = z.coerce.number().int().min(min).max(max).safeParse(/^[+-]?\d+$/.test(raw) ? raw : Number.NaN);
  if (!parsed.success) throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${shown(raw)}`);
  return parsed.data;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = text(env, name, fallback).trim();
  const parsed = z.enum(allowed as unknown as [T, ...T[]]).safeParse(raw.toLowerCase());
  if (!parsed.success) throw new ConfigError(name, `expected one of ${allowed.join("|")}, got ${shown(raw)}`);
  return parsed.data;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = text(env, name, String(fallback)).trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(raw)) return true;
  if (["false", "0", "no", "off"].includes(raw)) return false;
  throw new ConfigError(name, `expected true|false, got ${shown(raw)}`);
}

function streamLikeName(env: Env, name: string, fallback: string): string {
  const raw = text(env, name, fallback);
  if (!NAME.test(raw)) throw new ConfigError(name, `expected 1-64 characters of A-Z a-z 0-9 _ -, got ${shown(raw)}`);
  return raw;
}

function natsUrls(env: Env): string[] {
  const raw = text(env, "NATS_URL", "nats://localhost:4222");
  const urls = raw.split(",").map((u) => u.trim()).filter((u) => u !== "");
  if (urls.length === 0) throw new ConfigError("NATS_URL", `expected nats://host:port[,nats://host:port…], got ${shown(raw)}`);
  for (const url of urls) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError("NATS_URL", `expected nats://host:port[,nats://host:port…], got ${shown(raw)}`);
    }
    if (!URL_SCHEMES.has(parsed.protocol) || parsed.hostname === "") {
      throw new ConfigError("NATS_URL", `expected nats://, tls://, ws:// or wss:// URLs with a host, got ${shown(raw)}`);
    }
    if (parsed.username || parsed.password) {
      // Credentials in the URL would end up in logs and in the unit file; secrets are files.
      throw new ConfigError("NATS_URL", "must not contain credentials; use NATS_USER + NATS_PASSWORD_FILE, NATS_TOKEN_FILE or NATS_CREDS_FILE");
    }
  }
  return urls;
}

/** METRICS_LISTEN: "host:port" ("127.0.0.1:9464", "[::1]:9464"); empty or unset turns the endpoint off. */
function listenAddress(env: Env, name: string): { host: string; port: number } | null {
  const raw = (env[name] ?? "").trim();
  if (raw === "") return null;
  const expected = `expected host:port such as 127.0.0.1:9464 or [::1]:9464 (unset to turn metrics off), got ${shown(raw)}`;
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
  if (match === null) throw new ConfigError(name, expected);
  const port = Number(match[2]);
  if (port < 1 || port > 65535) throw new ConfigError(name, `port must be from 1 to 65535, got ${shown(raw)}`);
  const host = match[1]!.startsWith("[") ? match[1]!.slice(1, -1) : match[1]!;
  return { host, port };
}

/** host:port as METRICS_LISTEN writes it (an IPv6 address in brackets). */
export function listenText(listen: { host: string; port: number }): string {
  return `${listen.host.includes(":") ? `[${listen.host}]` : listen.host}:${listen.port}`;
}

/** Expands `$CREDENTIALS_DIRECTORY` / `${CREDENTIALS_DIRECTORY}` (systemd LoadCredential) at the start of a path. */
function credentialPath(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return undefined;
  const match = /^\$\{?CREDENTIALS_DIRECTORY\}?(\/.*)$/.exec(raw.trim());
  if (match) {
    const dir = env.CREDENTIALS_DIRECTORY;
    if (!dir) throw new ConfigError(name, `refers to $CREDENTIALS_DIRECTORY, which is not set (systemd LoadCredential missing?)`);
    return dir + match[1];
  }
  if (!raw.startsWith("/")) throw new ConfigError(name, `expected an absolute file path, got ${shown(raw)}`);
  return raw;
}

/** An absolute file path; unset or empty: null (off). */
function absolutePathOrOff(env: Env, name: string): string | null {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return null;
  if (!raw.startsWith("/") || raw.endsWith("/") || raw.includes("\0")) {
    throw new ConfigError(name, `expected an absolute file path (or empty: off), got ${shown(raw)}`);
  }
  return raw;
}

export function parseConfig(env: Env = process.env): Config {
  const natsServers = natsUrls(env);
  const streamName = streamLikeName(env, "STREAM_NAME", "POLICY_EVENTS");
  const logLevel = oneOf(env, "LOG_LEVEL", LOG_LEVELS, "info");
  const snapshotFrequency = integer(env, "SNAPSHOT_FREQUENCY", 100, 1, 1_000_000);
  const streamReplicas = integer(env, "STREAM_REPLICAS", 1, 1, 5);
  const heapGrowingPercent = integer(env, "HEAP_GROWING_PERCENT", DEFAULT_HEAP_GROWING_PERCENT, 0, 300);
  const duplicateWindowSeconds = integer(env, "DUPLICATE_WINDOW", MIN_DUPLICATE_WINDOW_S, MIN_DUPLICATE_WINDOW_S, 7 * 24 * 3600);
  const maxInFlight = integer(env, "MAX_IN_FLIGHT", 64, 1, 10_000);
  const commandRecords = oneOf(env, "COMMAND_RECORDS", COMMAND_RECORDS_MODES, "auto");
  const commandForwarding = oneOf(env, "COMMAND_FORWARDING", COMMAND_FORWARDING_MODES, "auto");
  const audit = {
    enabled: boolean(env, "AUDIT_ENABLED", true),
    streamName: streamLikeName(env, "AUDIT_STREAM_NAME", "POLICY_AUDIT"),
    maxAgeDays: integer(env, "AUDIT_MAX_AGE_DAYS", 90, 1, 36_500),
  };
  const metricsListen = listenAddress(env, "METRICS_LISTEN");
  const checkpointPath = absolutePathOrOff(env, "READ_MODEL_CHECKPOINT");
  // Checked even when the checkpoint is off: a typo should not wait until the checkpoint is turned on to show.
  const checkpointIntervalSeconds = integer(env, "READ_MODEL_CHECKPOINT_INTERVAL_S", DEFAULT_CHECKPOINT_INTERVAL_S, MIN_CHECKPOINT_INTERVAL_S, MAX_CHECKPOINT_INTERVAL_S);
  if (audit.streamName === streamName) throw new ConfigError("AUDIT_STREAM_NAME", `must differ from STREAM_NAME (${streamName})`);

  const credentialFiles: Config["credentialFiles"] = {
    creds: credentialPath(env, "NATS_CREDS_FILE"),
    nkeySeed: credentialPath(env, "NATS_NKEY_SEED_FILE"),
    user: env.NATS_USER && env.NATS_USER.trim() !== "" ? env.NATS_USER : undefined,
    password: credentialPath(env, "NATS_PASSWORD_FILE"),
    token: credentialPath(env, "NATS_TOKEN_FILE"),
    ca: credentialPath(env, "NATS_CA_FILE"),
    cert: credentialPath(env, "NATS_CERT_FILE"),
    key: credentialPath(env, "NATS_KEY_FILE"),
  };
  if (credentialFiles.password && !credentialFiles.user) throw new ConfigError("NATS_USER", "must be set when NATS_PASSWORD_FILE is set");
  if (credentialFiles.user && !credentialFiles.password) throw new ConfigError("NATS_PASSWORD_FILE", "must be set when NATS_USER is set");
  if (Boolean(credentialFiles.cert) !== Boolean(credentialFiles.key)) {
    throw new ConfigError(credentialFiles.cert ? "NATS_KEY_FILE" : "NATS_CERT_FILE", "NATS_CERT_FILE and NATS_KEY_FILE must be set together");
  }
  const authMethods = [credentialFiles.creds, credentialFiles.nkeySeed, credentialFiles.user, credentialFiles.token].filter(Boolean).length;
  if (authMethods > 1) {
    throw new ConfigError("NATS_CREDS_FILE", "set at most one of NATS_CREDS_FILE, NATS_NKEY_SEED_FILE, NATS_USER + NATS_PASSWORD_FILE, NATS_TOKEN_FILE");
  }

  return {
    natsUrl: natsServers.join(","),
    natsServers,
    streamName,
    logLevel,
    snapshotFrequency,
    streamReplicas,
    duplicateWindowSeconds,
    heapGrowingPercent,
    maxInFlight,
    commandRecords,
    commandForwarding,
    audit,
    metricsListen,
    checkpointPath,
    checkpointIntervalSeconds,
    credentialFiles,
    snapshotBucket: `${streamName}_SNAPSHOTS`,
    commandsBucket: `${streamName}_COMMANDS`,
  };
}

export interface Credentials {
  creds?: Uint8Array;
  nkeySeed?: Uint8Array;
  user?: string;
  password?: string;
  token?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

const FILE_VARS: Record<Exclude<keyof Config["credentialFiles"], "user">, string> = {
  creds: "NATS_CREDS_FILE",
  nkeySeed: "NATS_NKEY_SEED_FILE",
  password: "NATS_PASSWORD_FILE",
  token: "NATS_TOKEN_FILE",
  ca: "NATS_CA_FILE",
  cert: "NATS_CERT_FILE",
  key: "NATS_KEY_FILE",
};

function readSecret(path: string, variable: string): Uint8Array {
  try {
    const content = readFileSync(path);
    if (content.length === 0) throw new ConfigError(variable, `file ${path} is empty`);
    return content;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(variable, `cannot read file ${path} (${code})`);
  }
}

// TLS files are checked here because node's TLS layer otherwise ignores an unparsable CA file (the
// server then fails verification against the system CAs) and reports a bad key as a connect error.
function pemCertificate(content: Uint8Array, path: string, variable: string): void {
  try {
    new X509Certificate(content);
  } catch {
    throw new ConfigError(variable, `file ${path} is not a PEM certificate`);
  }
}

function pemPrivateKey(content: Uint8Array, path: string, variable: string): void {
  try {
    createPrivateKey({ key: Buffer.from(content) });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === "ERR_MISSING_PASSPHRASE" ? "is encrypted (the service takes an unencrypted key)" : "is not a PEM private key";
    throw new ConfigError(variable, `file ${path} ${reason}`);
  }
}

/** Reads every configured credential file (the contents are returned, never logged). */
export function readCredentials(config: Config): Credentials {
  const files = config.credentialFiles;
  const out: Credentials = {};
  const trimmed = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  if (files.creds) out.creds = readSecret(files.creds, FILE_VARS.creds);
  if (files.nkeySeed) out.nkeySeed = new TextEncoder().encode(trimmed(readSecret(files.nkeySeed, FILE_VARS.nkeySeed)));
  if (files.user && files.password) {
    out.user = files.user;
    out.password = trimmed(readSecret(files.password, FILE_VARS.password));
  }
  if (files.token) out.token = trimmed(readSecret(files.token, FILE_VARS.token));
  if (files.ca || files.cert) {
    out.tls = {};
    if (files.ca) { pemCertificate(readSecret(files.ca, FILE_VARS.ca), files.ca, FILE_VARS.ca); out.tls.caFile = files.ca; }
    if (files.cert && files.key) {
      pemCertificate(readSecret(files.cert, FILE_VARS.cert), files.cert, FILE_VARS.cert);
      pemPrivateKey(readSecret(files.key, FILE_VARS.key), files.key, FILE_VARS.key);
      out.tls.certFile = files.cert;
      out.tls.keyFile = files.key;
    }
  }
  return out;
}

/** A loggable view of the configuration: paths and settings, no secret contents. */
export function describeConfig(config: Config): Record<string, unknown> {
  const { credentialFiles, ...rest } = config;
  const auth = Object.entries(credentialFiles).filter(([, v]) => v !== undefined).map(([k]) => k);
  return { ...rest, credentials: auth };
}
