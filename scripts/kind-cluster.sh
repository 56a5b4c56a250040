#!/usr/bin/env bash
# The local Kubernetes cluster of docproc (kind), with or without a container registry.
#
#   scripts/kind-cluster.sh up      # dockerd (if none runs) + node image + `kind create cluster`; idempotent
#   scripts/kind-cluster.sh down    # delete the cluster, stop the dockerd it started (by PID), restore the host network
#   scripts/kind-cluster.sh load IMAGE...   # `kind load docker-image` into every node
#   scripts/kind-cluster.sh build-tag IMAGE # the tag of IMAGE's per-build alias in the nodes (dev-<12 hex>)
#   scripts/kind-cluster.sh images  # only build the air-gapped images (Debian base, Python base, kind node, ...)
#   scripts/kind-cluster.sh env     # print the exports that point docker/kubectl/helm at this cluster
#
# Two paths, chosen by KIND_NODE_SOURCE (auto | published | airgap):
#   published  kind's own node image (kindest/node) and CNI (kindnetd), pulled from Docker Hub as usual.
#   airgap     no container registry at all: everything the cluster runs is built here from Debian packages
#              and Go modules (scripts/tools/kind.sh): a Debian base from debootstrap, kind's base image redone
#              with Debian's containerd/runc/CNI plugins plus kind's own files, the control-plane images
#              (kube-apiserver, controller-manager, scheduler, kube-proxy, etcd, CoreDNS, pause) tagged with
#              the names kubeadm expects, and a bridge CNI from Debian's containernetworking-plugins.
#   auto       published when kindest/node is already loaded or Docker Hub's name resolves, airgap otherwise
#              (the check is a DNS lookup only: nothing is contacted).
# Everything built is cached under $DOCPROC_TOOLS_DIR (outside the repository) and reused.
#
# dockerd: when no Docker daemon answers on DOCKER_HOST, this script starts Debian's dockerd with its own
# data root, exec root and socket under the cache, records its PID, and `down` stops exactly that PID.
# Machines without CAP_SYS_RESOURCE (some VMs and CI sandboxes) cannot run `docker run --privileged`
# (runc: "unable to apply caps"), which kind needs: dockerd gets a runc wrapper that drops that capability.
set -euo pipefail
cd "$(dirname "$0")/.."

tools_dir="${DOCPROC_TOOLS_DIR:-$HOME/.cache/docproc-tools}"
CLUSTER="${KIND_CLUSTER:-docproc}"
SOURCE="${KIND_NODE_SOURCE:-auto}"
K8S_VERSION="v1.33.13"
PUBLISHED_NODE_IMAGE="kindest/node:v1.33.1"      # the image k8s/kind/cluster.yaml names
AIRGAP_NODE_IMAGE="docproc.local/kind-node:$K8S_VERSION"
DEBIAN_IMAGE="docproc.local/debian:bookworm"
PYTHON_IMAGE="docproc.local/python:3.11-bookworm"
KINDBASE_IMAGE="docproc.local/kind-base:bookworm"
POD_SUBNET="10.244.0.0/16"
SERVICE_SUBNET="10.96.0.0/12"
DOCKER_NETS="10.200.0.0/15"   # docker0 (10.200.0.0/24) and every network dockerd makes (10.201.x.0/24)
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

state="$tools_dir/kind"              # kubeconfig, generated configs, logs
dstate="$tools_dir/docker"           # our dockerd: data root, exec root, socket, pid
mkdir -p "$state" "$dstate/pathbin"
export KUBECONFIG="${KUBECONFIG_DOCPROC:-$state/kubeconfig}"
# kind runs `docker` from PATH: make that Debian's client (a machine may have another one earlier on PATH).
ln -sf /usr/bin/docker "$dstate/pathbin/docker"
export PATH="$dstate/pathbin:$PATH"
own_docker_host="unix://$dstate/docker.sock"
# The Docker daemon: DOCKER_HOST if set, else the system's (/var/run/docker.sock) if it answers, else our own.
if [[ -z "${DOCKER_HOST:-}" ]]; then
    if [[ ! -S "$dstate/docker.sock" ]] && [[ -S /var/run/docker.sock ]] \
        && DOCKER_HOST=unix:///var/run/docker.sock timeout 20 docker info >/dev/null 2>&1; then
        DOCKER_HOST=unix:///var/run/docker.sock
    else
        DOCKER_HOST="$own_docker_host"
    fi
