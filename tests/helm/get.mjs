// Prints one field of one object in rendered Helm output: strings and
// numbers as they are, anything else as JSON (keys sorted, so two renders
// compare as text). Fails if the object or the field is missing.
//
//   node get.mjs rendered.yaml KIND NAME PATH   (PATH: spec.template.metadata.annotations,
//                                                 spec.ports.0.port, spec.x.length)
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const [file, kind, name, path] = process.argv.slice(2);
const obj = parseAllDocuments(readFileSync(file, "utf8"))
  .map((d) => d.toJS())
  .find((o) => o?.kind === kind && o.metadata?.name === name);
if (!obj) {
  console.error(`${file}: no ${kind}/${name}`);
  process.exit(1);
}
let v = obj;
for (const key of path.split(".")) {
  v = v?.[key];
}
if (v === undefined) {
  console.error(`${file}: ${kind}/${name} has no ${path}`);
  process.exit(1);
}
const sorted = (x) =>
  Array.isArray(x) ? x.map(sorted)
  : x && typeof x === "object" ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, sorted(x[k])]))
  : x;
console.log(typeof v === "object" ? JSON.stringify(sorted(v)) : String(v));
