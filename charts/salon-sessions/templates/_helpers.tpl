{{/* Names, labels and shared snippets of the salon-sessions chart. */}}

{{- define "salon-sessions.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "salon-sessions.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "salon-sessions.operatorName" -}}
{{- printf "%s-operator" (include "salon-sessions.fullname" .) -}}
{{- end -}}

{{- define "salon-sessions.apiName" -}}
{{- printf "%s-api" (include "salon-sessions.fullname" .) -}}
{{- end -}}

{{- define "salon-sessions.migrationsName" -}}
{{- printf "%s-migrate" (include "salon-sessions.fullname" .) -}}
{{- end -}}

{{- define "salon-sessions.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "salon-sessions.labels" -}}
helm.sh/chart: {{ include "salon-sessions.chart" .ctx }}
{{ include "salon-sessions.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: salon-sessions
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "salon-sessions.selectorLabels" -}}
app.kubernetes.io/name: {{ include "salon-sessions.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* The session workers' labels, set by the operator (salon_sessions/operator/statefulset.py). */}}
{{- define "salon-sessions.workerSelector" -}}
app.kubernetes.io/name: salon-sessions
app.kubernetes.io/component: session-worker
{{- end -}}

{{- define "salon-sessions.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "salon-sessions.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "salon-sessions.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "salon-sessions.apiServiceAccount" -}}
{{- if .Values.api.serviceAccount.create -}}
{{- default (include "salon-sessions.apiName" .) .Values.api.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.api.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the operator watches SalonSessions (scope namespace) and the API creates them. */}}
{{- define "salon-sessions.watchNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace -}}
{{- end -}}

{{/* Every namespace the operator watches with scope namespace, as JSON (watchNamespace
first: it is the default of the API's sessions). */}}
{{- define "salon-sessions.watchNamespaces" -}}
{{- concat (list (include "salon-sessions.watchNamespace" .)) .Values.operator.extraWatchNamespaces | uniq | toJson -}}
{{- end -}}

{{- define "salon-sessions.sessionNamespace" -}}
{{- if .Values.api.sessionNamespace -}}
{{- .Values.api.sessionNamespace -}}
{{- else if eq .Values.operator.scope "namespace" -}}
{{- include "salon-sessions.watchNamespace" . -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Namespaces where session workers run (their NetworkPolicy goes there), as JSON. */}}
{{- define "salon-sessions.workerNamespaces" -}}
{{- $namespaces := list -}}
{{- if eq .Values.operator.scope "namespace" -}}
{{- $namespaces = include "salon-sessions.watchNamespaces" . | fromJsonArray -}}
{{- else -}}
{{- $namespaces = concat (list (include "salon-sessions.sessionNamespace" .)) .Values.networkPolicy.extraWorkerNamespaces -}}
{{- end -}}
{{- $namespaces | uniq | toJson -}}
{{- end -}}

{{/* SALON_DATABASE_URL (and, behind PgBouncer, SALON_LOCK_DATABASE_URL and
SALON_DATABASE_POOLER) and SALON_REDIS_URL from the existing Secrets; (dict "ctx" $
"redis" .Values.redis[.api]): each component has its own Redis user. */}}
{{- define "salon-sessions.connectionEnv" -}}
{{- $ctx := .ctx -}}
- name: SALON_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.database.existingSecret }}
      key: {{ $ctx.Values.database.key }}
{{- with include "salon-sessions.directDatabaseEnv" $ctx }}
{{ . }}
{{- end }}
{{- if eq (default "none" $ctx.Values.database.pooler) "transaction" }}
- name: SALON_DATABASE_POOLER
  value: transaction
{{- end }}
- name: SALON_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .redis.existingSecret }}
      key: {{ .redis.key }}
- name: SALON_LOG_LEVEL
  value: {{ $ctx.Values.logLevel | quote }}
- name: SALON_LOG_JSON
  value: {{ $ctx.Values.logJson | quote }}
{{- end -}}

{{/* SALON_LOCK_DATABASE_URL: PostgreSQL itself, from database.direct (migrations and
advisory locks); required with database.pooler=transaction. */}}
{{- define "salon-sessions.directDatabaseEnv" -}}
{{- $direct := .Values.database.direct | default dict -}}
{{- if and (eq (default "none" .Values.database.pooler) "transaction") (not $direct.existingSecret) -}}
{{- fail "database.pooler=transaction needs database.direct.existingSecret (PostgreSQL's own URL: migrations and session locks cannot go through a transaction pooler)" -}}
{{- end -}}
{{- if $direct.existingSecret -}}
- name: SALON_LOCK_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $direct.existingSecret }}
      key: {{ $direct.key | default "url" }}
{{- end -}}
{{- end -}}

{{/* Whether anything connects to a PgBouncer (its NetworkPolicy egress). */}}
{{- define "salon-sessions.usesPgbouncer" -}}
{{- if or (eq (default "none" .Values.database.pooler) "transaction") .Values.worker.databasePoolerUrl -}}true{{- end -}}
{{- end -}}

{{/* A name: value map of extra settings as EnvVars. */}}
{{- define "salon-sessions.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy egress rules shared by every component: DNS, PostgreSQL, Redis. */}}
{{- define "salon-sessions.baseEgress" -}}
- ports:
  {{- range .Values.networkPolicy.dns.ports }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
  {{- end }}
  {{- with .Values.networkPolicy.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.postgres.port }}
  {{- with .Values.networkPolicy.postgres.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.redis.port }}
  {{- with .Values.networkPolicy.redis.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if include "salon-sessions.usesPgbouncer" . }}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.pgbouncer.port }}
  {{- with .Values.networkPolicy.pgbouncer.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "salon-sessions.kubeApiEgress" -}}
- ports:
  {{- range .Values.networkPolicy.kubeApiServer.ports }}
    - protocol: TCP
      port: {{ . }}
  {{- end }}
  {{- with .Values.networkPolicy.kubeApiServer.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "salon-sessions.podScheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
