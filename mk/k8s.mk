# Kubernetes packaging: chart lint, raw manifests, kind cluster and its end-to-end run.
# Memoized on first use, so `make help` and unrelated targets never build the tools.
# scripts/tools/helm.sh prints `name path` lines; kept as name=path words and looked up by name.
HELM_TOOLS = $(eval HELM_TOOLS := $(shell bash scripts/tools/helm.sh | tr ' ' '='))$(HELM_TOOLS)
tool = $(or $(patsubst $(1)=%,%,$(filter $(1)=%,$(HELM_TOOLS))),$(error scripts/tools/helm.sh printed no path for $(1)))
HELM = $(call tool,helm)
HELM4 = $(call tool,helm4)
KUSTOMIZE = $(call tool,kustomize)
HADOLINT = $(call tool,hadolint)
CHART_VALUES = "" helm/docproc/values-kind.yaml helm/docproc/values-production.yaml
KIND_CLUSTER ?= docproc

.PHONY: helm-lint k8s-render kind-up kind-e2e kind-down
helm-lint: ## helm lint --strict and helm template, Helm 3 and Helm 4, with every values file; hadolint on the Dockerfile
	@set -e; for helm in $(HELM) $(HELM4); do for values in $(CHART_VALUES); do \
		echo "$$($$helm version --short) lint --strict + template $${values:-(default values)}"; \
		$$helm lint --strict helm/docproc --kube-version 1.33.0 $${values:+-f $$values} >/dev/null; \
		$$helm template docproc helm/docproc -n docproc --kube-version 1.33.0 $${values:+-f $$values} >/dev/null; \
	done; done
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
