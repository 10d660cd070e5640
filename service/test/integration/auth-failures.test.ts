// A wrong or unreadable credential ends start-up within seconds, with exit code 2 and ONE line naming the
// variable to fix (not a service that retries forever); the secret itself is never printed. A server
// that is simply not up yet is still waited for. Each case runs the built service against a real
// nats-server configured for the method (or no server, for the files the service refuses before connecting).
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { freePort, runService, SERVICE_MAIN, SERVICE_ROOT, sleep, startNatsServer, startService, type NatsServer } from "../helpers/nats.js";
import { makeCa, makeClientCert, makePki, makeServerCert, type Pki } from "../helpers/pki.js";
import { makeOperator } from "../helpers/jwt.js";
import { documentedPermissions, documentedPermissionsText } from "../helpers/permissions.js";
import { randomSecret } from "../helpers/auth.js";

/** A refusal must end the process well within this (a retry loop would run until killed). */
const EXIT_BOUND_MS = 20_000;
const TEST_TIMEOUT = { timeout: 60_000 };

interface Outcome { code: number | null; signal: NodeJS.Signals | null; ms: number; stdout: string; stderr: string }

/** Whether the test runs with root's DAC override (then a mode-000 file is still readable unless it is dropped). */
const IS_ROOT = process.getuid?.() === 0;
const HAVE_SETPRIV = spawnSync("setpriv", ["--version"]).status === 0;

/**
 * Runs the built service with `env` until it exits or EXIT_BOUND_MS passes (then SIGKILL: the test fails on the
 * missing exit code). `withoutDacOverride`: as root, drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv) so file
 * modes apply as they do for the unprivileged service user.
 */
function runToExit(env: Record<string, string>, opts: { withoutDacOverride?: boolean } = {}): Promise<Outcome> {
  const argv = [process.execPath, SERVICE_MAIN];
  if (opts.withoutDacOverride && IS_ROOT) argv.unshift("setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search");
  const started = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), { cwd: SERVICE_ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: "trace", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (b: Buffer) => { stdout += b.toString(); });
  child.stderr!.on("data", (b: Buffer) => { stderr += b.toString(); });
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), EXIT_BOUND_MS);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ms: Date.now() - started, stdout, stderr });
    });
  });
}

/**
 * Exit 2 within the bound, and exactly one line at error level or above (the stderr line of a configuration
 * error, or the fatal log line), which names `variable`; no secret in any output.
 */
function assertOneLineNaming(outcome: Outcome, variable: string, secrets: string[] = []): string {
  const output = `${outcome.stdout}\n${outcome.stderr}`;
  assert.notEqual(outcome.signal, "SIGKILL", `still running after ${EXIT_BOUND_MS} ms (retrying instead of failing?); output:\n${output.slice(-2000)}`);
  assert.equal(outcome.code, 2, `exit code 2 (bad configuration); output:\n${output.slice(-2000)}`);
  const logLines = outcome.stdout.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as { level: number; msg: string });
  const problems = [
    ...outcome.stderr.split("\n").filter((l) => l.trim() !== ""),
    ...logLines.filter((l) => l.level >= 50).map((l) => l.msg),
  ];
  assert.equal(problems.length, 1, `one line for the operator, got:\n${problems.join("\n")}`);
  const line = problems[0]!;
  assert.match(line, new RegExp(`\\b${variable}\\b`), `the line names ${variable}: ${line}`);
  for (const secret of secrets) assert.ok(!output.includes(secret), `a secret appears in the output:\n${output}`);
  return line;
}

let dir = "";
before(() => { dir = mkdtempSync(join(tmpdir(), "auth-failures-")); });
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

function file(name: string, content: string | Uint8Array, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, content, { mode });
  chmodSync(path, mode);
  return path;
}

