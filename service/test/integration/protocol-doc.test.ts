// docs/protocol.md is generated from the service's schemas and examples; this fails when it is stale.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { SERVICE_ROOT } from "../helpers/nats.js";

const REGENERATE = "cd service && npm run build && node scripts/gen-protocol-doc.mjs";

test("docs/protocol.md matches what the generator renders from the current code", async () => {
  // A plain .mjs script (no types): imported by URL so tsc does not need declarations for it.
  const generator = (await import(pathToFileURL(join(SERVICE_ROOT, "scripts", "gen-protocol-doc.mjs")).href)) as {
    renderProtocolDoc(): Promise<string>;
    DOC_PATH: string;
  };
  const expected = await generator.renderProtocolDoc();
  const actual = readFileSync(generator.DOC_PATH, "utf8");
  if (actual !== expected) {
    const a = actual.split("\n");
    const e = expected.split("\n");
    const line = a.findIndex((l, i) => l !== e[i]);
    assert.fail(`docs/protocol.md is stale (first difference at line ${line + 1}:\n  doc:       ${a[line]}\n  generated: ${e[line]})\nregenerate: ${REGENERATE}`);
  }
});
