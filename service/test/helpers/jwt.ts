/**
 * Decentralised NATS auth made by the test (nsc is not available): an operator, a system account, one
 * application account with JetStream enabled, and users with permissions, signed with @nats-io/jwt.
 *
 *   const op = await makeOperator({ users: { "policy-service": perms, admin: perms } });
 *   op.serverConfig          // operator/system_account/resolver MEMORY/resolver_preload lines for nats-server
 *   op.creds["admin"]        // the user's .creds file content (JWT + seed)
 *   await op.userCreds("x", perms, { expiresInSeconds: -60 })   // another user (e.g. an expired one)
 */
import { createAccount, createOperator, createUser, encodeAccount, encodeOperator, encodeUser, fmtCreds, type KeyPair } from "@nats-io/jwt";
import type { RolePermissions } from "./permissions.js";

export interface OperatorSetup {
  serverConfig: string;
  accountPublicKey: string;
  creds: Record<string, Uint8Array>;
  userCreds(name: string, permissions: RolePermissions, opts?: { expiresInSeconds?: number }): Promise<Uint8Array>;
}

/** nats-server permissions (conf shape) → the JWT user claim's pub/sub/resp. */
function userClaims(permissions: RolePermissions): Record<string, unknown> {
  const claims: Record<string, unknown> = {
    pub: { allow: permissions.publish.allow, deny: permissions.publish.deny },
    sub: { allow: permissions.subscribe.allow, deny: permissions.subscribe.deny },
  };
  // allow_responses: true is "one response, within the default two minutes" (nats-server's ResponsePermission defaults).
  if (permissions.allowResponses) claims.resp = { max: 1, ttl: 0 };
  return claims;
}

export async function makeOperator(opts: { users: Record<string, RolePermissions> }): Promise<OperatorSetup> {
  const operator = createOperator();
  const system = createAccount();
  const account = createAccount();
  const operatorJwt = await encodeOperator("policy-test-operator", operator, { system_account: system.getPublicKey() });
  const systemJwt = await encodeAccount("SYS", system, {}, { signer: operator });
  // JetStream is on for an account only when its JWT grants storage (-1: unlimited).
  const accountJwt = await encodeAccount(
    "POLICY",
    account,
    { limits: { subs: -1, conn: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } },
    { signer: operator },
  );
  async function userCreds(name: string, permissions: RolePermissions, o: { expiresInSeconds?: number } = {}): Promise<Uint8Array> {
    const user: KeyPair = createUser();
    const exp = o.expiresInSeconds === undefined ? {} : { exp: Math.floor(Date.now() / 1000) + o.expiresInSeconds };
    const jwt = await encodeUser(name, user, account, userClaims(permissions), exp);
    return fmtCreds(jwt, user);
  }
  const creds: Record<string, Uint8Array> = {};
  for (const [name, permissions] of Object.entries(opts.users)) creds[name] = await userCreds(name, permissions);
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${system.getPublicKey()}: ${systemJwt}`,
    `  ${account.getPublicKey()}: ${accountJwt}`,
    "}",
  ].join("\n");
  return { serverConfig, accountPublicKey: account.getPublicKey(), creds, userCreds };
}