describe("credential files the service cannot use are refused before it connects", () => {
  // NATS_URL points at a port nothing listens on: these must fail on the file, not wait for a server.
  let url = "";
  before(async () => { url = `nats://127.0.0.1:${await freePort()}`; });

  test("a missing password file", TEST_TIMEOUT, async () => {
    const line = assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_USER: "policy-service", NATS_PASSWORD_FILE: join(dir, "absent") }), "NATS_PASSWORD_FILE");
    assert.match(line, /ENOENT/);
  });

  test("a password file the service user may not read (mode 000)", { ...TEST_TIMEOUT, skip: IS_ROOT && !HAVE_SETPRIV ? "running as root without setpriv (util-linux): cannot drop CAP_DAC_OVERRIDE" : false }, async () => {
    const secret = randomSecret("pw");
    const path = file("unreadable-password", secret, 0o000);
    const line = assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_USER: "policy-service", NATS_PASSWORD_FILE: path }, { withoutDacOverride: true }), "NATS_PASSWORD_FILE", [secret]);
    assert.match(line, /EACCES/);
  });

  test("an empty token file", TEST_TIMEOUT, async () => {
    assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_TOKEN_FILE: file("empty-token", "") }), "NATS_TOKEN_FILE");
  });

  test("a seed file that holds no NKey seed", TEST_TIMEOUT, async () => {
    const garbage = randomSecret("SUAnot-a-seed");
    assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_NKEY_SEED_FILE: file("bad.nk", garbage) }), "NATS_NKEY_SEED_FILE", [garbage]);
  });

  test("a .creds file that is not one", TEST_TIMEOUT, async () => {
    const garbage = randomSecret("not-creds");
    assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_CREDS_FILE: file("bad.creds", garbage) }), "NATS_CREDS_FILE", [garbage]);
  });

  test("a CA file that is not a PEM certificate", TEST_TIMEOUT, async () => {
    assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_CA_FILE: file("bad-ca.pem", "not a certificate\n") }), "NATS_CA_FILE");
  });

  test("a client key file that is not a PEM key", TEST_TIMEOUT, async () => {
    const pki = makePki(join(dir));
    const garbage = randomSecret("not-a-key");
    assertOneLineNaming(await runToExit({ NATS_URL: url, NATS_CA_FILE: pki.ca.cert, NATS_CERT_FILE: pki.clientCert, NATS_KEY_FILE: file("bad-key.pem", garbage) }), "NATS_KEY_FILE", [garbage]);
  });
});

