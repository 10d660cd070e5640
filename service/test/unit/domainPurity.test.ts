// The domain is pure: no I/O, no clock, no randomness, no NATS or logging imports. Checked on the sources,
// so a later edit that reaches for Date.now() or the NATS client fails here rather than in a flaky replay.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

// Compiled to service/.build/test/unit/, so the service root is three levels up.
const SERVICE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const DOMAIN = join(SERVICE_ROOT, "src", "domain");

/** Modules a pure domain may import: validation, linear-time regex, and hashing (pure computation). */
const ALLOWED_PACKAGES = new Set(["zod", "re2js", "node:crypto"]);
const FORBIDDEN_CALLS: [RegExp, string][] = [
  [/\bDate\.now\s*\(/, "Date.now() (time arrives as ctx.now)"],
  [/\bnew Date\s*\(\s*\)/, "new Date() (time arrives as ctx.now)"],
  [/\bMath\.random\s*\(/, "Math.random() (decide must be deterministic)"],
  [/\brandomUUID\s*\(|\brandomBytes\s*\(/, "random ids (the app injects ids)"],
  [/\bprocess\.(env|argv|exit|stdout|stderr)\b/, "process access"],
  [/\b(setTimeout|setInterval|setImmediate)\s*\(/, "timers"],
  [/\bfetch\s*\(/, "network I/O"],
];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith(".ts") ? [path] : [];
  });
}

/** Strips comments so prose that mentions Date.now() does not count. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
}

test("src/domain imports nothing impure and reads no clock or randomness", () => {
  const files = sources(DOMAIN);
  assert.ok(files.length >= 8, `found the domain sources (${files.length})`);
  const problems: string[] = [];
  for (const file of files) {
    const text = code(readFileSync(file, "utf8"));
    const where = relative(SERVICE_ROOT, file);
    for (const match of text.matchAll(/\bfrom\s+["']([^"']+)["']|\bimport\s*\(\s*["']([^"']+)["']/g)) {
      const specifier = match[1] ?? match[2] ?? "";
      if (specifier.startsWith(".")) {
        if (specifier.includes("/adapters/") || specifier.includes("/app/")) problems.push(`${where}: imports ${specifier}`);
        continue;
      }
      if (!ALLOWED_PACKAGES.has(specifier)) problems.push(`${where}: imports ${specifier}`);
    }
    for (const [pattern, what] of FORBIDDEN_CALLS) if (pattern.test(text)) problems.push(`${where}: uses ${what}`);
  }
  assert.deepEqual(problems, []);
});
