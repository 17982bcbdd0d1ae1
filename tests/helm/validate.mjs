// Validates every manifest in rendered Helm output against the Kubernetes API
// schemas (the OpenAPI schemas compiled by kubernetes-models, ajv): types,
// required fields, enums, formats, for every kind the chart renders; an
// unknown apiVersion or kind is an error. (Unknown fields in values are
// caught earlier, by the chart's values.schema.json.)
//
// Strict: a field the Kubernetes schema of its type does not declare is an
// error too (a template typo like `readinesProbe:` would otherwise pass: the
// schemas have no additionalProperties: false, and the API server would drop
// the field with only a warning). kubernetes-models ships its schemas as
// compiled ajv code, not as JSON, so the declared properties are learned
// from the validators themselves: the manifest is handed to them wrapped in
// Proxies that record which properties each object is asked for. A typed
// object (a $ref'd type, through arrays and nesting) asks for every property
// its schema declares, present or not; any other key it holds is unknown. An
// object the schema treats as a map (additionalProperties: labels,
// annotations, data, resources.requests, nodeSelector) is iterated key by
// key, and an object whose schema declares no properties at all (free-form,
// x-kubernetes-preserve-unknown-fields) is never asked for one: both are
// open, any key goes.
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

// Wraps value (a plain JSON tree) so that reads by a validator are recorded:
// one entry in nodes per object, with the keys asked for and whether its
// keys were enumerated (a map).
function track(value, path, nodes) {
  if (Array.isArray(value)) return value.map((v, i) => track(v, `${path}[${i}]`, nodes));
  if (value === null || typeof value !== "object") return value;
  const node = { path, keys: Object.keys(value), asked: new Set(), enumerated: false };
  nodes.push(node);
  const target = {};
  for (const [k, v] of Object.entries(value)) target[k] = track(v, path ? `${path}.${k}` : k, nodes);
  const ask = (k) => { if (typeof k === "string") node.asked.add(k); };
  return new Proxy(target, {
    get(t, k, r) { ask(k); return Reflect.get(t, k, r); },
    has(t, k) { ask(k); return Reflect.has(t, k); },
    getOwnPropertyDescriptor(t, k) { ask(k); return Reflect.getOwnPropertyDescriptor(t, k); },
    ownKeys(t) { node.enumerated = true; return Reflect.ownKeys(t); },
  });
}

// Keys no validator asked for, in objects that are neither maps nor free-form.
function unknownFields(nodes) {
  const unknown = [];
  for (const n of nodes) {
    if (n.enumerated || n.asked.size === 0) continue;
    for (const k of n.keys) if (!n.asked.has(k)) unknown.push(n.path ? `${n.path}.${k}` : k);
  }
  return unknown;
}

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
    // The model's validate() runs the compiled schema on `this`: call it on
    // the tracked tree directly (the constructor would copy it, reading every
    // key).
    const nodes = [];
    let bad = false;
    try {
      Model.prototype.validate.call(track(obj, "", nodes));
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      bad = true;
    }
    for (const field of unknownFields(nodes)) {
      console.error(`${where}: unknown field ${field} (not in the ${obj.apiVersion} ${obj.kind} schema)`);
      bad = true;
    }
    if (bad) failures++;
    else checked++;
  }
}
console.log(`validated ${checked} manifests (strict: no unknown fields), ${failures} invalid`);
process.exit(failures ? 1 : 0);
