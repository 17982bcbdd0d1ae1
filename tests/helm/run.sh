#!/usr/bin/env bash
# The Helm chart's tests: lint (strict) and render both zones with default
# and production-like values, validate every manifest against the Kubernetes
# API schemas (strict: no unknown fields), check every workload's shutdown
# timing and topology spread, prove from the rendered NetworkPolicies that
# no green-zone pod admits ingress from outside its namespace and that every
# pod of both zones may open connections only where it must, check the
# optional objects (ServiceAccounts, PrometheusRule with promtool, labels)
# and the policy Watch's mutual TLS, render the README's install commands
# (keys in values.yaml, every mounted Secret created), and check that bad
# values (both zones in one namespace among them) fail.
set -Eeuo pipefail
# A failing check names itself (many are a bare grep or test).
trap 'echo "tests/helm/run.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
helm="$here/.bin/helm"
chart="$root/deploy/helm/postern"
bin="${POSTERN_BIN_DIR:-$root/build/bin}"
if [ ! -x "$helm" ] || [ ! -d "$here/node_modules/kubernetes-models" ] || ! command -v promtool > /dev/null; then
  echo "helm test tools missing: run deploy/local/install-deps.sh" >&2
  exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The snapshot-signing key pair every install needs (SECURITY.md): the
# private half is a green-zone Secret, the public half goes to both zones.
openssl genpkey -algorithm ed25519 -out "$out/signing.key" 2>/dev/null
openssl pkey -in "$out/signing.key" -pubout -out "$out/signing.pub"
keys=(--set-file "configSigning.publicKeys[0]=$out/signing.pub")

# --check-config runs every check a service runs before it starts, files
# included; the files the rendered configs name (/etc/postern/...) are
# Secrets and ConfigMaps in a pod. check_config gives the service a copy of
# the config whose paths point into a fake root, where each named file is a
# development file of the same kind (a CA, a certificate and its key, a
# signing key, a public key, a policy file).
fake="$out/fakeroot"
bash "$root/deploy/certs/make-dev-certs.sh" "$out/dev-certs" > /dev/null
check_config() {  # service config-file [flags...]
  local svc="$1" f="$2" p
  shift 2
  for p in $(grep -o '/etc/postern/[^" ,}]*' "$f" | sort -u); do
    [ -e "$fake$p" ] && continue
    mkdir -p "$(dirname "$fake$p")"
    case "$p" in
      */ca.crt) cp "$out/dev-certs/ca.crt" "$fake$p" ;;
      *.crt) cp "$out/dev-certs/broker.crt" "$fake$p" ;;
      */signing.key) cp "$out/signing.key" "$fake$p" ;;
      *.key) cp "$out/dev-certs/broker.key" "$fake$p" ;;
      *.pub) cp "$out/signing.pub" "$fake$p" ;;
      *.yaml) printf 'apis: []\n' > "$fake$p" ;;
      *) echo "check_config: no stand-in for $p ($f)" >&2; return 1 ;;
    esac
  done
  sed "s#/etc/postern/#$fake/etc/postern/#g" "$f" > "$f.local"
  "$bin/postern-$svc" --config "$f.local" "$@" --check-config > /dev/null
}

