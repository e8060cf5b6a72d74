// Builds the workspace page's script (web/app.ts and the library it uses) into one
// file: src/http/web/app.js, compiled into the binary; or, with `--check`, fails when
// that committed file is not what the sources give today (.ci/run).

import { readFileSync, writeFileSync } from "node:fs";

import { build } from "esbuild";

const target = "../../src/http/web/app.js";
const result = await build({
  entryPoints: ["web/app.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  charset: "utf8",
  legalComments: "none",
  write: false,
  outfile: target,
  logLevel: "warning",
});
const fresh = result.outputFiles[0].text;
if (process.argv.includes("--check")) {
  if (fresh !== readFileSync(target, "utf8")) {
    console.error("src/http/web/app.js is stale: run `npm run build:web` in clients/js and commit it");
    process.exit(1);
  }
  console.log("src/http/web/app.js matches its sources");
} else {
  writeFileSync(target, fresh);
  console.log(`wrote ${target} (${fresh.length} bytes)`);
}
