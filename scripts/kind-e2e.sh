#!/usr/bin/env bash
# End-to-end run on the kind cluster (`make kind-e2e`, after kind-up, image and kind-load):
# runs tests/test_kind_e2e.py, which installs metrics-server and the chart with Helm 4 and
# values-kind.yaml and checks processing, events, security, faults and autoscaling on the live
# cluster. The project's own kubectl (scripts/tools/kind.sh) and the cluster's kubeconfig
# (scripts/kind-cluster.sh env) are passed to it; the machine's kubectl is never used.
# Extra arguments go to pytest (e.g. `-k security`, `-x`).
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl="$(bash scripts/tools/kind.sh | awk '$1 == "kubectl" {print $2}')"
if [[ ! -x "$kubectl" ]]; then
    echo "kind-e2e: scripts/tools/kind.sh printed no kubectl ('$kubectl')" >&2
    exit 1
fi
# DOCKER_HOST, KUBECONFIG and PATH of the cluster `make kind-up` made.
eval "$(scripts/kind-cluster.sh env | grep '^export ')"
# The per-build alias `make kind-load` gave docproc:dev in the nodes: installing by it rolls the pods of
# a release a rebuilt image would otherwise leave running.
DOCPROC_E2E_IMAGE_TAG="$(scripts/kind-cluster.sh build-tag docproc:dev)"
export DOCPROC_KUBECTL="$kubectl" KUBECONFIG DOCPROC_E2E_IMAGE_TAG
exec .venv/bin/pytest tests/test_kind_e2e.py -m kind "$@"
