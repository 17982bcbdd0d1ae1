// Keeps deploy/helm/README.md accurate to the chart. From the README's
// fenced blocks:
//  - every `helm install` / `helm upgrade` command (```sh blocks) is
//    rendered with `helm template` and the same release, namespace, values
//    files and --set flags (--set-file of configSigning.publicKeys gets the
//    test's public key; any other file must exist in the repository), so
//    the command would pass the schema and the template guards;
//  - every key those commands set (--set, --set-string, --set-json,
//    --set-file) exists in values.yaml, and every key of their values files
//    too, except entries of maps the schema leaves open (connector.aliases,
//    annotations, labels, ...);
//  - every Secret and ConfigMap those renders mount that the chart does not
//    render itself is created by a `kubectl ... create secret|configmap`
//    command of the README in the release's namespace, and that namespace
//    by a `kubectl create namespace`;
//  - every ```yaml block is chart values: its keys exist (as above) and it
//    renders in both zones.
//
//   node readme.mjs README.md CHART_DIR HELM PUBLIC_KEY_FILE WORKDIR
// (run from the repository root: the README's paths are relative to it)
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";

const [readme, chart, helm, publicKey, work] = process.argv.slice(2);
mkdirSync(work, { recursive: true });
const values = parse(readFileSync(join(chart, "values.yaml"), "utf8"));
const schema = JSON.parse(readFileSync(join(chart, "values.schema.json"), "utf8"));
const problems = [];

// ---------------------------------------------------------------- blocks
const blocks = [];
{
  let lang = null;
  let indent = "";
  let body = [];
  for (const line of readFileSync(readme, "utf8").split("\n")) {
    const fence = line.match(/^(\s*)```(\S*)\s*$/);
    if (fence && lang === null) {
      [, indent, lang] = fence;
      body = [];
    } else if (fence) {
      blocks.push({ lang, text: body.join("\n") });
      lang = null;
    } else if (lang !== null) {
      body.push(line.startsWith(indent) ? line.slice(indent.length) : line.trimStart());
    }
  }
}

// A small shell lexer: words with quotes and backslashes, comments, line
// continuations; `|`, `&`, `;` end a command. Expansions ($x, $(...)) are
// kept as text: the commands checked here must not need them.
function commands(text) {
  const out = [];
  let words = [];
  let word = null;
  const end = () => {
    if (word !== null) words.push(word);
    word = null;
  };
  const flush = () => {
    end();
    if (words.length) out.push(words);
    words = [];
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\" && text[i + 1] === "\n") { i++; continue; }
    if (c === "\\") { word = (word ?? "") + (text[++i] ?? ""); continue; }
    if (c === "'") {
      const j = text.indexOf("'", i + 1);
      word = (word ?? "") + text.slice(i + 1, j);
      i = j;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      let s = "";
      while (j < text.length && text[j] !== '"') {
        if (text[j] === "\\" && '"\\$`'.includes(text[j + 1])) j++;
        s += text[j++];
      }
      word = (word ?? "") + s;
      i = j;
      continue;
    }
    if (c === "#" && word === null) {
      while (i < text.length && text[i] !== "\n") i++;
      flush();
      continue;
    }
    if (c === "\n" || c === "|" || c === "&" || c === ";") { flush(); continue; }
    if (c === " " || c === "\t") { end(); continue; }
    word = (word ?? "") + c;
  }
  flush();
  return out;
}

// ---------------------------------------------------------------- keys
const resolve = (s) => {
  for (let n = 0; s && n < 10; n++) {
    if (s.$ref) { s = schema.definitions[s.$ref.replace("#/definitions/", "")]; continue; }
    if (s.allOf && !s.properties) {
      const withProps = s.allOf.map(resolve).find((a) => a?.properties);
      if (withProps) { s = withProps; continue; }
    }
    const alt = s.oneOf ?? s.anyOf;
    if (alt) { s = alt.map(resolve).find((a) => a && (a.type === "object" || a.properties)) ?? alt[0]; continue; }
    break;
  }
  return s;
};

