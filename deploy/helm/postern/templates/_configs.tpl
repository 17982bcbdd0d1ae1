{{/*
The service configs. Each is a YAML file mapped one to one onto a message of
proto/postern/config/v1/config.proto; the keys below are its field names.
Built as dicts and rendered with toYaml, so quoting is always right.
*/}}

{{/* trusted_config_keys: the mounted public keys. ctx: root. */}}
{{- define "postern.trustedKeys" -}}
{{- $keys := list -}}
{{- range $i, $_ := .Values.configSigning.publicKeys -}}
{{- $keys = append $keys (printf "/etc/postern/config-keys/key-%d.pub" $i) -}}
{{- end -}}
{{- toJson $keys -}}
{{- end }}

{{/* EdgeConfig */}}
{{- define "postern.edge.config" -}}
{{- $e := .Values.edge -}}
{{- $listeners := list (dict "listen" (printf "0.0.0.0:%s" (include "postern.port.edgeHttp" .))) -}}
{{- if $e.tls.enabled -}}
{{- $listeners = append $listeners (dict
      "listen" (printf "0.0.0.0:%s" (include "postern.port.edgeHttps" .))
      "tls" (dict "cert_file" "/etc/postern/tls/tls.crt" "key_file" "/etc/postern/tls/tls.key")) -}}
{{- end -}}
{{- /* The headless Service: one address per ready broker, so that the edge
       spreads exchanges over every broker and fails over between them. */ -}}
{{- $relay := printf "%s:%s" (include "postern.serviceFqdn" (dict "root" . "name" "broker-headless")) (include "postern.port.brokerRelay" .) -}}
{{- $broker := dict "address" $relay -}}
{{- if .Values.broker.relayTls.enabled -}}
{{- $rt := dict "ca_file" "/etc/postern/relay-tls/ca.crt" "cert_file" "/etc/postern/relay-tls/tls.crt" "key_file" "/etc/postern/relay-tls/tls.key" -}}
{{- with $e.relayTls.serverName }}{{ $_ := set $rt "server_name" . }}{{ end -}}
{{- $_ := set $broker "tls" $rt -}}
{{- end -}}
{{- with $e.broker -}}
{{- with .lanes }}{{ $_ := set $broker "lanes" (int .) }}{{ end -}}
{{- with .receiveWindow }}{{ $_ := set $broker "receive_window" (int64 .) }}{{ end -}}
{{- end -}}
{{- $c := dict
      "id" (include "postern.name" (dict "root" . "name" "edge"))
      "admin" (dict "listen" (printf "0.0.0.0:%s" (include "postern.port.edgeAdmin" .)))
      "log" (dict "level" .Values.logLevel)
      "listeners" $listeners
      "broker" $broker
      "trusted_config_keys" (include "postern.trustedKeys" . | fromJsonArray)
      "upstream_timeout" $e.upstreamTimeout
      "idle_timeout" $e.idleTimeout
      "header_timeout" $e.headerTimeout
      "drain_timeout" (include "postern.seconds" $e.drainSeconds)
      "max_header_bytes" (int $e.maxHeaderBytes) -}}
{{- with $e.publicUrl }}{{ $_ := set $c "public_url" . }}{{ end -}}
{{- with $e.defaultAlias }}{{ $_ := set $c "default_alias" . }}{{ end -}}
{{- with $e.apis }}{{ $_ := set $c "apis" . }}{{ end -}}
{{- with $e.trustedProxies }}{{ $_ := set $c "trusted_proxies" . }}{{ end -}}
{{- with .Values.tracing.endpoint }}{{ $_ := set $c "tracing" (dict "endpoint" . "sample_ratio" (float64 $.Values.tracing.sampleRatio)) }}{{ end -}}
# EdgeConfig (proto/postern/config/v1/config.proto), rendered by the chart.
{{ toYaml $c }}
{{- end }}

{{/* BrokerConfig */}}
{{- define "postern.broker.config" -}}
{{- $b := .Values.broker -}}
{{- $relay := dict "listen" (printf "0.0.0.0:%s" (include "postern.port.brokerRelay" .)) -}}
{{- if $b.relayTls.enabled -}}
{{- $_ := set $relay "tls" (dict "cert_file" "/etc/postern/tls/tls.crt" "key_file" "/etc/postern/tls/tls.key" "client_ca_file" "/etc/postern/tls/ca.crt") -}}
{{- end -}}
{{- $c := dict
      "id" (include "postern.name" (dict "root" . "name" "broker"))
      "admin" (dict "listen" (printf "0.0.0.0:%s" (include "postern.port.brokerAdmin" .)))
      "log" (dict "level" .Values.logLevel)
      "registration" (dict
          "listen" (printf "0.0.0.0:%s" (include "postern.port.brokerRegistration" .))
          "tls" (dict
              "cert_file" "/etc/postern/tls/tls.crt"
              "key_file" "/etc/postern/tls/tls.key"
              "client_ca_file" "/etc/postern/tls/ca.crt"))
      "relay" $relay
      "identities" $b.identities
      "trusted_config_keys" (include "postern.trustedKeys" . | fromJsonArray)
      "heartbeat_interval" $b.heartbeatInterval
      "heartbeat_timeout" $b.heartbeatTimeout
      "park_wait" $b.parkWait
      "response_window" (int64 $b.responseWindow)
      "expected_brokers" (int $b.replicas)
      "drain_timeout" (include "postern.seconds" $b.drainSeconds) -}}
{{- if $b.relayTls.enabled }}{{ $_ := set $c "edge_identities" $b.edgeIdentities }}{{ end -}}
{{- with .Values.tracing.endpoint }}{{ $_ := set $c "tracing" (dict "endpoint" . "sample_ratio" (float64 $.Values.tracing.sampleRatio)) }}{{ end -}}
# BrokerConfig (proto/postern/config/v1/config.proto), rendered by the chart.
{{ toYaml $c }}
{{- end }}