for zone in dmz green; do
  for values in default production; do
    args=(--set "zone=$zone" "${keys[@]}")
    if [ "$values" = production ]; then args+=(-f "$root/deploy/helm/values-$zone-production.yaml"); fi
    echo "== $zone, $values values"
    "$helm" lint --strict "$chart" "${args[@]}" --quiet
    "$helm" template "postern-$zone" "$chart" -n "$zone" "${args[@]}" > "$out/$zone-$values.yaml"
    node "$here/validate.mjs" "$out/$zone-$values.yaml"
    # Grace period >= preStop + drain; the default soft spread over nodes and
    # zones, selecting each workload's own pods.
    node "$here/workloads.mjs" "$out/$zone-$values.yaml"
    # Every config the chart renders loads in the service that reads it
    # (field names and types against config.proto / policy.proto).
    node "$here/configs.mjs" "$out/$zone-$values.yaml" "$out/cfg-$zone-$values"
    for f in "$out/cfg-$zone-$values"/*; do
      name="$(basename "$f")"
      case "$name" in
        *.local) continue ;;
        edge-*|broker-*|connector-*) check_config "${name%%-*}" "$f" ;;
        policy-policy.yaml)
          # Key files are Secrets mounted in the cluster; any other problem fails.
          if ! "$bin/postern-policy" validate "$f" > /dev/null 2> "$out/policy.err"; then
            if grep -v "key_file: cannot read '/etc/postern/keys/" "$out/policy.err" | grep -q ":[0-9]*:[0-9]*: "; then
              cat "$out/policy.err" >&2
              exit 1
            fi
          fi ;;
        policy-*) check_config policy "$f" ;;
        *) echo "unexpected config $name" >&2; exit 1 ;;
      esac
      echo "config ok: $name"
    done
  done
done

echo "== signed config: the private key stays green, the public key reaches every hop"
for values in default production; do
  dmz="$out/dmz-$values.yaml" green="$out/green-$values.yaml"
  # The DMZ render names no private key and mounts no signing Secret.
  if grep -q "postern-config-signing\|signing_key_file\|signing.key" "$dmz"; then
    echo "the DMZ render ($values) refers to the signing key" >&2
    exit 1
  fi
  # The policy pod mounts the Secret; its config names the key.
  grep -q "secretName: postern-config-signing" "$green"
  grep -q "signing_key_file: /etc/postern/signing/signing.key" "$out/cfg-green-$values/policy-config.yaml"
  # Every verifying hop trusts the mounted public key, the same key in both zones.
  for cfg in "$out/cfg-dmz-$values/edge-config.yaml" "$out/cfg-dmz-$values/broker-config.yaml" \
             "$out/cfg-green-$values/connector-config.yaml"; do
    grep -q "/etc/postern/config-keys/key-0.pub" "$cfg" || { echo "$cfg trusts no key" >&2; exit 1; }
  done
  for render in "$dmz" "$green"; do
    grep -q "$(sed -n 2p "$out/signing.pub")" "$render" || { echo "$render lacks the public key" >&2; exit 1; }
  done
  # The relay port wants the edge's client certificate, and the edge has one.
  grep -q "client_ca_file: /etc/postern/tls/ca.crt" "$out/cfg-dmz-$values/broker-config.yaml"
  grep -q "spiffe://postern.dev/edge" "$out/cfg-dmz-$values/broker-config.yaml"
  grep -q "cert_file: /etc/postern/relay-tls/tls.crt" "$out/cfg-dmz-$values/edge-config.yaml"
done
echo "signed config and relay mTLS rendered as intended"

echo "== lanes and receive windows: optional fields render only when set"
# Unset, the edge leaves lanes and receive_window to its defaults; the
# connector always gets lanes (values default 2).
for f in "$out/cfg-dmz-default/edge-config.yaml" "$out/cfg-green-default/connector-config.yaml"; do
  if grep -q "receive_window\|pool_size\|websocket_stream_per_session" "$f"; then
    echo "$f renders a field it should not" >&2
    exit 1
  fi
done
if grep -q "lanes" "$out/cfg-dmz-default/edge-config.yaml"; then
  echo "the default edge config sets lanes" >&2
  exit 1
fi
grep -q "^lanes: 2$" "$out/cfg-green-default/connector-config.yaml"
grep -q "^max_concurrency: 10000$" "$out/cfg-green-default/connector-config.yaml"
set_windows=(--set edge.broker.lanes=3 --set edge.broker.receiveWindow=8388608
             --set connector.lanes=4 --set connector.receiveWindow=1048576)
for zone in dmz green; do
  "$helm" template "postern-$zone" "$chart" -n "$zone" --set "zone=$zone" "${keys[@]}" "${set_windows[@]}" \
    > "$out/$zone-windows.yaml"
  node "$here/configs.mjs" "$out/$zone-windows.yaml" "$out/cfg-$zone-windows"
done
edge_cfg="$out/cfg-dmz-windows/edge-config.yaml" connector_cfg="$out/cfg-green-windows/connector-config.yaml"
grep -q "^  lanes: 3$" "$edge_cfg"
grep -q "^  receive_window: 8388608$" "$edge_cfg"
grep -q "^lanes: 4$" "$connector_cfg"
grep -q "^receive_window: 1048576$" "$connector_cfg"
check_config edge "$edge_cfg"
check_config connector "$connector_cfg"
echo "lanes and receive windows rendered as intended"

echo "== brokers behind one address: the broker count reaches the connectors"
# Each broker tells connectors its replicas (expected_brokers), so that a
# connector dialling one load-balanced address attaches to every broker.
grep -q "^expected_brokers: 2$" "$out/cfg-dmz-default/broker-config.yaml"
grep -q "^expected_brokers: 3$" "$out/cfg-dmz-production/broker-config.yaml"  # its replicas: 3
if grep -q "expected_brokers" "$out/cfg-green-default/connector-config.yaml"; then
  echo "the default connector config overrides what the brokers say" >&2
  exit 1
fi
"$helm" template postern-green "$chart" -n green --set zone=green "${keys[@]}" --set connector.expectedBrokers=3 \
  > "$out/green-expected.yaml"
node "$here/configs.mjs" "$out/green-expected.yaml" "$out/cfg-green-expected"
grep -q "^expected_brokers: 3$" "$out/cfg-green-expected/connector-config.yaml"
check_config connector "$out/cfg-green-expected/connector-config.yaml"
echo "expected_brokers rendered as intended"

echo "== the broker registration Service: ClusterIP unless asked, and then fenced"
# A LoadBalancer with no source ranges would open the registration port to
# anyone who reaches the load balancer; the default is ClusterIP, and the
# production example's LoadBalancer admits the green zone's egress range.
get() { node "$here/get.mjs" "$@"; }
[ "$(get "$out/dmz-default.yaml" Service postern-dmz-broker spec.type)" = ClusterIP ] \
  || { echo "the default registration Service is not ClusterIP" >&2; exit 1; }
[ "$(get "$out/dmz-production.yaml" Service postern-dmz-broker spec.type)" = LoadBalancer ]
[ "$(get "$out/dmz-production.yaml" Service postern-dmz-broker spec.loadBalancerSourceRanges)" = '["10.40.0.0/16"]' ]
echo "registration Service: ClusterIP by default, production LoadBalancer with source ranges"

echo "== shutdown: the production preStop outlasts a cloud NLB's health checks"
# 30 s on edge and broker (an NLB needs 20-30 s to stop sending new
# connections), and the grace period still covers preStop 30 + drain 30 +
# margin 10 (workloads.mjs checked grace >= preStop + drain on every render).
for w in Deployment/postern-dmz-edge StatefulSet/postern-dmz-broker; do
  pre="$(get "$out/dmz-production.yaml" "${w%/*}" "${w#*/}" spec.template.spec.containers.0.lifecycle.preStop.sleep.seconds)"
  grace="$(get "$out/dmz-production.yaml" "${w%/*}" "${w#*/}" spec.template.spec.terminationGracePeriodSeconds)"
  [ "$pre" = 30 ] || { echo "$w: production preStop is $pre s, not 30" >&2; exit 1; }
  [ "$grace" = 70 ] || { echo "$w: production grace period is $grace s, not 70" >&2; exit 1; }
done
echo "production preStop 30 s, grace period 70 s"

echo "== image: registry prefix, tag defaulting to appVersion, digest"
app="$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$chart/Chart.yaml")"
image_of() { "$helm" template t "$chart" -n dmz --set zone=dmz "${keys[@]}" "$@" | sed -n 's/^ *image: //p' | sort -u; }
[ "$(sed -n 's/^ *image: //p' "$out/dmz-default.yaml" | sort -u)" = "postern:$app" ] \
  || { echo "the default image is not postern:$app (image.tag empty: appVersion)" >&2; exit 1; }
[ "$(image_of --set-string image.tag=1.10)" = "postern:1.10" ]
digest="sha256:$(printf postern | sha256sum | cut -d' ' -f1)"
[ "$(image_of --set image.registry=registry.example.com --set image.digest="$digest" --set-string image.tag=9.9)" \
  = "registry.example.com/postern@$digest" ] || { echo "image.digest/image.registry not rendered" >&2; exit 1; }
[ "$(sed -n 's/^ *image: //p' "$out/green-production.yaml" | sort -u)" = "registry.example.com/postern/postern:0.1.0" ]
echo "images rendered as intended"

echo "== the policy pod rolls on its own config, not on the policy file"
# checksum/config covers the policy service's config (read once at start);
# the policy file hot-reloads and must not restart the pod.
policy_annotations() { get "$1" Deployment postern-green-policy spec.template.metadata.annotations; }
"$helm" template postern-green "$chart" -n green --set zone=green "${keys[@]}" --set logLevel=debug > "$out/green-debug.yaml"
"$helm" template postern-green "$chart" -n green --set zone=green "${keys[@]}" --set policy.reloadInterval=5s > "$out/green-reload.yaml"
{ cat "$out/cfg-green-default/policy-policy.yaml"; echo "# edited"; } > "$out/policy-edited.yaml"
"$helm" template postern-green "$chart" -n green --set zone=green "${keys[@]}" \
  --set-file policy.policyFile="$out/policy-edited.yaml" > "$out/green-policy-edited.yaml"
grep -q "^    # edited$" "$out/green-policy-edited.yaml"
base="$(policy_annotations "$out/green-default.yaml")"
for f in green-debug green-reload; do
  if [ "$(policy_annotations "$out/$f.yaml")" = "$base" ]; then
    echo "$f: the policy pod annotations did not change with its config" >&2
    exit 1
  fi
