// The service's log lines leave the process when they are logged: a line logged right before the process is killed
// (SIGKILL: no exit handler runs) is not lost. pino's default stream handed each line to a libuv pool thread, and a
// kill at that moment lost it (and the hop cost 10-16 % of the CPU of a command, docs/performance.md).
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
