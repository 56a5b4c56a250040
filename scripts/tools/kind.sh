#!/usr/bin/env bash
# Install the local Kubernetes toolchain into the docproc tool cache (outside the repo), reused when present:
#   - Debian packages: docker.io (dockerd), containerd, runc, debootstrap, containernetworking-plugins, ...
#   - built from Go modules: kind, the Kubernetes binaries (our own kubectl among them), etcd 3.5,
#     CoreDNS, a pause program and metrics-server. Helm 4 is built by scripts/tools/helm.sh.
# Nothing is downloaded from a container registry or a binary download site: the Go module proxy and
# Debian's archive are enough, which is what makes the air-gapped cluster of scripts/kind-cluster.sh possible.
# Prints the binaries' paths as its last lines: `<name> <path>`.
set -euo pipefail

KIND_VERSION="v0.33.0"
K8S_VERSION="v1.33.13"      # k8s.io/kubernetes; its staging modules are published as v0.33.13
ETCD_VERSION="v3.5.24"      # what kubeadm v1.33 deploys (Debian's etcd 3.4 answers kubeadm's /livez and /readyz with 404)
COREDNS_VERSION="v1.12.0"   # what kubeadm v1.33 deploys
METRICS_SERVER_VERSION="v0.9.0"
DEB_PACKAGES="docker.io containerd runc debootstrap containernetworking-plugins iptables conntrack jq ca-certificates zstd"

tools_dir="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"
k8s_bins="kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy kubectl"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath"

log() { echo "kind.sh: $*" >&2; }

need_go() {
    if ! command -v go >/dev/null 2>&1; then
        log "'go' is not on PATH; install Go >= 1.24 to build the Kubernetes toolchain"
        exit 1
    fi
}

# finish NAME VERSION START TMPDIR: move the binaries built into TMPDIR into NAME-VERSION/bin atomically,
# so an interrupted build never leaves a half-written binary that would pass for a finished install.
finish() {
    local name="$1" version="$2" start="$3" tmp="$4"
    rm -rf "$tools_dir/$name-$version"
    mkdir -p "$tools_dir/$name-$version"
    mv "$tmp" "$tools_dir/$name-$version/bin"
    log "$name $version: built in $(( $(date +%s) - start ))s"
}

cached() {  # cached NAME VERSION BIN...: true when every BIN is already in NAME-VERSION/bin
    local name="$1" version="$2" bin
    shift 2
    for bin in "$@"; do [[ -x "$tools_dir/$name-$version/bin/$bin" ]] || return 1; done
    log "$name $version: $tools_dir/$name-$version/bin (cached)"
}

install_debs() {
    # shellcheck disable=SC2086
    if dpkg -s $DEB_PACKAGES >/dev/null 2>&1; then
        log "Debian packages: installed"
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "Debian packages missing; run as root or: apt-get install $DEB_PACKAGES"
        exit 1
    fi
    local start
    start=$(date +%s)
    apt-get -o DPkg::Lock::Timeout=300 update >/dev/null
    # Debian's docker images clean /var/cache/apt/archives after every dpkg run, so a concurrent apt-get
    # can delete our freshly downloaded .debs ("failed to read archive"): retry a bounded number of times.
    for _ in 1 2 3; do
        # shellcheck disable=SC2086
        if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
            --no-install-recommends $DEB_PACKAGES >"$tools_dir/.apt-kind.log" 2>&1; then
            log "Debian packages: installed in $(( $(date +%s) - start ))s"
            return
        fi
        tail -3 "$tools_dir/.apt-kind.log" >&2
        sleep 5
    done
    log "apt-get install failed three times; see $tools_dir/.apt-kind.log"
    exit 1
}

install_kind() {
    cached kind "$KIND_VERSION" kind && return
    need_go
    local start tmp
    start=$(date +%s)
    tmp="$(mktemp -d "$tools_dir/.kind-build.XXXXXX")"
    GOBIN="$tmp" go install -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
    finish kind "$KIND_VERSION" "$start" "$tmp"
}

