// Reads the rendered manifests of one zone and proves from its
// NetworkPolicies what each pod may accept and open.
//
// Ingress. Green: no pod in the namespace admits ingress from outside it:
// every pod is selected by at least one Ingress policy (so only what the
// policies allow gets in), and every ingress rule that selects it names only
// pods of the same namespace (a podSelector without a namespaceSelector, no
// ipBlock, never an empty "from" = everyone). DMZ: every pod is selected by
// an Ingress policy, and only the edge's public ports (8080, 8443) admit
// everyone.
//
// Egress, both zones: every pod is selected by at least one Egress policy;
// no egress rule allows every port or every destination (an empty "to", an
// ipBlock of 0.0.0.0/0 or ::/0, an empty peer, a namespaceSelector {}
// without a podSelector); and every destination each pod may reach is one
// it needs:
//   edge      the broker relay port (7080) of this release's broker pods,
//             DNS, edge.upstreamEgress;
//   broker    DNS only;
//   connector the broker registration port (7443) of
//             connector.brokerEgress, DNS, the policy pods' port 7090,
//             connector.nativeEgress;
//   policy    DNS only.
// DNS is networkPolicies.dns, port 53. What the values configure is read
// from the chart's values.yaml merged with the values files given (as Helm
// merges them), so the proof knows what was asked for.
//
//   node netpol.mjs rendered.yaml [values.yaml ...]
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { parse, parseAllDocuments } from "yaml";

const [file, ...valueFiles] = process.argv.slice(2);
const objs = parseAllDocuments(readFileSync(file, "utf8"))
  .map((d) => d.toJS())
  .filter(Boolean);

// Helm's merge: maps merge key by key, null deletes, anything else replaces.
const isMap = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
function merge(base, over) {
  if (!isMap(base) || !isMap(over)) return over;
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = merge(base[k], v);
  }
  return out;
}
let values = parse(readFileSync(new URL("../../deploy/helm/postern/values.yaml", import.meta.url), "utf8"));
for (const f of valueFiles) values = merge(values, parse(readFileSync(f, "utf8")) ?? {});

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
const emptySelector = (s) =>
  Object.keys(s?.matchLabels ?? {}).length === 0 && (s?.matchExpressions ?? []).length === 0;

const workloads = objs.filter((o) => ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind));
const pods = workloads.map((o) => ({
  name: `${o.kind}/${o.metadata.name}`,
  labels: o.spec.template.metadata?.labels ?? {},
  selector: o.spec.selector?.matchLabels ?? {},
}));
const component = (pod) => pod.labels["app.kubernetes.io/component"];
const policies = objs.filter((o) => o.kind === "NetworkPolicy");
const errors = [];
if (pods.length === 0) errors.push("no pods rendered");
const zones = new Set(pods.map((p) => p.labels["postern.dev/zone"]));
if (zones.size !== 1) errors.push(`pods of zones ${[...zones].join(", ")}: expected one zone`);
const zone = [...zones][0];

const selecting = (pod, type) =>
  policies.filter(
    (p) => matches(p.spec.podSelector, pod.labels) && (p.spec.policyTypes ?? ["Ingress"]).includes(type),
  );

