# Kubernetes packaging: chart lint, raw manifests, kind cluster and its end-to-end run.
# Memoized on first use, so `make help` and unrelated targets never build the tools.
HELM_TOOLS = $(eval HELM_TOOLS := $(shell bash scripts/tools/helm.sh))$(HELM_TOOLS)
HELM = $(word 2,$(HELM_TOOLS))
KUSTOMIZE = $(word 4,$(HELM_TOOLS))
HADOLINT = $(word 6,$(HELM_TOOLS))
HELM4 = $(word 8,$(HELM_TOOLS))
KIND_CLUSTER ?= docproc

.PHONY: helm-lint k8s-render kind-up image kind-load kind-e2e kind-down kind-test
helm-lint: ## helm lint --strict and helm template, Helm 3 and Helm 4, with every values file; hadolint on the Dockerfile
	@set -e; for helm in $(HELM) $(HELM4); do for values in "" helm/docproc/values-kind.yaml helm/docproc/values-production.yaml; do \
		echo "$$($$helm version --short) lint --strict + template $${values:-(default values)}"; \
		$$helm lint --strict helm/docproc --kube-version 1.33.0 $${values:+-f $$values} >/dev/null; \
		$$helm template docproc helm/docproc -n docproc --kube-version 1.33.0 $${values:+-f $$values} >/dev/null; \
	done; done
	$(HADOLINT) Dockerfile

k8s-render: ## regenerate k8s/ (kustomize base and overlays) from the chart
	$(PY) k8s/render.py --helm $(HELM)
	$(KUSTOMIZE) build k8s/overlays/kind > /dev/null
	$(KUSTOMIZE) build k8s/overlays/production > /dev/null

kind-up: ## create the kind cluster: kind's published node image with a registry, built here without one
	scripts/kind-cluster.sh up

image: ## build the docproc image (docproc:dev); air-gapped: Debian-made Python base, torch from PyPI
	scripts/build-image.sh docproc:dev

kind-load: ## load docproc:dev into the kind cluster
	scripts/kind-cluster.sh load docproc:dev

kind-e2e: env kind-up image kind-load ## helm install (Helm 4), submit a critical and a bulk run, check results
	HELM=$(HELM4) KIND_CLUSTER=$(KIND_CLUSTER) scripts/kind-e2e.sh

kind-down: ## delete the kind cluster, stop the dockerd kind-up started, restore the host network
	scripts/kind-cluster.sh down

# `make test` runs this after the unit suite: a cluster that cannot come up fails the run; the cluster
# and the dockerd are torn down whatever the outcome.
kind-test: env
	@rc=0; $(MAKE) --no-print-directory kind-e2e || rc=$$?; \
	$(MAKE) --no-print-directory kind-down || rc=$$((rc ? rc : 1)); exit $$rc