# Kubernetes: `go install k8s.io/kubernetes/cmd/...@v1.33.13` is refused because k8s.io/kubernetes has
# replace directives (its staging modules). A wrapper module requires it and repeats those replaces,
# pointed at the published v0.33.x versions of the staging modules.
install_kubernetes() {
    # shellcheck disable=SC2086
    cached kubernetes "$K8S_VERSION" $k8s_bins && return
    need_go
    local start tmp src modfile minor bin ld pkg
    start=$(date +%s)
    src="$tools_dir/src/kubernetes-$K8S_VERSION"
    mkdir -p "$src"
    if [[ ! -f "$src/go.sum" ]]; then
        go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
        modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
        minor="v0.${K8S_VERSION#v1.}"
        {
            printf 'module docproc.local/kubernetes\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
            awk -v v="$minor" '/=> \.\/staging/ {print "\t" $1 " => " $1 " " v}' "$modfile"
            printf ')\n'
        } >"$src/go.mod"
        {
            printf '//go:build tools\n\npackage tools\n\nimport (\n'
            for bin in $k8s_bins; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$bin"; done
            printf ')\n'
        } >"$src/tools.go"
        (cd "$src" && go mod tidy)
    fi
    # The version stamp matters: kubeadm derives the control-plane image tags from it.
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        minor="${K8S_VERSION#v1.}"
        ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
        ld="$ld -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
        ld="$ld -X $pkg.buildDate=2026-01-01T00:00:00Z"
    done
    tmp="$(mktemp -d "$tools_dir/.kubernetes-build.XXXXXX")"
    for bin in $k8s_bins; do
        local s
        s=$(date +%s)
        (cd "$src" && go build -ldflags "$ld" -o "$tmp/$bin" "k8s.io/kubernetes/cmd/$bin")
        log "  $bin: ${bin} built in $(( $(date +%s) - s ))s"
    done
    finish kubernetes "$K8S_VERSION" "$start" "$tmp"
}

# etcd's server module has replace directives too: same wrapper.
install_etcd() {
    cached etcd "$ETCD_VERSION" etcd && return
    need_go
    local start tmp src
    start=$(date +%s)
    src="$tools_dir/src/etcd-$ETCD_VERSION"
    mkdir -p "$src"
    if [[ ! -f "$src/go.sum" ]]; then
        printf 'module docproc.local/etcd\n\ngo 1.23\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$src/go.mod"
        printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$src/tools.go"
        (cd "$src" && go mod tidy)
    fi
    tmp="$(mktemp -d "$tools_dir/.etcd-build.XXXXXX")"
    (cd "$src" && go build -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    finish etcd "$ETCD_VERSION" "$start" "$tmp"
}

install_gomod() {  # install_gomod NAME VERSION MODULE: plain `go install MODULE@VERSION`
    local name="$1" version="$2" module="$3"
    cached "$name" "$version" "$name" && return
    need_go
    local start tmp
    start=$(date +%s)
    tmp="$(mktemp -d "$tools_dir/.$name-build.XXXXXX")"
    GOBIN="$tmp" go install -ldflags "-s -w" "$module@$version"
    finish "$name" "$version" "$start" "$tmp"
}

# The pause container: blocks until SIGINT/SIGTERM and reaps zombies, as registry.k8s.io/pause does.
install_pause() {
    local version=3.10
    cached pause "$version" pause && return
    need_go
    local start tmp src
    start=$(date +%s)
    src="$tools_dir/src/pause-$version"
    mkdir -p "$src"
    printf 'module docproc.local/pause\n\ngo 1.24\n' >"$src/go.mod"
    cat >"$src/main.go" <<'EOF'
// Command pause holds a pod's namespaces: it waits for SIGINT or SIGTERM and reaps zombie children.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
    tmp="$(mktemp -d "$tools_dir/.pause-build.XXXXXX")"
    (cd "$src" && go build -ldflags "-s -w" -o "$tmp/pause" .)
    finish pause "$version" "$start" "$tmp"
}

mkdir -p "$tools_dir"
only="${1:-all}"
[[ "$only" == all || "$only" == debs ]] && install_debs
if [[ "$only" == all || "$only" == go ]]; then
    install_kind
    install_pause
    install_kubernetes
    install_etcd
    install_gomod coredns "$COREDNS_VERSION" github.com/coredns/coredns
    install_gomod metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server
fi

echo "kind $tools_dir/kind-$KIND_VERSION/bin/kind"
echo "kubectl $tools_dir/kubernetes-$K8S_VERSION/bin/kubectl"
echo "kubernetes $tools_dir/kubernetes-$K8S_VERSION/bin"
echo "etcd $tools_dir/etcd-$ETCD_VERSION/bin/etcd"
echo "coredns $tools_dir/coredns-$COREDNS_VERSION/bin/coredns"
echo "pause $tools_dir/pause-3.10/bin/pause"
echo "metrics-server $tools_dir/metrics-server-$METRICS_SERVER_VERSION/bin/metrics-server"
