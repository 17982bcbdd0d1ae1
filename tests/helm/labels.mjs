// Checks that every object in rendered Helm output, and every pod template,
// carries the given labels (commonLabels), and that no selector names them
// (selectors are immutable: a label added to a selector would break
// upgrades).
//
//   node labels.mjs rendered.yaml key=value [key=value ...]
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const [file, ...pairs] = process.argv.slice(2);
const want = Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]));
const objs = parseAllDocuments(readFileSync(file, "utf8"))
  .map((d) => d.toJS())
  .filter(Boolean);
const problems = [];
const check = (labels, where) => {
  for (const [k, v] of Object.entries(want)) {
    if (labels?.[k] !== v) problems.push(`${where}: label ${k}=${v} missing (has ${JSON.stringify(labels?.[k])})`);
  }
};
// Any key that holds a selector: selector, podSelector, labelSelector,
// namespaceSelector (the ServiceMonitor's names namespaces, not labels).
const selectors = (x, path, found) => {
  if (Array.isArray(x)) x.forEach((v, i) => selectors(v, `${path}[${i}]`, found));
  else if (x && typeof x === "object") {
    for (const [k, v] of Object.entries(x)) {
      if (/^(selector|podSelector|labelSelector)$/.test(k)) found.push([`${path}.${k}`, v]);
      selectors(v, `${path}.${k}`, found);
    }
  }
  return found;
};
for (const o of objs) {
  const where = `${o.kind}/${o.metadata.name}`;
  check(o.metadata.labels, where);
  if (o.spec?.template?.metadata) check(o.spec.template.metadata.labels, `${where} pod template`);
  for (const [path, sel] of selectors(o.spec ?? {}, "spec", [])) {
    for (const k of Object.keys(want)) {
      if (JSON.stringify(sel).includes(JSON.stringify(k))) problems.push(`${where}: ${path} selects on ${k}`);
    }
  }
}
for (const p of problems) console.error(`${file}: ${p}`);
console.log(`${objs.length} objects carry ${pairs.join(", ")}; no selector names them${problems.length ? ` (${problems.length} problems)` : ""}`);
process.exit(problems.length || objs.length === 0 ? 1 : 0);
