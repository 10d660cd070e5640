// Wires the read side into a running instance: projection, exemption expiry sweeper, decision audit,
// query endpoints (policy.queries.*) and evaluation endpoints (policy.commands.evaluate|check_compliance).
import type { ErrorCode } from "../domain/index.js";
import { AuditPublisher, disabledAudit, ensureAuditStream, type AuditSink } from "../adapters/nats/audit.js";
import { AggregateReader } from "../adapters/nats/event-store.js";
import { ExpirySweeper, type CommandExecutor } from "../adapters/nats/expiry.js";
import { HistoryCache } from "../adapters/nats/history.js";
import type { Projection } from "../adapters/nats/projection.js";
import type { EndpointHandler, HandlerResult, MicroService } from "../adapters/nats/service.js";
import { Evaluation } from "./evaluation.js";
import { componentLogger } from "../support/logger.js";
import { Queries } from "./queries.js";
import { untilProvisioned } from "../support/transient.js";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Config } from "../support/config.js";
import type { Logger } from "../support/logger.js";

const MAX_REQUEST_BYTES = 256 * 1024;
/** One decoder for every request: without `stream`, each decode() starts afresh (a fatal error leaves no state). */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** `json`, when present, is the whole reply already serialised (see HandlerResult.json). */
type Reply = { ok: true; json?: string } | { ok: false; error: { code: ErrorCode | string; message: string; details?: unknown } };

export const LOADING_RETRY_AFTER_MS = 1000;
/** The read side's endpoints: `policy.queries.<name>`, and `policy.commands.<name>` for evaluation. */
export const QUERY_ENDPOINTS = ["get", "list", "history", "applicable"] as const;
export const EVALUATION_ENDPOINTS = ["evaluate", "check_compliance"] as const;

function stillLoading(appliedSeq: number): Reply {
  return {
    ok: false,
    error: {
      code: "unavailable",
      message: `this instance is still loading its read model (at stream sequence ${appliedSeq}); retry in about ${LOADING_RETRY_AFTER_MS / 1000} s`,
      details: { retry_after_ms: LOADING_RETRY_AFTER_MS, applied_seq: appliedSeq },
    },
  };
}

/** Decodes the JSON body (an empty body is `{}`), runs `handle`, and maps failures onto the service error headers. */
export function jsonEndpoint(handle: (payload: unknown) => Promise<Reply> | Reply): EndpointHandler {
  return async (data: Uint8Array): Promise<HandlerResult> => {
    let payload: unknown = {};
    if (data.byteLength > MAX_REQUEST_BYTES) {
      const body = { ok: false, error: { code: "validation_failed", message: `payload is ${data.byteLength} bytes; at most ${MAX_REQUEST_BYTES} are accepted` } };
      return { body, error: body.error };
    }
    if (data.byteLength > 0) {
      try {
        payload = JSON.parse(UTF8.decode(data));
      } catch {
        const body = { ok: false, error: { code: "invalid_json", message: "payload is not valid UTF-8 JSON" } };
        return { body, error: body.error };
      }
    }
    const reply = await handle(payload);
    if (!reply.ok) return { body: reply, error: { code: reply.error.code, message: reply.error.message } };
    return reply.json !== undefined ? { body: reply, json: reply.json } : { body: reply };
  };
}

export interface ReadSide {
  projection: Projection;
  queries: Queries;
  evaluation: Evaluation;
  audit: AuditSink;
  stop(): Promise<void>;
}

/** What the read side needs from the instance that runs it (runtime.ts hands it over; the read side never imports it). */
export interface ReadSideHost {
  readonly config: Config;
  readonly logger: Logger;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly projection: Projection;
  readonly service: Pick<MicroService, "addEndpoints" | "id">;
  /** Runs the expiry sweeper's `expire_exemption` commands. */
  readonly commands: CommandExecutor;
  /** This instance's turn to expire an exemption: 0 at its `expires_at` (its owner), later ones after it (expiry.ts). */
  expiryRank(exemptionId: string): number;
  onShutdown(fn: () => Promise<void> | void): void;
}

/** Starts the read side on a running instance: registers the endpoints, waits for the projection to catch up. */
export async function startReadSide(runtime: ReadSideHost): Promise<ReadSide> {
  const { config, logger, js, jsm, projection } = runtime;
  const history = new HistoryCache(new AggregateReader({ js, jsm, streamName: config.streamName, logger: componentLogger(logger, "history") }));

  let audit: AuditSink = disabledAudit;
  if (config.audit.enabled) {
    await untilProvisioned(() => ensureAuditStream(jsm, { streamName: config.audit.streamName, replicas: config.streamReplicas, maxAgeDays: config.audit.maxAgeDays }),
      componentLogger(logger, "audit"), `stream ${config.audit.streamName}`);
    audit = new AuditPublisher({ js, logger: componentLogger(logger, "audit"), instance: runtime.service.id });
  }

  const queries = new Queries({ projection, history });
  const evaluation = new Evaluation({ projection, history, audit });
  // Bound in place of runtime.ts's starting handlers at once, before the projection has caught up: until then a query
  // gets a coded `unavailable` with a retry hint (never NATS "no responders", never an answer from a half-built read
  // model).
  const whileLoading = (handle: (payload: unknown) => Promise<Reply> | Reply) => (payload: unknown): Promise<Reply> | Reply =>
    projection.caughtUp ? handle(payload) : stillLoading(projection.lastSeq);
  const queryHandlers: Record<(typeof QUERY_ENDPOINTS)[number], EndpointHandler> = {
    get: jsonEndpoint(whileLoading((p) => queries.get(p))),
    list: jsonEndpoint(whileLoading((p) => queries.list(p))),
    history: jsonEndpoint(whileLoading((p) => queries.history(p))),
    applicable: jsonEndpoint(whileLoading((p) => queries.applicable(p))),
  };
  const evaluationHandlers: Record<(typeof EVALUATION_ENDPOINTS)[number], EndpointHandler> = {
    evaluate: jsonEndpoint(whileLoading((p) => evaluation.evaluate(p))),
    check_compliance: jsonEndpoint(whileLoading((p) => evaluation.checkCompliance(p))),
  };
  runtime.service.addEndpoints("policy.queries", queryHandlers);
  runtime.service.addEndpoints("policy.commands", evaluationHandlers);
  await projection.ready();

  const sweeper = new ExpirySweeper({
    projection, commands: runtime.commands, expiryRank: (id) => runtime.expiryRank(id), logger: componentLogger(logger, "expiry"),
  });
  sweeper.start();

  const readSide: ReadSide = {
    projection,
    queries,
    evaluation,
    audit,
    async stop() {
      await sweeper.stop();
      await audit.close(3000);
      await projection.stop();
    },
  };
  runtime.onShutdown(() => readSide.stop());
  return readSide;
}