describe("credentials the NATS server refuses end start-up with one line naming the variable", () => {
  const service = createUser();
  const password = randomSecret("pw");
  const token = randomSecret("token");
  let users: NatsServer | undefined;
  let tokens: NatsServer | undefined;

  before(async () => {
    const permissions = documentedPermissionsText("service");
    users = await startNatsServer({
      extraConfig: [
        "authorization {",
        `  SERVICE = ${permissions}`,
        "  users = [",
        `    { user: "policy-service", password: "${password}", permissions: $SERVICE }`,
        `    { nkey: ${service.getPublicKey()}, permissions: $SERVICE }`,
        "  ]",
        "}",
      ].join("\n"),
    });
    tokens = await startNatsServer({ extraConfig: `authorization { token: "${token}" }` });
  }, TEST_TIMEOUT);
  after(async () => {
    await users?.stop();
    await tokens?.stop();
  });

  test("a wrong password", TEST_TIMEOUT, async () => {
    const wrong = randomSecret("wrong-pw");
    const outcome = await runToExit({ NATS_URL: users!.url, NATS_USER: "policy-service", NATS_PASSWORD_FILE: file("wrong-password", wrong) });
    const line = assertOneLineNaming(outcome, "NATS_PASSWORD_FILE", [wrong, password]);
    assert.match(line, /Authorization Violation/);
    assert.ok(outcome.ms < EXIT_BOUND_MS, `exited after ${outcome.ms} ms`);
  });

  test("policy-service ctl with a wrong password says which variable, too", TEST_TIMEOUT, async () => {
    const wrong = randomSecret("wrong-pw");
    const ctl = runService(["ctl", "status"], { NATS_URL: users!.url, NATS_USER: "policy-service", NATS_PASSWORD_FILE: file("ctl-wrong-password", wrong) }, EXIT_BOUND_MS);
    assert.equal(ctl.code, 1, ctl.stderr);
    assert.match(ctl.stderr, /^cannot connect to NATS: NATS_PASSWORD_FILE: the NATS server refused user "policy-service".*Authorization Violation/);
    assert.ok(!`${ctl.stdout}${ctl.stderr}`.includes(wrong), "the password is not printed");
  });

  test("an unknown user", TEST_TIMEOUT, async () => {
    assertOneLineNaming(await runToExit({ NATS_URL: users!.url, NATS_USER: "intruder", NATS_PASSWORD_FILE: file("intruder-password", password) }), "NATS_PASSWORD_FILE", [password]);
  });

  test("an NKey the server does not know", TEST_TIMEOUT, async () => {
    const stranger = new TextDecoder().decode(createUser().getSeed());
    assertOneLineNaming(await runToExit({ NATS_URL: users!.url, NATS_NKEY_SEED_FILE: file("stranger.nk", stranger) }), "NATS_NKEY_SEED_FILE", [stranger]);
  });

  test("no credentials at all where the server requires them", TEST_TIMEOUT, async () => {
    const line = assertOneLineNaming(await runToExit({ NATS_URL: users!.url }), "NATS_CREDS_FILE");
    assert.match(line, /NATS_NKEY_SEED_FILE, NATS_USER \+ NATS_PASSWORD_FILE, NATS_TOKEN_FILE/, "lists the ways to authenticate");
  });

  test("a wrong token", TEST_TIMEOUT, async () => {
    const wrong = randomSecret("wrong-token");
    assertOneLineNaming(await runToExit({ NATS_URL: tokens!.url, NATS_TOKEN_FILE: file("wrong-token", wrong) }), "NATS_TOKEN_FILE", [wrong, token]);
  });
});

describe("decentralised auth: a .creds file the operator-mode server refuses", () => {
  let server: NatsServer | undefined;
  let operator: Awaited<ReturnType<typeof makeOperator>> | undefined;
  before(async () => {
    operator = await makeOperator({ users: {} });
    server = await startNatsServer({ extraConfig: operator.serverConfig });
  }, TEST_TIMEOUT);
  after(async () => { await server?.stop(); });

  test("a user of another operator", TEST_TIMEOUT, async () => {
    const other = await makeOperator({ users: { "policy-service": documentedPermissions("service") } });
    assertOneLineNaming(await runToExit({ NATS_URL: server!.url, NATS_CREDS_FILE: file("other.creds", other.creds["policy-service"]!) }), "NATS_CREDS_FILE");
  });

  test("an expired user JWT", TEST_TIMEOUT, async () => {
    const expired = await operator!.userCreds("policy-service", documentedPermissions("service"), { expiresInSeconds: -60 });
    assertOneLineNaming(await runToExit({ NATS_URL: server!.url, NATS_CREDS_FILE: file("expired.creds", expired) }), "NATS_CREDS_FILE");
  });
});

