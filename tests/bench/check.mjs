// The JSON checks of tests/bench/smoke: node check.mjs MODE JSON_FILE OUTPUT_FILE. Prints one line per check that
// held; on the first that does not, prints what was found and exits 1. Structure and completeness only, never a
// figure's size: every request answered, every row and field docs/performance.md reads present and finite.
import { readFileSync } from "node:fs";

const [mode, jsonFile, outFile] = process.argv.slice(2);
const data = JSON.parse(readFileSync(jsonFile, "utf8"));
const output = readFileSync(outFile, "utf8");
const held = [];

/** `record`: false for the parts of a check that is reported as one line. */
function check(what, condition, found, record = true) {
  if (!condition) {
    console.log(`${what}: no. Found: ${JSON.stringify(found)?.slice(0, 2000)}`);
    process.exit(1);
  }
  if (record) held.push(what);
}
const positive = (x) => typeof x === "number" && Number.isFinite(x) && x > 0;
const finite = (x) => typeof x === "number" && Number.isFinite(x);

const CEILINGS = ["raw echo", "raw JetStream publish", "minimal command"];
const SERVICE_PHASES = ["create", "update (1000 aggregates)", "update with command_id (1000 aggregates)", "evaluate (3 rules, audit on)"];
const HOT = "update (4 hot aggregates)"; // at 16 in flight and more: four lanes need more than one request
const CONTENTION_PHASES = ["minimal command", "update (1000 aggregates)", HOT];
// The rows that report a conflict-retry rate: the hot aggregates, and the updates of three instances.

if (mode === "quick") {
  const rows = data.results ?? [];
  const expected = [];
  for (const topology of ["R1 (1 node)", "R3 (3 nodes)"]) {
    for (const inFlight of [1, 64]) {
      for (const name of [...CEILINGS, ...SERVICE_PHASES, ...(inFlight > 1 ? [HOT] : [])]) expected.push({ topology, inFlight, name });
    }
    for (const name of CONTENTION_PHASES) expected.push({ topology: `${topology}, 3 instances`, inFlight: 64, name });
  }
  for (const want of expected) {
    const row = rows.find((r) => r.topology === want.topology && r.inFlight === want.inFlight && r.name === want.name);
    const label = `${want.topology}, ${want.name} at ${want.inFlight} in flight`;
    check(`${label}: a row`, row !== undefined, rows.map((r) => `${r.topology} / ${r.name} / ${r.inFlight}`), false);
    check(`${label}: every request answered`, positive(row.ops) && row.errors === 0, row, false);
    check(`${label}: rate, p50, p99 and CPU per operation`, [row.reqPerSec, row.p50ms, row.p99ms, row.cpuUsPerOp?.total].every(positive), row, false);
    const parts = ["every request answered", "rate, p50, p99, CPU"];
    if (!CEILINGS.includes(want.name)) {
      check(`${label}: a ratio to its ceiling`, typeof row.ceiling === "string" && positive(row.ratio) && positive(row.p50Ratio), row, false);
      parts.push("its ratios");
    }
    if (want.name === HOT || (want.topology.endsWith("instances") && want.name.startsWith("update"))) {
      check(`${label}: conflict retries counted`, finite(row.conflictRetryRate), row, false);
      parts.push("conflict retries");
    }
    held.push(`${label}: ${parts.join(", ")}`);
  }
  check(
    "R3: the leader of each of the four streams",
    ["BENCH_PUB", "BENCH_MIN", "POLICY_EVENTS", "POLICY_AUDIT"].every((s) => /^n\d-/.test(data.stream_leaders?.["R3 (3 nodes)"]?.[s] ?? "")),
    data.stream_leaders,
  );
  check("the service's RSS after the phases, both topologies", Object.values(data.memory ?? {}).filter(positive).length === 2, data.memory);
  check("the table printed, with its ratio column", /\| topology +\| phase +\|.*\| vs ceiling +\|/.test(output), output.slice(-3000));
} else if (mode === "restart") {
  check("20,000 events in the stream", data.events_in_stream === 20000, data.events_in_stream);
  const loads = data.cold_loads ?? {};
  for (const key of ["cold load ratio 10,000/10, snapshots on", "cold load ratio 10,000/10, snapshots off"]) {
    check(`${key}: measured`, positive(loads[key]), loads);
  }
  check("two restarts: without and with the read-model checkpoint", data.restarts?.length === 2, data.restarts);
  for (const [i, restart] of data.restarts.entries()) {
    const label = `restart ${i + 1} (checkpoint ${restart.checkpoint})`;
    check(`${label}: first command, first query answer and query data timed`, [restart.ms_to_first_command, restart.ms_to_first_query_answer, restart.ms_to_query_data].every(positive), restart);
    // docs/performance.md: once registered, a query is answered or gets a coded `unavailable`, never "no responders".
    check(`${label}: no "no responders" once registered`, restart.probes_no_responders_after_registered === 0, restart);
  }
  check("the second restart used the checkpoint the first wrote", data.restarts[1].checkpoint === "on" && data.restarts[1].checkpoint_used === "used", data.restarts[1]);
} else if (mode === "memory") {
  check("2,000 policies created", data.policies_created === 2000 && data.events_in_stream >= 2000, data);
  check("RSS at the peak, after the creates and after a restart", [data.rss_mib_peak_while_creating, data.rss_mib_after_creates, data.rss_mib_after_restart].every(positive), data);
  check("the restart timed", [data.restart_ms_to_first_command, data.restart_ms_to_query_data].every(positive), data);
} else if (mode === "steady") {
  check("requests sent at the rate, none failed", positive(data.requests_ok) && data.requests_failed === 0, data);
  check("p50 and p99", positive(data.p50_ms) && positive(data.p99_ms), data);
  check("RSS samples over the run", Array.isArray(data.samples) && data.samples.length >= 3 && data.samples.every((s) => positive(s.rss_mib)), data.samples);
  // 6 s is inside the 60 s warm-up: nothing to fit, so "flat" is not judged rather than false.
  check('a run within its warm-up: "flat" not judged (null), and why', data.flat === null && typeof data.flat_not_judged === "string", { flat: data.flat, flat_not_judged: data.flat_not_judged });
} else {
  console.log(`unknown mode ${mode}`);
  process.exit(2);
}
console.log(held.join("\n"));
