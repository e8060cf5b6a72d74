// Fails when src/generated/api.ts is not what openapi-typescript makes of the
// committed docs/openapi.json (which tests/api/operations.rs keeps equal to what the
// server serves): the client's types never drift from the server.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dir = mkdtempSync(join(tmpdir(), "shoal-api-"));
try {
  const fresh = join(dir, "api.ts");
  execFileSync(
    process.execPath,
    ["node_modules/openapi-typescript/bin/cli.js", "../../docs/openapi.json", "--output", fresh],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  if (readFileSync(fresh, "utf8") !== readFileSync("src/generated/api.ts", "utf8")) {
    console.error("src/generated/api.ts is stale: run `npm run generate` in clients/js and commit it");
    process.exit(1);
  }
  console.log("src/generated/api.ts matches docs/openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