done
[ "$(policy_annotations "$out/green-policy-edited.yaml")" = "$base" ] \
  || { echo "a policy file edit changes the policy pod template (it would restart)" >&2; exit 1; }
echo "policy pod: checksum/config follows logLevel and reloadInterval, not the policy file"

echo "== topology spread: the default follows the release name; a user's own replaces it"
# The production examples hard-code no release name: installed as "other",
# nothing refers to postern-dmz / postern-green, and every workload spreads
# by its own selector.
for zone in dmz green; do
  "$helm" template other "$chart" -n "$zone" --set zone="$zone" "${keys[@]}" \
    -f "$root/deploy/helm/values-$zone-production.yaml" > "$out/other-$zone.yaml"
  if grep -n "postern-$zone" "$out/other-$zone.yaml" >&2; then
    echo "the $zone production render names the release postern-$zone" >&2
    exit 1
  fi
  node "$here/workloads.mjs" "$out/other-$zone.yaml"
done
own='[{"labelSelector":{"matchLabels":{"app.kubernetes.io/component":"edge"}},"maxSkew":2,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule"}]'
"$helm" template postern-dmz "$chart" -n dmz --set zone=dmz "${keys[@]}" --set-json "edge.topologySpreadConstraints=$own" \
  > "$out/dmz-spread.yaml"
[ "$(get "$out/dmz-spread.yaml" Deployment postern-dmz-edge spec.template.spec.topologySpreadConstraints)" = "$own" ]
[ "$(get "$out/dmz-spread.yaml" StatefulSet postern-dmz-broker spec.template.spec.topologySpreadConstraints.length)" = 2 ]
node "$here/validate.mjs" "$out/dmz-spread.yaml" > /dev/null
echo "topology spread rendered as intended"

echo "== policy Watch: mutual TLS on both sides by default, none when turned off"
# The connector -> policy Watch carries every snapshot (API definitions,
# hashed credentials). Default and production: the policy service listens
# with its certificate and demands a client certificate (client_ca_file);
# the connector presents its own certificate, trusts its ca.crt and verifies
# the policy Service's in-cluster name <release>-policy.<namespace>.svc.
block() { sed -n "/^$1:\$/,/^[^ ]/p" "$2" | sed '$ { /^[^ ]/d }'; }
policy_tls_listen='listen:
  listen: 0.0.0.0:7090
  tls:
    cert_file: /etc/postern/tls/tls.crt
    client_ca_file: /etc/postern/tls/ca.crt
    key_file: /etc/postern/tls/tls.key'
connector_policy_tls() {  # server_name
  printf '%s\n' 'policy:' '  address: postern-green-policy.green.svc.cluster.local:7090' '  tls:' \
    '    ca_file: /etc/postern/tls/ca.crt' '    cert_file: /etc/postern/tls/tls.crt' \
    '    key_file: /etc/postern/tls/tls.key' "    server_name: $1"
}
# (defaultMode aside: the YAML 1.2 parser reads the octal 0440 as 440.)
tls_volume='"items":[{"key":"tls.crt","path":"tls.crt"},{"key":"tls.key","path":"tls.key"},{"key":"ca.crt","path":"ca.crt"}],"secretName":"postern-policy-tls"}}'
tls_mount='{"mountPath":"/etc/postern/tls","name":"tls","readOnly":true}'
for values in default production; do
  cfg="$out/cfg-green-$values" r="$out/green-$values.yaml"
  [ "$(block listen "$cfg/policy-config.yaml")" = "$policy_tls_listen" ] \
    || { echo "green $values: the policy service does not listen with mutual TLS:" >&2; block listen "$cfg/policy-config.yaml" >&2; exit 1; }
  [ "$(block policy "$cfg/connector-config.yaml")" = "$(connector_policy_tls postern-green-policy.green.svc)" ] \
    || { echo "green $values: the connector does not Watch with mutual TLS:" >&2; block policy "$cfg/connector-config.yaml" >&2; exit 1; }
  get "$r" Deployment postern-green-policy spec.template.spec.volumes | grep -qF '{"name":"tls","secret":{"defaultMode":' \
    && get "$r" Deployment postern-green-policy spec.template.spec.volumes | grep -qF "$tls_volume" \
    || { echo "green $values: the policy pod does not mount postern-policy-tls" >&2; exit 1; }
  get "$r" Deployment postern-green-policy spec.template.spec.containers.0.volumeMounts | grep -qF "$tls_mount"
done
# The name follows the release and the namespace ("other" in green, the
# production values: rendered above), or policy.tls.serverName.
node "$here/configs.mjs" "$out/other-green.yaml" "$out/cfg-other-green"
grep -qx "    server_name: other-policy.green.svc" "$out/cfg-other-green/connector-config.yaml"
"$helm" template postern-green "$chart" -n green --set zone=green "${keys[@]}" \
  --set policy.tls.serverName=policy.green.example.com --set policy.tls.secretName=policy-cert > "$out/green-policy-name.yaml"
node "$here/configs.mjs" "$out/green-policy-name.yaml" "$out/cfg-green-policy-name"
[ "$(block policy "$out/cfg-green-policy-name/connector-config.yaml")" = "$(connector_policy_tls policy.green.example.com)" ]
get "$out/green-policy-name.yaml" Deployment postern-green-policy spec.template.spec.volumes | grep -qF '"secretName":"policy-cert"'
# Turned off: neither side renders TLS, the policy pod mounts no certificate,
# both configs still load, and the pods roll (their configs changed).
"$helm" lint --strict "$chart" --set zone=green "${keys[@]}" --set policy.tls.enabled=false --quiet
"$helm" template postern-green "$chart" -n green --set zone=green "${keys[@]}" --set policy.tls.enabled=false \
  > "$out/green-policy-plain.yaml"
node "$here/validate.mjs" "$out/green-policy-plain.yaml" > /dev/null
node "$here/configs.mjs" "$out/green-policy-plain.yaml" "$out/cfg-green-policy-plain"
plain="$out/cfg-green-policy-plain"
[ "$(block listen "$plain/policy-config.yaml")" = "$(printf 'listen:\n  listen: 0.0.0.0:7090')" ] \
  || { echo "policy.tls.enabled=false: the policy service still listens with TLS" >&2; exit 1; }
[ "$(block policy "$plain/connector-config.yaml")" = "$(printf 'policy:\n  address: postern-green-policy.green.svc.cluster.local:7090')" ] \
  || { echo "policy.tls.enabled=false: the connector still Watches with TLS" >&2; exit 1; }
if grep -q "postern-policy-tls" "$out/green-policy-plain.yaml" \
   || get "$out/green-policy-plain.yaml" Deployment postern-green-policy spec.template.spec.volumes | grep -q '"name":"tls"'; then
  echo "policy.tls.enabled=false: the policy pod still mounts a certificate" >&2
  exit 1
