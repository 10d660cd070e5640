// The package version, read from the package.json this code ships in (dist/ or .build/src/ alike).
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

export function packageVersion(): string {
  if (cached) return cached;
  for (const rel of ["../package.json", "../../package.json", "../../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "policy-service" && typeof pkg.version === "string") return (cached = pkg.version);
    } catch { /* try the next level */ }
  }
  return (cached = "0.0.0-unknown");
}

let cachedBuild: string | undefined;

/**
 * The package version plus a digest of this build's compiled code (every .js file beside app/, in a fixed order): what
 * a read-model checkpoint is bound to. The version alone is not enough: builds between two releases share it while
 * the states they keep may differ in shape.
 */
export function buildFingerprint(): string {
  if (cachedBuild) return cachedBuild;
  const root = fileURLToPath(new URL("../", import.meta.url));
  const hash = createHash("sha256");
  const files = (readdirSync(root, { recursive: true, encoding: "utf8" }) as string[]).filter((f) => f.endsWith(".js")).sort();
  for (const file of files) {
    hash.update(file).update("\0").update(readFileSync(root + file)).update("\0");
  }
  return (cachedBuild = `${packageVersion()}+${hash.digest("hex").slice(0, 16)}`);
}
