// The wire shape of replies and the numeric codes mirrored in the micro-service error headers.
import type { DomainError, ErrorCode } from "../domain/index.js";

export interface EventRef { type: string; subject: string; seq: number }
export type SuccessReply = { ok: true; aggregate_id: string; version: number; events: EventRef[] };
export type FailureReply = { ok: false; error: DomainError };
export type Reply = SuccessReply | FailureReply;

/** `Nats-Service-Error-Code` per error code (HTTP-like, so generic NATS tooling reads them sensibly). */
export const ERROR_STATUS: Record<ErrorCode, number> = {
  invalid_json: 400,
  validation_failed: 400,
  not_found: 404,
  already_exists: 409,
  invalid_transition: 409,
  conflict: 409,
  not_applicable: 422,
  internal: 500,
  unavailable: 503,
};

export function failure(code: ErrorCode, message: string, details?: unknown): FailureReply {
  return details === undefined ? { ok: false, error: { code, message } } : { ok: false, error: { code, message, details } };
}

export function statusOf(code: string): number {
  return (ERROR_STATUS as Record<string, number>)[code] ?? 500;
}
