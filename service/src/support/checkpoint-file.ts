// The read-model checkpoint's file format (issue 12, startup): the projection's state at stream sequence N, so a
// restart replays only the events after N. Two lines: a header (JSON) that names what the state was built from and the
// sha256 of the body, then the body (JSON). A checkpoint is only ever a shortcut: any doubt about it (checksum,
// format, build, truncation) is a coded reason to ignore it and replay the stream in full.
import { createHash } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { withNullFields } from "./compact-state.js";

/** Bumped whenever the body's layout changes; the build's version is checked as well (states may change shape). */
export const CHECKPOINT_FORMAT = "policy-service-read-model/1";

export interface CheckpointHeader {
  format: string;
  /** The package version of the build that wrote it: a state from another build is never trusted. */
  build: string;
  stream: string;
  /** The stream's `created` timestamp (stream info): a stream recreated under the same name is another stream. */
  streamCreated: string;
  /**
   * The stream's first sequence when it was written: a higher one now means events were removed since (a purge, or
   * the stream's max_age), which a full replay would not see; instances must not diverge on that.
   */
  firstSeq: number;
  /** The command-id index's window (ms) it was written with: a shorter one lacks entries a longer window needs. */
  commandWindowMs: number;
  /** The last applied stream sequence. */
  seq: number;
  /** event_id of the event at `seq` (checked with one direct get on load); null when that event was unreadable. */
  eventId: string | null;
  sha256: string;
}

export interface CheckpointBody {
  /** [aggregate id, seq of its last applied event, state]; a stored state is written as its full state (withNullFields). */
  aggregates: [string, number, unknown][];
  /** The command-id index in stream order: [occurred_at in ms, command id, stream seq]. */
  commands: [number, string, number][];
}

export interface Checkpoint {
  header: CheckpointHeader;
  body: CheckpointBody;
}

export type CheckpointRejection =
  | "checkpoint_unreadable"
  | "checkpoint_truncated"
  | "checkpoint_checksum_mismatch"
  | "checkpoint_format_mismatch"
  | "checkpoint_build_mismatch";

export type DecodeResult =
  | { ok: true; checkpoint: Checkpoint }
  | { ok: false; code: CheckpointRejection; reason: string };

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** One aggregate's entry as JSON: the state with its null fields, whether it is held stored or full. */
function aggregateJson([id, seq, state]: CheckpointBody["aggregates"][number]): string {
  return JSON.stringify([id, seq, withNullFields(state)]);
}

export function encodeCheckpoint(header: Omit<CheckpointHeader, "sha256" | "format">, body: CheckpointBody): string {
  const bodyText = `{"aggregates":[${body.aggregates.map(aggregateJson).join(",")}],"commands":${JSON.stringify(body.commands)}}`;
  const full: CheckpointHeader = { format: CHECKPOINT_FORMAT, ...header, sha256: sha256(bodyText) };
  return `${JSON.stringify(full)}\n${bodyText}\n`;
}

/**
 * The same content as encodeCheckpoint, made in slices of `sliceSize` aggregates with a turn of the event loop between
 * them, so requests are served meanwhile (one JSON.stringify of 50,000 states held the loop for over a second).
 * Consistent only because states are never mutated once stored (the projection replaces them): the caller captures
 * the list of states synchronously. Returns the content's parts (to write without joining them) and the longest
 * synchronous stretch in ms.
 */
export async function encodeCheckpointInSlices(
  header: Omit<CheckpointHeader, "sha256" | "format">,
  body: CheckpointBody,
  sliceSize = 1000,
): Promise<{ parts: string[]; longestSliceMs: number }> {
  const hash = createHash("sha256");
  const bodyParts: string[] = [];
  let longestSliceMs = 0;
  const push = (part: string) => {
    bodyParts.push(part);
    hash.update(part);
  };
  push('{"aggregates":[');
  for (let start = 0; start < body.aggregates.length; start += sliceSize) {
    const began = performance.now();
    const slice = body.aggregates.slice(start, start + sliceSize).map(aggregateJson).join(",");
    push(start === 0 ? slice : `,${slice}`);
    longestSliceMs = Math.max(longestSliceMs, performance.now() - began);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const began = performance.now();
  push(`],"commands":${JSON.stringify(body.commands)}}`);
  const full: CheckpointHeader = { format: CHECKPOINT_FORMAT, ...header, sha256: hash.digest("hex") };
  longestSliceMs = Math.max(longestSliceMs, performance.now() - began);
  return { parts: [`${JSON.stringify(full)}\n`, ...bodyParts, "\n"], longestSliceMs };
}

/** Checks format, build and checksum; never throws. */
export function decodeCheckpoint(text: string, expectedBuild: string): DecodeResult {
  const newline = text.indexOf("\n");
  if (newline < 0 || !text.endsWith("\n") || text.indexOf("\n", newline + 1) !== text.length - 1) {
    return { ok: false, code: "checkpoint_truncated", reason: "the file does not hold a complete header and body" };
  }
  let header: CheckpointHeader;
  try {
    header = JSON.parse(text.slice(0, newline)) as CheckpointHeader;
  } catch {
    return { ok: false, code: "checkpoint_unreadable", reason: "the header is not JSON" };
  }
  if (typeof header !== "object" || header === null || header.format !== CHECKPOINT_FORMAT) {
    return {
      ok: false,
      code: "checkpoint_format_mismatch",
      reason: `the file's format is ${JSON.stringify((header as { format?: unknown } | null)?.format)}, this build reads ${CHECKPOINT_FORMAT}`,
    };
  }
  if (header.build !== expectedBuild) {
    return {
      ok: false,
      code: "checkpoint_build_mismatch",
      reason: `written by build ${JSON.stringify(header.build)}, this is ${expectedBuild}: its states may have another shape`,
    };
  }
  if (
    typeof header.stream !== "string" || typeof header.streamCreated !== "string" ||
    !Number.isSafeInteger(header.seq) || header.seq < 1 || typeof header.sha256 !== "string" ||
    !Number.isSafeInteger(header.firstSeq) || header.firstSeq < 0 ||
    !Number.isSafeInteger(header.commandWindowMs) || header.commandWindowMs < 0 ||
    !(typeof header.eventId === "string" || header.eventId === null)
  ) {
    return { ok: false, code: "checkpoint_unreadable", reason: "the header lacks a field or has one of the wrong type" };
  }
  const bodyText = text.slice(newline + 1, -1);
  if (sha256(bodyText) !== header.sha256) {
    return { ok: false, code: "checkpoint_checksum_mismatch", reason: "the body's sha256 differs from the header's" };
  }
  let body: CheckpointBody;
  try {
    body = JSON.parse(bodyText) as CheckpointBody;
  } catch {
    return { ok: false, code: "checkpoint_unreadable", reason: "the body is not JSON" };
  }
  if (!Array.isArray(body?.aggregates) || !Array.isArray(body?.commands)) {
    return { ok: false, code: "checkpoint_unreadable", reason: "the body lacks aggregates or commands" };
  }
  return { ok: true, checkpoint: { header, body } };
}

/**
 * Writes atomically: a temporary file beside the target (mode 0600: the read model is policy data), fsync, rename
 * over the target, fsync of the directory. A crash leaves the old file or the new one, never half of one.
 */
export async function writeCheckpointFile(path: string, content: string | readonly string[]): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const handle = await open(temp, "w", 0o600);
  try {
    await handle.chmod(0o600);
    for (const part of typeof content === "string" ? [content] : content) await handle.write(part, null, "utf8");
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await handle.close();
  await rename(temp, path);
  const dir = await open(dirname(path), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