fi
export DOCKER_HOST
export DOCKER_BUILDKIT=1

T0=$(date +%s)
log() { echo "[kind-cluster +$(( $(date +%s) - T0 ))s] $*" >&2; }
timed() {  # timed LABEL CMD...: run CMD, log how long it took
    local label="$1" s
    shift
    s=$(date +%s)
    "$@"
    log "$label: $(( $(date +%s) - s ))s"
}

tool_paths() {
    local line out
    out="$(bash scripts/tools/kind.sh)"   # fails the script when a tool cannot be installed
    while read -r line; do
        case "$line" in
            "kind "*) KIND="${line#kind }" ;;
            "kubectl "*) KUBECTL="${line#kubectl }" ;;
            "kubernetes "*) K8S_BIN="${line#kubernetes }" ;;
            "etcd "*) ETCD="${line#etcd }" ;;
            "coredns "*) COREDNS="${line#coredns }" ;;
            "pause "*) PAUSE="${line#pause }" ;;
            "metrics-server "*) METRICS_SERVER="${line#metrics-server }" ;;
        esac
    done <<<"$out"
}

docker_ok() { docker info >/dev/null 2>&1; }

# ------------------------------------------------------------------------------------------- dockerd
write_runc_wrapper() {
    cat >"$dstate/runc-nosysres" <<'EOF'
#!/bin/bash
# runc, minus CAP_SYS_RESOURCE in the container's capability sets (this machine's bounding set lacks it).
strip() {
    [ -f "$1" ] || return 0
    local t
    t=$(mktemp "$1.XXXX")
    jq "if $2 then $2 |= with_entries(.value |= map(select(. != \"CAP_SYS_RESOURCE\"))) else . end" "$1" >"$t" && cat "$t" >"$1"
    rm -f "$t"
}
args=("$@")
n=${#args[@]}
for ((i = 0; i < n; i++)); do
    case "${args[$i]}" in
        --bundle | -b) strip "${args[$((i + 1))]}/config.json" .process.capabilities ;;
        --bundle=*) strip "${args[$i]#--bundle=}/config.json" .process.capabilities ;;
        --process | -p) strip "${args[$((i + 1))]}" .capabilities ;;
        --process=*) strip "${args[$i]#--process=}" .capabilities ;;
    esac
done
exec /usr/sbin/runc "$@"
EOF
    chmod +x "$dstate/runc-nosysres"
}

