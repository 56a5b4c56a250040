# Kubernetes packaging: chart lint, raw manifests, kind cluster and its end-to-end run.
# Memoized on first use, so `make help` and unrelated targets never build the tools.
HELM_TOOLS = $(eval HELM_TOOLS := $(shell bash scripts/tools/helm.sh))$(HELM_TOOLS)
HELM = $(word 2,$(HELM_TOOLS))
KUSTOMIZE = $(word 4,$(HELM_TOOLS))
HADOLINT = $(word 6,$(HELM_TOOLS))
KIND_CLUSTER ?= docproc

.PHONY: helm-lint k8s-render kind-up kind-e2e kind-down
helm-lint: ## helm lint --strict on the chart with every values file, hadolint on the Dockerfile
	$(HELM) lint --strict helm/docproc --kube-version 1.33.0
	$(HELM) lint --strict helm/docproc --kube-version 1.33.0 -f helm/docproc/values-kind.yaml
	$(HELM) lint --strict helm/docproc --kube-version 1.33.0 -f helm/docproc/values-production.yaml
	$(HADOLINT) Dockerfile

k8s-render: ## regenerate k8s/ (kustomize base and overlays) from the chart
	$(PY) k8s/render.py --helm $(HELM)
	$(KUSTOMIZE) build k8s/overlays/kind > /dev/null
	$(KUSTOMIZE) build k8s/overlays/production > /dev/null

kind-up: ## create the kind cluster (needs Docker and kind)
	@kind get clusters 2>/dev/null | grep -qx $(KIND_CLUSTER) || kind create cluster --config k8s/kind/cluster.yaml --name $(KIND_CLUSTER)
	kubectl cluster-info --context kind-$(KIND_CLUSTER)

kind-e2e: env kind-up ## build and load the image, helm install, submit a critical and a bulk run, check results
	HELM=$(HELM) KIND_CLUSTER=$(KIND_CLUSTER) scripts/kind-e2e.sh

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)