describe("TLS that cannot work ends start-up with one line naming the variable", () => {
  let pki: Pki | undefined;
  let tlsServer: NatsServer | undefined;
  let plainServer: NatsServer | undefined;
  let mutualServer: NatsServer | undefined;
  before(async () => {
    pki = makePki(mkdtempSync(join(dir, "pki-")));
    tlsServer = await startNatsServer({ extraConfig: `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}" }` });
    plainServer = await startNatsServer();
    mutualServer = await startNatsServer({ extraConfig: `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.ca.cert}", verify: true }` });
  }, TEST_TIMEOUT);
  after(async () => {
    await tlsServer?.stop();
    await plainServer?.stop();
    await mutualServer?.stop();
  });

  test("a server that requires client certificates (verify: true) and no NATS_CERT_FILE", TEST_TIMEOUT, async () => {
    // The client sees only a timeout (the server drops it after the handshake); the service explains it.
    const line = assertOneLineNaming(await runToExit({ NATS_URL: `tls://localhost:${mutualServer!.port}`, NATS_CA_FILE: pki!.ca.cert }), "NATS_CERT_FILE");
    assert.match(line, /requires a client certificate/);
  });

  test("a client certificate the server does not accept: retried (the client sees a timeout), with a hint naming NATS_CERT_FILE", TEST_TIMEOUT, async () => {
    const otherCa = makeCa(mkdtempSync(join(dir, "foreign-ca-")), "foreign-ca");
    const foreign = makeClientCert(mkdtempSync(join(dir, "foreign-")), otherCa, "foreign");
    const service = startService({ NATS_URL: `tls://localhost:${mutualServer!.port}`, LOG_LEVEL: "info", NATS_CA_FILE: pki!.ca.cert, NATS_CERT_FILE: foreign.cert, NATS_KEY_FILE: foreign.key });
    try {
      const warning = await service.waitForLog((l) => l.msg === "NATS not reachable yet; retrying", 30_000);
      assert.match(String(warning.hint), /requires client certificates.*NATS_CERT_FILE/);
      assert.ok(service.running, "still waiting (the rejection cannot be told from a slow server)");
    } finally {
      await service.stop();
    }
  });

  test("a CA that did not sign the server's certificate (wrong NATS_CA_FILE)", TEST_TIMEOUT, async () => {
    const other = makeCa(mkdtempSync(join(dir, "other-ca-")), "other-ca");
    const line = assertOneLineNaming(await runToExit({ NATS_URL: `tls://localhost:${tlsServer!.port}`, NATS_CA_FILE: other.cert }), "NATS_CA_FILE");
    assert.match(line, /does not verify/);
  });

  test("a TLS server and no NATS_CA_FILE (the system CAs do not know the test CA)", TEST_TIMEOUT, async () => {
    assertOneLineNaming(await runToExit({ NATS_URL: `tls://localhost:${tlsServer!.port}` }), "NATS_CA_FILE");
  });

  test("a certificate that does not name the host of NATS_URL", TEST_TIMEOUT, async () => {
    const elsewhere = makeServerCert(mkdtempSync(join(dir, "elsewhere-")), pki!.ca, "elsewhere", ["DNS:nats.other.example"]);
    const server = await startNatsServer({ extraConfig: `tls { cert_file: "${elsewhere.cert}", key_file: "${elsewhere.key}" }` });
    try {
      const line = assertOneLineNaming(await runToExit({ NATS_URL: `tls://localhost:${server.port}`, NATS_CA_FILE: pki!.ca.cert }), "NATS_URL");
      assert.match(line, /not named in the NATS server's certificate/);
    } finally {
      await server.stop();
    }
  });

  test("a tls:// URL to a server without TLS is refused, not used in plain text", TEST_TIMEOUT, async () => {
    const line = assertOneLineNaming(await runToExit({ NATS_URL: `tls://127.0.0.1:${plainServer!.port}` }), "NATS_URL");
    assert.match(line, /does not offer TLS/);
  });
});

describe("a server that is not up yet is waited for", () => {
  test("the service retries, logging why, then starts once the server is there", TEST_TIMEOUT, async () => {
    const port = await freePort();
    const password = randomSecret("pw");
    const service = startService({ NATS_URL: `nats://127.0.0.1:${port}`, LOG_LEVEL: "info", NATS_USER: "policy-service", NATS_PASSWORD_FILE: file("late-password", password) });
    let server: NatsServer | undefined;
    try {
      await service.waitForLog((l) => l.msg === "NATS not reachable yet; retrying", 15_000);
      await sleep(1500);
      assert.ok(service.running, "still waiting, not exited");
      server = await startNatsServer({
        port,
        extraConfig: `authorization { SERVICE = ${documentedPermissionsText("service")}\n users = [ { user: "policy-service", password: "${password}", permissions: $SERVICE } ] }`,
      });
      await service.ready(45_000);
      assert.deepEqual(service.lines.filter((l) => l.level >= 50), [], "no error logged while waiting");
    } finally {
      await service.stop();
      await server?.stop();
    }
  });
});
