// Wires the read side into a running instance: projection, exemption expiry sweeper, decision audit,
// query endpoints (policy.queries.*) and evaluation endpoints (policy.commands.evaluate|check_compliance).
import type { ErrorCode } from "../domain/index.js";
import { AuditPublisher, disabledAudit, ensureAuditStream, type AuditSink } from "../adapters/nats/audit.js";
import { ExpirySweeper } from "../adapters/nats/expiry.js";
import { HistoryCache, type Projection } from "../adapters/nats/projection.js";
import type { EndpointHandler, HandlerResult } from "../adapters/nats/service.js";
import { Evaluation } from "./evaluation.js";
import { componentLogger } from "./logger.js";
import { Queries } from "./queries.js";
import { untilProvisioned } from "./transient.js";
import type { Runtime } from "./runtime.js";

const MAX_REQUEST_BYTES = 256 * 1024;

type Reply = { ok: true } | { ok: false; error: { code: ErrorCode | string; message: string } };

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
        payload = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
      } catch {
        const body = { ok: false, error: { code: "invalid_json", message: "payload is not valid UTF-8 JSON" } };
        return { body, error: body.error };
      }
    }
    const reply = await handle(payload);
    return reply.ok ? { body: reply } : { body: reply, error: { code: reply.error.code, message: reply.error.message } };
  };
}

export interface ReadSide {
  projection: Projection;
  queries: Queries;
  evaluation: Evaluation;
  audit: AuditSink;
  stop(): Promise<void>;
}

/** Starts the read side on a runtime, waits for the projection to catch up, registers the endpoints. */
export async function startReadSide(runtime: Runtime): Promise<ReadSide> {
  const { config, logger, js, jsm, projection } = runtime;
  await projection.ready();
  const history = new HistoryCache({ js, jsm, streamName: config.streamName, projection });

  let audit: AuditSink = disabledAudit;
  if (config.audit.enabled) {
    await untilProvisioned(() => ensureAuditStream(jsm, { streamName: config.audit.streamName, replicas: config.streamReplicas, maxAgeDays: config.audit.maxAgeDays }),
      componentLogger(logger, "audit"), `stream ${config.audit.streamName}`);
    audit = new AuditPublisher({ js, logger: componentLogger(logger, "audit"), instance: runtime.service.id });
  }

  const queries = new Queries({ projection, history });
  const evaluation = new Evaluation({ projection, history, audit });
  runtime.service.addEndpoints("policy.queries", {
    get: jsonEndpoint((p) => queries.get(p)),
    list: jsonEndpoint((p) => queries.list(p)),
    history: jsonEndpoint((p) => queries.history(p)),
    applicable: jsonEndpoint((p) => queries.applicable(p)),
  });
  runtime.service.addEndpoints("policy.commands", {
    evaluate: jsonEndpoint((p) => evaluation.evaluate(p)),
    check_compliance: jsonEndpoint((p) => evaluation.checkCompliance(p)),
  });

  const sweeper = new ExpirySweeper({ projection, commands: runtime.commands, logger: componentLogger(logger, "expiry") });
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