fi
check_config policy "$plain/policy-config.yaml"
check_config connector "$plain/connector-config.yaml"
for d in connector policy; do
  [ "$(get "$out/green-policy-plain.yaml" Deployment "postern-green-$d" spec.template.metadata.annotations)" \
    != "$(get "$out/green-default.yaml" Deployment "postern-green-$d" spec.template.metadata.annotations)" ] \
    || { echo "policy.tls.enabled=false does not roll the $d pods" >&2; exit 1; }
done
echo "policy Watch: mutual TLS by default (paths, server_name, Secret), plaintext only when asked"

echo "== brokers not ready yet: the connectors' address lists them"
# A broker becomes ready once connectors have attached to it: connectors
# dial a registration-only headless Service that publishes not-ready brokers
# (and the registration Service does too); the edges keep the headless
# Service of ready brokers.
svc() { get "$out/dmz-default.yaml" Service "$@"; }
reg=postern-dmz-broker-registration-headless
[ "$(svc $reg spec.clusterIP)" = None ]
[ "$(svc $reg spec.publishNotReadyAddresses)" = true ]
[ "$(svc $reg spec.ports)" = '[{"name":"registration","port":7443,"protocol":"TCP","targetPort":"registration"}]' ]
[ "$(svc postern-dmz-broker spec.publishNotReadyAddresses)" = true ]
[ "$(get "$out/dmz-production.yaml" Service postern-dmz-broker spec.type)" = LoadBalancer ]
[ "$(get "$out/dmz-production.yaml" Service postern-dmz-broker spec.publishNotReadyAddresses)" = true ]
[ "$(svc postern-dmz-broker-headless spec.publishNotReadyAddresses)" = false ]
[ "$(svc postern-dmz-broker-headless spec.ports.1.name)" = relay ]
grep -q "address: postern-dmz-broker-headless.dmz.svc.cluster.local:7080" "$out/cfg-dmz-default/edge-config.yaml"
# The connector's default address is that Service of the DMZ release
# postern-dmz, in namespace dmz (what the DMZ render above installs).
grep -qxF -- "- $reg.dmz.svc.cluster.local:7443" "$out/cfg-green-default/connector-config.yaml" \
  || { echo "the default connector.brokers is not $reg.dmz.svc.cluster.local:7443" >&2; exit 1; }
echo "connectors dial every broker, ready or not; edges only ready ones"

echo "== service accounts, HPA behavior, icon: the defaults"
# One ServiceAccount per component, no token mounted (in the account and in
# the pod); the edge's HPA scales down slowly; no PrometheusRule unless asked.
for w in dmz:Deployment:edge dmz:StatefulSet:broker green:Deployment:connector green:Deployment:policy; do
  IFS=: read -r zone kind c <<< "$w"
  r="$out/$zone-default.yaml"
  [ "$(get "$r" ServiceAccount "postern-$zone-$c" automountServiceAccountToken)" = false ]
  [ "$(get "$r" "$kind" "postern-$zone-$c" spec.template.spec.serviceAccountName)" = "postern-$zone-$c" ]
  [ "$(get "$r" "$kind" "postern-$zone-$c" spec.template.spec.automountServiceAccountToken)" = false ]
done
[ "$(get "$out/dmz-default.yaml" HorizontalPodAutoscaler postern-dmz-edge spec.behavior)" \
  = '{"scaleDown":{"policies":[{"periodSeconds":60,"type":"Percent","value":10}],"stabilizationWindowSeconds":600}}' ]
"$helm" template postern-dmz "$chart" -n dmz --set zone=dmz "${keys[@]}" --set edge.autoscaling.behavior=null > "$out/dmz-nobehavior.yaml"
if get "$out/dmz-nobehavior.yaml" HorizontalPodAutoscaler postern-dmz-edge spec.behavior > /dev/null 2>&1; then
  echo "edge.autoscaling.behavior: null still renders a behavior" >&2
  exit 1
fi
for r in "$out"/{dmz,green}-{default,production}.yaml; do
  if grep -q "^kind: PrometheusRule$" "$r"; then echo "$r has a PrometheusRule by default" >&2; exit 1; fi
done
grep -qx "icon: https://postern.dev/icon.svg" "$chart/Chart.yaml"
"$helm" show chart "$chart" | grep -qx "icon: https://postern.dev/icon.svg"
echo "ServiceAccounts without tokens, slow edge scale-down, chart icon"

echo "== every option on: labels, priority classes, env/args, accounts, monitoring objects"
cat > "$out/options.yaml" <<'YAML'
commonLabels: {team: payments, cost-center: "1234"}
metrics:
  serviceMonitor:
    enabled: true
    namespace: monitoring
    metricRelabelings:
      - {action: drop, sourceLabels: [__name__], regex: postern_.*_lane_frames_per_message_bucket}
  prometheusRule:
    enabled: true
    namespace: monitoring
    labels: {release: kube-prometheus-stack}
    edgeErrorRatio: 0.02
    additionalRules:
      - alert: PosternEdgeDown
        expr: absent(postern_edge_connections)
        for: 5m
        labels: {severity: critical}
        annotations: {summary: No edge reports metrics}
