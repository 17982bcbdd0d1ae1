#!/usr/bin/env bash
# The Helm chart's tests: lint and render both zones with default and
# production-like values, validate every manifest against the Kubernetes API
# schemas, prove from the rendered NetworkPolicies that no green-zone pod
# admits ingress from outside its namespace, and check that bad values fail.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
helm="$here/.bin/helm"
chart="$root/deploy/helm/postern"
bin="${POSTERN_BIN_DIR:-$root/build/bin}"
if [ ! -x "$helm" ] || [ ! -d "$here/node_modules/kubernetes-models" ]; then
  echo "helm test tools missing: run deploy/local/install-deps.sh" >&2
  exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

for zone in dmz green; do
  for values in default production; do
    args=(--set "zone=$zone")
    if [ "$values" = production ]; then args+=(-f "$root/deploy/helm/values-$zone-production.yaml"); fi
    echo "== $zone, $values values"
    "$helm" lint "$chart" "${args[@]}" --quiet
    "$helm" template "postern-$zone" "$chart" -n "$zone" "${args[@]}" > "$out/$zone-$values.yaml"
    node "$here/validate.mjs" "$out/$zone-$values.yaml"
    # Every config the chart renders loads in the service that reads it
    # (field names and types against config.proto / policy.proto).
    node "$here/configs.mjs" "$out/$zone-$values.yaml" "$out/cfg-$zone-$values"
    for f in "$out/cfg-$zone-$values"/*; do
      name="$(basename "$f")"
      case "$name" in
        edge-*|broker-*|connector-*) "$bin/postern-${name%%-*}" --config "$f" --check-config > /dev/null ;;
        policy-policy.yaml)
          # Key files are Secrets mounted in the cluster; any other problem fails.
          if ! "$bin/postern-policy" validate "$f" > /dev/null 2> "$out/policy.err"; then
            if grep -v "key_file: cannot read '/etc/postern/keys/" "$out/policy.err" | grep -q ":[0-9]*:[0-9]*: "; then
              cat "$out/policy.err" >&2
              exit 1
            fi
          fi ;;
        policy-*) "$bin/postern-policy" --config "$f" --check-config > /dev/null ;;
        *) echo "unexpected config $name" >&2; exit 1 ;;
      esac
      echo "config ok: $name"
    done
  done
done

echo "== NetworkPolicy proof (green zone)"
node "$here/netpol.mjs" "$out/green-default.yaml"
node "$here/netpol.mjs" "$out/green-production.yaml"

echo "== the proof fails on a policy that lets another namespace in"
sed 's/^    - podSelector:$/    - namespaceSelector: {}\n      podSelector:/' "$out/green-default.yaml" > "$out/green-open.yaml"
if cmp -s "$out/green-default.yaml" "$out/green-open.yaml"; then
  echo "self-test could not open a policy (rendered layout changed?)" >&2
  exit 1
fi
if node "$here/netpol.mjs" "$out/green-open.yaml" > "$out/open.log" 2>&1; then
  echo "netpol.mjs accepted a namespaceSelector peer" >&2
  exit 1
fi
grep -q "namespaceSelector admits other namespaces" "$out/open.log"

echo "== the schema check fails on an invalid manifest"
sed '0,/containerPort: 8080/s//containerPort: "eighty"/' "$out/dmz-default.yaml" > "$out/dmz-bad.yaml"
if node "$here/validate.mjs" "$out/dmz-bad.yaml" > "$out/bad.log" 2>&1; then
  echo "validate.mjs accepted a string containerPort" >&2
  exit 1
fi
grep -q "containerPort must be integer" "$out/bad.log"

echo "== bad values fail"
expect_fail() {
  local what="$1" pattern="$2"
  shift 2
  if "$helm" template t "$chart" "$@" > /dev/null 2> "$out/err"; then
    echo "accepted $what" >&2
    exit 1
  fi
  grep -q "$pattern" "$out/err" || { echo "no '$pattern' in the error for $what:" >&2; cat "$out/err" >&2; exit 1; }
  echo "refused $what"
}
expect_fail "an unknown zone" "zone" --set zone=bogus
expect_fail "a missing zone" "zone"
expect_fail "a typo in values" "replicaz" --set zone=dmz --set edge.replicaz=3
expect_fail "a string for a number" "replicas" --set zone=green --set-string connector.replicas=two
echo "helm chart tests passed"
