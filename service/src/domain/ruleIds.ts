// Rule ids the domain assigns when a payload has none. decide is pure, so the id is derived, not drawn:
// a name-based UUID (version 8, "custom") from a SHA-256 of the policy id, the new event's version and the rule's index.
import { createHash } from "node:crypto";

export function deriveRuleId(policyId: string, version: number, index: number): string {
  const hex = createHash("sha256").update(`policy-service/rule/${policyId}/${version}/${index}`).digest("hex");
  const variant = ((parseInt(hex.charAt(16), 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
