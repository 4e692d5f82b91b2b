{{/*
One long-running fedrelay process: a Deployment, and (when asked) its PodDisruptionBudget and
HorizontalPodAutoscaler. Input, a dict:
  root          the chart's root context
  suffix        name suffix of the objects (for example "watch-coordinator")
  component     app.kubernetes.io/component (for example "relayer-watch")
  chain         optional fedrelay.io/chain label
  guardian      optional fedrelay.io/guardian label
  shard         optional fedrelay.io/shard label (one of several instances serving one chain)
  args          the container's arguments after `fedrelay`
  serviceName   OTEL_SERVICE_NAME
  instance      FEDRELAY_INSTANCE; empty: the pod's name (for stages that scale out)
  singleton     true: exactly one pod, replaced with the Recreate strategy
  values        the component's values (replicaCount, drainSeconds, resources, autoscaling, pdb,
                extraEnv)
  env           optional extra EnvVar list
  keyFile       optional dict existingSecret, existingSecretKey, mountDir (a key mounted read-only)
  ports         optional extra container ports
  volumes       optional extra volumes; volumeMounts: their mounts
*/}}
{{- define "fedrelay.workload" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := include "fedrelay.componentName" (dict "root" $root "suffix" .suffix) -}}
{{- $sel := dict "root" $root "component" .component "chain" (default "" .chain) "guardian" (default "" .guardian) "shard" (default "" .shard) -}}
{{- $hpa := and (not .singleton) $v.autoscaling $v.autoscaling.enabled -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "fedrelay.componentLabels" $sel | nindent 4 }}
  {{- with $root.Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if .singleton }}
  replicas: 1
  strategy:
    type: Recreate
  {{- else if not $hpa }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  {{- if not .singleton }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "fedrelay.componentSelectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fedrelay.componentLabels" $sel | nindent 8 }}
        fedrelay.io/scrape: "true"
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/chains: {{ include (print $root.Template.BasePath "/configmap-chains.yaml") $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "fedrelay.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      terminationGracePeriodSeconds: {{ add $v.drainSeconds $root.Values.terminationGraceMarginSeconds }}
      enableServiceLinks: false
      {{- include "fedrelay.podCommon" $root | nindent 6 }}
      containers:
        - name: fedrelay
          image: {{ include "fedrelay.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
          env:
            {{- include "fedrelay.commonEnv" (dict "root" $root "serviceName" .serviceName "drainSeconds" $v.drainSeconds) | nindent 12 }}
            - name: FEDRELAY_INSTANCE
              {{- if .instance }}
              value: {{ .instance | quote }}
              {{- else }}
              value: $(POD_NAME)
              {{- end }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: health
              containerPort: {{ $root.Values.healthPort }}
              protocol: TCP
            {{- with .ports }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "fedrelay.healthProbes" $root | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: chains
              mountPath: /etc/fedrelay
              readOnly: true
            {{- with .keyFile }}
            - name: key
              mountPath: {{ .mountDir }}
              readOnly: true
            {{- end }}
            {{- with .volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        - name: chains
          configMap:
            name: {{ include "fedrelay.chainsConfigMap" $root }}
        {{- with .keyFile }}
        - name: key
          secret:
            secretName: {{ .existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ .existingSecretKey }}
                path: key
        {{- end }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- if $v.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "fedrelay.componentLabels" $sel | nindent 4 }}
  {{- with $root.Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "fedrelay.componentSelectorLabels" $sel | nindent 6 }}
{{- end }}
{{- if $hpa }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "fedrelay.componentLabels" $sel | nindent 4 }}
  {{- with $root.Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}
{{- end -}}
