// Event envelopes for tests that drive the event store directly (no command handler), and a logger that says nothing.
import { randomUUID } from "node:crypto";
import type { EventEnvelope } from "../../src/domain/index.js";
import type { EventToAppend } from "../../src/adapters/nats/event-store.js";
import type { Logger } from "../../src/support/logger.js";

export const silentLogger: Logger = { warn() {}, info() {}, debug() {}, error() {}, child: () => silentLogger } as unknown as Logger;

/**
 * `count` "updated" events of one aggregate, versions `fromVersion`, `fromVersion + 1`, …, each with a fresh event id.
 * msgIds "none": no Nats-Msg-Id (an atomic batch); "event ids": each event's id as its Nats-Msg-Id (a chain).
 */
export function updatedEvents(aggregateId: string, fromVersion: number, count: number, msgIds: "none" | "event ids"): EventToAppend[] {
  return Array.from({ length: count }, (_, i) => {
    const envelope: EventEnvelope = {
      event_id: randomUUID(), event_type: "updated", aggregate_type: "Policy", aggregate_id: aggregateId,
      version: fromVersion + i, occurred_at: "2026-12-02T12:00:00.000Z", command_id: null, correlation_id: null,
      causation_id: null, data: { description: `event ${fromVersion + i}` },
    } as EventEnvelope;
    return { envelope, msgId: msgIds === "event ids" ? envelope.event_id : "" };
  });
}