// Checks a key path (list of names and indices) against values.yaml: each
// name must exist there. Beyond values.yaml: an entry of a map the schema
// leaves open (aliases, annotations, labels), and a key the schema knows
// under a map values.yaml leaves empty ({} or null: a placeholder, e.g. a
// selector's matchLabels). A list in values.yaml ends the walk (its items
// are the schema's business). zone has no default: values.yaml documents it
// in a comment.
function checkPath(path, where) {
  if (path.length === 1 && path[0] === "zone") return;
  let v = values;
  let s = resolve(schema);
  for (let i = 0; i < path.length; i++) {
    const key = path[i];
    if (Array.isArray(v)) return;
    if (typeof key === "number") {
      problems.push(`${where}: ${path.slice(0, i).join(".")} is not a list in values.yaml`);
      return;
    }
    if (v !== null && typeof v === "object" && key in v) {
      v = v[key];
      s = resolve(s?.properties?.[key]);
      continue;
    }
    const open = s && s.additionalProperties !== false && !(s.properties && key in s.properties);
    const placeholder = v === null || v === undefined || (typeof v === "object" && !Object.keys(v).length);
    const known = Boolean(s?.properties && key in s.properties);
    if (!open && !(placeholder && known)) {
      problems.push(`${where}: ${path.slice(0, i + 1).join(".")} is not in values.yaml`);
    }
    return;
  }
}

// "a.b\.c[0].d" -> ["a", "b.c", 0, "d"]
function splitKey(key) {
  const out = [];
  let cur = "";
  for (let i = 0; i < key.length; i++) {
    const c = key[i];
    if (c === "\\") { cur += key[++i]; continue; }
    if (c === ".") { out.push(cur); cur = ""; continue; }
    if (c === "[") {
      const j = key.indexOf("]", i);
      if (cur) out.push(cur);
      out.push(Number(key.slice(i + 1, j)));
      cur = "";
      i = j;
      if (key[i + 1] === ".") i++;
      continue;
    }
    cur += c;
  }
  if (cur) out.push(cur);
  return out;
}

function checkTree(tree, prefix, where) {
  if (tree === null || typeof tree !== "object" || Array.isArray(tree)) {
    checkPath(prefix, where);
    return;
  }
  if (!Object.keys(tree).length) checkPath(prefix, where);
  for (const [k, v] of Object.entries(tree)) checkTree(v, [...prefix, k], where);
}

