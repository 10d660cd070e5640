// One canonical JSON for every hash of a client's JSON: the payload hash of a command with a `command_id` (stored in
// its event's Policy-Command-Sha256 header and in idempotency records, so it must not change between releases) and
// the context hash of a decision audit record.
import { hash } from "node:crypto";

/**
 * JSON with object keys sorted at every level, so that equal values hash equally whatever their key order. Built in
 * one pass into one string; keys already in order, the common case, are not sorted again. On anything JSON.parse
 * returns it is the sorted JSON.stringify (test/unit/canonical-json.test.ts holds it to the two implementations it
 * replaced). Outside that: an undefined member is skipped and an array hole is null, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  return appendCanonical("", value);
}

/** sha256 (hex) of the value's canonical JSON: the payload hash and the context hash both are this. */
export function canonicalSha256(value: unknown): string {
  return hash("sha256", canonicalJson(value), "hex");
}

function appendCanonical(out: string, value: unknown): string {
  if (value === null || typeof value !== "object") return out + (JSON.stringify(value) ?? "null");
  if (Array.isArray(value)) {
    out += "[";
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ",";
      out = appendCanonical(out, value[i]);
    }
    return out + "]";
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) {
      keys.sort();
      break;
    }
  }
  out += "{";
  let first = true;
  for (const key of keys) {
    const v = record[key];
    if (v === undefined) continue;
    out += first ? JSON.stringify(key) : `,${JSON.stringify(key)}`;
    out = appendCanonical(out + ":", v);
    first = false;
  }
  return out + "}";
}
