// The suite's bundle imports `globSync` from "fs" (Node >= 22). On Node 20 that named ESM
// import fails at link time, before any code runs, and a --require polyfill cannot reach it.
// Only `tier-check` calls globSync; the server scenarios never do. So the import is replaced
// by a stub that throws if ever called. Idempotent: a patched bundle is left alone.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

// argv[2]: the install folder (.tools/conformance).
const bundle = join(process.argv[2], "node_modules/@modelcontextprotocol/conformance/dist/index.js");
const source = readFileSync(bundle, "utf8");
const fsImport = /import\{([^}]*)\}from"fs";/;
const match = source.match(fsImport);
if (!match) {
  console.error(`${bundle}: no named import from "fs"; the suite changed, update this patch`);
  process.exit(1);
}
const names = match[1].split(",");
const glob = names.find((n) => n.startsWith("globSync as "));
if (!glob) process.exit(0); // already patched (or not needed)
const alias = glob.slice("globSync as ".length);
const kept = names.filter((n) => n !== glob).join(",");
const stub = `const ${alias}=()=>{throw Error("fs.globSync needs Node >= 22 (stubbed by freshet's node20-patch.mjs)")};`;
writeFileSync(bundle, source.replace(fsImport, `import{${kept}}from"fs";${stub}`));
console.error(`patched ${bundle}: fs.globSync stubbed for Node ${process.versions.node}`);
