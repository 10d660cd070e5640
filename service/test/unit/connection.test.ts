// Which connect failures end start-up (a credential the server refuses, a certificate that cannot verify)
// and which are waited out (a server not up yet, a busy one); what the connection options require.
// The same behaviour against real servers: test/integration/auth-failures.test.ts.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { AuthorizationError, TimeoutError, UserAuthenticationExpiredError } from "@nats-io/nats-core";
import { parseConfig } from "../../src/support/config.js";
import { connectionOptions, CredentialError, permanentConnectFailure } from "../../src/adapters/nats/connection.js";

const violation = new AuthorizationError("Authorization Violation");
const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

test("an authorization violation names the variable of the configured method", () => {
  const cases: [Record<string, string>, string][] = [
    [{ NATS_CREDS_FILE: "/run/c.creds" }, "NATS_CREDS_FILE"],
    [{ NATS_NKEY_SEED_FILE: "/run/s.nk" }, "NATS_NKEY_SEED_FILE"],
    [{ NATS_USER: "svc", NATS_PASSWORD_FILE: "/run/pw" }, "NATS_PASSWORD_FILE"],
    [{ NATS_TOKEN_FILE: "/run/token" }, "NATS_TOKEN_FILE"],
    [{ NATS_CERT_FILE: "/run/c.pem", NATS_KEY_FILE: "/run/k.pem" }, "NATS_CERT_FILE"],
    [{}, "NATS_CREDS_FILE"],
  ];
  for (const [env, variable] of cases) {
    const err = permanentConnectFailure(violation, parseConfig(env));
    assert.ok(err instanceof CredentialError, JSON.stringify(env));
    assert.equal(err.variable, variable, JSON.stringify(env));
    assert.match(err.message, new RegExp(`^${variable}: .*Authorization Violation`));
  }
});

test("an expired user JWT names NATS_CREDS_FILE", () => {
  const err = permanentConnectFailure(new UserAuthenticationExpiredError("User Authentication Expired"), parseConfig({ NATS_CREDS_FILE: "/run/c.creds" }));
  assert.equal(err?.variable, "NATS_CREDS_FILE");
  assert.match(err!.message, /expired/);
});

test("certificate failures name NATS_CA_FILE or NATS_URL; TLS not offered names the TLS setting", () => {
  const config = parseConfig({ NATS_URL: "tls://localhost:4222", NATS_CA_FILE: "/etc/ca.pem" });
  assert.equal(permanentConnectFailure(withCode("unable to verify the first certificate", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"), config)?.variable, "NATS_CA_FILE");
  assert.equal(permanentConnectFailure(withCode("self-signed certificate in certificate chain", "SELF_SIGNED_CERT_IN_CHAIN"), config)?.variable, "NATS_CA_FILE");
  assert.equal(permanentConnectFailure(withCode("Hostname/IP does not match certificate's altnames", "ERR_TLS_CERT_ALTNAME_INVALID"), config)?.variable, "NATS_URL");
  assert.equal(permanentConnectFailure(new Error("server does not support 'tls'"), config)?.variable, "NATS_CA_FILE");
  assert.equal(permanentConnectFailure(new Error("server does not support 'tls'"), parseConfig({ NATS_URL: "tls://localhost:4222" }))?.variable, "NATS_URL");
});

test("what waiting can cure is not permanent: refused, timed out, an authentication timeout of a busy server", () => {
  const config = parseConfig({ NATS_USER: "svc", NATS_PASSWORD_FILE: "/run/pw" });
  for (const err of [withCode("connect ECONNREFUSED 127.0.0.1:4222", "ECONNREFUSED"), new TimeoutError(), new AuthorizationError("Authentication Timeout"), "not an error"]) {
    assert.equal(permanentConnectFailure(err, config), null, String(err));
  }
});

test("a tls:// URL requires TLS even without TLS files; a nats:// URL without them does not", () => {
  assert.deepEqual(connectionOptions(parseConfig({ NATS_URL: "tls://localhost:4222" }), {}, "t").tls, {});
  assert.equal(connectionOptions(parseConfig({ NATS_URL: "nats://localhost:4222" }), {}, "t").tls, undefined);
  assert.deepEqual(connectionOptions(parseConfig({ NATS_CA_FILE: "/etc/ca.pem" }), { tls: { caFile: "/etc/ca.pem" } }, "t").tls, { caFile: "/etc/ca.pem" });
});

test("a seed or .creds that does not parse is refused when the options are made, naming the variable, not showing the content", () => {
  const seed = new TextEncoder().encode("SUAXXXXnot-a-seed-secret-content");
  assert.throws(() => connectionOptions(parseConfig({ NATS_NKEY_SEED_FILE: "/run/s.nk" }), { nkeySeed: seed }, "t"), (err: Error) => {
    assert.ok(err instanceof CredentialError);
    assert.equal(err.variable, "NATS_NKEY_SEED_FILE");
    assert.ok(!err.message.includes("not-a-seed-secret-content"), err.message);
    return true;
  });
  const creds = new TextEncoder().encode("garbage-secret-content");
  assert.throws(() => connectionOptions(parseConfig({ NATS_CREDS_FILE: "/run/c.creds" }), { creds }, "t"), (err: Error) => {
    assert.ok(err instanceof CredentialError);
    assert.equal(err.variable, "NATS_CREDS_FILE");
    assert.ok(!err.message.includes("garbage-secret-content"), err.message);
    return true;
  });
});