grafanaDashboard: {enabled: true}
edge:
  priorityClassName: postern-public
  extraEnv: [{name: MALLOC_CONF, value: "background_thread:true"}]
  extraArgs: [--log-level, debug]
  serviceAccount: {annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::111122223333:role/edge"}}
broker: {priorityClassName: postern-core, serviceAccount: {create: false, name: shared}}
connector: {priorityClassName: postern-core, extraArgs: [--log-level, warn], serviceAccount: {name: connector-sa}}
policy:
  priorityClassName: postern-core
  extraEnv: [{name: TZ, value: UTC}]
  serviceAccount: {create: false}
  pdb: {enabled: true, maxUnavailable: 1}
YAML
for zone in dmz green; do
  r="$out/$zone-options.yaml"
  "$helm" lint --strict "$chart" --set zone="$zone" "${keys[@]}" -f "$out/options.yaml" --quiet
  "$helm" template "postern-$zone" "$chart" -n "$zone" --set zone="$zone" "${keys[@]}" -f "$out/options.yaml" > "$r"
  node "$here/validate.mjs" "$r"                        # the PrometheusRule and ServiceMonitor against their CRDs
  node "$here/workloads.mjs" "$r"
  node "$here/netpol.mjs" "$r" "$out/options.yaml"
  # commonLabels on every object and pod template, in no selector.
  node "$here/labels.mjs" "$r" team=payments cost-center=1234
  # The alerts: metric names and result values the services export, then
  # Prometheus' own parser and unit tests (promtool).
  node "$here/rules.mjs" "$r" "$root/services" "$out/rules-$zone.json"
  promtool check rules "$out/rules-$zone.json" > /dev/null
  cp "$here/alerts-$zone.test.yaml" "$out/"
  "$helm" template "postern-$zone" "$chart" -n "$zone" --set zone="$zone" "${keys[@]}" \
    --set metrics.prometheusRule.enabled=true > "$out/$zone-rule.yaml"
  node "$here/rules.mjs" "$out/$zone-rule.yaml" "$root/services" "$out/rules-$zone.json" > /dev/null
  promtool test rules "$out/alerts-$zone.test.yaml"
  # Both monitoring objects in the namespace asked for; the ServiceMonitor
  # still scrapes the release namespace.
  [ "$(get "$r" PrometheusRule "postern-$zone-alerts" metadata.namespace)" = monitoring ]
  [ "$(get "$r" PrometheusRule "postern-$zone-alerts" metadata.labels.release)" = kube-prometheus-stack ]
  [ "$(get "$r" PrometheusRule "postern-$zone-alerts" spec.groups.0.rules.length)" = "$([ "$zone" = dmz ] && echo 6 || echo 5)" ]
  [ "$(get "$r" ServiceMonitor "postern-$zone-metrics" metadata.namespace)" = monitoring ]
  [ "$(get "$r" ServiceMonitor "postern-$zone-metrics" spec.namespaceSelector.matchNames)" = "[\"$zone\"]" ]
  [ "$(get "$r" ServiceMonitor "postern-$zone-metrics" spec.endpoints.0.metricRelabelings.0.action)" = drop ]
done
o="$out/dmz-options.yaml"
[ "$(get "$o" Deployment postern-dmz-edge spec.template.spec.priorityClassName)" = postern-public ]
[ "$(get "$o" StatefulSet postern-dmz-broker spec.template.spec.priorityClassName)" = postern-core ]
[ "$(get "$o" Deployment postern-dmz-edge spec.template.spec.containers.0.args)" \
  = '["--config","/etc/postern/config/config.yaml","--log-level","debug"]' ]
[ "$(get "$o" Deployment postern-dmz-edge spec.template.spec.containers.0.env)" = '[{"name":"MALLOC_CONF","value":"background_thread:true"}]' ]
[ "$(get "$o" ServiceAccount postern-dmz-edge metadata.annotations)" = '{"eks.amazonaws.com/role-arn":"arn:aws:iam::111122223333:role/edge"}' ]
[ "$(get "$o" StatefulSet postern-dmz-broker spec.template.spec.serviceAccountName)" = shared ]
if get "$o" ServiceAccount postern-dmz-broker kind > /dev/null 2>&1; then
  echo "broker.serviceAccount.create=false still renders a ServiceAccount" >&2
  exit 1
fi
get "$o" PrometheusRule postern-dmz-alerts spec.groups.0.rules.1.expr | grep -q "> 0.02$"   # edgeErrorRatio
o="$out/green-options.yaml"
[ "$(get "$o" Deployment postern-green-connector spec.template.spec.priorityClassName)" = postern-core ]
[ "$(get "$o" Deployment postern-green-policy spec.template.spec.priorityClassName)" = postern-core ]
[ "$(get "$o" Deployment postern-green-connector spec.template.spec.containers.0.args)" \
  = '["--config","/etc/postern/config/config.yaml","--log-level","warn"]' ]
[ "$(get "$o" Deployment postern-green-policy spec.template.spec.containers.0.env)" = '[{"name":"TZ","value":"UTC"}]' ]
[ "$(get "$o" ServiceAccount connector-sa automountServiceAccountToken)" = false ]
[ "$(get "$o" Deployment postern-green-connector spec.template.spec.serviceAccountName)" = connector-sa ]
[ "$(get "$o" Deployment postern-green-policy spec.template.spec.serviceAccountName)" = default ]
# extraArgs reach a service that understands them.
node "$here/configs.mjs" "$o" "$out/cfg-green-options"
check_config connector "$out/cfg-green-options/connector-config.yaml" --log-level warn
echo "every option rendered as intended"

echo "== NetworkPolicy proof (both zones, ingress and egress)"
# Every pod is selected by an Egress policy and may reach only what it needs
# (edge: broker relay port, DNS, edge.upstreamEgress; broker and policy: DNS;
# connector: brokers, DNS, policy, connector.nativeEgress); netpol.mjs reads
# what the values configure from the values files given.
for zone in dmz green; do
  node "$here/netpol.mjs" "$out/$zone-default.yaml"
  node "$here/netpol.mjs" "$out/$zone-production.yaml" "$root/deploy/helm/values-$zone-production.yaml"
done
# The DMZ egress as rendered: the edge's first rule is the relay port of this
# release's broker pods; broker and policy pods get DNS alone.
[ "$(get "$out/dmz-default.yaml" NetworkPolicy postern-dmz-edge-egress spec.egress.0)" \
  = '{"ports":[{"port":7080,"protocol":"TCP"}],"to":[{"podSelector":{"matchLabels":{"app.kubernetes.io/component":"broker","app.kubernetes.io/instance":"postern-dmz","app.kubernetes.io/name":"postern"}}}]}' ]
dns_rule='{"ports":[{"port":53,"protocol":"UDP"},{"port":53,"protocol":"TCP"}],"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kube-system"}},"podSelector":{"matchLabels":{"k8s-app":"kube-dns"}}}]}'
[ "$(get "$out/dmz-default.yaml" NetworkPolicy postern-dmz-broker-egress spec.egress)" = "[$dns_rule]" ]
[ "$(get "$out/green-default.yaml" NetworkPolicy postern-green-policy-egress spec.egress)" = "[$dns_rule]" ]
[ "$(get "$out/dmz-default.yaml" NetworkPolicy postern-dmz-edge-egress spec.egress.length)" = 2 ] \
  || { echo "the default edge egress has more than the relay port and DNS" >&2; exit 1; }
# DMZ-local upstreams (edge.upstreamEgress, both shapes) and a DNS of one's
# own (networkPolicies.dns) reach every pod's egress; the proof follows them.
cat > "$out/egress-values.yaml" <<'YAML'
networkPolicies:
  dns:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dns}}
    podSelector: {matchLabels: {app: coredns, k8s-app: null}}   # null drops the default
edge:
  upstreamEgress:
    - {podSelector: {matchLabels: {app: status}}, ports: [8080]}
    - {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shared}}, ports: [9000, 9001]}
    - {cidr: 10.30.0.0/24, ports: [443]}
connector:
  nativeEgress:
    - {podSelector: {matchLabels: {app: orders}}, ports: [8080]}
    - {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: orders}}, ports: [8443]}
tracing:
  endpoint: http://otel-collector.observability:4318
  sampleRatio: 0.25
  egress:
    - {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: observability}},
       podSelector: {matchLabels: {app: otel-collector}}, ports: [4318]}
