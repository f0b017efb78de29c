{{/*
The chart's name, or nameOverride.
*/}}
{{- define "chatlens.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified name for the release's objects: fullnameOverride, or <release>-<name>
(the release name alone when it already contains the chart's name). 63 characters at most.
*/}}
{{- define "chatlens.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "chatlens.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "chatlens.labels" -}}
helm.sh/chart: {{ include "chatlens.chart" . }}
{{ include "chatlens.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: chatlens
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that identify the release's pods.
*/}}
{{- define "chatlens.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatlens.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the API server's pods, not the migration Job's: the Service, the PodDisruptionBudget
and the topology spread select these.
*/}}
{{- define "chatlens.serverSelectorLabels" -}}
{{ include "chatlens.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
The Secret the pods read their secret settings from.
*/}}
{{- define "chatlens.secretName" -}}
{{- default (include "chatlens.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "chatlens.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Pod security context, shared by the server and the migration Job: the image's non-root user.
*/}}
{{- define "chatlens.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container security context: nothing to escalate to, nothing written outside /tmp.
*/}}
{{- define "chatlens.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Plain environment of the server and the migration Job (secrets come with envFrom).
*/}}
{{- define "chatlens.env" -}}
- name: CHATLENS_HOST
  value: "0.0.0.0"
- name: CHATLENS_PORT
  value: "8000"
- name: CHATLENS_AUTO_MIGRATE
  value: "false"
- name: CHATLENS_ENVIRONMENT
  value: {{ .Values.config.environment | quote }}
- name: CHATLENS_WORKERS
  value: {{ .Values.config.workers | quote }}
# On SIGTERM answers in progress get the pod's grace period less the preStop pause and 5 s
# for the server itself to stop: the rest are ended with an error and stored before the kill.
- name: CHATLENS_SHUTDOWN_GRACE_SECONDS
  value: {{ max 1 (sub (sub (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds)) 5) | quote }}
- name: CHATLENS_BOOTSTRAP_ADMIN
  value: {{ .Values.config.bootstrapAdmin | quote }}
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: LOG_FORMAT
  value: "json"
- name: CHATLENS_INFERENCE_BACKEND
  value: {{ .Values.config.inferenceBackend | quote }}
{{- with .Values.config.redisUrl }}
- name: CHATLENS_REDIS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_TRACES_SAMPLER
  value: "parentbased_traceidratio"
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.config.traceSampleRatio | quote }}
{{- with .Values.config.openaiBaseUrl }}
- name: CHATLENS_OPENAI_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.model }}
- name: CHATLENS_MODEL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.authValidateUrl }}
- name: CHATLENS_AUTH_VALIDATE_URL
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name | quote }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/*
Secret environment, from the chart's Secret or an existing one.
*/}}
{{- define "chatlens.envFrom" -}}
- secretRef:
    name: {{ include "chatlens.secretName" . }}
{{- end }}
