// The test helpers' freePort: a port taken from the kernel's ephemeral range and released can become the source
// port of a connection before its server binds it. That happened in CI: a cluster node's own routes took the port
// handed to another node ("bind: address already in use"), about one cluster start in ten here.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { createServer } from "node:net";
import { ephemeralPortRange, freePort } from "../helpers/nats.js";

test("freePort hands out distinct, bindable ports below the kernel's ephemeral range", async () => {
  const [ephemeralLow] = ephemeralPortRange();
  const ports: number[] = [];
  for (let i = 0; i < 200; i++) ports.push(await freePort());
  assert.equal(new Set(ports).size, ports.length, "no port handed out twice");
  const inRange = ports.filter((p) => p >= ephemeralLow);
  assert.deepEqual(inRange, [], `ports at or above the ephemeral range's start ${ephemeralLow}`);
  // Each one can really be bound (spot check).
  for (const port of ports.slice(0, 10)) {
    await new Promise<void>((resolve, reject) => {
      const srv = createServer().once("error", reject).listen(port, "127.0.0.1", () => srv.close(() => resolve()));
    });
  }
});
