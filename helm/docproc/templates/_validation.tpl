{{/*
Checks values.schema.json cannot express. Each message names the exact key to change.
Included once, from validate.yaml.
*/}}
{{- define "docproc.validate" -}}
{{- $v := .Values -}}
{{- if and (gt (int $v.server.replicas) 1) (ne $v.server.database.type "postgresql") -}}
{{- fail "server.replicas: more than 1 replica needs server.database.type=postgresql (SQLite lives on one ReadWriteOnce volume)" -}}
{{- end -}}
{{- if and (eq $v.server.database.type "postgresql") (not $v.server.database.postgresql.existingSecret) -}}
{{- fail "server.database.postgresql.existingSecret: required with server.database.type=postgresql (a secret holding the connection URL)" -}}
{{- end -}}
{{- if and $v.minio.enabled (not $v.minio.auth.existingSecret) -}}
{{- fail "minio.auth.existingSecret: required with minio.enabled=true (a secret with the MinIO root user and password)" -}}
{{- end -}}
{{- if and (not $v.minio.enabled) (not $v.s3.endpoint) -}}
{{- fail "s3.endpoint: required with minio.enabled=false (host:port of the external S3 endpoint)" -}}
{{- end -}}
{{- if and (not $v.minio.enabled) (not $v.s3.existingSecret) -}}
{{- fail "s3.existingSecret: required with minio.enabled=false (a secret with the S3 access and secret keys)" -}}
{{- end -}}
{{- if and $v.events.enabled (not $v.events.auth.existingSecret) -}}
{{- fail "events.auth.existingSecret: required with events.enabled=true (a secret with the webhook bearer token)" -}}
{{- end -}}
{{- if and $v.minio.enabled $v.minio.notification.enabled (not $v.events.enabled) -}}
{{- fail "minio.notification.enabled: needs events.enabled=true (the notification goes to the event receiver); set one of them to false" -}}
{{- end -}}
{{- $as := $v.dask.worker.autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail (printf "dask.worker.autoscaling.minReplicas: %d is above dask.worker.autoscaling.maxReplicas (%d)" (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}
{{- /* A queue served first by Prefect must also win on the cluster: its PriorityClass value is higher. */ -}}
{{- $order := list "critical" "standard" "bulk" -}}
{{- range $i, $name := slice $order 0 2 -}}
{{- $next := index $order (add1 $i) -}}
{{- $a := index $v.queues $name -}}
{{- $b := index $v.queues $next -}}
{{- if ge (int $a.priority) (int $b.priority) -}}
{{- fail (printf "queues.%s.priority: must be lower than queues.%s.priority (%d), lower is served first" $name $next (int $b.priority)) -}}
{{- end -}}
{{- if le (int $a.priorityClass.value) (int $b.priorityClass.value) -}}
{{- fail (printf "queues.%s.priorityClass.value: must be higher than queues.%s.priorityClass.value (%d)" $name $next (int $b.priorityClass.value)) -}}
{{- end -}}
{{- if eq $a.priorityClass.name $b.priorityClass.name -}}
{{- fail (printf "queues.%s.priorityClass.name: %q is also queues.%s.priorityClass.name; each queue needs its own" $name $a.priorityClass.name $next) -}}
{{- end -}}
{{- end -}}
{{- end -}}