{{/* ConnectorConfig */}}
{{- define "postern.connector.config" -}}
{{- $n := .Values.connector -}}
{{- if not $n.brokers -}}
{{- fail "connector.brokers is empty: list the broker registration address(es) the connectors dial, host:port (e.g. postern-dmz-broker-registration-headless.dmz.svc.cluster.local:7443)" -}}
{{- end -}}
{{- $tls := dict
      "ca_file" "/etc/postern/tls/ca.crt"
      "cert_file" "/etc/postern/tls/tls.crt"
      "key_file" "/etc/postern/tls/tls.key" -}}
{{- with $n.tls.serverName }}{{ $_ := set $tls "server_name" . }}{{ end -}}
{{- $policy := dict "address" (printf "%s:%s" (include "postern.serviceFqdn" (dict "root" . "name" "policy")) (include "postern.port.policyGrpc" .)) -}}
{{- if .Values.policy.tls.enabled -}}
{{- /* Mutual TLS to the policy service: the connector's own client
       certificate, and its ca.crt verifies the policy certificate. */ -}}
{{- $_ := set $policy "tls" (dict
      "ca_file" "/etc/postern/tls/ca.crt"
      "cert_file" "/etc/postern/tls/tls.crt"
      "key_file" "/etc/postern/tls/tls.key"
      "server_name" (include "postern.policy.serverName" .)) -}}
{{- end -}}
{{- $c := dict
      "id" (include "postern.name" (dict "root" . "name" "connector"))
      "admin" (dict "listen" (printf "0.0.0.0:%s" (include "postern.port.connectorAdmin" .)))
      "log" (dict "level" .Values.logLevel)
      "brokers" $n.brokers
      "tls" $tls
      "aliases" ($n.aliases | default dict)
      "policy" $policy
      "trusted_config_keys" (include "postern.trustedKeys" . | fromJsonArray)
      "max_concurrency" (int $n.maxConcurrency)
      "reconnect_max" $n.reconnectMax
      "connect_timeout" $n.connectTimeout
      "resolve_interval" $n.resolveInterval
      "drain_timeout" (include "postern.seconds" $n.drainSeconds) -}}
{{- with $n.lanes }}{{ $_ := set $c "lanes" (int .) }}{{ end -}}
{{- with $n.expectedBrokers }}{{ $_ := set $c "expected_brokers" (int .) }}{{ end -}}
{{- with $n.receiveWindow }}{{ $_ := set $c "receive_window" (int64 .) }}{{ end -}}
{{- with .Values.tracing.endpoint }}{{ $_ := set $c "tracing" (dict "endpoint" . "sample_ratio" (float64 $.Values.tracing.sampleRatio)) }}{{ end -}}
# ConnectorConfig (proto/postern/config/v1/config.proto), rendered by the chart.
{{ toYaml $c }}
{{- end }}

{{/* The name the connectors verify in the policy service's certificate:
policy.tls.serverName, or the policy Service's in-cluster name
<release>-policy.<namespace>.svc. ctx: root. */}}
{{- define "postern.policy.serverName" -}}
{{- .Values.policy.tls.serverName | default (printf "%s.%s.svc" (include "postern.name" (dict "root" . "name" "policy")) .Release.Namespace) -}}
{{- end }}

{{/* PolicyServiceConfig */}}
{{- define "postern.policy.config" -}}
{{- $listen := dict "listen" (printf "0.0.0.0:%s" (include "postern.port.policyGrpc" .)) -}}
{{- if .Values.policy.tls.enabled -}}
{{- if not .Values.policy.tls.secretName -}}
{{- fail "policy.tls.secretName is empty: name the Secret with the policy service's certificate (tls.crt, tls.key, ca.crt), or set policy.tls.enabled=false (a plaintext Watch: whoever reaches port 7090 reads every snapshot)" -}}
{{- end -}}
{{- /* Mutual TLS: connectors must present a certificate issued by ca.crt. */ -}}
{{- $_ := set $listen "tls" (dict
      "cert_file" "/etc/postern/tls/tls.crt"
      "key_file" "/etc/postern/tls/tls.key"
      "client_ca_file" "/etc/postern/tls/ca.crt") -}}
{{- end -}}
{{- $c := dict
      "id" (include "postern.name" (dict "root" . "name" "policy"))
      "admin" (dict "listen" (printf "0.0.0.0:%s" (include "postern.port.policyAdmin" .)))
      "log" (dict "level" .Values.logLevel)
      "listen" $listen
      "policy_file" "/etc/postern/policy/policy.yaml"
      "signing_key_file" "/etc/postern/signing/signing.key"
      "reload_interval" .Values.policy.reloadInterval -}}
# PolicyServiceConfig (proto/postern/config/v1/config.proto), rendered by the chart.
{{ toYaml $c }}
{{- end }}
