// pino JSON lines on stdout (journald and launchd capture them); one child logger per component.
// Written synchronously, as Node writes process.stdout to files and pipes on Linux: pino's default stream hands
// every line to a libuv pool thread, and that hop (a thread wake-up, then a completion back on the event loop) was
// 9-14 % of the service's CPU per command (measured, docs/performance.md). A line is on its way before the process
// can die; the price is that a stdout reader that stops reading stalls the service (journald does not).
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
  }, pino.destination({ fd: 1, sync: true }));
}

export function componentLogger(root: Logger, component: string): Logger {
  return root.child({ component });
}

/**
 * The same logger without the redaction pass, for a line whose fields are fixed by the code and cannot hold a secret
 * (names, ids, numbers: the one-line record of a handled command). Redaction was two thirds of such a line's cost
 * (about 20 µs of 35 here), paid once per command. Everything else keeps going through the redacting logger.
 */
export function fixedFieldsLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: [], censor: "[redacted]" } });
}
