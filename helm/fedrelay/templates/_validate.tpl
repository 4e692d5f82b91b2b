{{/*
Checks that values.schema.json cannot express: names unique, references resolvable,
autoscaling bounds in order. Each failure names the value at fault.
*/}}
{{- define "fedrelay.validate" -}}
{{- $seen := dict -}}
{{- range .Values.chains -}}
{{- if hasKey $seen .name -}}{{- fail (printf "chains: the name %q is used twice" .name) -}}{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- $seen = dict -}}
{{- range .Values.relayer.attest.guardians -}}
{{- if hasKey $seen .name -}}{{- fail (printf "relayer.attest.guardians: the name %q is used twice" .name) -}}{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- $seen = dict -}}
{{- range .Values.relayer.deliver.chains -}}
{{- if hasKey $seen .name -}}{{- fail (printf "relayer.deliver.chains: the chain %q is listed twice" .name) -}}{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- range $stage := list "attest" "assemble" "fetch" -}}
{{- $a := (index $.Values.relayer $stage).autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "relayer.%s.autoscaling: minReplicas (%d) is greater than maxReplicas (%d)" $stage (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- $v := index $.Values.relayer $stage -}}
{{- $most := ternary (int $a.maxReplicas) (int $v.replicaCount) (and $v.enabled $a.enabled) -}}
{{- if and $v.enabled (gt $most (int $.Values.kafka.topicPartitions)) -}}
{{- fail (printf "relayer.%s: %d replicas cannot share %d partitions (kafka.topicPartitions); the extra consumers would sit idle" $stage $most (int $.Values.kafka.topicPartitions)) -}}
{{- end -}}
{{- end -}}
{{- $a := .Values.coordinator.autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "coordinator.autoscaling: minReplicas (%d) is greater than maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- $c := .Values.coordinator -}}
{{- if ge (float64 $c.lease.renewSeconds) (float64 $c.lease.seconds) -}}
{{- fail (printf "coordinator.lease.renewSeconds (%v) must be below coordinator.lease.seconds (%v): the lease is renewed within it" $c.lease.renewSeconds $c.lease.seconds) -}}
{{- end -}}
{{- $s3 := eq $c.blobStore.type "s3" -}}
{{- if and $c.enabled $s3 (not $c.blobStore.s3.bucket) -}}
{{- fail "coordinator.blobStore.s3.bucket: the s3 blob store needs an existing bucket" -}}
{{- end -}}
{{- if and $c.enabled $s3 $c.persistence.enabled -}}
{{- fail "coordinator.persistence: with blobStore.type s3 the blobs are in the bucket; disable persistence (its volume would be unused)" -}}
{{- end -}}
{{- if and $c.enabled (not $s3) (or $c.autoscaling.enabled (gt (int $c.replicaCount) 1)) (not $c.persistence.existingClaim) -}}
{{- if not (and $c.persistence.enabled (has "ReadWriteMany" $c.persistence.accessModes)) -}}
{{- fail "coordinator: more than one replica needs a shared blob store; set coordinator.blobStore.type s3, or coordinator.persistence.enabled with accessModes [ReadWriteMany] (or an existingClaim)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.relayer.attest.enabled (not .Values.relayer.attest.guardians) -}}
{{- fail "relayer.attest is enabled but relayer.attest.guardians is empty" -}}
{{- end -}}
{{- $t := .Values.attestation -}}
{{- if eq $t.mode "threshold" -}}
{{- if not $t.groupKey -}}
{{- fail "attestation.groupKey: threshold attestation needs the threshold key's group key" -}}
{{- end -}}
{{- if ne (len $t.verificationShares) (len .Values.guardianSet.addresses) -}}
{{- fail (printf "attestation.verificationShares: %d given for the %d guardians of guardianSet.addresses (one per guardian, in order)" (len $t.verificationShares) (len .Values.guardianSet.addresses)) -}}
{{- end -}}
{{- if .Values.relayer.attest.enabled -}}
{{- range .Values.relayer.attest.guardians -}}
{{- if not (and .shareSecret .shareSecretKey) -}}
{{- fail (printf "relayer.attest.guardians: %q needs shareSecret and shareSecretKey (its threshold share) under threshold attestation" .name) -}}
{{- end -}}
{{- end -}}
{{- if .Values.relayer.attest.autoscaling.enabled -}}
{{- fail "relayer.attest.autoscaling: under threshold attestation each guardian is one pod (its signing journal is its own); disable autoscaling" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
