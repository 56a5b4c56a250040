{{/* Pod fragments shared by every component: security contexts, scratch space, docproc env. */}}

{{/* Every pod: non-root (the image's uid 10001), RuntimeDefault seccomp. */}}
{{- define "docproc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container: read-only root filesystem, no capabilities, no privilege escalation. */}}
{{- define "docproc.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "docproc.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Non-secret docproc environment as a YAML map (name: value) for flow runs and Dask workers.
The flow-run Job gets it through the work pool's `env` variable, which must be a map.
include "docproc.plainEnv" (dict "root" . "flowRun" true): flowRun adds how to reach Dask.
*/}}
{{- define "docproc.plainEnv" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
PREFECT_API_URL: {{ include "docproc.serverUrl" $root | quote }}
DOCPROC_S3_ENDPOINT: {{ include "docproc.s3Endpoint" $root | quote }}
{{- if $v.minio.enabled }}
DOCPROC_S3_SECURE: "false"
DOCPROC_S3_SSE: {{ ternary "s3" "none" $v.minio.sse.enabled | quote }}
{{- else }}
DOCPROC_S3_SECURE: {{ $v.s3.secure | toString | quote }}
DOCPROC_S3_SSE: {{ $v.s3.sse | quote }}
{{- with $v.s3.region }}
DOCPROC_S3_REGION: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .flowRun }}
{{- if eq $v.dask.mode "scheduler" }}
DOCPROC_DASK_ADDRESS: {{ include "docproc.daskAddress" $root | quote }}
{{- else }}
DOCPROC_DASK_CLUSTER_CLASS: dask_kubernetes.operator.KubeCluster
DOCPROC_DASK_ADAPT_MAX: {{ $v.dask.operator.adaptMax | toString | quote }}
DOCPROC_DASK_CLUSTER_KWARGS: {{ include "docproc.kubeClusterKwargs" $root | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := $v.settings }}
{{ printf "DOCPROC_%s" (upper $key) }}: {{ ternary (toJson $value) (toString $value) (or (kindIs "slice" $value) (kindIs "map" $value)) | quote }}
{{- end }}
{{- if not .flowRun }}
{{- include "docproc.daskConfigEnv" $root }}
{{- end }}
{{- end -}}

{{/*
dask.config as environment variables of the Dask servers, a YAML map (name: value). Dask reads
DASK_A__B_C=v as the key a.b-c (lower-cased, `__` nests, `_` and `-` are one) and the value
through ast.literal_eval, then true/false/null: "false" is False, "200ms" a string.
*/}}
{{- define "docproc.daskConfigEnv" -}}
{{- range $key, $value := .Values.dask.config }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "DASK_%s" ($key | replace "." "__" | replace "-" "_" | upper) }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Secret docproc environment (EnvVar list with secretKeyRef): S3 credentials. */}}
{{- define "docproc.secretEnv" -}}
{{- $v := .Values -}}
{{- if $v.minio.enabled -}}
- name: DOCPROC_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.minio.auth.existingSecret | quote }}, key: {{ $v.minio.auth.rootUserKey | quote }}}
- name: DOCPROC_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.minio.auth.existingSecret | quote }}, key: {{ $v.minio.auth.rootPasswordKey | quote }}}
{{- else -}}
- name: DOCPROC_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.s3.existingSecret | quote }}, key: {{ $v.s3.accessKeyKey | quote }}}
- name: DOCPROC_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.s3.existingSecret | quote }}, key: {{ $v.s3.secretKeyKey | quote }}}
{{- if eq $v.s3.sse "c" }}
- name: DOCPROC_S3_SSE_C_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.s3.existingSecret | quote }}, key: {{ $v.s3.sseCKeyKey | quote }}}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Full env list of a long-running docproc container (Dask workers). */}}
{{- define "docproc.env" -}}
{{- range $name, $value := (include "docproc.plainEnv" (dict "root" .root "flowRun" .flowRun) | fromYaml) }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{ include "docproc.secretEnv" .root }}
{{- end -}}

{{/*
Keyword arguments of dask_kubernetes.operator.KubeCluster for a flow run's own cluster
(dask.mode=operator): same image, the model preload, the S3 environment.
*/}}
{{- define "docproc.kubeClusterKwargs" -}}
{{- $v := .Values -}}
{{- $env := list -}}
{{- range $name, $value := (include "docproc.plainEnv" (dict "root" . "flowRun" false) | fromYaml) }}
{{- $env = append $env (dict "name" $name "value" $value) -}}
{{- end }}
{{- $env = concat $env (include "docproc.secretEnv" . | fromYamlArray) -}}
{{- $kwargs := dict
  "name" "docproc-{uuid}"
  "namespace" .Release.Namespace
  "image" (include "docproc.image" .)
  "n_workers" 1
  "resources" $v.dask.operator.resources
  "env" $env
  "worker_command" (list "dask" "worker" "--nthreads" (toString $v.dask.worker.nthreads) "--preload" "docproc.dask_preload")
  "idle_timeout" $v.dask.operator.idleTimeout
  "resource_timeout" 300
  "shutdown_on_close" true
-}}
{{- toJson $kwargs -}}
{{- end -}}

{{/* Writable scratch for a read-only root filesystem: HOME, TMPDIR and the caches point at /tmp. */}}
{{- define "docproc.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . | default "1Gi" }}
{{- end -}}

{{- define "docproc.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
Readiness of a Dask worker: the preload (docproc.dask_preload --ready-file) creates the file once
the OCR and NLP models are loaded. Until then the HPA leaves the pod's CPU out of its average (for
its first 5 minutes, Kubernetes' CPU initialization period): loading the models burns a core or
more, and on kind that alone made the HPA ask for another worker with no document in sight.
*/}}
{{- define "docproc.workerReadyFile" -}}
/tmp/docproc-models-ready
{{- end -}}
{{- define "docproc.workerReadinessProbe" -}}
readinessProbe:
  exec:
    command: [test, -f, {{ include "docproc.workerReadyFile" . }}]
  periodSeconds: 5
{{- end -}}

{{/*
preStop of a Dask worker: ask the scheduler to retire it by name (the pod name), which moves
its results to other workers and stops new tasks from landing here; then `dask worker` exits.
A plain SIGTERM would close the worker at once and lose its in-memory results.
*/}}
{{- define "docproc.retireWorkerScript" -}}
import os; from distributed import Client; c = Client(os.environ["DASK_SCHEDULER_ADDRESS"], timeout=30); c.retire_workers(names=[os.environ["POD_NAME"]], close_workers=True); c.close()
{{- end -}}

{{/* NetworkPolicy peers. */}}
{{- define "docproc.peer" -}}
- podSelector:
    matchLabels:
      {{- include "docproc.selectorLabels" . | nindent 6 }}
{{- end -}}
{{- define "docproc.operatorPeer" -}}
{{- /* pods of per-run Dask clusters, created by the dask-kubernetes operator */ -}}
- podSelector:
    matchExpressions:
      - {key: dask.org/cluster-name, operator: Exists}
{{- end -}}
