// Validates every manifest in rendered Helm output against the Kubernetes
// API schemas (the OpenAPI schemas compiled by kubernetes-models, ajv): types,
// required fields, enums, formats, for every kind the chart renders; an
// unknown apiVersion or kind is an error. (Unknown fields in values are
// caught earlier, by the chart's values.schema.json.)
//
//   node validate.mjs rendered.yaml [more.yaml...]
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const groups = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "autoscaling/v2": "kubernetes-models/autoscaling/v2",
  "policy/v1": "kubernetes-models/policy/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

let failures = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.error(`${file}: YAML error: ${doc.errors[0].message}`);
      failures++;
      continue;
    }
    const obj = doc.toJS();
    if (obj == null) continue;
    const where = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    const mod = groups[obj.apiVersion];
    if (!mod) {
      console.error(`${where}: unknown apiVersion ${obj.apiVersion}`);
      failures++;
      continue;
    }
    let Model;
    try {
      Model = (await import(`${mod}/${obj.kind}`))[obj.kind];
    } catch {
      Model = undefined;
    }
    if (!Model) {
      console.error(`${where}: unknown kind ${obj.kind} in ${obj.apiVersion}`);
      failures++;
      continue;
    }
    try {
      new Model(obj).validate();
      checked++;
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      failures++;
    }
  }
}
console.log(`validated ${checked} manifests, ${failures} invalid`);
process.exit(failures ? 1 : 0);
