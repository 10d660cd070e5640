// The service's log lines leave the process when they are logged: a line logged right before the process is killed
// (SIGKILL: no exit handler runs) is not lost. pino's default stream handed each line to a libuv pool thread, and a
// kill at that moment lost it (and the hop cost 9-14 % of the CPU of a command, docs/performance.md).
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const LOGGER = fileURLToPath(new URL("../../src/support/logger.js", import.meta.url));

test("a line logged right before a SIGKILL reaches stdout, several times in a row", () => {
  const script = `
    const { createLogger, componentLogger } = await import(${JSON.stringify(LOGGER)});
    const log = componentLogger(createLogger("info"), "test");
    for (let i = 0; i < 20; i++) log.info({ i }, "line");
    log.warn({ last: true }, "the last line");
    process.kill(process.pid, "SIGKILL");
  `;
  for (let run = 0; run < 5; run++) {
    const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
    assert.equal(child.signal, "SIGKILL", child.stderr);
    const lines = child.stdout.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 21, `run ${run}: ${lines.length} of 21 lines arrived`);
    assert.equal(lines.at(-1)!.msg, "the last line");
    assert.equal(lines.at(-1)!.component, "test");
  }
});

test("only the fixed-fields logger skips redaction; the logger it came from still censors secrets", () => {
  const script = `
    const { createLogger, componentLogger, fixedFieldsLogger } = await import(${JSON.stringify(LOGGER)});
    const log = componentLogger(createLogger("info"), "commands");
    const handled = fixedFieldsLogger(log);
    handled.info({ command: "create", ok: true, version: 1 }, "command handled");
    log.warn({ token: "s3cret-token", nested: { password: "s3cret-password" } }, "secrets");
    handled.debug({ command: "create" }, "below the level");
  `;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
  assert.equal(child.status, 0, child.stderr);
  assert.doesNotMatch(child.stdout, /s3cret/);
  const lines = child.stdout.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines.length, 2);
  assert.deepEqual(
    { ...lines[0], time: undefined, pid: undefined },
    { level: 30, level_name: "info", time: undefined, pid: undefined, service: "policy-service", component: "commands", command: "create", ok: true, version: 1, msg: "command handled" },
  );
  assert.equal(lines[1]!.token, "[redacted]");
  assert.deepEqual(lines[1]!.nested, { password: "[redacted]" });
});