YAML
for zone in dmz green; do
  "$helm" template "postern-$zone" "$chart" -n "$zone" --set zone="$zone" "${keys[@]}" -f "$out/egress-values.yaml" \
    > "$out/$zone-egress.yaml"
  node "$here/validate.mjs" "$out/$zone-egress.yaml" > /dev/null
  node "$here/netpol.mjs" "$out/$zone-egress.yaml" "$out/egress-values.yaml"
  # Without the values, the same render shows destinations nobody asked for.
  if node "$here/netpol.mjs" "$out/$zone-egress.yaml" > /dev/null 2>&1; then
    echo "netpol.mjs accepted $zone egress it was not told about" >&2
    exit 1
  fi
done
[ "$(get "$out/dmz-egress.yaml" NetworkPolicy postern-dmz-edge-egress spec.egress.3)" \
  = '{"ports":[{"port":9000,"protocol":"TCP"},{"port":9001,"protocol":"TCP"}],"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"shared"}}}]}' ]
[ "$(get "$out/dmz-egress.yaml" NetworkPolicy postern-dmz-broker-egress spec.egress.0.to)" \
  = '[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"dns"}},"podSelector":{"matchLabels":{"app":"coredns"}}}]' ]
# Tracing: the endpoint reaches the edge's, broker's and connector's
# configs, and the collector (alone) their egress; the policy pod's stays DNS.
collector_rule='{"ports":[{"port":4318,"protocol":"TCP"}],"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"observability"}},"podSelector":{"matchLabels":{"app":"otel-collector"}}}]}'
[ "$(get "$out/dmz-egress.yaml" NetworkPolicy postern-dmz-broker-egress spec.egress.1)" = "$collector_rule" ]
[ "$(get "$out/dmz-egress.yaml" NetworkPolicy postern-dmz-edge-egress spec.egress.5)" = "$collector_rule" ]
[ "$(get "$out/green-egress.yaml" NetworkPolicy postern-green-connector-egress spec.egress.5)" = "$collector_rule" ]
[ "$(get "$out/green-egress.yaml" NetworkPolicy postern-green-policy-egress spec.egress.length)" = 1 ]
for zone in dmz green; do
  node "$here/configs.mjs" "$out/$zone-egress.yaml" "$out/cfg-$zone-egress"
done
for f in dmz-egress/edge dmz-egress/broker green-egress/connector; do
  grep -q 'endpoint: http://otel-collector.observability:4318' "$out/cfg-$f-config.yaml" \
    || { echo "no tracing endpoint in $f-config.yaml" >&2; exit 1; }
  grep -q 'sample_ratio: 0.25' "$out/cfg-$f-config.yaml" || { echo "no sample_ratio in $f-config.yaml" >&2; exit 1; }
  check_config "$(basename "$f")" "$out/cfg-$f-config.yaml"
done
if grep -q "tracing" "$out/cfg-dmz-default/edge-config.yaml"; then
  echo "a tracing block without tracing.endpoint" >&2
  exit 1
fi
echo "egress: edge to the broker relay port, DNS and its upstreams; broker and policy DNS only; the trace collector when set"

echo "== connector.nativeEgress: pods by selector (target ports), or CIDRs"
# The production example reaches its in-cluster native service by namespace
# and pod selector, not by the Service range (CNIs apply NetworkPolicy after
# the Service address is rewritten to a pod address and target port).
[ "$(get "$out/green-production.yaml" NetworkPolicy postern-green-connector-egress spec.egress.3)" \
  = '{"ports":[{"port":8080,"protocol":"TCP"}],"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"orders"}},"podSelector":{"matchLabels":{"app.kubernetes.io/name":"orders"}}}]}' ]
[ "$(get "$out/green-production.yaml" NetworkPolicy postern-green-connector-egress spec.egress.4)" \
  = '{"ports":[{"port":8443,"protocol":"TCP"}],"to":[{"ipBlock":{"cidr":"10.60.12.0/24"}}]}' ]
if grep -q "10.96.0.0/12" "$out/green-production.yaml"; then
  echo "the green production render still admits the Service range" >&2
  exit 1
fi
# A podSelector alone (same namespace) and a namespaceSelector alone.
[ "$(get "$out/green-egress.yaml" NetworkPolicy postern-green-connector-egress spec.egress.3.to)" \
  = '[{"podSelector":{"matchLabels":{"app":"orders"}}}]' ]
[ "$(get "$out/green-egress.yaml" NetworkPolicy postern-green-connector-egress spec.egress.4.to)" \
  = '[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"orders"}}}]' ]
echo "nativeEgress rendered as intended"

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

echo "== the proof fails on egress to everywhere"
# Injected as the first rule of the edge's egress policy (the DMZ render's
# first "egress:"): each must fail, naming what it opens.
inject_egress() {
  local what="$1" rule="$2" pattern="$3"
  sed "0,/^  egress:$/s//  egress:\n$rule/" "$out/dmz-default.yaml" > "$out/dmz-inject.yaml"
  if cmp -s "$out/dmz-default.yaml" "$out/dmz-inject.yaml"; then
    echo "self-test could not inject $what (rendered layout changed?)" >&2
    exit 1
  fi
  if node "$here/netpol.mjs" "$out/dmz-inject.yaml" > "$out/inject.log" 2>&1; then
    echo "netpol.mjs accepted $what" >&2
    exit 1
  fi
  grep -q "$pattern" "$out/inject.log" || { cat "$out/inject.log" >&2; exit 1; }
  echo "proof refused $what"
}
inject_egress "an egress peer 0.0.0.0/0" \
  '  - to:\n    - ipBlock:\n        cidr: 0.0.0.0\/0\n    ports:\n    - port: 443\n      protocol: TCP' \
  "postern-dmz-edge-egress egress\[0\]: ipBlock 0.0.0.0/0 admits every address"
inject_egress "an egress peer ::/0" \
  '  - to:\n    - ipBlock:\n        cidr: ::\/0\n    ports:\n    - port: 443\n      protocol: TCP' \
  "ipBlock ::/0 admits every address"
inject_egress "an egress rule without \"to\"" \
  '  - ports:\n    - port: 443\n      protocol: TCP' \
  'egress\[0\]: empty "to" allows every destination'
inject_egress "edge egress to the API server" \
  '  - to:\n    - ipBlock:\n        cidr: 10.96.0.1\/32\n    ports:\n    - port: 443\n      protocol: TCP' \
  '{"ipBlock":{"cidr":"10.96.0.1/32"}} port 443/TCP is none of what the edge needs'

echo "== the schema check fails on an invalid manifest"
sed '0,/containerPort: 8080/s//containerPort: "eighty"/' "$out/dmz-default.yaml" > "$out/dmz-bad.yaml"
if node "$here/validate.mjs" "$out/dmz-bad.yaml" > "$out/bad.log" 2>&1; then
  echo "validate.mjs accepted a string containerPort" >&2
  exit 1
fi
grep -q "containerPort must be integer" "$out/bad.log"

