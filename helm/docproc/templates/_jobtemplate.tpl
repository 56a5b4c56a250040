{{/*
The Kubernetes work pool's base job template (prefect-kubernetes format): the chart's image,
security settings, scratch space and S3 credentials are fixed here; resources, PriorityClass
and env are pool variables whose defaults are the standard queue's, and each queue's
deployments override them (see files/configure_pool.py and "docproc.queueJobVariables").
*/}}
{{- define "docproc.baseJobTemplate" -}}
{{- $v := .Values -}}
{{- $jt := $v.worker.jobTemplate -}}
{{- $std := $v.queues.standard -}}
{{- $labels := include "docproc.selectorLabels" (list . "flow-run") | fromYaml -}}
{{- $container := dict
  "name" "prefect-job"
  "image" "{{ image }}"
  "imagePullPolicy" "{{ image_pull_policy }}"
  "args" "{{ command }}"
  "env" (include "docproc.secretEnv" . | fromYamlArray)
  "resources" (dict
    "requests" (dict "cpu" "{{ cpu_request }}" "memory" "{{ memory_request }}")
    "limits" (dict "cpu" "{{ cpu_limit }}" "memory" "{{ memory_limit }}"))
  "securityContext" (include "docproc.containerSecurityContext" . | fromYaml)
  "volumeMounts" (include "docproc.tmpMount" . | fromYamlArray)
-}}
{{- $podSpec := dict
  "parallelism" 1
  "completions" 1
  "restartPolicy" "Never"
  "serviceAccountName" (include "docproc.componentName" (list . "flow-run"))
  "automountServiceAccountToken" (eq $v.dask.mode "operator")
  "priorityClassName" "{{ priority_class_name }}"
  "securityContext" (include "docproc.podSecurityContext" . | fromYaml)
  "containers" (list $container)
  "volumes" (include "docproc.tmpVolume" $jt.tmpSizeLimit | fromYamlArray)
-}}
{{- with $v.imagePullSecrets }}
{{- $secrets := list }}
{{- range . }}{{ $secrets = append $secrets (dict "name" .) }}{{ end }}
{{- $_ := set $podSpec "imagePullSecrets" $secrets }}
{{- end }}
{{- $manifest := dict
  "apiVersion" "batch/v1"
  "kind" "Job"
  "metadata" (dict "generateName" "{{ name }}-" "namespace" "{{ namespace }}" "labels" $labels)
  "spec" (dict
    "backoffLimit" (int $jt.backoffLimit)
    "ttlSecondsAfterFinished" "{{ finished_job_ttl }}"
    "template" (dict "metadata" (dict "labels" $labels) "spec" $podSpec))
-}}
{{- $jobConfiguration := dict
  "command" "{{ command }}"
  "env" "{{ env }}"
  "labels" "{{ labels }}"
  "name" "{{ name }}"
  "namespace" "{{ namespace }}"
  "job_manifest" $manifest
  "cluster_config" "{{ cluster_config }}"
  "job_watch_timeout_seconds" "{{ job_watch_timeout_seconds }}"
  "pod_watch_timeout_seconds" "{{ pod_watch_timeout_seconds }}"
  "stream_output" "{{ stream_output }}"
-}}
{{- $str := dict "type" "string" -}}
{{- $properties := dict
  "name" (dict "type" "string" "title" "Name" "description" "Name given to infrastructure created by the worker.")
  "command" (dict "type" "string" "title" "Command" "description" "Command to start the flow run; empty uses Prefect's default.")
  "labels" (dict "type" "object" "title" "Labels" "additionalProperties" $str "description" "Labels of the flow-run Job and pod.")
  "env" (dict "type" "object" "title" "Environment Variables" "additionalProperties" (dict "type" (list "string" "null")) "default" (include "docproc.plainEnv" (dict "root" . "flowRun" true) | fromYaml) "description" "Environment of the flow-run container (secrets come from the chart's existing secrets).")
  "namespace" (dict "type" "string" "title" "Namespace" "default" .Release.Namespace "description" "Namespace of the flow-run Jobs.")
  "image" (dict "type" "string" "title" "Image" "default" (include "docproc.image" .) "description" "docproc image of the flow-run container.")
  "image_pull_policy" (dict "type" "string" "title" "Image Pull Policy" "enum" (list "IfNotPresent" "Always" "Never") "default" $v.image.pullPolicy)
  "finished_job_ttl" (dict "type" "integer" "title" "Finished Job TTL" "default" (int $jt.ttlSecondsAfterFinished) "description" "Seconds a finished Job is kept.")
  "pod_watch_timeout_seconds" (dict "type" "integer" "title" "Pod Watch Timeout" "minimum" 300 "default" (int $jt.podWatchTimeoutSeconds) "description" "Seconds the worker waits for the pod to start.")
  "job_watch_timeout_seconds" (dict "type" (list "integer" "null") "title" "Job Watch Timeout" "default" $jt.jobWatchTimeoutSeconds "description" "Seconds the worker waits for the Job to finish; null waits forever.")
  "stream_output" (dict "type" "boolean" "title" "Stream Output" "default" true)
  "cluster_config" (dict "type" (list "object" "null") "title" "Cluster Config" "default" nil "description" "Unused in-cluster: the worker uses its ServiceAccount.")
  "priority_class_name" (dict "type" "string" "title" "PriorityClass" "default" $std.priorityClass.name "description" "PriorityClass of the flow-run pod; set per queue by its deployments.")
  "cpu_request" (dict "type" "string" "title" "CPU request" "default" (toString $std.resources.requests.cpu))
  "cpu_limit" (dict "type" "string" "title" "CPU limit" "default" (toString $std.resources.limits.cpu))
  "memory_request" (dict "type" "string" "title" "Memory request" "default" (toString $std.resources.requests.memory))
  "memory_limit" (dict "type" "string" "title" "Memory limit" "default" (toString $std.resources.limits.memory))
-}}
{{- toPrettyJson (dict
  "job_configuration" $jobConfiguration
  "variables" (dict "type" "object" "properties" $properties)) -}}
{{- end -}}

{{/* Job variables of each queue's deployments: {"critical": {...}, ...} as JSON. */}}
{{- define "docproc.queueJobVariables" -}}
{{- $out := dict -}}
{{- range $name, $q := .Values.queues -}}
{{- $_ := set $out $name (dict
  "priority_class_name" $q.priorityClass.name
  "cpu_request" (toString $q.resources.requests.cpu)
  "cpu_limit" (toString $q.resources.limits.cpu)
  "memory_request" (toString $q.resources.requests.memory)
  "memory_limit" (toString $q.resources.limits.memory)) -}}
{{- end -}}
{{- toPrettyJson $out -}}
{{- end -}}

{{/* Queues as configured in values (names, priorities, limits) for the pool setup. */}}
{{- define "docproc.queuesJson" -}}
{{- $out := dict -}}
{{- range $name, $q := .Values.queues -}}
{{- $_ := set $out $name (dict "priority" $q.priority "concurrency_limit" $q.concurrencyLimit) -}}
{{- end -}}
{{- toPrettyJson $out -}}
{{- end -}}
