{{/*
Names, labels and the pieces every fedrelay pod shares.
*/}}

{{/* The chart name, possibly overridden. */}}
{{- define "fedrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release-qualified name; 63 characters at most (DNS label). */}}
{{- define "fedrelay.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Name of one component's objects: fullname-suffix, 63 characters at most. The full name is
shortened, never the suffix, so instances of a stage keep distinct names.
*/}}
{{- define "fedrelay.componentName" -}}
{{- $room := int (sub 62 (len .suffix)) -}}
{{- printf "%s-%s" (include "fedrelay.fullname" .root | trunc $room | trimSuffix "-") .suffix -}}
{{- end -}}

{{- define "fedrelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "fedrelay.labels" -}}
helm.sh/chart: {{ include "fedrelay.chart" . }}
{{ include "fedrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedrelay
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The release's selector: small and never changed by an upgrade. */}}
{{- define "fedrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
A component's selector: the release's plus the component, plus the chain or guardian the
instance serves, plus its shard when several instances serve one chain. Input: dict root,
component, chain (optional), guardian (optional), shard (optional).
*/}}
{{- define "fedrelay.componentSelectorLabels" -}}
{{ include "fedrelay.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .chain }}
fedrelay.io/chain: {{ . }}
{{- end }}
{{- with .guardian }}
fedrelay.io/guardian: {{ . }}
{{- end }}
{{- with .shard }}
fedrelay.io/shard: {{ . }}
{{- end }}
{{- end -}}

{{- define "fedrelay.componentLabels" -}}
{{ include "fedrelay.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .chain }}
fedrelay.io/chain: {{ . }}
{{- end }}
{{- with .guardian }}
fedrelay.io/guardian: {{ . }}
{{- end }}
{{- with .shard }}
fedrelay.io/shard: {{ . }}
{{- end }}
{{- end -}}

{{- define "fedrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fedrelay.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fedrelay.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "fedrelay.chainsConfigMap" -}}
{{- include "fedrelay.componentName" (dict "root" . "suffix" "chains") -}}
{{- end -}}

{{/* The chain entry named .name; fails with a clear message when there is none. */}}
{{- define "fedrelay.requireChain" -}}
{{- $found := false -}}
{{- range .root.Values.chains -}}
{{- if eq .name $.name -}}{{- $found = true -}}{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "%s names chain %q, which is not in .Values.chains" .where .name) -}}
{{- end -}}
{{- end -}}

{{/* The environment every fedrelay container gets. Input: dict root, serviceName, drainSeconds. */}}
{{- define "fedrelay.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: FEDRELAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.database.existingSecret }}
      key: {{ .root.Values.database.existingSecretKey }}
- name: FEDRELAY_KAFKA_BOOTSTRAP
  value: {{ .root.Values.kafka.bootstrap | quote }}
- name: FEDRELAY_TOPIC_PARTITIONS
  value: {{ .root.Values.kafka.topicPartitions | quote }}
- name: FEDRELAY_CHAINS_FILE
  value: /etc/fedrelay/chains.yaml
- name: FEDRELAY_GUARDIAN_SET_INDEX
  value: {{ .root.Values.guardianSet.index | quote }}
- name: FEDRELAY_GUARDIAN_ADDRESSES
  value: {{ .root.Values.guardianSet.addresses | toJson | quote }}
- name: FEDRELAY_HEALTH_PORT
  value: {{ .root.Values.healthPort | quote }}
- name: FEDRELAY_LOG_FORMAT
  value: {{ .root.Values.logFormat | default "json" | quote }}
{{- if hasKey . "drainSeconds" }}
- name: FEDRELAY_DRAIN_SECONDS
  value: {{ .drainSeconds | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,service.version=%s,k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)%s" .root.Release.Name .root.Chart.AppVersion (ternary (printf ",%s" .root.Values.tracing.resourceAttributes) "" (ne .root.Values.tracing.resourceAttributes "")) | quote }}
{{- if .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .root.Values.tracing.otlpEndpoint | quote }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: none
{{- end }}
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level settings every fedrelay pod shares. Input: root context. */}}
{{- define "fedrelay.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes and the health port of a long-running container. Input: root context. */}}
{{- define "fedrelay.healthProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: health
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: health
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: health
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end -}}

{{/*
The threshold attestation variables of attest and assemble (attestation.mode threshold), as an
EnvVar list; empty under guardian attestation.
*/}}
{{- define "fedrelay.attestationEnv" -}}
{{- $a := .Values.attestation -}}
{{- if eq $a.mode "threshold" -}}
- name: FEDRELAY_ATTESTATION
  value: threshold
- name: FEDRELAY_TSS_INDEX
  value: {{ $a.tssIndex | quote }}
- name: FEDRELAY_THRESHOLD_GROUP_KEY
  value: {{ $a.groupKey | quote }}
- name: FEDRELAY_THRESHOLD_VERIFICATION_SHARES
  value: {{ $a.verificationShares | toJson | quote }}
- name: FEDRELAY_THRESHOLD_SIGNERS
  value: {{ $a.signers | quote }}
- name: FEDRELAY_THRESHOLD_TIMEOUT_S
  value: {{ $a.timeoutSeconds | quote }}
- name: FEDRELAY_SIGNING_TOPIC
  value: {{ $a.signingTopic | quote }}
{{- end -}}
{{- end -}}