echo "== the schema check fails on an unknown field"
# A template typo would otherwise pass (and the API server drops the field).
sed 's/readinessProbe:/readinesProbe:/' "$out/dmz-default.yaml" > "$out/dmz-typo.yaml"
if cmp -s "$out/dmz-default.yaml" "$out/dmz-typo.yaml"; then
  echo "self-test could not misspell readinessProbe (rendered layout changed?)" >&2
  exit 1
fi
if node "$here/validate.mjs" "$out/dmz-typo.yaml" > "$out/typo.log" 2>&1; then
  echo "validate.mjs accepted a readinesProbe field" >&2
  exit 1
fi
grep -q "unknown field spec.template.spec.containers\[0\].readinesProbe" "$out/typo.log" \
  || { cat "$out/typo.log" >&2; exit 1; }

echo "== the README: its install commands render, set only keys values.yaml has, and create what they mount"
# Every helm install/upgrade command of deploy/helm/README.md, rendered with
# its own values files and flags; every key it sets is in values.yaml; every
# Secret and ConfigMap the renders mount (and the chart does not render) is
# created by a kubectl command of the README in that namespace; every yaml
# block is chart values. Run from the root: the README's paths are relative.
(cd "$root" && node "$here/readme.mjs" deploy/helm/README.md "$chart" "$helm" "$out/signing.pub" "$out/readme")
# It fails on a key values.yaml does not have, and on a Secret nobody creates.
readme_fails() {
  local what="$1" pattern="$2" edit="$3"
  sed "$edit" "$root/deploy/helm/README.md" > "$out/README-bad.md"
  if cmp -s "$root/deploy/helm/README.md" "$out/README-bad.md"; then
    echo "self-test could not edit the README for $what (layout changed?)" >&2
    exit 1
  fi
  if (cd "$root" && node "$here/readme.mjs" "$out/README-bad.md" "$chart" "$helm" "$out/signing.pub" "$out/readme-bad") \
       > "$out/readme.log" 2>&1; then
    echo "readme.mjs accepted $what" >&2
    exit 1
  fi
  grep -qF "$pattern" "$out/readme.log" || { cat "$out/readme.log" >&2; exit 1; }
  echo "readme.mjs refused $what"
}
readme_fails "a --set key values.yaml lacks" "edge.replicaz is not in values.yaml" \
  's/--set zone=dmz/--set zone=dmz --set edge.replicaz=3/'
readme_fails "a Secret the README never creates" \
  "mounts Secret/postern-policy-tls, which no kubectl command of the README creates in namespace green" \
  '/create secret generic postern-policy-tls/d'
readme_fails "a Secret created in the wrong namespace" \
  "mounts Secret/postern-edge-relay-tls, which no kubectl command of the README creates in namespace dmz" \
  's/kubectl --context dmz -n dmz create secret generic postern-edge-relay-tls/kubectl --context dmz -n green create secret generic postern-edge-relay-tls/'

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
expect_fail "a zone without the config public key" "configSigning.publicKeys" --set zone=dmz
expect_fail "a public key that is not PEM" "publicKeys" --set zone=green --set "configSigning.publicKeys[0]=nope"
expect_fail "an unknown zone" "zone" --set zone=bogus
expect_fail "a tracing endpoint the NetworkPolicies would block" "tracing.egress is empty" \
  --set zone=dmz "${keys[@]}" --set tracing.endpoint=http://otel-collector:4318
expect_fail "a tracing endpoint that is not OTLP/HTTP" "tracing.endpoint" \
  --set zone=dmz "${keys[@]}" --set tracing.endpoint=grpc://otel-collector:4317
# Both zones in one namespace: the green release in the namespace its
# connector egress selects as the DMZ, the DMZ release in the namespace it
# admits as the green zone (helm template -n NAMESPACE).
expect_fail "the green release in the DMZ's namespace" \
  'installed into namespace "dmz", which connector.brokerEgress.namespaceSelector' -n dmz --set zone=green "${keys[@]}"
expect_fail "the DMZ release in the green zone's namespace" \
  'installed into namespace "green", which broker.greenZone.namespaceSelector' -n green --set zone=dmz "${keys[@]}"
expect_fail "the green release in a DMZ namespace of another name" "connector.brokerEgress.namespaceSelector" \
  -n edge-apps --set zone=green "${keys[@]}" \
  '--set-json=connector.brokerEgress.namespaceSelector={"matchLabels":{"kubernetes.io/metadata.name":"edge-apps"}}'
expect_fail "the DMZ release in the green namespace (In expression)" "broker.greenZone.namespaceSelector" \
  -n apps --set zone=dmz "${keys[@]}" \
  '--set-json=broker.greenZone.namespaceSelector={"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"In","values":["x","apps"]}]}'
expect_fail "the green release in the DMZ's namespace (no schema)" "must not share a namespace" \
  -n dmz --set zone=green "${keys[@]}" --skip-schema-validation
# Each release in its own namespace renders (above, -n dmz and -n green); a
# DMZ in another cluster (no namespace selected) leaves the namespace free.
"$helm" template t "$chart" -n dmz --set zone=green "${keys[@]}" --set connector.brokerEgress.namespaceSelector=null \
  --set 'connector.brokerEgress.cidrs={192.0.2.0/28}' > /dev/null
"$helm" template t "$chart" -n green --set zone=dmz "${keys[@]}" -f "$root/deploy/helm/values-dmz-production.yaml" > /dev/null
# Policy Watch TLS without a Secret (schema; the template guard).
expect_fail "policy TLS without a Secret" "policy.tls.secretName" --set zone=green "${keys[@]}" --set policy.tls.secretName=
expect_fail "policy TLS without a Secret (no schema)" "policy.tls.secretName is empty" --set zone=green "${keys[@]}" \
  --set policy.tls.secretName= --skip-schema-validation
expect_fail "a string for policy.tls.enabled" "policy.tls.enabled" --set zone=green "${keys[@]}" --set-string policy.tls.enabled=yes
expect_fail "a missing zone" "zone"
expect_fail "a typo in values" "replicaz" --set zone=dmz "${keys[@]}" --set edge.replicaz=3
expect_fail "a string for a number" "replicas" --set zone=green "${keys[@]}" --set-string connector.replicas=two
expect_fail "connector lanes above 16" "lanes" --set zone=green "${keys[@]}" --set connector.lanes=17
expect_fail "edge lanes of 0" "lanes" --set zone=dmz "${keys[@]}" --set edge.broker.lanes=0
expect_fail "a connector maxConcurrency of 0" "maxConcurrency" --set zone=green "${keys[@]}" --set connector.maxConcurrency=0
expect_fail "more than 64 brokers" "replicas" --set zone=dmz "${keys[@]}" --set broker.replicas=65
expect_fail "a connector expecting 0 brokers" "expectedBrokers" --set zone=green "${keys[@]}" --set connector.expectedBrokers=0
expect_fail "the removed poolSize" "poolSize" --set zone=green "${keys[@]}" --set connector.poolSize=8
# The registration port behind a LoadBalancer, open to anyone (schema; the
# template guard for installs that skip the schema).
lb=(--set zone=dmz "${keys[@]}" --set broker.registrationService.type=LoadBalancer)
expect_fail "a registration LoadBalancer without source ranges" "registrationService.loadBalancerSourceRanges" "${lb[@]}"
expect_fail "a registration LoadBalancer without source ranges (no schema)" "loadBalancerSourceRanges is empty" \
  "${lb[@]}" --skip-schema-validation
