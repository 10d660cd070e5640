// Capped exponential backoff with "full jitter": racing instances spread out instead of colliding again.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** 0..1: share of the delay that is randomised (1 = full jitter). */
  jitter?: number;
}

export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.max(0, attempt));
  const jitter = Math.min(1, Math.max(0, opts.jitter ?? 1));
  return Math.round(exp * (1 - jitter) + exp * jitter * random());
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
