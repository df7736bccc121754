{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "hawzu-gate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the
release name already contains it.
*/}}
{{- define "hawzu-gate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hawzu-gate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hawzu-gate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hawzu-gate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hawzu-gate.labels" -}}
helm.sh/chart: {{ include "hawzu-gate.chart" . }}
{{ include "hawzu-gate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ ternary "api" "gate" (eq .Values.mode "sidecar") }}
{{- end }}

{{- define "hawzu-gate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the chart's own Secret (inline admin key / Redis URL). */}}
{{- define "hawzu-gate.secretName" -}}
{{- printf "%s-secret" (include "hawzu-gate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hawzu-gate.configMapName" -}}
{{- printf "%s-config" (include "hawzu-gate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the Redis URL goes into the chart's Secret. */}}
{{- define "hawzu-gate.inlineRedisUrl" -}}
{{- if and (eq .Values.store.backend "redis") .Values.store.redis.url (not .Values.store.redis.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the admin key goes into the chart's Secret. */}}
{{- define "hawzu-gate.inlineAdminKey" -}}
{{- if and .Values.admin.key (not .Values.admin.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when TLS is on for the named listener: (list $ "ops") */}}
{{- define "hawzu-gate.tlsOn" -}}
{{- $root := index . 0 }}{{ $l := index . 1 }}
{{- if and $root.Values.tls.enabled (has $l $root.Values.tls.listeners) }}true{{ end }}
{{- end }}

{{/* The listener address for one listener: (list $ "auth") */}}
{{- define "hawzu-gate.listenAddr" -}}
{{- $root := index . 0 }}{{ $l := index . 1 }}
{{- $public := ternary (list "proxy" "ops") (list "auth" "grpc" "ops") (eq $root.Values.mode "sidecar") }}
{{- $host := ternary "0.0.0.0" "127.0.0.1" (has $l $public) }}
{{- printf "%s:%v" $host (index $root.Values.listeners $l) }}
{{- end }}

{{/* "true" when data_dir is a PersistentVolumeClaim. */}}
{{- define "hawzu-gate.persistent" -}}
{{- if and .Values.persistence.enabled (eq .Values.store.backend "embedded") }}true{{ end }}
{{- end }}

{{- define "hawzu-gate.upstreamUrl" -}}
{{- default (printf "http://127.0.0.1:%v" .Values.sidecar.api.port) .Values.upstream.url }}
{{- end }}

{{/*
A TOML key: bare when it may be, else a quoted (JSON = TOML basic) string.
*/}}
{{- define "hawzu-gate.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
key = value lines of a TOML table from a map of scalars or lists of
scalars. JSON strings, numbers, booleans and arrays are valid TOML.
*/}}
{{- define "hawzu-gate.tomlPairs" -}}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}
{{- fail (printf "hawzu-gate config: %s is a table; only scalars and lists are allowed here (use config.extraToml)" $k) }}
{{- end }}
{{ include "hawzu-gate.tomlKey" $k }} = {{ toJson $v }}
{{- end }}
{{- end }}

{{/*
Checks on the values; `helm install/template` stop with the message.
(`helm lint` only logs a failing `fail`.)
*/}}
{{- define "hawzu-gate.validate" -}}
{{- if not (has .Values.mode (list "standalone" "sidecar")) }}
{{- fail (printf "mode must be standalone or sidecar, not %q" .Values.mode) }}
{{- end }}
{{- if not (has .Values.store.backend (list "redis" "embedded")) }}
{{- fail (printf "store.backend must be redis or embedded, not %q" .Values.store.backend) }}
{{- end }}
{{- if and (eq .Values.store.backend "redis") (not .Values.store.redis.url) (not .Values.store.redis.existingSecret) }}
{{- fail "store.backend=redis needs store.redis.url or store.redis.existingSecret" }}
{{- end }}
{{- if and (eq .Values.store.backend "embedded") (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "store.backend=embedded holds the tokens in one pod's file: use replicaCount 1 without autoscaling, or store.backend=redis" }}
{{- end }}
{{- if and .Values.admin.key (not .Values.admin.existingSecret) (lt (len .Values.admin.key) 32) }}
{{- fail "admin.key must be at least 32 printable characters" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- range concat .Values.tls.listeners .Values.tls.clientCa.listeners }}
{{- if not (has . (list "proxy" "auth" "grpc" "ops" "admin" "leaks")) }}
{{- fail (printf "tls listeners must be among proxy, auth, grpc, ops, admin, leaks, not %q" .) }}
{{- end }}
{{- end }}
{{- if has "ops" .Values.tls.clientCa.listeners }}
{{- fail "tls.clientCa.listeners cannot hold ops: the kubelet's liveness and readiness probes present no client certificate, so every pod would restart and never be ready; keep ops on TLS without client certificates (tls.listeners), and limit who reaches it with networkPolicy" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled .Values.autoscaling.enabled (le (int .Values.autoscaling.minReplicas) (int .Values.podDisruptionBudget.minAvailable)) }}
{{- fail (printf "autoscaling.minReplicas (%v) must be above podDisruptionBudget.minAvailable (%v), or no pod may ever be evicted and node drains block; raise minReplicas or set podDisruptionBudget.enabled=false" .Values.autoscaling.minReplicas .Values.podDisruptionBudget.minAvailable) }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not .Values.autoscaling.enabled) (gt (int .Values.replicaCount) 1) (le (int .Values.replicaCount) (int .Values.podDisruptionBudget.minAvailable)) }}
{{- fail (printf "replicaCount (%v) must be above podDisruptionBudget.minAvailable (%v), or node drains block" .Values.replicaCount .Values.podDisruptionBudget.minAvailable) }}
{{- end }}
{{- range .Values.tls.clientCa.listeners }}
{{- if not (has . $.Values.tls.listeners) }}
{{- fail (printf "tls.clientCa.listeners: %q is not in tls.listeners" .) }}
{{- end }}
{{- end }}
{{- if and .Values.tls.clientCa.listeners (not .Values.tls.clientCa.key) }}
{{- fail "tls.clientCa.listeners needs tls.clientCa.key" }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if not .Values.sidecar.api.image.repository }}
{{- fail "mode=sidecar needs sidecar.api.image.repository" }}
{{- end }}
{{- range $l, $p := .Values.listeners }}
{{- if eq (int $p) (int $.Values.sidecar.api.port) }}
{{- fail (printf "sidecar.api.port %v is also the gate's listeners.%s port" $p $l) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
hawzu-gate.toml. listen.*, data_dir, log.format, store.backend,
store.redis.url, admin.key and upstream.url are set through env (env beats
this file), so they are not written here.
*/}}
{{- define "hawzu-gate.toml" -}}
# Generated by the hawzu-gate Helm chart ({{ include "hawzu-gate.chart" . }}).
# listen.*, data_dir, log.format, store.backend, store.redis.url, admin.key
# and upstream.url come from the container's environment.
trusted_proxies = {{ .Values.config.trustedProxies | toJson }}
{{- with .Values.config.upstream }}

[upstream]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}
{{- with .Values.config.cache }}

[cache]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}
{{- with .Values.config.headers }}

[headers]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}
{{- with .Values.config.proxy }}

[proxy]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}
{{- with .Values.config.limits }}

[limits]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}
{{- with .Values.config.failedAuth }}

[failed_auth]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}
{{- with .Values.config.telemetry }}

[telemetry]
{{- include "hawzu-gate.tomlPairs" . }}
{{- end }}

[store]
timeout = {{ .Values.store.timeout | toString | toJson }}
retention = {{ .Values.store.retention | toString | toJson }}

[store.redis]
key_prefix = {{ .Values.store.redis.keyPrefix | toJson }}

[log]
level = {{ .Values.config.logLevel | toJson }}

[shutdown]
grace = {{ .Values.config.shutdownGrace | toString | toJson }}
{{- if .Values.tls.enabled }}
{{- range .Values.tls.listeners }}

[tls.{{ . }}]
cert_file = "/etc/hawzu-gate/tls/tls.crt"
key_file = "/etc/hawzu-gate/tls/tls.key"
{{- if has . $.Values.tls.clientCa.listeners }}
client_ca_file = {{ printf "/etc/hawzu-gate/tls/%s" $.Values.tls.clientCa.key | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.config.roles }}

[roles]
{{- range $name, $perms := . }}
{{ include "hawzu-gate.tomlKey" $name }} = {{ toJson $perms }}
{{- end }}
{{- end }}

[policy]
default_rules = {{ .Values.config.policy.defaultRules | toJson }}
{{- range .Values.config.policy.rules }}

[[policy.rules]]
path = {{ required "config.policy.rules[].path" .path | toJson }}
methods = {{ required "config.policy.rules[].methods" .methods | toJson }}
permission = {{ required "config.policy.rules[].permission" .permission | toJson }}
{{- end }}
{{- with .Values.config.extraToml }}

{{ . }}
{{- end }}
{{- end }}
