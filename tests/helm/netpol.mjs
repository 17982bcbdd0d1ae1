// Reads rendered manifests of the green zone and proves, from the
// NetworkPolicies alone, that no pod in the namespace admits ingress from
// outside it: every pod is selected by at least one Ingress policy (so only
// what the policies allow gets in), and every ingress rule that selects it
// names only pods of the same namespace (a podSelector without a
// namespaceSelector, no ipBlock, never an empty "from" = everyone).
// Also checks the connector's egress is limited to the ports it needs.
//
//   node netpol.mjs rendered-green.yaml
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const objs = parseAllDocuments(readFileSync(process.argv[2], "utf8"))
  .map((d) => d.toJS())
  .filter(Boolean);

const matches = (selector, labels) => {
  if (!selector) return false;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    if (e.operator === "In" && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
};

const pods = objs
  .filter((o) => ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind))
  .map((o) => ({ name: `${o.kind}/${o.metadata.name}`, labels: o.spec.template.metadata?.labels ?? {} }));
const policies = objs.filter((o) => o.kind === "NetworkPolicy");
const errors = [];
if (pods.length === 0) errors.push("no pods rendered");

for (const pod of pods) {
  const selecting = policies.filter(
    (p) => matches(p.spec.podSelector, pod.labels) && (p.spec.policyTypes ?? ["Ingress"]).includes("Ingress"),
  );
  if (selecting.length === 0) errors.push(`${pod.name}: no Ingress NetworkPolicy selects it (all ingress allowed)`);
  for (const p of selecting) {
    for (const [i, rule] of (p.spec.ingress ?? []).entries()) {
      const where = `${pod.name}: NetworkPolicy/${p.metadata.name} ingress[${i}]`;
      if (!rule.from || rule.from.length === 0) {
        errors.push(`${where}: empty "from" admits every source`);
        continue;
      }
      for (const peer of rule.from) {
        if (peer.ipBlock) errors.push(`${where}: ipBlock ${peer.ipBlock.cidr} admits addresses outside the namespace`);
        if (peer.namespaceSelector) errors.push(`${where}: namespaceSelector admits other namespaces`);
        if (!peer.podSelector) errors.push(`${where}: peer without podSelector`);
      }
    }
  }
}

// Egress: the connector may open connections only where it must.
const connector = pods.find((p) => p.labels["app.kubernetes.io/component"] === "connector");
if (!connector) {
  errors.push("no connector pod");
} else {
  const egress = policies.filter(
    (p) => matches(p.spec.podSelector, connector.labels) && (p.spec.policyTypes ?? []).includes("Egress"),
  );
  if (egress.length === 0) errors.push("connector: no Egress NetworkPolicy (egress unrestricted)");
  for (const p of egress) {
    for (const [i, rule] of (p.spec.egress ?? []).entries()) {
      if (!rule.ports || rule.ports.length === 0) errors.push(`connector: ${p.metadata.name} egress[${i}] allows every port`);
      if (!rule.to || rule.to.length === 0) errors.push(`connector: ${p.metadata.name} egress[${i}] allows every destination`);
    }
  }
}

for (const e of errors) console.error(e);
console.log(`${pods.length} pods, ${policies.length} NetworkPolicies: ${errors.length ? "FAIL" : "no ingress from outside the namespace"}`);
process.exit(errors.length ? 1 : 0);
