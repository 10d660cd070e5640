// Writes to NATS issued during one turn of the event loop leave in ONE socket write.
// The client flushes its outbound buffer in a microtask after the first write; a command's publish and its reply
// come at different depths of its promise chain, so concurrent commands each paid their own write syscall (a third
// of the service's CPU at 64 in flight, measured with --cpu-prof). Deferring the call to setImmediate gathers every
// publish and reply of a turn into one synchronous run, hence one flush. The delay is one loop turn (microseconds).

const pending: (() => void)[] = [];
let scheduled = false;
/** Requests being handled by this process (see MicroService); alone (and none waiting), a write goes out at once. */
let active = 0;

export function requestStarted(): void {
  active++;
}
export function requestEnded(): void {
  active--;
}

/**
 * Requests already delivered to this process and not yet taken by their endpoint loop: the rest of one socket read.
 * An evaluation answers within the loop turn it is taken in, so each one was "the only request in flight" and its
 * reply went out in a write of its own, one per request at 64 in flight (strace); the replies still to come in the
 * same read share the write instead.
 */
const backlogs = new Set<() => number>();

/** `probe` counts requests delivered but not yet taken (QueuedIterator.getPending); returns the unregister call. */
export function registerBacklog(probe: () => number): () => void {
  backlogs.add(probe);
  return () => backlogs.delete(probe);
}

function backlogged(): boolean {
  for (const probe of backlogs) if (probe() > 0) return true;
  return false;
}

function flush(): void {
  scheduled = false;
  const batch = pending.splice(0);
  for (const write of batch) write();
}

/** Runs `write` (which must not throw) at the end of this turn, together with the other writes of the turn. */
export function batchedWrite(write: () => void): void {
  if (active <= 1 && !scheduled && !backlogged()) {
    write();
    return;
  }
  pending.push(write);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}

/** batchedWrite for a write that answers with a promise (a JetStream publish). */
export function batchedRequest<T>(request: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    batchedWrite(() => {
      try {
        request().then(resolve, reject);
      } catch (err) {
        reject(err);
      }
    });
  });
}