"$helm" template t "$chart" "${lb[@]}" --set 'broker.registrationService.loadBalancerSourceRanges={10.40.0.0/16}' > /dev/null
# Kubernetes < 1.30 (no sleep action), and a 0 s sleep (needs 1.33).
expect_fail "Kubernetes 1.29" "kubeVersion" --set zone=dmz "${keys[@]}" --kube-version 1.29.0
expect_fail "a preStop of 0 s" "preStopSeconds" --set zone=dmz "${keys[@]}" --set shutdown.preStopSeconds=0
expect_fail "a numeric image tag" "image.tag" --set zone=dmz "${keys[@]}" --set image.tag=2
expect_fail "an image digest without an algorithm" "image.digest" --set zone=dmz "${keys[@]}" --set image.digest=0123
# Green: nothing to dial, no policy.
expect_fail "connector.brokers: null" "connector.brokers is empty" --set zone=green "${keys[@]}" --set connector.brokers=null
expect_fail "an empty connector.brokers" "connector.brokers" --set zone=green "${keys[@]}" --set-json 'connector.brokers=[]'
expect_fail "an empty policy file" "policy.policyFile is empty" --set zone=green "${keys[@]}" --set policy.policyFile=
expect_fail "a blank policy file" "policy.policyFile is empty" --set zone=green "${keys[@]}" --set-string 'policy.policyFile=  '
expect_fail "policy.policyFile: null" "policy.policyFile is empty" --set zone=green "${keys[@]}" --set policy.policyFile=null
# Egress destinations (connector.nativeEgress, edge.upstreamEgress): {cidr,
# ports} or {namespaceSelector and/or podSelector, ports}, never one that
# names no destination or every address, never without ports (schema; the
# template guards for installs that skip the schema).
ne() { printf -- '--set-json=connector.nativeEgress=%s' "$1"; }
expect_fail "a nativeEgress entry naming no destination" "connector.nativeEgress.0" \
  --set zone=green "${keys[@]}" "$(ne '[{"ports":[8080]}]')"
expect_fail "a nativeEgress entry with a cidr and a selector" "connector.nativeEgress.0" \
  --set zone=green "${keys[@]}" "$(ne '[{"cidr":"10.0.0.0/8","podSelector":{"matchLabels":{"app":"x"}},"ports":[8080]}]')"
expect_fail "a nativeEgress entry without ports" "connector.nativeEgress.0.ports" \
  --set zone=green "${keys[@]}" "$(ne '[{"podSelector":{"matchLabels":{"app":"x"}},"ports":[]}]')"
expect_fail "a nativeEgress namespaceSelector {} alone (every pod)" "connector.nativeEgress.0.namespaceSelector" \
  --set zone=green "${keys[@]}" "$(ne '[{"namespaceSelector":{},"ports":[80]}]')"
expect_fail "an upstreamEgress cidr 0.0.0.0/0" "edge.upstreamEgress.0.cidr" \
  --set zone=dmz "${keys[@]}" '--set-json=edge.upstreamEgress=[{"cidr":"0.0.0.0/0","ports":[443]}]'
expect_fail "an upstreamEgress cidr ::/0 (no schema)" "admits every address" --skip-schema-validation \
  --set zone=dmz "${keys[@]}" '--set-json=edge.upstreamEgress=[{"cidr":"::/0","ports":[443]}]'
expect_fail "a nativeEgress entry naming no destination (no schema)" "names no destination" --skip-schema-validation \
  --set zone=green "${keys[@]}" "$(ne '[{"namespaceSelector":{},"ports":[80]}]')"
expect_fail "a nativeEgress entry without ports (no schema)" "nativeEgress\[0\].ports is empty" --skip-schema-validation \
  --set zone=green "${keys[@]}" "$(ne '[{"podSelector":{"matchLabels":{"app":"x"}}}]')"
# The new options' types.
expect_fail "a typo in the HPA behavior" "scaleDwn" --set zone=dmz "${keys[@]}" --set edge.autoscaling.behavior.scaleDwn.x=1
expect_fail "an edge error ratio of 0" "edgeErrorRatio" --set zone=dmz "${keys[@]}" --set metrics.prometheusRule.edgeErrorRatio=0
expect_fail "a priority class that is no name" "edge.priorityClassName" --set zone=dmz "${keys[@]}" \
  --set edge.priorityClassName=High
expect_fail "a string for serviceAccount.create" "connector.serviceAccount.create" --set zone=green "${keys[@]}" \
  --set-string connector.serviceAccount.create=yes
# No replicas: 0 connectors, or 0 edges without the HPA (with it, the HPA's
# minReplicas applies and edge.replicas is not rendered).
expect_fail "0 connectors" "connector.replicas" --set zone=green "${keys[@]}" --set connector.replicas=0
expect_fail "0 connectors (no schema)" "connector.replicas is 0" --set zone=green "${keys[@]}" --set connector.replicas=0 \
  --skip-schema-validation
expect_fail "0 edges without autoscaling" "edge.replicas" --set zone=dmz "${keys[@]}" \
  --set edge.autoscaling.enabled=false --set edge.replicas=0
expect_fail "0 edges without autoscaling (no schema)" "edge.replicas is 0" --set zone=dmz "${keys[@]}" \
  --set edge.autoscaling.enabled=false --set edge.replicas=0 --skip-schema-validation
"$helm" template t "$chart" --set zone=dmz "${keys[@]}" --set edge.replicas=0 > "$out/dmz-hpa.yaml"
if grep -q "^  replicas: 0$" "$out/dmz-hpa.yaml" || ! grep -q "^  minReplicas: 2$" "$out/dmz-hpa.yaml"; then
  echo "with the HPA on, edge.replicas should be ignored" >&2
  exit 1
fi
# A PodDisruptionBudget that blocks every drain.
expect_fail "a PDB maxUnavailable of 0" "edge.pdb.maxUnavailable" --set zone=dmz "${keys[@]}" --set edge.pdb.maxUnavailable=0
expect_fail "a PDB maxUnavailable of 0%" "connector.pdb.maxUnavailable" --set zone=green "${keys[@]}" \
  --set connector.pdb.maxUnavailable=0%
expect_fail "a PDB maxUnavailable of 0 (no schema)" "blocks every node drain" --set zone=green "${keys[@]}" \
  --set policy.pdb.enabled=true --set policy.pdb.maxUnavailable=0 --skip-schema-validation
echo "helm chart tests passed"
