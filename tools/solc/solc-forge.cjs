#!/usr/bin/env node
// Lets forge use solcjs (WebAssembly, works offline) as its compiler:
//   forge build --offline --use tools/solc/solc-forge.cjs
// forge asks `--version` and then runs `--standard-json` with the whole input on stdin
// (sources inlined, so no file access is needed). Other flags it passes (--allow-paths,
// --base-path, --include-path) have no meaning here and are ignored.
"use strict";
const path = require("path");
const solc = require(path.join(__dirname, "..", "npm", "node_modules", "solc"));

const args = process.argv.slice(2);
if (args.includes("--version")) {
  // forge parses the native compiler's banner; solcjs reports ".Emscripten.clang" instead.
  const long = solc.version().replace(/\.Emscripten\.clang$/, ".Linux.g++");
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${long}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  process.stderr.write("solc-forge: only --version and --standard-json are supported\n");
  process.exit(2);
}
const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const input = Buffer.concat(chunks).toString("utf8");
  const missing = (p) => ({ error: `import not found: ${p} (forge inlines sources)` });
  process.stdout.write(solc.compile(input, { import: missing }));
});
