// The NATS micro service (ADR-32, `$SRV.PING|INFO|STATS`): endpoints in queue group `q`, so instances share the work.
// Requests are consumed in the async-iterator form (an async callback that throws would crash the process,
// see nats.md §1); each request is handled in its own try/catch, with a bounded number in flight per instance.
import { headers, type NatsConnection } from "@nats-io/nats-core";
import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import type { QueuedIterator } from "@nats-io/nats-core";
import type { Logger } from "../../support/logger.js";
import { statusOf } from "../../support/replies.js";
import { batchedWrite, registerBacklog, requestEnded, requestStarted } from "./write-batch.js";

export const SERVICE_NAME = "policy-service";
export const QUEUE_GROUP = "q";

export interface HandlerResult {
  /** JSON-serialisable reply body. */
  body: unknown;
  /** The reply body as JSON text, when the handler serialised it already: sent as it is, `body` not serialised. */
  json?: string;
  /** When set, the reply also carries Nats-Service-Error(-Code) (code is an ErrorCode, mapped to a number). */
  error?: { code: string; message: string };
}
export type EndpointHandler = (payload: Uint8Array, msg: ServiceMsg) => Promise<HandlerResult>;

export interface MicroServiceOptions {
  version: string;
  description: string;
  metadata?: Record<string, string>;
  maxInFlight: number;
  logger: Logger;
  /** Extra `data` for an endpoint in `$SRV.STATS` (e.g. command counters); undefined → none. */
  statsData?: (subject: string) => unknown;
  /** Called once per answered request: its subject, the reply's error code (null: ok) and seconds since it arrived. */
  observe?: (subject: string, errorCode: string | null, seconds: number) => void;
}

class Semaphore {
  private free: number;
  private readonly waiters: (() => void)[] = [];
  constructor(size: number) { this.free = size; }
  async acquire(): Promise<void> {
    if (this.free > 0) { this.free--; return; }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next(); else this.free++;
  }
}

export class MicroService {
  private readonly service: Service;
  private readonly opts: MicroServiceOptions;
  private readonly log: Logger;
  private readonly slots: Semaphore;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly loops: Promise<void>[] = [];
  private readonly iterators: QueuedIterator<ServiceMsg>[] = [];
  /** The handler of each endpoint's subject; a later addEndpoints for the same subject replaces it. */
  private readonly handlers = new Map<string, EndpointHandler>();
  private stopping = false;

  private constructor(service: Service, opts: MicroServiceOptions) {
    this.service = service;
    this.opts = opts;
    this.log = opts.logger;
    this.slots = new Semaphore(opts.maxInFlight);
  }

  static async start(nc: NatsConnection, opts: MicroServiceOptions): Promise<MicroService> {
    const service = await new Svcm(nc).add({
      name: SERVICE_NAME,
      version: opts.version,
      description: opts.description,
      queue: QUEUE_GROUP,
      ...(opts.metadata ? { metadata: opts.metadata } : {}),
      ...(opts.statsData ? { statsHandler: (endpoint: { subject: string }) => Promise.resolve(opts.statsData!(endpoint.subject) ?? null) } : {}),
    });
    return new MicroService(service, opts);
  }

  get id(): string { return this.service.info().id; }
  stats() { return this.service.stats(); }

  /**
   * Registers `handlers` as endpoints `<group>.<name>` (names cannot contain '.'). For an endpoint that is already
   * registered, the handler is replaced and the subscription kept: runtime.ts registers the read side's endpoints
   * with a handler that answers `unavailable`, and read-side.ts binds the real ones in their place.
   */
  addEndpoints(group: string, handlers: Record<string, EndpointHandler>): void {
    let g: ReturnType<Service["addGroup"]> | undefined;
    for (const [name, handler] of Object.entries(handlers)) {
      if (name.includes(".")) throw new Error(`endpoint name ${name} must not contain '.'`);
      const subject = `${group}.${name}`;
      const known = this.handlers.has(subject);
      this.handlers.set(subject, handler);
      if (known) continue;
      g ??= this.service.addGroup(group, QUEUE_GROUP);
      const iter = g.addEndpoint(name, { metadata: { subject } });
      this.iterators.push(iter);
      this.loops.push(this.serve(subject, iter));
    }
  }

  private async serve(subject: string, iter: QueuedIterator<ServiceMsg>): Promise<void> {
    const unregister = registerBacklog(() => iter.getPending());
    try {
      for await (const msg of iter) {
        const received = performance.now();
        await this.slots.acquire();
        requestStarted();
        // Looked up per request: the handler bound when the request is taken (see addEndpoints).
        const task = this.handle(subject, msg, this.handlers.get(subject)!, received).finally(() => {
          requestEnded();
          this.slots.release();
          this.inFlight.delete(task);
        });
        this.inFlight.add(task);
      }
    } finally {
      unregister();
    }
  }

