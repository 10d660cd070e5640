/**
 * The NATS permission blocks printed in docs/security.md, between `<!-- <role>-permissions:begin/end -->`
 * markers (roles: service, administrator, evaluator, auditor). Tests hand the text verbatim to nats-server
 * (`permissions: <block>`), or parse it into lists for a JWT user claim.
 *
 *   documentedPermissionsText("evaluator")  → the conf block, as printed
 *   documentedPermissions("evaluator")      → { publish: { allow, deny }, subscribe: { allow, deny }, allowResponses }
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SERVICE_ROOT } from "./nats.js";

export type Role = "service" | "administrator" | "evaluator" | "auditor";
export interface PermissionList { allow: string[]; deny: string[] }
export interface RolePermissions { publish: PermissionList; subscribe: PermissionList; allowResponses: boolean }

export const SECURITY_DOC = join(SERVICE_ROOT, "..", "docs", "security.md");

export function documentedPermissionsText(role: Role): string {
  const doc = readFileSync(SECURITY_DOC, "utf8");
  const m = new RegExp(`<!-- ${role}-permissions:begin -->\\s*\`\`\`conf\\n([\\s\\S]*?)\\n\`\`\`\\s*<!-- ${role}-permissions:end -->`).exec(doc);
  if (!m) throw new Error(`docs/security.md lacks the <!-- ${role}-permissions:begin/end --> conf block`);
  return m[1]!;
}

const quoted = (text: string) => [...text.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);

/** Parses the subset of nats-server's config syntax the doc uses; refuses anything it would silently drop. */
export function parsePermissions(text: string): RolePermissions {
  const body = text.split("\n").map((line) => line.replace(/#.*$/, "")).join("\n");
  const section = (name: "publish" | "subscribe"): PermissionList => {
    const m = new RegExp(`\\b${name}\\s*[:=]?\\s*\\{([^{}]*)\\}`).exec(body);
    const list = (key: "allow" | "deny") => {
      const found = m ? new RegExp(`\\b${key}\\s*[:=]?\\s*\\[([^\\]]*)\\]`).exec(m[1]!) : null;
      return found ? quoted(found[1]!) : [];
    };
    return { allow: list("allow"), deny: list("deny") };
  };
  const permissions: RolePermissions = {
    publish: section("publish"),
    subscribe: section("subscribe"),
    allowResponses: /\ballow_responses\s*[:=]\s*true\b/.test(body),
  };
  const parsed = [permissions.publish, permissions.subscribe].reduce((n, p) => n + p.allow.length + p.deny.length, 0);
  if (parsed !== quoted(body).length) throw new Error(`parsePermissions understood ${parsed} of the ${quoted(body).length} subjects in:\n${text}`);
  return permissions;
}

export function documentedPermissions(role: Role): RolePermissions {
  return parsePermissions(documentedPermissionsText(role));
}

/**
 * A nats-server `authorization` block (lines) with two password users: `policy-service`/`service-secret` holding
 * `servicePermissions` (a conf block, e.g. documentedPermissionsText("service")), and `tester`/`tester-secret`
 * without limits, for the test client.
 */
export function serviceAndTesterAuthorization(servicePermissions: string): string[] {
  return [
    "authorization {",
    `  SERVICE_PERMISSIONS = ${servicePermissions}`,
    "  users = [",
    '    { user: "policy-service", password: "service-secret", permissions: $SERVICE_PERMISSIONS }',
    '    { user: "tester", password: "tester-secret" }',
    "  ]",
    "}",
  ];
}
