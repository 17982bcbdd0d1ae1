{{/*
Postern chart helpers. Names are <release>-<component>; every object carries
app.kubernetes.io/name|instance|component|part-of.
*/}}

{{/* Ports: fixed, so Services, probes, NetworkPolicies and configs agree. */}}
{{- define "postern.port.edgeHttp" -}}8080{{- end }}
{{- define "postern.port.edgeHttps" -}}8443{{- end }}
{{- define "postern.port.edgeAdmin" -}}9100{{- end }}
{{- define "postern.port.brokerRegistration" -}}7443{{- end }}
{{- define "postern.port.brokerRelay" -}}7080{{- end }}
{{- define "postern.port.brokerAdmin" -}}9101{{- end }}
{{- define "postern.port.connectorAdmin" -}}9102{{- end }}
{{- define "postern.port.policyGrpc" -}}7090{{- end }}
{{- define "postern.port.policyAdmin" -}}9103{{- end }}

{{/* Admin port of a component. ctx: component name. */}}
{{- define "postern.adminPort" -}}
{{- $ports := dict "edge" 9100 "broker" 9101 "connector" 9102 "policy" 9103 -}}
{{- get $ports . -}}
{{- end }}

{{/* Zone guard, for installs that skip schema validation. */}}
{{- define "postern.zone" -}}
{{- $zone := .Values.zone | default "" -}}
{{- if not (has $zone (list "dmz" "green")) -}}
{{- fail (printf "zone must be \"dmz\" or \"green\" (got %q): helm install ... --set zone=dmz" $zone) -}}
{{- end -}}
{{- $zone -}}
{{- end }}

{{/*
The namespaces a selector names by kubernetes.io/metadata.name: its
matchLabels value and the values of its "In" matchExpressions on that key.
ctx: a labelSelector or null. Output: a JSON list.
*/}}
{{- define "postern.selectedNamespaces" -}}
{{- $names := list -}}
{{- with . -}}
{{- with .matchLabels -}}
{{- with (get . "kubernetes.io/metadata.name") }}{{ $names = append $names (toString .) }}{{ end -}}
{{- end -}}
{{- range .matchExpressions -}}
{{- if and (eq (toString .key) "kubernetes.io/metadata.name") (eq (toString .operator) "In") -}}
{{- range .values }}{{ $names = append $names (toString .) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end }}

