// Checks the PrometheusRule in rendered Helm output against what the
// services export, and writes its groups as a Prometheus rule file (for
// `promtool check rules` and `promtool test rules`):
//  - every alert has an expr, labels.severity and annotations.summary;
//  - every postern_* metric an expression names is registered by a service
//    (.Name("...") or a scrape-time family's name = "..." in SERVICES_DIR), so a renamed metric fails here rather
//    than leaving an alert that never fires;
//  - every value a `result` matcher names (result="x", result!~"a|b") is a
//    string the services write ("x" in SERVICES_DIR).
// The schema (CRD) is validate.mjs's job.
//
//   node rules.mjs rendered.yaml SERVICES_DIR OUT.json
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

const [file, servicesDir, out] = process.argv.slice(2);
const rules = parseAllDocuments(readFileSync(file, "utf8"))
  .map((d) => d.toJS())
  .filter((o) => o?.kind === "PrometheusRule");
if (rules.length !== 1) {
  console.error(`${file}: ${rules.length} PrometheusRules, expected 1`);
  process.exit(1);
}

const sources = [];
const walk = (dir) => {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (/\.(cpp|hpp)$/.test(e.name)) sources.push(readFileSync(p, "utf8"));
  }
};
walk(servicesDir);
const all = sources.join("\n");
// Registered with prometheus-cpp's builders, or a family built at scrape
// time (f.name = "...").
const metrics = new Set(
  [...all.matchAll(/(?:\.Name\(|\.name = )"(postern_[a-z0-9_]+)"/g)].map((m) => m[1]),
);
if (metrics.size === 0) {
  console.error(`${servicesDir}: no metric registrations found`);
  process.exit(1);
}

const problems = [];
let alerts = 0;
for (const g of rules[0].spec.groups) {
  for (const r of g.rules) {
    if (!r.alert) continue;  // additionalRules may hold recording rules
    alerts++;
    const where = `alert ${r.alert}`;
    if (!r.expr) problems.push(`${where}: no expr`);
    if (!r.labels?.severity) problems.push(`${where}: no severity label`);
    if (!r.annotations?.summary) problems.push(`${where}: no summary`);
    for (const [, name] of String(r.expr).matchAll(/\b(postern_[a-z0-9_]+)/g)) {
      if (!metrics.has(name)) problems.push(`${where}: ${name} is exported by no service`);
    }
    for (const [, values] of String(r.expr).matchAll(/\bresult\s*(?:=|!=|=~|!~)\s*"([^"]*)"/g)) {
      for (const v of values.split("|")) {
        if (!all.includes(`"${v}"`)) problems.push(`${where}: result "${v}" is written by no service`);
      }
    }
  }
}
for (const p of problems) console.error(`${file}: ${p}`);
writeFileSync(out, JSON.stringify({ groups: rules[0].spec.groups }, null, 2));
console.log(`${alerts} alerts on ${metrics.size} exported metrics${problems.length ? ` (${problems.length} problems)` : ": every metric and result value exists"}`);
process.exit(problems.length ? 1 : 0);