// ---------------------------------------------------------------- render
function render(args, where) {
  const r = spawnSync(helm, ["template", ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    problems.push(`${where}: helm template failed:\n${r.stderr.trim()}`);
    return null;
  }
  return parseAllDocuments(r.stdout).map((d) => d.toJS()).filter(Boolean);
}

// What a render mounts and does not render itself: [kind, name].
function external(objects) {
  const own = new Set(objects.map((o) => `${o.kind}/${o.metadata?.name}`));
  const need = new Set();
  for (const o of objects) {
    for (const v of o.spec?.template?.spec?.volumes ?? []) {
      if (v.secret) need.add(`Secret/${v.secret.secretName}`);
      if (v.configMap) need.add(`ConfigMap/${v.configMap.name}`);
      for (const p of v.projected?.sources ?? []) {
        if (p.secret) need.add(`Secret/${p.secret.name}`);
        if (p.configMap) need.add(`ConfigMap/${p.configMap.name}`);
      }
    }
  }
  return [...need].filter((x) => !own.has(x));
}

// ---------------------------------------------------------------- sh blocks
const created = new Set();   // "ns/Kind/name", "Namespace/name"
const installs = [];
for (const b of blocks.filter((b) => b.lang === "sh")) {
  for (const words of commands(b.text)) {
    if (words[0] === "kubectl") {
      let ns = null;
      const rest = [];
      for (let i = 1; i < words.length; i++) {
        const w = words[i];
        if (w === "-n" || w === "--namespace") ns = words[++i];
        else if (w.startsWith("--namespace=")) ns = w.slice(12);
        else if (w === "--context") i++;
        else rest.push(w);
      }
      if (rest[0] !== "create") continue;
      if (rest[1] === "namespace") created.add(`Namespace/${rest[2]}`);
      else if (rest[1] === "secret") created.add(`${ns}/Secret/${rest[3]}`);
      else if (rest[1] === "configmap") created.add(`${ns}/ConfigMap/${rest[2]}`);
    } else if (words[0] === "helm" && (words.includes("install") || words.includes("upgrade"))) {
      installs.push(words);
    }
  }
}
if (!installs.length) problems.push(`${readme}: no helm install command found`);

installs.forEach((words, n) => {
  const where = `${readme}: \`${words.join(" ")}\``;
  const positional = [];
  const flags = [];
  let ns = "default";
  let sub = null;
  for (let i = 1; i < words.length; i++) {
    const w = words[i];
    const value = () => {
      const x = words[++i];
      if (x === undefined) problems.push(`${where}: ${w} without a value`);
      return x ?? "";
    };
    if (!w.startsWith("-")) {
      if (sub === null) sub = w;
      else positional.push(w);
    } else if (w === "-n" || w === "--namespace") {
      ns = value();
      flags.push("-n", ns);
    } else if (w === "-f" || w === "--values") {
      const f = value();
      if (!existsSync(f)) problems.push(`${where}: no values file ${f}`);
      flags.push("-f", f);
      if (existsSync(f)) checkTree(parse(readFileSync(f, "utf8")) ?? {}, [], `${where}: ${f}`);
    } else if (["--set", "--set-string", "--set-json", "--set-file"].includes(w)) {
      const arg = value();
      const pairs = w === "--set" || w === "--set-string" ? arg.split(/(?<!\\),/) : [arg];
      for (const pair of pairs) {
        const key = pair.slice(0, pair.indexOf("="));
        checkPath(splitKey(key), where);
      }
      if (w === "--set-file") {
        const eq = arg.indexOf("=");
        const key = arg.slice(0, eq);
        const file = arg.slice(eq + 1);
        if (/^configSigning\.publicKeys\[\d+\]$/.test(key)) flags.push(w, `${key}=${publicKey}`);
        else if (existsSync(file)) flags.push(w, arg);
        else problems.push(`${where}: --set-file ${key}: no file ${file} in the repository`);
      } else {
        flags.push(w, arg);
      }
    } else if (w === "--kube-context" || w === "--timeout") {
      value();
    } else if (["--install", "-i", "--create-namespace", "--wait", "--atomic"].includes(w)) {
      // no bearing on the render
    } else {
      problems.push(`${where}: readme.mjs does not know the flag ${w}`);
    }
  }
  if (sub !== "install" && sub !== "upgrade") return;
  if (positional.length !== 2) {
    problems.push(`${where}: expected RELEASE CHART, got ${JSON.stringify(positional)}`);
    return;
  }
  const [release, chartPath] = positional;
  if (!existsSync(join(chartPath, "Chart.yaml"))) problems.push(`${where}: ${chartPath} is not the chart`);
  const objects = render([release, chart, ...flags], where);
  if (!objects) return;
  writeFileSync(join(work, `readme-install-${n}.json`), JSON.stringify(objects));
  if (!created.has(`Namespace/${ns}`)) problems.push(`${where}: the README never creates namespace ${ns}`);
  for (const x of external(objects)) {
    if (!created.has(`${ns}/${x}`)) {
      problems.push(`${where}: the release mounts ${x}, which no kubectl command of the README creates in namespace ${ns}`);
    }
  }
  const shown = [];
  for (let i = 0; i < flags.length; i += 2) {
    if (flags[i] === "-n") continue;
    shown.push(flags[i] === "-f" ? `-f ${flags[i + 1]}` : `${flags[i]} ${flags[i + 1].split("=")[0]}`);
  }
  console.log(`readme install renders: ${release} -n ${ns}, ${shown.join(", ")}`);
});

// ---------------------------------------------------------------- yaml blocks
blocks
  .filter((b) => b.lang === "yaml")
  .forEach((b, n) => {
    const where = `${readme}: yaml block ${n + 1}`;
    let tree;
    try {
      tree = parse(b.text);
    } catch (e) {
      problems.push(`${where}: ${e.message}`);
      return;
    }
    if (!tree || typeof tree !== "object" || Array.isArray(tree)) {
      problems.push(`${where}: not a values mapping`);
      return;
    }
    checkTree(tree, [], where);
    const file = join(work, `readme-values-${n + 1}.yaml`);
    writeFileSync(file, b.text);
    for (const zone of ["dmz", "green"]) {
      render(["t", chart, "-n", zone, "--set", `zone=${zone}`, "--set-file", `configSigning.publicKeys[0]=${publicKey}`,
              "-f", file], `${where} (zone ${zone})`);
    }
    console.log(`readme values ok: yaml block ${n + 1}`);
  });

if (problems.length) {
  for (const p of problems) console.error(p);
  process.exit(1);
}
