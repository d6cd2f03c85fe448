{{/*
Names, labels and the few values derived from several others. Everything a template needs
twice lives here, so the Deployment, the hook Jobs and the RBAC agree.
*/}}

{{- define "f1backfill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects are called this (63 characters at most: a DNS label). */}}
{{- define "f1backfill.fullname" -}}
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

{{- define "f1backfill.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. Deliberately not `app.kubernetes.io/managed-by: f1backfill-operator`: that
label marks the embedding Jobs the operator owns, and the chart's own Jobs (migrations,
seed, feedback) must never look like them.
*/}}
{{- define "f1backfill.labels" -}}
helm.sh/chart: {{ include "f1backfill.chart" . }}
{{ include "f1backfill.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: f1backfill
{{- end }}

{{- define "f1backfill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "f1backfill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "f1backfill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "f1backfill.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The search front door: its Deployment, Service, PodDisruptionBudget. */}}
{{- define "f1backfill.searchName" -}}
{{- printf "%s-search" (include "f1backfill.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "f1backfill.searchServiceAccountName" -}}
{{- if .Values.search.serviceAccount.create }}
{{- default (include "f1backfill.searchName" .) .Values.search.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.search.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* search.roleObjectTypes as SEARCH_ROLE_OBJECT_TYPES: `role=type,type;role=*`. */}}
{{- define "f1backfill.searchRoles" -}}
{{- $entries := list }}
{{- range $role, $types := .Values.search.roleObjectTypes }}
{{- $entries = append $entries (printf "%s=%s" $role (join "," $types)) }}
{{- end }}
{{- join ";" $entries }}
{{- end }}

{{/* How the front door embeds queries: its own choice, else the workers' default. */}}
{{- define "f1backfill.searchProvider" -}}
{{- .Values.search.embedding.provider | default .Values.embedding.defaultProvider }}
{{- end }}

{{/* One image for the operator, its worker Jobs and the hook Jobs (not the demo seed). */}}
{{- define "f1backfill.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The demo image (the product plus the development sandbox): the seed hook only. */}}
{{- define "f1backfill.demoImage" -}}
{{- printf "%s:%s" .Values.demo.image.repository (.Values.demo.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret holding DATABASE_URL: the chart's own with the in-chart Postgres. */}}
{{- define "f1backfill.databaseSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- printf "%s-database" (include "f1backfill.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{- define "f1backfill.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled }}DATABASE_URL{{ else }}{{ .Values.database.key }}{{ end }}
{{- end }}

{{- define "f1backfill.postgresqlName" -}}
{{- printf "%s-postgresql" (include "f1backfill.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The Secret holding REDIS_URL, read by the operator, the worker Jobs (WORKER_REDIS_SECRET)
and the search front door: the chart's own with the in-chart Redis; empty = no Redis.
*/}}
{{- define "f1backfill.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- include "f1backfill.redisName" . }}
{{- else }}
{{- .Values.redis.existingSecret }}
{{- end }}
{{- end }}

{{- define "f1backfill.redisSecretKey" -}}
{{- if .Values.redis.enabled }}REDIS_URL{{ else }}{{ .Values.redis.key }}{{ end }}
{{- end }}

{{/* The in-chart Redis: its Deployment, its Service and the Secret with its URL. */}}
{{- define "f1backfill.redisName" -}}
{{- printf "%s-redis" (include "f1backfill.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Namespaces where worker Jobs run and so need the database Secret: the release's, the
watched ones and any listed in database.workerSecretNamespaces. A JSON list (fromJsonArray).
*/}}
{{- define "f1backfill.workerNamespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- $namespaces = concat $namespaces .Values.watchNamespaces .Values.database.workerSecretNamespaces }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/* The restricted Pod Security profile, pod level: uid 10001 is the image's user. */}}
{{- define "f1backfill.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The restricted Pod Security profile, container level, plus a read-only root. */}}
{{- define "f1backfill.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/* DATABASE_URL for the chart's own containers (operator, hook Jobs, CronJob). */}}
{{- define "f1backfill.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "f1backfill.databaseSecretName" . }}
      key: {{ include "f1backfill.databaseSecretKey" . }}
{{- end }}

{{/*
Waits until the in-chart Postgres accepts connections: a hook Job that starts while the
StatefulSet is still initialising its data directory would otherwise spend its retries.
*/}}
{{- define "f1backfill.waitForPostgres" -}}
- name: wait-for-postgres
  image: "{{ .Values.postgresql.image.repository }}:{{ .Values.postgresql.image.tag }}"
  imagePullPolicy: {{ .Values.postgresql.image.pullPolicy }}
  command:
    - sh
    - -c
    - until pg_isready -q -h "$PGHOST" -p 5432; do echo "waiting for $PGHOST"; sleep 2; done
  env:
    - name: PGHOST
      value: {{ include "f1backfill.postgresqlName" . }}
    # libpq would look the user up by uid (10001 is not in the image's /etc/passwd).
    - name: PGUSER
      value: {{ .Values.postgresql.auth.username | quote }}
    - name: PGDATABASE
      value: {{ .Values.postgresql.auth.database | quote }}
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      cpu: 100m
      memory: 32Mi
  securityContext:
    {{- include "f1backfill.containerSecurityContext" . | nindent 4 }}
{{- end }}

{{/*
Checks JSON schema cannot express (it does not compare two values). `fail` names the keys.
*/}}
{{- define "f1backfill.validate" -}}
{{- if lt (int .Values.dlq.criticalThreshold) (int .Values.dlq.warningThreshold) }}
{{- fail (printf "dlq.criticalThreshold (%v) must not be below dlq.warningThreshold (%v)" .Values.dlq.criticalThreshold .Values.dlq.warningThreshold) }}
{{- end }}
{{- if eq (int .Values.operator.healthPort) (int .Values.operator.metricsPort) }}
{{- fail (printf "operator.healthPort and operator.metricsPort must differ (both %v)" .Values.operator.healthPort) }}
{{- end }}
{{- if .Values.search.enabled }}
{{- $jwt := .Values.search.jwt }}
{{- if $jwt.jwksUrl }}
{{- if eq $jwt.algorithm "HS256" }}
{{- fail "search.jwt.jwksUrl is set but search.jwt.algorithm is HS256, which verifies with a shared secret: set search.jwt.algorithm to RS256 or ES256, or empty search.jwt.jwksUrl" }}
{{- end }}
{{- else if ne $jwt.algorithm "HS256" }}
{{- fail (printf "search.jwt.algorithm %s verifies with the issuer's keys: set search.jwt.jwksUrl" $jwt.algorithm) }}
{{- else if not $jwt.existingSecret }}
{{- fail (printf "search.enabled needs a way to verify tokens: set search.jwt.existingSecret to a Secret holding JWT_SECRET, e.g. `kubectl -n %s create secret generic f1backfill-jwt --from-literal=JWT_SECRET=$(openssl rand -hex 32)`, or search.jwt.jwksUrl with search.jwt.algorithm RS256 or ES256; or set search.enabled=false" .Release.Namespace) }}
{{- end }}
{{- end }}
{{- end }}