// ------------------------------------------------------------------ ingress
const publicPorts = [8080, 8443];
for (const pod of pods) {
  const ingress = selecting(pod, "Ingress");
  if (ingress.length === 0) errors.push(`${pod.name}: no Ingress NetworkPolicy selects it (all ingress allowed)`);
  for (const p of ingress) {
    for (const [i, rule] of (p.spec.ingress ?? []).entries()) {
      const where = `${pod.name}: NetworkPolicy/${p.metadata.name} ingress[${i}]`;
      if (zone === "dmz") {
        // The edge's public ports admit everyone; nothing else does.
        const open = !rule.from || rule.from.length === 0;
        const onlyPublic =
          component(pod) === "edge" &&
          (rule.ports ?? []).length > 0 &&
          rule.ports.every((pt) => publicPorts.includes(pt.port));
        if (open && !onlyPublic) errors.push(`${where}: empty "from" admits every source on ${JSON.stringify(rule.ports ?? "every port")}`);
        for (const peer of rule.from ?? []) {
          if (peer.ipBlock?.cidr?.endsWith("/0")) errors.push(`${where}: ipBlock ${peer.ipBlock.cidr} admits every address`);
        }
        continue;
      }
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

// ------------------------------------------------------------------- egress
// What each component may reach: [{peer, ports: [{port, protocol}]}].
const tcp = (...ports) => ports.map((port) => ({ port, protocol: "TCP" }));
const dns = {
  peer: { namespaceSelector: values.networkPolicies.dns.namespaceSelector, podSelector: values.networkPolicies.dns.podSelector },
  ports: [{ port: 53, protocol: "UDP" }, { port: 53, protocol: "TCP" }],
  what: "DNS",
};
// A values entry ({cidr, ports} or {namespaceSelector, podSelector, ports}) as a peer.
const configured = (entries, field) =>
  (entries ?? []).map((e, i) => {
    const peer = {};
    if (e.cidr) peer.ipBlock = { cidr: e.cidr };
    else {
      if (e.namespaceSelector != null) peer.namespaceSelector = e.namespaceSelector;
      if (e.podSelector != null) peer.podSelector = e.podSelector;
    }
    return { peer, ports: tcp(...e.ports), what: `${field}[${i}]` };
  });
const ownPods = (c) => pods.find((p) => component(p) === c)?.selector;
// The trace collector, for the services that export spans (tracing.endpoint).
const collector = () => (values.tracing?.endpoint ? configured(values.tracing.egress, "tracing.egress") : []);
const allowed = {
  edge: () => [
    { peer: { podSelector: { matchLabels: ownPods("broker") } }, ports: tcp(7080), what: "the broker relay port" },
    dns,
    ...configured(values.edge.upstreamEgress, "edge.upstreamEgress"),
    ...collector(),
  ],
  broker: () => [dns, ...collector()],
  policy: () => [dns],
  connector: () => {
    const be = values.connector.brokerEgress;
    const brokers = (be.cidrs ?? []).map((cidr) => ({ peer: { ipBlock: { cidr } }, ports: tcp(7443), what: "brokerEgress" }));
    if (be.namespaceSelector) {
      brokers.push({
        peer: {
          namespaceSelector: be.namespaceSelector,
          podSelector: { matchLabels: { "app.kubernetes.io/part-of": "postern", "app.kubernetes.io/component": "broker" } },
        },
        ports: tcp(7443),
        what: "brokerEgress",
      });
    }
    return [
      ...brokers,
      dns,
      { peer: { podSelector: { matchLabels: ownPods("policy") } }, ports: tcp(7090), what: "the policy service" },
      ...configured(values.connector.nativeEgress, "connector.nativeEgress"),
      ...collector(),
    ];
  },
};
const describe = (peer) => JSON.stringify(peer);

for (const pod of pods) {
  const egress = selecting(pod, "Egress");
  if (egress.length === 0) {
    errors.push(`${pod.name}: no Egress NetworkPolicy selects it (egress unrestricted)`);
    continue;
  }
  const mayReach = allowed[component(pod)]?.();
  if (!mayReach) errors.push(`${pod.name}: unknown component ${component(pod)}`);
  for (const p of egress) {
    for (const [i, rule] of (p.spec.egress ?? []).entries()) {
      const where = `${pod.name}: NetworkPolicy/${p.metadata.name} egress[${i}]`;
      if (!rule.ports || rule.ports.length === 0) errors.push(`${where}: allows every port`);
      if (!rule.to || rule.to.length === 0) {
        errors.push(`${where}: empty "to" allows every destination`);
        continue;
      }
      for (const peer of rule.to) {
        const cidr = peer.ipBlock?.cidr;
        if (cidr !== undefined && /\/0+$/.test(cidr)) {
          errors.push(`${where}: ipBlock ${cidr} admits every address`);
          continue;
        }
        if (!peer.ipBlock && !peer.namespaceSelector && !peer.podSelector) {
          errors.push(`${where}: an empty peer allows every destination`);
          continue;
        }
        if (peer.namespaceSelector && emptySelector(peer.namespaceSelector) && (!peer.podSelector || emptySelector(peer.podSelector))) {
          errors.push(`${where}: namespaceSelector {} without a podSelector allows every pod in every namespace`);
          continue;
        }
        for (const port of rule.ports ?? []) {
          const ok = (mayReach ?? []).some(
            (a) => isDeepStrictEqual(a.peer, peer) && a.ports.some((q) => q.port === port.port && q.protocol === (port.protocol ?? "TCP")),
          );
          if (!ok) {
            errors.push(`${where}: ${describe(peer)} port ${port.port}/${port.protocol ?? "TCP"} is none of what the ${component(pod)} needs (${(mayReach ?? []).map((a) => a.what).join(", ")})`);
          }
        }
      }
    }
  }
}

for (const e of errors) console.error(e);
const what = zone === "green" ? "no ingress from outside the namespace" : "ingress only on the edge's public ports";
console.log(
  `${zone}: ${pods.length} pods, ${policies.length} NetworkPolicies: ${errors.length ? "FAIL" : `${what}; every pod's egress limited to what it needs`}`,
);
process.exit(errors.length ? 1 : 0);