  private async handle(subject: string, msg: ServiceMsg, handler: EndpointHandler, received: number): Promise<void> {
    let result: HandlerResult;
    try {
      result = await handler(msg.data, msg);
    } catch (err) {
      this.log.error({ err, subject }, "endpoint handler failed");
      result = { body: { ok: false, error: { code: "internal", message: "internal error" } }, error: { code: "internal", message: "internal error" } };
    }
    if (!msg.reply) return; // a publish without a reply subject: nothing to answer
    let body: string;
    try {
      body = result.json ?? JSON.stringify(result.body);
    } catch (err) {
      this.log.error({ err, subject }, "reply not serialisable");
      body = JSON.stringify({ ok: false, error: { code: "internal", message: "internal error" } });
      result = { body, error: { code: "internal", message: "internal error" } };
    }
    try {
      this.opts.observe?.(subject, result.error?.code ?? null, (performance.now() - received) / 1000);
    } catch (err) {
      this.log.warn({ err, subject }, "request observer failed");
    }
    const error = result.error;
    // Replies of one loop turn go out in one socket write (see write-batch.ts).
    batchedWrite(() => {
      try {
        if (error) msg.respondError(statusOf(error.code), oneLine(error.message), body, { headers: headers() });
        else msg.respond(body);
      } catch (err) {
        this.log.warn({ err, subject }, "could not send a reply");
      }
    });
  }

  /** Stops taking requests, finishes the ones in flight (up to `timeoutMs`). */
  async stop(timeoutMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const deadline = Date.now() + timeoutMs;
    // Draining the endpoint subscriptions delivers what is buffered, then no more arrives.
    await withTimeout(this.service.stop().then(() => undefined), Math.max(0, deadline - Date.now()));
    // End each loop only after it has taken every request already delivered: a function pushed into the
    // iterator runs in order, after the queued messages (iter.stop() alone would drop them unanswered).
    for (const iter of this.iterators) (iter as unknown as { push(v: unknown): void }).push(() => iter.stop());
    await withTimeout(Promise.allSettled(this.loops).then(() => undefined), Math.max(0, deadline - Date.now()));
    const pending = this.inFlight.size;
    if (pending > 0) this.log.info({ in_flight: pending }, "waiting for in-flight requests");
    await withTimeout(Promise.allSettled([...this.inFlight]).then(() => undefined), Math.max(0, deadline - Date.now()));
  }
}

/** Header values must be one line. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ").slice(0, 512);
}

/** Resolves when `p` settles or after `ms`, whichever comes first (a stop bounded by its deadline). */
export function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    p.finally(() => { clearTimeout(timer); resolve(); });
  });
}

/**
 * Answers every request on `subjects` (queue group `q`, like the endpoints) with `body` as a service error, until
 * stopped: an instance that is connected but not provisioned yet answers `unavailable` instead of leaving clients
 * with NATS "no responders". Plain subscriptions, not the micro service: `$SRV.PING` keeps meaning "provisioned".
 * Stop it once the real endpoints are subscribed (the same queue group: each request reaches one of the two).
 */
export async function answerWhileStarting(nc: NatsConnection, subjects: readonly string[], reply: HandlerResult & { error: { code: string; message: string } }, log: Logger): Promise<{ stop(): Promise<void> }> {
  const body = JSON.stringify(reply.body);
  const subs = subjects.map((subject) =>
    nc.subscribe(subject, {
      queue: QUEUE_GROUP,
      callback: (err, msg) => {
        if (err || !msg.reply) return;
        try {
          msg.respond(body, { headers: serviceErrorHeaders(statusOf(reply.error.code), reply.error.message) });
        } catch (e) {
          log.warn({ err: e, subject }, "could not answer a request while starting");
        }
      },
    }),
  );
  await nc.flush(); // the server has the subscriptions before the caller says they exist
  return {
    async stop() {
      // Drain, not unsubscribe: a request the server routed here before it saw the UNSUB is still answered.
      await Promise.all(subs.map((sub) => sub.drain()));
    },
  };
}

/** The headers msg.respondError sets (ADR-32), for a plain subscription's reply. */
function serviceErrorHeaders(status: number, message: string) {
  const h = headers();
  h.set("Nats-Service-Error", oneLine(message));
  h.set("Nats-Service-Error-Code", String(status));
  return h;
}
