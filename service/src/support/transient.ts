// What counts as "JetStream is briefly not answering" (leader election, a cluster still forming), and a retry
// loop for start-up provisioning that waits such phases out instead of crashing the unit.
import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import { errors as natsErrors, RequestError } from "@nats-io/nats-core";
import { backoffDelay, sleep } from "./backoff.js";
import type { Logger } from "./logger.js";

/** Errors that mean "JetStream is (briefly) not answering", e.g. during a leader election. */
export function isTransient(err: unknown): boolean {
  if (err instanceof natsErrors.TimeoutError) return true;
  // "jetstream is not enabled" wraps a no-responders RequestError: no stream leader right now.
  if (err instanceof RequestError) return err.isNoResponders();
  if (err instanceof JetStreamApiError) {
    // "duplicate message id is in process": the same Nats-Msg-Id is being replicated right now (another
    // instance handling a retry of this command); once it settles, the retry sees the duplicate.
    return err.status === 503 || err.code === 10008 || /temporarily unavailable|no suitable peers|leader|duplicate message id is in process/i.test(err.message);
  }
  // Direct gets report a missing responder (e.g. a follower that just went away) as a status error with code 503.
  if (err instanceof JetStreamError && "code" in err && (err.code === 503 || err.code === 408)) return true;
  if (err instanceof Error && /no responders/i.test(err.message)) return true;
  if (err instanceof Error && err.cause) return isTransient(err.cause);
  return false;
}

/** Retries `fn` while it fails transiently; refusals and other errors are thrown. */
export async function untilProvisioned<T>(fn: () => Promise<T>, log: Logger, what: string, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || signal?.aborted) throw err;
      const delay = backoffDelay(attempt, { initialMs: 250, maxMs: 5000, jitter: 0.3 });
      log.warn({ err, attempt, retry_in_ms: delay }, `JetStream not ready for ${what}; retrying`);
      await sleep(delay);
    }
  }
}
