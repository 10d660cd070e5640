// pino JSON lines on stdout (journald and launchd capture them); one child logger per component.
import { pino, type Logger } from "pino";
import type { LogLevel } from "./config.js";

export type { Logger };

// Defence in depth: configuration never carries secret contents, but if one ever reaches a log call it is censored.
const REDACT = [
  "password", "token", "seed", "creds", "secret", "authorization",
  "*.password", "*.token", "*.seed", "*.creds", "*.secret", "*.authorization",
];

export function createLogger(level: LogLevel, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: "policy-service", pid: process.pid, ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT, censor: "[redacted]" },
    formatters: { level: (label, number) => ({ level: number, level_name: label }) },
  });
}

export function componentLogger(root: Logger, component: string): Logger {
  return root.child({ component });
}
