/**
 * What the authentication tests share:
 *   await runLifecycle(nc)        every documented command example (create … archive, rules, sets, exemptions),
 *                                 the evaluation examples and the query examples; asserts each outcome and
 *                                 returns the raw replies and the acknowledged events (seq, type)
 *   violations(logPath)           the permission violations in a nats-server log file
 *   assertNoSecretLeak(secrets, service, replies)
 *                                 none of the secret strings in the service's output, its /proc cmdline and
 *                                 environ, or any reply
 *   randomSecret(prefix)          a secret nobody could find by accident
 */
import * as assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { NatsConnection } from "@nats-io/nats-core";
import { SERVICE_ROOT, type ServiceProcess } from "./nats.js";
import { VALID_EXAMPLES, exampleBody } from "../../src/protocol/examples.js";

type Json = Record<string, any>;
interface Generator {
  QUERY_EXAMPLES: { query: string; payload: Json; replyKeys: string[] }[];
  EVALUATION_SETUP: { command: string; payload: Json }[];
  EVALUATION_EXAMPLES: { endpoint: string; title: string; payload: Json; expect: { ok: boolean; status?: string; code?: string } }[];
}
const generator = (await import(pathToFileURL(join(SERVICE_ROOT, "scripts", "gen-protocol-doc.mjs")).href)) as Generator;

export function randomSecret(prefix: string): string {
  return `${prefix}-${randomBytes(18).toString("base64url")}`;
}

/** The documented story end to end; returns every reply as received (for the leak check). */
export async function runLifecycle(nc: NatsConnection): Promise<{ replies: string[]; acknowledged: { seq: number; type: string }[] }> {
  const replies: string[] = [];
  const send = async (subject: string, body: string): Promise<Json> => {
    const msg = await nc.request(subject, body, { timeout: 15_000 });
    replies.push(msg.string());
    return msg.json<Json>();
  };
  const acknowledged: { seq: number; type: string }[] = [];
  for (const example of VALID_EXAMPLES) {
    const reply = await send(`policy.commands.${example.command}`, exampleBody(example));
    assert.equal(reply.ok, true, `${example.title}: ${JSON.stringify(reply)}`);
    assert.equal(reply.events?.[0]?.type, example.event, example.title);
    acknowledged.push(...reply.events.map((e: Json) => ({ seq: e.seq, type: e.type })));
  }
  for (const step of generator.EVALUATION_SETUP) {
    const reply = await send(`policy.commands.${step.command}`, JSON.stringify(step.payload));
    assert.equal(reply.ok, true, `setup ${step.command}: ${JSON.stringify(reply)}`);
    acknowledged.push(...reply.events.map((e: Json) => ({ seq: e.seq, type: e.type })));
  }
  for (const example of generator.EVALUATION_EXAMPLES) {
    const reply = await send(`policy.commands.${example.endpoint}`, JSON.stringify(example.payload));
    assert.equal(reply.ok, example.expect.ok, `${example.title}: ${JSON.stringify(reply)}`);
    if (example.expect.ok && example.expect.status) assert.equal(reply.result.status, example.expect.status, example.title);
    if (!example.expect.ok) assert.equal(reply.error.code, example.expect.code, example.title);
  }
  for (const example of generator.QUERY_EXAMPLES) {
    const reply = await send(`policy.queries.${example.query}`, JSON.stringify(example.payload));
    assert.equal(reply.ok, true, `${example.query}: ${JSON.stringify(reply)}`);
  }
  return { replies, acknowledged };
}

export function violations(logPath: string): string[] {
  assert.ok(existsSync(logPath), `nats-server log file ${logPath} written`);
  return readFileSync(logPath, "utf8").split("\n").filter((l) => /(Publish|Subscription|Permissions) Violation/i.test(l));
}

function procFile(pid: number, name: string): string {
  try {
    return readFileSync(`/proc/${pid}/${name}`).toString("utf8").replaceAll("\0", " ");
  } catch (err) {
    throw new Error(`cannot read /proc/${pid}/${name} of the running service (${(err as Error).message})`);
  }
}

/** Fails when any secret appears where it must not; the service must be running (its /proc entries are read). */
export function assertNoSecretLeak(secrets: Record<string, string>, service: ServiceProcess, replies: string[]): void {
  assert.ok(service.running, "the service is running (its /proc entries are checked)");
  const cmdline = procFile(service.pid, "cmdline");
  const environ = procFile(service.pid, "environ");
  assert.ok(cmdline.includes("main.js"), `read the service's own cmdline: ${cmdline}`);
  const output = [...service.lines.map((l) => JSON.stringify(l)), ...service.rawOutput].join("\n");
  assert.ok(output.length > 0 && service.lines.length > 10, "the service logged (at trace level)");
  const places: Record<string, string> = { "log output": output, "/proc/<pid>/cmdline": cmdline, "/proc/<pid>/environ": environ, replies: replies.join("\n") };
  for (const [secretName, secret] of Object.entries(secrets)) {
    assert.ok(secret.length >= 16, `${secretName}: a secret long enough to be found only where it leaked`);
    for (const [place, text] of Object.entries(places)) {
      assert.ok(!text.includes(secret), `${secretName} appears in the service's ${place}`);
    }
  }
}
