// Writes every YAML entry of the rendered ConfigMaps to OUTDIR as
// COMPONENT-KEY (edge-config.yaml, policy-policy.yaml, ...; the component
// from the app.kubernetes.io/component label), so the chart test can load
// each with the service that reads it.
//
//   node configs.mjs rendered.yaml OUTDIR
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

const [file, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
  const o = doc.toJS();
  if (o?.kind !== "ConfigMap") continue;
  for (const [key, value] of Object.entries(o.data ?? {})) {
    if (!key.endsWith(".yaml")) continue;
    const component = o.metadata.labels?.["app.kubernetes.io/component"] ?? "unknown";
    writeFileSync(join(out, `${component}-${key}`), value);
  }
}
