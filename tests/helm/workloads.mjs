// Checks every pod workload (Deployment, StatefulSet) in rendered Helm
// output:
//  - shutdown: terminationGracePeriodSeconds covers the preStop wait plus
//    the drain_timeout of the config the pod mounts (volume "config"), so
//    the kubelet never kills a pod mid-drain;
//  - spread: the pod template carries the chart's default soft spread, one
//    constraint per topology key (kubernetes.io/hostname,
//    topology.kubernetes.io/zone) with maxSkew 1, whenUnsatisfiable
//    ScheduleAnyway and a labelSelector equal to the workload's own selector
//    (so it follows the release name instead of naming one).
//
//   node workloads.mjs rendered.yaml
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { parse, parseAllDocuments } from "yaml";

const spreadKeys = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

function seconds(duration) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const [, n, u] of String(duration).matchAll(/([0-9.]+)(ms|s|m|h)/g)) total += Number(n) * units[u];
  return total;
}

function preStopSeconds(container) {
  const p = container.lifecycle?.preStop;
  if (!p) return 0;
  if (p.sleep) return Number(p.sleep.seconds);
  const cmd = p.exec?.command ?? [];
  if (cmd[0] === "sleep") return Number(cmd[1]);
  throw new Error(`container ${container.name}: preStop is neither a sleep action nor "sleep N"`);
}

const file = process.argv[2];
const objects = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean);
const configMaps = new Map(objects.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name, o]));
const problems = [];
let workloads = 0;
for (const w of objects) {
  if (w.kind !== "Deployment" && w.kind !== "StatefulSet") continue;
  workloads++;
  const where = `${w.kind}/${w.metadata.name}`;
  const pod = w.spec.template.spec;

  // Shutdown: grace >= preStop + drain.
  const volume = (pod.volumes ?? []).find((v) => v.name === "config");
  const cm = volume?.configMap && configMaps.get(volume.configMap.name);
  if (!cm) {
    problems.push(`${where}: no rendered config ConfigMap mounted as volume "config"`);
  } else {
    const drain = seconds(parse(cm.data["config.yaml"]).drain_timeout ?? "0s");
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    for (const c of pod.containers) {
      const pre = preStopSeconds(c);
      if (grace < pre + drain) {
        problems.push(`${where}: terminationGracePeriodSeconds ${grace} < preStop ${pre} s + drain ${drain} s`);
      }
    }
  }

  // Spread: the default soft constraints, selecting the workload's own pods.
  const own = w.spec.selector.matchLabels;
  const constraints = pod.topologySpreadConstraints ?? [];
  for (const key of spreadKeys) {
    const c = constraints.find((t) => t.topologyKey === key);
    if (!c) {
      problems.push(`${where}: no topologySpreadConstraint over ${key}`);
      continue;
    }
    if (c.whenUnsatisfiable !== "ScheduleAnyway" || c.maxSkew !== 1) {
      problems.push(`${where}: the ${key} spread is not soft (maxSkew ${c.maxSkew}, ${c.whenUnsatisfiable})`);
    }
    if (!isDeepStrictEqual(c.labelSelector, { matchLabels: own })) {
      problems.push(`${where}: the ${key} spread selects ${JSON.stringify(c.labelSelector)}, not the workload's own pods ${JSON.stringify(own)}`);
    }
  }
}
for (const p of problems) console.error(`${file}: ${p}`);
if (!workloads) problems.push("no workloads");
console.log(`${workloads} workloads: grace period covers preStop + drain, soft spread over nodes and zones by own selector${problems.length ? ` (${problems.length} problems)` : ""}`);
process.exit(problems.length ? 1 : 0);
