{{/*
Expand the name of the chart.
*/}}
{{- define "meli-sweep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
Truncated at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "meli-sweep.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "meli-sweep.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "meli-sweep.labels" -}}
helm.sh/chart: {{ include "meli-sweep.chart" . }}
{{ include "meli-sweep.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meli-sweep
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "meli-sweep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meli-sweep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The namespace every namespaced resource goes to.
*/}}
{{- define "meli-sweep.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
The ServiceAccount the workflow pods run as.
*/}}
{{- define "meli-sweep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meli-sweep.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Whether the values carry S3 credentials (then the chart renders its own Secret).
Giving only one of the two keys is an error, not a silent fallback.
*/}}
{{- define "meli-sweep.s3.createSecret" -}}
{{- $id := .Values.s3.accessKeyId | default "" }}
{{- $key := .Values.s3.secretAccessKey | default "" }}
{{- if and (or $id $key) (eq .Values.s3.credentials "sdk") }}
{{- fail "s3.credentials is sdk (the pod's cloud identity): leave s3.accessKeyId and s3.secretAccessKey empty" }}
{{- else if and $id $key }}true
{{- else if or $id $key }}
{{- fail "s3.accessKeyId and s3.secretAccessKey must be given together (or neither, to use s3.existingSecret)" }}
{{- end }}
{{- end }}

{{/*
The Secret holding the S3 keys: the chart's own when credentials are given, else s3.existingSecret.
*/}}
{{- define "meli-sweep.s3.secretName" -}}
{{- if include "meli-sweep.s3.createSecret" . }}
{{- printf "%s-s3" (include "meli-sweep.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "s3.existingSecret: name the Secret with the S3 keys, or give s3.accessKeyId and s3.secretAccessKey" .Values.s3.existingSecret }}
{{- end }}
{{- end }}

{{/*
S3 endpoint as Argo's artifact repository wants it: host[:port], no scheme. Never empty: the
executor's S3 driver (minio-go, workflow/artifacts/s3/s3.go: newS3Client) refuses an empty
endpoint, so AWS S3 is named as Argo's own docs name it.
*/}}
{{- define "meli-sweep.s3.argoEndpoint" -}}
{{- regexReplaceAll "^[a-zA-Z]+://" (.Values.s3.endpoint | default "s3.amazonaws.com") "" | trimSuffix "/" }}
{{- end }}

{{/*
Whether pods reach S3 with the pod's cloud identity (IRSA, workload identity) instead of keys.
*/}}
{{- define "meli-sweep.s3.sdkCreds" -}}
{{- if eq .Values.s3.credentials "sdk" }}true
{{- else if ne .Values.s3.credentials "keys" }}
{{- fail (printf "s3.credentials %q: expected keys or sdk" .Values.s3.credentials) }}
{{- end }}
{{- end }}

{{/*
Labels of the Prometheus Operator objects: kube-prometheus-stack finds ServiceMonitors and rules
by its `release` label unless told otherwise.
*/}}
{{- define "meli-sweep.monitoringLabels" -}}
{{- with .Values.monitoring.release }}
release: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Namespace of the Grafana dashboard ConfigMap.
*/}}
{{- define "meli-sweep.dashboards.namespace" -}}
{{- default (include "meli-sweep.namespace" .) .Values.dashboards.namespace }}
{{- end }}

{{/*
Name of the WorkflowTemplate: the Hera definition's (workflows/dag.py NAME); `make submit` and the alerts name it.
*/}}
{{- define "meli-sweep.workflowTemplateName" -}}
meli-sweep
{{- end }}

{{/*
The data of the parameters ConfigMap: workflowTemplate.parameters, then what other values imply for the
parameters they leave unset (the images, out from the bucket, the Secrets, the MLflow server, the GPU pods'
placement as JSON).
*/}}
{{- define "meli-sweep.parameters" -}}
{{- $p := dict }}
{{- range $name, $value := .Values.workflowTemplate.parameters }}
{{- $_ := set $p $name (toString $value) }}
{{- end }}
{{- $image := printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- if not (hasKey $p "image") }}
{{- $_ := set $p "image" $image }}
{{- end }}
{{- if not (hasKey $p "cpu-image") }}
{{- $_ := set $p "cpu-image" (printf "%s%s" (get $p "image") .Values.image.cpuTagSuffix) }}
{{- end }}
{{- if and .Values.s3.bucket (not (hasKey $p "out")) }}
{{- $_ := set $p "out" (printf "s3://%s" .Values.s3.bucket) }}
{{- end }}
{{- if and (not (include "meli-sweep.s3.sdkCreds" .)) (not (hasKey $p "s3-secret")) }}
{{- $_ := set $p "s3-secret" (include "meli-sweep.s3.secretName" .) }}
{{- end }}
{{- range $name, $value := dict "mlflow-tracking-uri" .Values.mlflow.trackingUri "mlflow-secret" .Values.mlflow.existingSecret }}
{{- if and $value (not (hasKey $p $name)) }}
{{- $_ := set $p $name $value }}
{{- end }}
{{- end }}
{{- $gpu := .Values.workflowTemplate.gpu }}
{{- range $name, $value := dict "node-selector" $gpu.nodeSelector "tolerations" $gpu.tolerations }}
{{- if not (kindIs "invalid" $value) }}
{{- if hasKey $p $name }}
{{- fail (printf "workflowTemplate.parameters.%s and workflowTemplate.gpu: set one of the two" $name) }}
{{- end }}
{{- $_ := set $p $name (toJson $value) }}
{{- end }}
{{- end }}
{{- toYaml $p }}
{{- end }}

{{/*
The WorkflowTemplate's pod spec patch from the security values (strategic merge over every pod the Hera
definition makes: the pod's security context, the main container's, the /tmp emptyDir); empty when none is set.
*/}}
{{- define "meli-sweep.podSpecPatch" -}}
{{- $patch := dict }}
{{- with .Values.podSecurityContext }}
{{- $_ := set $patch "securityContext" . }}
{{- end }}
{{- with .Values.securityContext }}
{{- $_ := set $patch "containers" (list (dict "name" "main" "securityContext" .)) }}
{{- end }}
{{- with .Values.tmpVolume.emptyDir }}
{{- $_ := set $patch "volumes" (list (dict "name" "tmp" "emptyDir" .)) }}
{{- end }}
{{- if $patch }}{{ toJson $patch }}{{ end }}
{{- end }}
