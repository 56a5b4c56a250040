#!/usr/bin/env bash
# End-to-end run on a kind cluster, for machines with Docker and kind (`make kind-e2e`):
# build and load the image, install the chart with values-kind.yaml, upload samples/ to MinIO,
# submit one critical and one bulk run, wait for both, and check the results with the same
# Python assertions as the local end-to-end tests (tests/e2e_checks.py).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-docproc}"
NAMESPACE="${NAMESPACE:-docproc}"
RELEASE="${RELEASE:-docproc}"
IMAGE="docproc:dev"
HELM="${HELM:-helm}"
PY=.venv/bin/python
DOCPROC=.venv/bin/docproc
TIMEOUT="${E2E_TIMEOUT:-1800}"
RUN_ID="e2e-$(date +%Y%m%d-%H%M%S)"
kubectl=(kubectl --context "kind-$CLUSTER" -n "$NAMESPACE")

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { echo "kind-e2e: '$tool' is required" >&2; exit 1; }
done

echo "== image"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "== secrets (generated once per cluster, kept across runs)"
kubectl --context "kind-$CLUSTER" create namespace "$NAMESPACE" --dry-run=client -o yaml \
    | kubectl --context "kind-$CLUSTER" apply -f -
if ! "${kubectl[@]}" get secret docproc-credentials >/dev/null 2>&1; then
    "${kubectl[@]}" create secret generic docproc-credentials \
        --from-literal=minio-root-user="docproc-$(openssl rand -hex 4)" \
        --from-literal=minio-root-password="$(openssl rand -hex 24)" \
        --from-literal=minio-kms-secret-key="docproc-key:$(openssl rand -base64 32)" \
        --from-literal=events-token="$(openssl rand -hex 32)"
fi
secret() { "${kubectl[@]}" get secret docproc-credentials -o "jsonpath={.data.$1}" | base64 -d; }

echo "== helm install"
"$HELM" upgrade --install "$RELEASE" helm/docproc --kube-context "kind-$CLUSTER" -n "$NAMESPACE" \
    -f helm/docproc/values-kind.yaml --wait --timeout 20m

echo "== port-forwards"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"${kubectl[@]}" port-forward "svc/$RELEASE-docproc-minio" 19000:9000 >/dev/null & pids+=($!)
"${kubectl[@]}" port-forward "svc/$RELEASE-docproc-server" 14200:4200 >/dev/null & pids+=($!)
for _ in $(seq 60); do
    curl -fsS http://127.0.0.1:14200/api/health >/dev/null 2>&1 \
        && curl -fsS http://127.0.0.1:19000/minio/health/ready >/dev/null 2>&1 && break
    sleep 2
done

export PREFECT_API_URL=http://127.0.0.1:14200/api
export DOCPROC_S3_ENDPOINT=127.0.0.1:19000 DOCPROC_S3_SECURE=false DOCPROC_S3_SSE=s3
DOCPROC_S3_ACCESS_KEY="$(secret minio-root-user)"; export DOCPROC_S3_ACCESS_KEY
DOCPROC_S3_SECRET_KEY="$(secret minio-root-password)"; export DOCPROC_S3_SECRET_KEY

echo "== upload samples"
# Outside inbox/: the bucket notification would start a third run for them.
"$PY" -m tests.e2e_checks upload samples "s3://docproc/$RUN_ID/critical"
"$PY" -m tests.e2e_checks upload samples "s3://docproc/$RUN_ID/bulk"

echo "== submit"
submit() {
    # `docproc submit` prints "flow run <id> (<name>) on queue <queue>" first.
    "$DOCPROC" submit "s3://docproc/$RUN_ID/$1" --priority "$1" --out "s3://docproc/$RUN_ID/out-$1" | head -1 | awk '{print $3}'
}
critical_run="$(submit critical)"
bulk_run="$(submit bulk)"
echo "critical run $critical_run, bulk run $bulk_run"

echo "== wait"
deadline=$(( $(date +%s) + TIMEOUT ))
for run in "$critical_run" "$bulk_run"; do
    until "$DOCPROC" status "$run" | grep -qE 'COMPLETED|FAILED|CRASHED|CANCELLED'; do
        if (( $(date +%s) > deadline )); then
            echo "kind-e2e: run $run did not finish in ${TIMEOUT}s" >&2
            "${kubectl[@]}" get pods,jobs >&2
            exit 1
        fi
        sleep 10
    done
    "$DOCPROC" status "$run" | grep -q COMPLETED || { "$DOCPROC" status "$run" >&2; exit 1; }
done

echo "== check"
expected=()
for f in samples/*; do
    name="$(basename "$f")"
    [[ "$name" == README.md || "$name" == invalid.pdf ]] || expected+=("$name")
done
for queue in critical bulk; do
    "$PY" -m tests.e2e_checks check "s3://docproc/$RUN_ID/out-$queue" --expect "${expected[@]}" --quarantined invalid.pdf
done
echo "kind-e2e: ok"
