// UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Time-ordered ids keep event ids sortable.
// UUIDv5 (name-based): the same name always gives the same id (expiry commands, ids derived from a command_id).
import { createHash, randomUUID } from "node:crypto";

/**
 * From a v4 UUID (crypto.randomUUID draws from a cached pool of random bytes: a tenth of the cost of randomBytes(16)
 * per id, measured with perf on the create path) with its first 48 bits replaced by the time and its version nibble
 * by 7. The variant bits are already RFC's; 74 random bits remain.
 */
export function uuidv7(now: number = Date.now()): string {
  const random = randomUUID();
  const time = Math.trunc(now).toString(16).padStart(12, "0").slice(-12);
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${random.slice(15)}`;
}

/** RFC 4122 UUIDv5 (SHA-1, name-based). */
export function uuidV5(name: string, namespace: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ""), "hex");
  const hash = createHash("sha1").update(ns).update(name, "utf8").digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

