// The layers of service/src point one way (issue 12): every import goes down a floor, never back up, and no two
// files import each other. Floors, top to bottom:
//   main.ts                  the entry point: runs the service (app/runtime.ts, the one place that wires it) or ctl
//   ctl/                     the operator's command line (talks to a running service over NATS only)
//   app/                     the use cases: the command pipeline, queries, evaluation, the runtime that wires them
//   adapters/nats/           NATS and JetStream: event store, projection, micro service, audit, expiry, set-up
//   support/, protocol/      what every floor above may use (config, logging, backoff, replies) / the wire examples
//   domain/                  the pure domain: decide, evolve, its commands and vocabulary (no I/O, see domainPurity)
// Reads the sources themselves, so a new file or import is checked without being listed here.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const SRC = resolve(fileURLToPath(new URL("../../../src/", import.meta.url)));

/** Floor of a file (higher may import lower); files of one floor and folder may import each other (no cycles). */
const FLOORS: { floor: number; prefix: string }[] = [
  { floor: 5, prefix: "main.ts" },
  { floor: 4, prefix: "ctl/" },
  { floor: 3, prefix: "app/" },
  { floor: 2, prefix: "adapters/nats/" },
  { floor: 1, prefix: "support/" },
  { floor: 1, prefix: "protocol/" },
  { floor: 0, prefix: "domain/" },
];

function floorOf(file: string): { floor: number; prefix: string } {
  const found = FLOORS.find((f) => file === f.prefix || file.startsWith(f.prefix));
  assert.ok(found, `${file} is in no floor of this test: place it in one of ${FLOORS.map((f) => f.prefix).join(", ")}`);
  return found;
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith(".ts") ? [relative(SRC, path)] : [];
  });
}

interface Import { from: string; to: string; typeOnly: boolean; line: number }

/** Relative imports and re-exports (static and dynamic) of one file, resolved to files under src/. */
function importsOf(file: string): Import[] {
  const text = readFileSync(join(SRC, file), "utf8");
  const out: Import[] = [];
  const pattern = /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^;'"]*?\sfrom\s+)?["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)/g;
  for (const m of text.matchAll(pattern)) {
    const specifier = m[3] ?? m[4]!;
    const target = relative(SRC, resolve(dirname(join(SRC, file)), specifier)).replace(/\.js$/, ".ts");
    const line = text.slice(0, m.index).split("\n").length + (m[0].startsWith("\n") ? 1 : 0);
    out.push({ from: file, to: target, typeOnly: m[2] !== undefined, line });
  }
  return out;
}

const files = sources(SRC);
const imports = files.flatMap(importsOf);

test("the layer test sees the sources and their imports", () => {
  assert.ok(files.includes("main.ts") && files.some((f) => f.startsWith("domain/")), `sources under ${SRC}: ${files.join(", ")}`);
  assert.ok(imports.length > 50, `only ${imports.length} imports found: the pattern no longer matches the code`);
  for (const i of imports) assert.ok(files.includes(i.to), `${i.from}:${i.line} imports ${i.to}, which is not a source file`);
});

test("every import goes down a floor or stays in its own folder", () => {
  const upward: string[] = [];
  for (const i of imports) {
    const from = floorOf(i.from);
    const to = floorOf(i.to);
    if (from.prefix === to.prefix) continue;
    if (to.floor < from.floor) continue;
    upward.push(`${i.from}:${i.line} → ${i.to} (${from.prefix} on floor ${from.floor} imports ${to.prefix} on floor ${to.floor})`);
  }
  assert.deepEqual(upward, [], `imports that run back up (or sideways between folders of one floor):\n${upward.join("\n")}`);
});

test("no import cycles (type-only imports count, except among the domain's own types)", () => {
  const edges = new Map<string, string[]>();
  for (const i of imports) {
    // The domain's states and events name each other's types (types.ts ↔ policy.ts …): erased at compile time.
    if (i.typeOnly && i.from.startsWith("domain/") && i.to.startsWith("domain/")) continue;
    edges.set(i.from, [...(edges.get(i.from) ?? []), i.to]);
  }
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (file: string) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      cycles.push([...path.slice(path.indexOf(file)), file].join(" → "));
      return;
    }
    state.set(file, "open");
    path.push(file);
    for (const next of edges.get(file) ?? []) visit(next);
    path.pop();
    state.set(file, "done");
  };
  for (const file of files) visit(file);
  assert.deepEqual(cycles, [], `import cycles:\n${cycles.join("\n")}`);
});
