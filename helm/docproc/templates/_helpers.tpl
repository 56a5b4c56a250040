{{/* Names and labels only; pod fragments live in _pod.tpl, checks in _validation.tpl. */}}

{{- define "docproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "docproc.fullname" -}}
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

{{/* Name of one component's objects: include "docproc.componentName" (list . "dask-worker") */}}
{{- define "docproc.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "docproc.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "docproc.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "docproc.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Labels of every object of a component: include "docproc.labels" (list . "server") */}}
{{- define "docproc.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "docproc.selectorLabels" . }}
app.kubernetes.io/part-of: docproc
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end -}}

{{- define "docproc.serverUrl" -}}
{{- printf "http://%s:%d/api" (include "docproc.componentName" (list . "server")) (int .Values.server.service.port) -}}
{{- end -}}

{{- define "docproc.daskAddress" -}}
{{- printf "tcp://%s:%d" (include "docproc.componentName" (list . "dask-scheduler")) (int .Values.dask.scheduler.port) -}}
{{- end -}}

{{- define "docproc.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "docproc.componentName" (list . "minio")) -}}
{{- else -}}
{{- .Values.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "docproc.eventsUrl" -}}
{{- printf "http://%s:%d%s" (include "docproc.componentName" (list . "events")) (int .Values.events.port) .Values.minio.notification.path -}}
{{- end -}}

{{- define "docproc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