has_cap_sys_resource() {  # bit 24 of the bounding set
    local bnd
    bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
    (( (16#$bnd >> 24) & 1 ))
}

start_dockerd() {
    if docker_ok; then
        log "dockerd: answering on $DOCKER_HOST"
        return
    fi
    if [[ "$DOCKER_HOST" != "$own_docker_host" ]]; then
        log "no Docker daemon answers on DOCKER_HOST=$DOCKER_HOST"
        exit 1
    fi
    command -v dockerd >/dev/null || { log "dockerd is missing: scripts/tools/kind.sh installs Debian's docker.io"; exit 1; }
    # The host's network settings before dockerd changes them, restored by `down`.
    if [[ ! -f "$dstate/host-net.before" ]]; then
        {
            echo "ip_forward=$(sysctl -n net.ipv4.ip_forward)"
            echo "forward_policy=$(iptables -S FORWARD | awk '$1 == "-P" {print $3}')"
        } >"$dstate/host-net.before"
    fi
    local runtime_args=()
    if ! has_cap_sys_resource; then
        write_runc_wrapper
        runtime_args=(--add-runtime "runc-nosysres=$dstate/runc-nosysres" --default-runtime runc-nosysres)
        log "dockerd: no CAP_SYS_RESOURCE here, containers run through $dstate/runc-nosysres"
    fi
    mkdir -p "$dstate/data" "$dstate/exec"
    local s
    s=$(date +%s)
    setsid dockerd --data-root "$dstate/data" --exec-root "$dstate/exec" --pidfile "$dstate/dockerd.pid" \
        -H "$own_docker_host" --storage-driver overlay2 \
        --bip 10.200.0.1/24 --default-address-pool base=10.201.0.0/16,size=24 \
        "${runtime_args[@]}" >>"$dstate/dockerd.log" 2>&1 </dev/null &
    local i
    for i in $(seq 1 60); do
        docker_ok && break
        sleep 1
    done
    docker_ok || { tail -20 "$dstate/dockerd.log" >&2; log "dockerd did not answer within 60s"; exit 1; }
    log "dockerd: started, PID $(cat "$dstate/dockerd.pid") ($(( $(date +%s) - s ))s), log $dstate/dockerd.log"
    guard_rules
}

# Pod and service addresses never leave this machine, and our containers reach no private network
# except their own: the registries they may use are public addresses.
guard_rules() {
    iptables -N DOCKER-USER 2>/dev/null || true
    local rule
    for rule in "-d $SERVICE_SUBNET -j REJECT" "-d $POD_SUBNET -j REJECT" \
        "-s $DOCKER_NETS -d 10.0.0.0/8 -j REJECT" "-s $DOCKER_NETS -d 172.16.0.0/12 -j REJECT" \
        "-s $DOCKER_NETS -d 192.168.0.0/16 -j REJECT" "-s $DOCKER_NETS -d 100.64.0.0/10 -j REJECT" \
        "-s $DOCKER_NETS -d 169.254.0.0/16 -j REJECT" "-s $DOCKER_NETS -d $DOCKER_NETS -j RETURN"; do
        # shellcheck disable=SC2086
        iptables -C DOCKER-USER $rule 2>/dev/null || iptables -I DOCKER-USER $rule
    done
    # Traffic between our containers (kind nodes: pod-to-pod across nodes) is bridged on dockerd's own
    # bridges and never leaves them; with br_netfilter it still passes FORWARD, so it goes first.
    local br
    for br in "br-+" docker0; do
        iptables -C DOCKER-USER -i "$br" -o "$br" -j RETURN 2>/dev/null || iptables -I DOCKER-USER -i "$br" -o "$br" -j RETURN
    done
    # ... and the host's own DNS resolvers (build containers on the default bridge use them directly).
    local ns proto
    for ns in $(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ && $2 !~ /^127\./ {print $2}' /etc/resolv.conf); do
        for proto in udp tcp; do
            iptables -C DOCKER-USER -s "$DOCKER_NETS" -d "$ns/32" -p "$proto" --dport 53 -j RETURN 2>/dev/null \
                || iptables -I DOCKER-USER -s "$DOCKER_NETS" -d "$ns/32" -p "$proto" --dport 53 -j RETURN
        done
    done
}

stop_dockerd() {
    local pid
    [[ -f "$dstate/dockerd.pid" ]] || return 0
    pid=$(cat "$dstate/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]; then
        kill "$pid"
        local i
        for i in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -0 "$pid" 2>/dev/null && { log "dockerd $pid did not stop in 60s"; exit 1; }
        log "dockerd: PID $pid stopped"
    fi
    rm -f "$dstate/dockerd.pid"
}

# What dockerd and the kind nodes left in the host's network namespace: their bridges, their iptables
# rules and chains, ip_forward and the FORWARD policy as they were before dockerd started.
restore_host_network() {
    local t rule chain link
    for t in filter nat mangle raw; do
        iptables-save -t "$t" 2>/dev/null | grep '^-A' \
            | grep -E 'DOCKER|docker0|br-[0-9a-f]{12}|10\.200\.0\.0/15|10\.201\.|10\.200\.' | sed 's/^-A/-D/' \
            | while read -r rule; do eval "iptables -t $t $rule" 2>/dev/null || true; done || true   # no match: fine
        for chain in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER; do
            iptables -t "$t" -F "$chain" 2>/dev/null && iptables -t "$t" -X "$chain" 2>/dev/null || true
        done
    done
    for link in $(ip -o link show type bridge | awk -F': ' '{print $2}' | grep -E '^(docker0|br-[0-9a-f]{12})$' || true); do
        ip link del "$link"
    done
    if [[ -f "$dstate/host-net.before" ]]; then
        # shellcheck disable=SC1091
        source "$dstate/host-net.before"
        sysctl -qw "net.ipv4.ip_forward=${ip_forward:-0}"
        iptables -P FORWARD "${forward_policy:-ACCEPT}"
        rm -f "$dstate/host-net.before"
    fi
    rmdir /lib/modules 2>/dev/null || true   # made (empty) by docker for kind's /lib/modules mount
    log "host network restored (bridges, iptables rules, ip_forward, FORWARD policy)"
}

# ------------------------------------------------------------------------------------------- images
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

build_debian_image() {
    image_exists "$DEBIAN_IMAGE" && return
    local rootfs="$tools_dir/debootstrap-bookworm"
    if [[ ! -x "$rootfs/usr/bin/apt-get" ]]; then
        rm -rf "$rootfs.tmp"
        local s
        s=$(date +%s)
        debootstrap --variant=minbase bookworm "$rootfs.tmp" "$DEBIAN_MIRROR" >"$state/debootstrap.log" 2>&1 \
            || { tail -20 "$state/debootstrap.log" >&2; exit 1; }
        log "debootstrap bookworm: $(( $(date +%s) - s ))s"
        rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs"
    fi
    timed "docker import $DEBIAN_IMAGE" bash -c "tar -C '$rootfs' -c . | docker import - '$DEBIAN_IMAGE' >/dev/null"
}

# A python:3.11-slim stand-in made from Debian's packages: python3.11 with pip in a venv on PATH, so the
# Dockerfile's `pip install uv` and `uv venv` work as on the official image.
build_python_image() {
    image_exists "$PYTHON_IMAGE" && return
    local ctx="$state/ctx-python"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && python3.11 -m venv /usr/local/python \\
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3 && ln -s /usr/bin/python3.11 /usr/local/bin/python
ENV PATH=/usr/local/python/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
EOF
    timed "build $PYTHON_IMAGE" docker build -q -t "$PYTHON_IMAGE" "$ctx" >/dev/null
}

# kind's images/base redone from Debian bookworm packages (containerd, runc, CNI plugins) plus kind's own
# files (entrypoint, systemd units) from the kind module source.
build_kindbase_image() {
    image_exists "$KINDBASE_IMAGE" && return
    local ctx="$state/ctx-kindbase" kind_version src
    kind_version="$(basename "$(dirname "$(dirname "$KIND")")")"   # .../kind-v0.33.0/bin/kind
    kind_version="${kind_version#kind-}"
    src="$(go env GOMODCACHE)/sigs.k8s.io/kind@$kind_version/images/base"
    [[ -d "$src/files" ]] || (cd / && go mod download "sigs.k8s.io/kind@$kind_version")
    [[ -d "$src/files" ]] || { log "kind's base image files not found at $src"; exit 1; }
    rm -rf "$ctx" && mkdir -p "$ctx" && cp -r "$src/files" "$ctx/" && chmod -R u+w "$ctx"
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
RUN chmod 0755 /usr/local/bin/* /kind /kind/bin /kind/bin/* \\
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold \\
      systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod \\
      libseccomp2 pigz fuse-overlayfs bash ca-certificates curl jq procps \\
      containerd runc containernetworking-plugins \\
 && rm -rf /var/lib/apt/lists/* \\
 && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \\
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
 && ln -sf /usr/lib/systemd/systemd /sbin/init \\
 && ln -sf /usr/bin/containerd /usr/local/bin/containerd \\
 && mkdir -p /opt/cni/bin && cp /usr/lib/cni/* /opt/cni/bin/
RUN ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
    | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
# Without CAP_SYS_RESOURCE, oom_score_adj cannot be lowered: with kind's "false" every pod sandbox
# (oomScoreAdj -998) dies in runc ("can't get final child's PID from pipe"). Clamp instead of failing.
RUN sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests /etc/cni/net.d
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
EOF
    timed "build $KINDBASE_IMAGE" docker build -q -t "$KINDBASE_IMAGE" "$ctx" >/dev/null
}

# What `kind build node-image` does, minus pulling: the control-plane images built from our binaries,
# tagged with the names `kubeadm config images list` prints, imported into the node's containerd.
build_node_image() {
    image_exists "$AIRGAP_NODE_IMAGE" && return
    local ctx="$state/ctx-images" r=registry.k8s.io imgs=() line name
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy} "$ETCD" "$COREDNS" "$PAUSE" "$ctx/"
    printf 'FROM %s\nARG BIN\nCOPY ${BIN} /usr/local/bin/${BIN}\n' "$DEBIAN_IMAGE" >"$ctx/Dockerfile.bin"
    printf 'FROM %s\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack ipset kmod && rm -rf /var/lib/apt/lists/*\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' \
        "$DEBIAN_IMAGE" >"$ctx/Dockerfile.proxy"
    printf 'FROM %s\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' "$DEBIAN_IMAGE" >"$ctx/Dockerfile.coredns"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile.pause"
    local s
    s=$(date +%s)
    while read -r line; do
        name="${line#"$r"/}"
        case "$name" in
            kube-apiserver:* | kube-controller-manager:* | kube-scheduler:*)
                docker build -q -f "$ctx/Dockerfile.bin" --build-arg "BIN=${name%%:*}" -t "$line" "$ctx" >/dev/null ;;
            etcd:*) docker build -q -f "$ctx/Dockerfile.bin" --build-arg BIN=etcd -t "$line" "$ctx" >/dev/null ;;
            kube-proxy:*) docker build -q -f "$ctx/Dockerfile.proxy" -t "$line" "$ctx" >/dev/null ;;
            coredns/coredns:*) docker build -q -f "$ctx/Dockerfile.coredns" -t "$line" "$ctx" >/dev/null ;;
            pause:*) docker build -q -f "$ctx/Dockerfile.pause" -t "$line" "$ctx" >/dev/null ;;
            *) log "kubeadm lists an image this script does not build: $line"; exit 1 ;;
        esac
        imgs+=("$line")
    done < <("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
    log "control-plane images ${imgs[*]}: $(( $(date +%s) - s ))s"
    s=$(date +%s)
    docker rm -f docproc-kindnode-build >/dev/null 2>&1 || true
    docker run -d --privileged --name docproc-kindnode-build --entrypoint sleep "$KINDBASE_IMAGE" infinity >/dev/null
    local b
    for b in kubelet kubeadm kubectl; do docker cp "$K8S_BIN/$b" "docproc-kindnode-build:/usr/bin/$b"; done
    docker exec docproc-kindnode-build bash -c "echo $K8S_VERSION > /kind/version && mkdir -p /kind/manifests"
    # kind applies this as the default StorageClass. kind's own is local-path-provisioner, which has no Go
    # module here: the air-gapped cluster binds PVCs to a pool of node-local volumes instead (pv_pool).
    docker exec -i docproc-kindnode-build bash -c 'cat > /kind/manifests/default-storage.yaml' <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
    docker exec docproc-kindnode-build bash -c 'nohup containerd > /tmp/ctrd.log 2>&1 & echo $! > /tmp/ctrd.pid
        for i in $(seq 1 30); do ctr version >/dev/null 2>&1 && break; sleep 1; done'
    docker save "${imgs[@]}" | docker exec -i docproc-kindnode-build \
        ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests - >/dev/null
    docker exec docproc-kindnode-build bash -c 'kill $(cat /tmp/ctrd.pid); sleep 2; rm -f /tmp/ctrd.*'
    docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'CMD []' \
        docproc-kindnode-build "$AIRGAP_NODE_IMAGE" >/dev/null
    docker rm -f docproc-kindnode-build >/dev/null
    log "node image $AIRGAP_NODE_IMAGE: $(( $(date +%s) - s ))s"
}

# Images the chart and the e2e need that have no registry here: MinIO (from the Go-built binary of
# scripts/tools/minio.sh) and metrics-server (from scripts/tools/kind.sh).
build_extra_images() {
    local base="$1" ctx="$state/ctx-extra" minio_bin minio_version ms_version
    minio_bin="$(bash scripts/tools/minio.sh 2>/dev/null | tail -1)"   # its last line is the binary's path
    [[ -x "$minio_bin" ]] || { log "MinIO binary missing: scripts/tools/minio.sh failed"; exit 1; }
    minio_version="$(basename "$(dirname "$(dirname "$minio_bin")")")"; minio_version="${minio_version#minio-}"
    ms_version="$(basename "$(dirname "$(dirname "$METRICS_SERVER")")")"; ms_version="${ms_version#metrics-server-}"
    MINIO_IMAGE="docproc.local/minio:$minio_version"
    METRICS_SERVER_IMAGE="docproc.local/metrics-server:$ms_version"
    rm -rf "$ctx" && mkdir -p "$ctx"
    if ! image_exists "$MINIO_IMAGE"; then
        cp "$minio_bin" "$ctx/minio"
        printf 'FROM %s\nCOPY minio /usr/bin/minio\nUSER 1000:1000\nENTRYPOINT ["/usr/bin/minio"]\n' "$base" >"$ctx/Dockerfile.minio"
        timed "build $MINIO_IMAGE" docker build -q -f "$ctx/Dockerfile.minio" -t "$MINIO_IMAGE" "$ctx" >/dev/null
    fi
    if ! image_exists "$METRICS_SERVER_IMAGE"; then
        cp "$METRICS_SERVER" "$ctx/metrics-server"
        printf 'FROM scratch\nCOPY metrics-server /metrics-server\nUSER 65534:65534\nENTRYPOINT ["/metrics-server"]\n' >"$ctx/Dockerfile.ms"
        timed "build $METRICS_SERVER_IMAGE" docker build -q -f "$ctx/Dockerfile.ms" -t "$METRICS_SERVER_IMAGE" "$ctx" >/dev/null
    fi
}

airgap_images() {
    build_debian_image
    build_python_image
    build_kindbase_image
    build_node_image
    build_extra_images "$DEBIAN_IMAGE"
}

# ------------------------------------------------------------------------------------------- cluster
choose_source() {
    case "$SOURCE" in
        published | airgap) ;;
        auto)
            if image_exists "$PUBLISHED_NODE_IMAGE" || getent hosts registry-1.docker.io >/dev/null 2>&1; then
                SOURCE=published
            else
                SOURCE=airgap
            fi ;;
        *) log "KIND_NODE_SOURCE must be auto, published or airgap (got $SOURCE)"; exit 1 ;;
    esac
    log "node image source: $SOURCE"
}

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

# The air-gapped cluster's CNI: Debian's bridge plugin on every node with the node's podCIDR, and a
# route on every node to every other node's podCIDR (what kindnetd does, minus NetworkPolicy).
configure_bridge_cni() {
    local nodes node cidr other ocidr oip conf
    nodes=$("$KUBECTL" get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
    while read -r node cidr _; do
        [[ -n "$cidr" ]] || { log "node $node has no podCIDR"; exit 1; }
        conf='{"cniVersion":"0.4.0","name":"docproc-bridge","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"'"$cidr"'"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}'
        echo "$conf" | docker exec -i "$node" bash -c 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-docproc-bridge.conflist'
        while read -r other ocidr oip; do
            [[ "$other" == "$node" ]] && continue
            docker exec "$node" ip route replace "$ocidr" via "$oip"
        done <<<"$nodes"
    done <<<"$nodes"
}

# The air-gapped cluster's volumes: PV_POOL node-local PersistentVolumes per node (class "standard", 50Gi
# each, nominal), directories world-writable so non-root pods (MinIO, the Prefect server) can write.
# Released volumes (their claim deleted, e.g. by `helm uninstall`) are wiped and made Available again
# each time this runs, so repeated installs keep finding free volumes.
pv_pool() {
    local per_node="${PV_POOL:-6}" node i name dir phase nodes
    # Nodes pods can run on: the control-plane node keeps its NoSchedule taint when there are workers.
    nodes=$("$KUBECTL" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.taints[*].effect}{"\n"}{end}' | awk '$2 != "NoSchedule" {print $1}')
    for node in $nodes; do
        for i in $(seq 1 "$per_node"); do
            name="local-$node-$i"
            dir="/var/local-volumes/$i"
            docker exec "$node" bash -c "mkdir -p $dir && chmod 1777 $dir"
            "$KUBECTL" get pv "$name" >/dev/null 2>&1 && continue
            "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $name
  labels: {app.kubernetes.io/managed-by: docproc-kind}
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: standard
  local: {path: $dir}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$node]}]
EOF
        done
    done
    while read -r name phase node dir; do
        [[ "$phase" == Released ]] || continue
        docker exec "$node" bash -c "rm -rf $dir && mkdir -p $dir && chmod 1777 $dir"
        "$KUBECTL" patch pv "$name" --type json -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null
        log "volume $name recycled"
    done < <("$KUBECTL" get pv -l app.kubernetes.io/managed-by=docproc-kind -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]} {.spec.local.path}{"\n"}{end}')
}

airgap_config() {
    local cfg="$state/kind-config-airgap.yaml"
    # k8s/kind/cluster.yaml's nodes, with the air-gapped node image and our CNI.
    python3 - "$cfg" "$AIRGAP_NODE_IMAGE" "$POD_SUBNET" "$SERVICE_SUBNET" <<'EOF'
import re, sys
out, image, pods, services = sys.argv[1:]
text = open("k8s/kind/cluster.yaml").read()
text = re.sub(r"image: \S+", f"image: {image}", text)
text = text.replace("nodes:\n", f"networking:\n  disableDefaultCNI: true\n  podSubnet: {pods}\n  serviceSubnet: {services}\nnodes:\n", 1)
open(out, "w").write(text)
EOF
    echo "$cfg"
}

up() {
    tool_paths
    start_dockerd
    choose_source
    local cfg
    if [[ "$SOURCE" == airgap ]]; then
        airgap_images
        cfg="$(airgap_config)"
    else
        cfg=k8s/kind/cluster.yaml
    fi
    if ! cluster_exists; then
        if [[ "$SOURCE" == airgap ]]; then
            timed "kind create cluster" "$KIND" create cluster --name "$CLUSTER" --config "$cfg" --kubeconfig "$KUBECONFIG" --wait 0s
            configure_bridge_cni
        else
            timed "kind create cluster" "$KIND" create cluster --name "$CLUSTER" --config "$cfg" --kubeconfig "$KUBECONFIG" --wait 5m
        fi
    else
        "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1
    fi
    timed "nodes Ready" "$KUBECTL" wait --for=condition=Ready nodes --all --timeout=300s >/dev/null
    timed "kube-system Ready" "$KUBECTL" wait -n kube-system --for=condition=Ready pods --all --timeout=300s >/dev/null
    # values-kind.yaml names these on both paths: MinIO and metrics-server from their Go builds.
    if [[ "$SOURCE" == airgap ]]; then
        pv_pool
        load "$DEBIAN_IMAGE" "$MINIO_IMAGE" "$METRICS_SERVER_IMAGE"
    else
        build_extra_images debian:bookworm-slim
        load "$MINIO_IMAGE" "$METRICS_SERVER_IMAGE"
    fi
    "$KUBECTL" get nodes -o wide >&2
    log "cluster $CLUSTER up; KUBECONFIG=$KUBECONFIG kubectl=$KUBECTL"
}

# Into the worker nodes only, where there are any: the control-plane node keeps its NoSchedule taint,
# so no docproc pod runs there (the docproc image is ~7 GB; every node it skips saves minutes).
normalize_ref() {  # docproc:dev -> docker.io/library/docproc:dev, as containerd names it
    local ref="$1" first="${1%%/*}"
    if [[ "$ref" != */* ]]; then
        ref="docker.io/library/$ref"
    elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
        ref="docker.io/$ref"
    fi
    echo "$ref"
}

# What `kind load docker-image` does, streamed: `kind load` first writes a `docker save` tar to /tmp
# (7 GB for the docproc image) and then imports it, which needs the image's size in free disk once more.
# An image already in a node with the same ID is skipped, as kind does.
load() {
    [[ -n "${KIND:-}" ]] || tool_paths
    local s nodes node image id todo
    s=$(date +%s)
    nodes=$("$KIND" get nodes --name "$CLUSTER" 2>/dev/null | grep -v -- '-control-plane$' || true)
    [[ -n "$nodes" ]] || nodes=$("$KIND" get nodes --name "$CLUSTER")
    for node in $nodes; do
        todo=()
        for image in "$@"; do
            id=$(docker image inspect -f '{{.Id}}' "$image")
            # The node image has no crictl: a marker per image records the ID loaded last, trusted only
            # while containerd still lists the image.
            [[ "$(docker exec "$node" bash -c "ctr -n k8s.io images ls -q | grep -qxF '$(normalize_ref "$image")' \
                && cat '/var/lib/docproc-loaded/$(echo "$image" | tr '/:' '__')' 2>/dev/null")" == "$id" ]] \
                || todo+=("$image")
        done
        if [[ ${#todo[@]} -eq 0 ]]; then
            build_aliases "$node" "$@"
            continue
        fi
        # The node's previous build of these names goes first, with its build alias (containerd frees
        # what no container uses), so a reload never holds two ~7 GB docproc images at once.
        for image in "${todo[@]}"; do
            docker exec "$node" bash -c "for ref in \$(ctr -n k8s.io images ls -q | grep -xE '$(normalize_ref "$image")(-[0-9a-f]{12})?'); do
                ctr -n k8s.io images rm \$ref >/dev/null; done"
        done
        # A node holds an image twice (content blobs + unpacked snapshot): refuse rather than fill the disk.
        local need avail
        need=$(docker image inspect -f '{{.Size}}' "${todo[@]}" | awk '{s += $1} END {printf "%d", 2 * s / 1048576 + 2048}')
        avail=$(df -Pm "$dstate" | awk 'NR == 2 {print $4}')
        if (( avail < need )); then
            log "not loading ${todo[*]} into $node: needs ~${need} MiB of disk, ${avail} MiB free (docker image prune / builder prune?)"
            exit 1
        fi
        docker save "${todo[@]}" | docker exec -i "$node" \
            ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs - >/dev/null
        # `docker save` of several images leaves "import-<date>@sha256:..." names for their configs: drop them.
        docker exec "$node" bash -c 'for i in $(ctr -n k8s.io images ls -q | grep "^import-"); do ctr -n k8s.io images rm "$i" >/dev/null; done'
        for image in "${todo[@]}"; do
            docker image inspect -f '{{.Id}}' "$image" | docker exec -i "$node" bash -c \
                "mkdir -p /var/lib/docproc-loaded && cat > '/var/lib/docproc-loaded/$(echo "$image" | tr '/:' '__')'"
        done
        build_aliases "$node" "$@"
    done
    log "images $* present in $(echo "$nodes" | paste -sd, -) (loaded what was missing): $(( $(date +%s) - s ))s"
}

# A rebuilt image keeps its name (docproc:dev), so a release installed with that name would keep its
# running pods. Each loaded image therefore also gets a per-build alias in the node, `<name>-<12 hex of
# the image ID>` (`build-tag` prints its tag), which a release can name so that a rebuild rolls its pods.
build_tag() {
    local id
    id=$(docker image inspect -f '{{.Id}}' "$1")
    id=${id#sha256:}
    echo "${1##*:}-${id:0:12}"
}

build_aliases() {
    local node="$1" image ref alias
    shift
    for image in "$@"; do
        ref=$(normalize_ref "$image")
        alias="${ref%:*}:$(build_tag "$image")"
        docker exec "$node" bash -c "ctr -n k8s.io images tag --force '$ref' '$alias' >/dev/null
            for old in \$(ctr -n k8s.io images ls -q | grep -xE '$ref-[0-9a-f]{12}' | grep -vxF '$alias'); do
                ctr -n k8s.io images rm \$old >/dev/null; done"
    done
}

down() {
    [[ -n "${KIND:-}" ]] || tool_paths
    if docker_ok && cluster_exists; then
        timed "kind delete cluster" "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
    fi
    if docker_ok; then
        # Images replaced by rebuilds, and build cache nobody used for 3 days (an old uv.lock's dependency layer):
        # gone, so the cache stays bounded across runs; what a warm re-run needs stays.
        docker image prune -f >/dev/null 2>&1 || true
        docker builder prune -f --filter until=72h >/dev/null 2>&1 || true
    fi
    if [[ "$DOCKER_HOST" == "$own_docker_host" ]]; then
        stop_dockerd
        restore_host_network
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    load) shift; load "$@" ;;
    build-tag) start_dockerd; build_tag "$2" ;;   # docproc:dev -> dev-<12 hex>, the alias `load` gives it
    images) tool_paths; start_dockerd; airgap_images ;;
    base) start_dockerd; build_debian_image; build_python_image ;;   # what needs no Go build
    dockerd) start_dockerd ;;
    docker-host) start_dockerd; echo "$DOCKER_HOST" ;;   # the daemon the other scripts should use
    env)
        tool_paths
        echo "export DOCKER_HOST=$DOCKER_HOST KUBECONFIG=$KUBECONFIG PATH=$dstate/pathbin:\$PATH"
        echo "# kubectl: $KUBECTL  kind: $KIND" ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
