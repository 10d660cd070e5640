// The package version, read from the package.json this code ships in (dist/ or .build/src/ alike).
import { readFileSync } from "node:fs";

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