{{/*
Both zones in one namespace: refused. The green release must not go into the
namespace its connector egress selects as the DMZ, nor the DMZ release into
the namespace it admits as the green zone: one namespace would put the
internet-facing edge beside the policy service's signing key and API key
Secrets, under the green zone's NetworkPolicies. ctx: root.
*/}}
{{- define "postern.namespaceGuard" -}}
{{- $ns := .Release.Namespace -}}
{{- if eq .Values.zone "green" -}}
{{- if has $ns (include "postern.selectedNamespaces" .Values.connector.brokerEgress.namespaceSelector | fromJsonArray) -}}
{{- fail (printf "the green release is being installed into namespace %q, which connector.brokerEgress.namespaceSelector (kubernetes.io/metadata.name) selects as the DMZ: the green zone and the DMZ must not share a namespace. Install the green release into its own namespace (helm install -n green), or set connector.brokerEgress.namespaceSelector to the DMZ's namespace (null with connector.brokerEgress.cidrs when the DMZ is in another cluster)" $ns) -}}
{{- end -}}
{{- else if eq .Values.zone "dmz" -}}
{{- if has $ns (include "postern.selectedNamespaces" .Values.broker.greenZone.namespaceSelector | fromJsonArray) -}}
{{- fail (printf "the DMZ release is being installed into namespace %q, which broker.greenZone.namespaceSelector (kubernetes.io/metadata.name) admits as the green zone: the DMZ and the green zone must not share a namespace. Install the DMZ release into its own namespace (helm install -n dmz), or set broker.greenZone.namespaceSelector to the green zone's namespace (null with broker.greenZone.cidrs when the green zone is in another cluster)" $ns) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "postern.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<suffix>. ctx: dict root, name. */}}
{{- define "postern.name" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels. ctx: dict root, component. */}}
{{- define "postern.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The chart's own labels. ctx: dict root, component. */}}
{{- define "postern.ownLabels" -}}
{{ include "postern.selectorLabels" . }}
app.kubernetes.io/part-of: postern
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "postern.chart" .root }}
postern.dev/zone: {{ .root.Values.zone }}
{{- end }}

{{/* All labels of an object: the chart's own plus commonLabels (the
chart's win on a clash, so selectors never change). ctx: dict root,
component. */}}
{{- define "postern.labels" -}}
{{- $own := include "postern.ownLabels" . | fromYaml -}}
{{- toYaml (merge $own (deepCopy (.root.Values.commonLabels | default dict))) -}}
{{- end }}

{{/* Pod template labels: postern.labels plus the component's podLabels
(the chart's win on a clash). ctx: dict root, component, values. */}}
{{- define "postern.podLabels" -}}
{{- $all := include "postern.labels" . | fromYaml -}}
{{- toYaml (merge $all (deepCopy (.values.podLabels | default dict))) -}}
{{- end }}

{{/* The ServiceAccount a component's pods run as. serviceAccount.create:
name, or <release>-<component>; otherwise name, or the namespace's
"default". ctx: dict root, component. */}}
{{- define "postern.serviceAccountName" -}}
{{- $sa := (get .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "postern.name" (dict "root" .root "name" .component)) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end }}

{{/* Pod spec lines every component shares: service account (token never
mounted), priority class. ctx: dict root, component, values. */}}
{{- define "postern.podIdentity" -}}
serviceAccountName: {{ include "postern.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Container command line and extra environment. ctx: dict component, values. */}}
{{- define "postern.command" -}}
command: ["/usr/local/bin/postern-{{ .component }}"]
args: {{ concat (list "--config" "/etc/postern/config/config.yaml") (.values.extraArgs | default list) | toJson }}
{{- with .values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The image: [registry/]repository@digest when image.digest is set, else
[registry/]repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "postern.image" -}}
{{- $i := .Values.image -}}
{{- $repo := $i.repository -}}
{{- with $i.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $repo $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion (toString ($i.tag | default ""))) -}}
{{- end -}}
{{- end }}

{{/* In-cluster DNS name of a Service of this release. ctx: dict root, name. */}}
{{- define "postern.serviceFqdn" -}}
{{- printf "%s.%s.svc.%s" (include "postern.name" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* Pod security context. */}}
{{- define "postern.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context. */}}
{{- define "postern.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod annotations. ctx: dict root, component, values (component values), checksum (string or ""). */}}
{{- define "postern.podAnnotations" -}}
{{- $a := dict -}}
{{- if .root.Values.metrics.annotations -}}
{{- $_ := set $a "prometheus.io/scrape" "true" -}}
{{- $_ := set $a "prometheus.io/port" (include "postern.adminPort" .component) -}}
{{- $_ := set $a "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- if .checksum -}}
{{- $_ := set $a "checksum/config" .checksum -}}
{{- end -}}
{{- $a = merge (deepCopy (.values.podAnnotations | default dict)) $a -}}
{{- if $a }}
{{- toYaml $a }}
{{- end }}
{{- end }}

{{/* Probes on the admin port (named "admin"). */}}
{{- define "postern.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
{{- end }}

{{/* preStop hook. ctx: root. */}}
{{- define "postern.preStop" -}}
lifecycle:
  preStop:
    {{- if eq .Values.shutdown.preStopAction "exec" }}
    exec:
      command: ["sleep", "{{ .Values.shutdown.preStopSeconds }}"]
    {{- else }}
    sleep:
      seconds: {{ .Values.shutdown.preStopSeconds }}
    {{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds = preStop + drain + margin. ctx: dict root, drainSeconds, preStop (bool). */}}
{{- define "postern.gracePeriod" -}}
{{- $pre := ternary (int .root.Values.shutdown.preStopSeconds) 0 .preStop -}}
{{- add $pre (int .drainSeconds) (int .root.Values.shutdown.marginSeconds) -}}
{{- end }}

{{/*
Scheduling block shared by every pod. ctx: dict root, component, values
(component values). topologySpreadConstraints: the values' list, or when it
is empty a soft spread over nodes and zones: ScheduleAnyway only ranks nodes,
it never leaves a pod pending (one node, no zone labels: still scheduled).
The selector is the component's selector labels, so it follows the release
name.
*/}}
{{- define "postern.scheduling" -}}
{{- $v := .values -}}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
{{- if $v.topologySpreadConstraints }}
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else }}
{{- $selector := include "postern.selectorLabels" (dict "root" .root "component" .component) }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- $selector | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy "from" list with one peer built from a {namespaceSelector, podSelector} pair; empty if both are empty. */}}
{{- define "postern.peer" -}}
{{- $peer := dict -}}
{{- with .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end -}}
{{- with .podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end -}}
{{- if $peer -}}
{{- toYaml (list $peer) -}}
{{- end -}}
{{- end }}

{{/*
Egress rules for a list of destinations (connector.nativeEgress,
edge.upstreamEgress), one rule per entry: {cidr, ports} -> an ipBlock peer;
{namespaceSelector, podSelector, ports} -> a pod peer (either selector may
be left out, at least one must select something). ports: the destination
pods' ports (a Service's targetPort: NetworkPolicies see traffic after the
Service address is rewritten). ctx: dict list, field (for messages).
*/}}
{{- define "postern.egressRules" -}}
{{- $field := .field -}}
{{- range $i, $e := .list }}
{{- if and (not $e.cidr) (not $e.namespaceSelector) (not $e.podSelector) }}
{{- fail (printf "%s[%d]: set cidr, or namespaceSelector and/or podSelector (at least one not empty): an entry that names no destination would admit every one" $field $i) }}
{{- end }}
{{- if not $e.ports }}
{{- fail (printf "%s[%d].ports is empty: list the destination pods' ports (every port would be open)" $field $i) }}
{{- end }}
{{- $peer := dict }}
{{- if $e.cidr }}
{{- if hasSuffix "/0" (toString $e.cidr) }}
{{- fail (printf "%s[%d].cidr is %s: that admits every address; name the destination network" $field $i $e.cidr) }}
{{- end }}
{{- $_ := set $peer "ipBlock" (dict "cidr" $e.cidr) }}
{{- else }}
{{- range $key := list "namespaceSelector" "podSelector" }}
{{- if and (hasKey $e $key) (not (kindIs "invalid" (get $e $key))) }}{{ $_ := set $peer $key (get $e $key) }}{{ end }}
{{- end }}
{{- end }}
# {{ $field }}[{{ $i }}]
- to:
  {{- toYaml (list $peer) | nindent 2 }}
  ports:
  {{- range $e.ports }}
  - port: {{ . }}
    protocol: TCP
  {{- end }}
{{- end }}
{{- end }}

{{/* Egress rules to the trace collector (tracing.egress) when spans are
exported (tracing.endpoint); an endpoint with no egress fails: the egress
NetworkPolicies would drop every export. ctx: root. */}}
{{- define "postern.tracingEgress" -}}
{{- if .Values.tracing.endpoint -}}
{{- if not .Values.tracing.egress -}}
{{- fail "tracing.endpoint is set but tracing.egress is empty: the egress NetworkPolicies would block the collector; list where it runs ({cidr, ports} or {namespaceSelector, podSelector, ports})" -}}
{{- end -}}
{{- include "postern.egressRules" (dict "list" .Values.tracing.egress "field" "tracing.egress") -}}
{{- end -}}
{{- end }}

{{/* Egress rule to the cluster DNS (networkPolicies.dns), UDP and TCP 53. ctx: root. */}}
{{- define "postern.dnsEgressRule" -}}
# Cluster DNS.
- to:
  - namespaceSelector:
      {{- toYaml .Values.networkPolicies.dns.namespaceSelector | nindent 6 }}
    podSelector:
      {{- toYaml .Values.networkPolicies.dns.podSelector | nindent 6 }}
  ports:
  - port: 53
    protocol: UDP
  - port: 53
    protocol: TCP
{{- end }}

{{/* Duration as the configs want it: "20s". */}}
{{- define "postern.seconds" -}}
{{- printf "%ds" (int .) -}}
{{- end }}
