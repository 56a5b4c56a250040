"""docproc on a real Kubernetes cluster: `make kind-e2e` (issue 8).

`make kind-e2e` brings the kind cluster up (scripts/kind-cluster.sh), builds and loads the
image, then runs this module through scripts/kind-e2e.sh, which passes the cluster's paths:
DOCPROC_KUBECTL (the project's own kubectl, never the machine's), KUBECONFIG, and the helm
binaries come from scripts/tools/helm.sh. Without a cluster every test here fails; nothing skips.
It is marked `kind` and deselected from the plain suite (pyproject addopts); `make test` runs
it after the suite through `make kind-test`.

What runs, in order (the tests share one release, so they depend on file order):
install metrics-server and the chart (Helm 4, values-kind.yaml, after a server-side dry run of
every values file with Helm 3), wait for every pod and both hook Jobs; then the Prefect UI and
API through a port-forward; uid 10001 and read-only root filesystems (exec); ServiceAccount
permissions (`kubectl auth can-i --as`); NetworkPolicies (a pod without the allowed labels
cannot reach MinIO or the Dask scheduler); one critical and one bulk run through the
Kubernetes worker onto the chart's Dask workers, results encrypted in MinIO; the MinIO bucket
notification starting a run; a Dask worker pod killed mid-run; the Dask worker HPA scaling up.

Every wait is bounded in count and time; a failure message carries the pods, recent events and
the logs of the pods concerned.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from minio import Minio
from PIL import Image, ImageDraw
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags, WorkQueueFilter
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from docproc.queues import QUEUES, WORK_POOL_NAME
from docproc.settings import Settings
from docproc.storage import open_storage
from tests.e2e_checks import check_results, collect, unencrypted_objects, upload
from tests.fixtures.helm import CHART, K8sTools

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
NAMESPACE = "docproc"
RELEASE = "docproc"
SECRET = "docproc-credentials"
BUCKET = "docproc"
VALUES_KIND = yaml.safe_load((CHART / "values-kind.yaml").read_text())
# scripts/kind-e2e.sh names the image by its per-build alias (dev-<12 hex of the image ID>), so that a
# release left on the cluster by an earlier run rolls its pods onto a rebuilt image.
IMAGE_TAG = os.environ.get("DOCPROC_E2E_IMAGE_TAG") or VALUES_KIND["image"]["tag"]
IMAGE = f"{VALUES_KIND['image']['repository']}:{IMAGE_TAG}"
# Documents of samples/ that must have a result, and the one that must be quarantined.
EXPECTED = sorted(p.name for p in SAMPLES.iterdir() if p.name not in ("README.md", "invalid.pdf"))
QUARANTINED = ["invalid.pdf"]
RUN_TIMEOUT = 900.0
# The HPA test's load: bulk runs of this many scans, two in flight, at most this many runs.
HPA_RUN_PAGES = 24
HPA_MAX_RUNS = 12
T = TypeVar("T")


# -- the cluster ---------------------------------------------------------------------------


@dataclass
class Kube:
    """The project's kubectl against the kind cluster, with failure diagnostics."""

    kubectl: Path
    kubeconfig: str
    namespace: str = NAMESPACE

    def run(
        self,
        *args: str,
        namespaced: bool = True,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.kubectl), "--kubeconfig", self.kubeconfig]
        if namespaced:
            cmd += ["-n", self.namespace]
        cmd += list(args)
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        return proc

    def get(self, *args: str, namespaced: bool = True) -> Any:
        return json.loads(self.run("get", *args, "-o", "json", namespaced=namespaced).stdout)

    def apply(self, manifest: str | dict[str, Any], namespaced: bool = True) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.run("apply", "-f", "-", stdin=text, namespaced=namespaced)

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = self.get(*args)["items"]
        return items

    def logs(self, pod: str, container: str | None = None, tail: int = 60) -> str:
        args = ["logs", pod, f"--tail={tail}"] + (["-c", container] if container else ["--all-containers"])
        proc = self.run(*args, check=False, timeout=60)
        return proc.stdout + proc.stderr

    def diagnostics(self, selector: str = "") -> str:
        """Pods, recent events, and the log tails of the pods that are not fine."""
        out = [self.run("get", "pods,jobs,hpa", "-o", "wide", check=False).stdout]
        events = self.run("get", "events", "--sort-by=.lastTimestamp", check=False).stdout
        out.append("events (last 40):\n" + "\n".join(events.splitlines()[-40:]))
        try:
            pods = self.pods(selector)
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            return "\n".join([*out, f"(pods unavailable: {exc})"])
        for pod in pods:
            name = pod["metadata"]["name"]
            if selector or not _pod_fine(pod):
                out.append(f"--- logs of {name}:\n{self.logs(name)}")
        return "\n".join(out)


def _pod_fine(pod: dict[str, Any]) -> bool:
    phase = pod.get("status", {}).get("phase")
    if phase == "Succeeded":
        return True
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return phase == "Running" and conditions.get("Ready") == "True"


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 3.0,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a value that is not None/False; bounded in time and count."""
    deadline = time.monotonic() + timeout
    attempts = max(1, int(timeout / interval) + 1)
    last_error = ""
    for _ in range(attempts):
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (AssertionError, OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
            last_error = f"{type(exc).__name__}: {str(exc)[-500:]}"
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    details = diagnostics() if diagnostics else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}. {last_error}\n{details}")


@dataclass
class Timings:
    phases: list[tuple[str, float]] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def add(self, name: str, since: float) -> None:
        self.phases.append((name, time.monotonic() - since))


@pytest.fixture(scope="module")
def timings(request: pytest.FixtureRequest) -> Iterator[Timings]:
    t = Timings()
    yield t
    lines = [f"  {name:<58} {seconds:7.1f} s" for name, seconds in t.phases]
    lines.append(f"  {'total':<58} {time.monotonic() - t.start:7.1f} s")
    text = "kind e2e timings:\n" + "\n".join(lines)
    # Printed past pytest's capture, so a passing run shows its figures too.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n" + text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


@pytest.fixture(scope="module")
def kube() -> Kube:
    kubectl = os.environ.get("DOCPROC_KUBECTL", "")
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubectl or not Path(kubectl).is_file() or not kubeconfig or not Path(kubeconfig).is_file():
        pytest.fail(
            "the kind end-to-end test needs the cluster: run it with `make kind-e2e` (sets DOCPROC_KUBECTL "
            f"to the project's kubectl and KUBECONFIG); got DOCPROC_KUBECTL={kubectl!r} KUBECONFIG={kubeconfig!r}"
        )
    k = Kube(Path(kubectl), kubeconfig)
    nodes = k.get("nodes", namespaced=False)["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert nodes, "the cluster has no nodes"
    assert len(ready) == len(nodes), f"nodes not Ready: {k.run('get', 'nodes', namespaced=False).stdout}"
    return k


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


@pytest.fixture(scope="module")
def credentials(kube: Kube) -> Credentials:
    """The release's existing secret, generated once per cluster and kept across runs."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, namespaced=False)
    existing = kube.run("get", "secret", SECRET, "-o", "json", check=False)
    if existing.returncode != 0:
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET},
                "type": "Opaque",
                "stringData": {
                    "minio-root-user": f"docproc-{secrets.token_hex(4)}",
                    "minio-root-password": secrets.token_hex(24),
                    "minio-kms-secret-key": f"docproc-key:{base64.b64encode(secrets.token_bytes(32)).decode()}",
                    "events-token": secrets.token_hex(32),
                },
            }
        )
        existing = kube.run("get", "secret", SECRET, "-o", "json")
    data = json.loads(existing.stdout)["data"]
    return Credentials(
        access_key=base64.b64decode(data["minio-root-user"]).decode(),
        secret_key=base64.b64decode(data["minio-root-password"]).decode(),
    )


@pytest.fixture(scope="module")
def metrics_server(kube: Kube, timings: Timings) -> None:
    """metrics-server built from Go modules (image loaded by `make kind-up`), for the HPA."""
    start = time.monotonic()
    kube.apply((ROOT / "k8s" / "kind" / "metrics-server.yaml").read_text(), namespaced=False)

    def available() -> bool:
        service = kube.get("apiservice", "v1beta1.metrics.k8s.io", namespaced=False)
        conditions = {c["type"]: c["status"] for c in service.get("status", {}).get("conditions", [])}
        return conditions.get("Available") == "True"

    def diag() -> str:
        ks = Kube(kube.kubectl, kube.kubeconfig, "kube-system")
        return ks.diagnostics("k8s-app=metrics-server")

    wait_for("metrics-server's APIService to be Available", available, timeout=240, diagnostics=diag)
    timings.add("metrics-server available", start)


@dataclass
class HpaMonitor:
    """Polls the Dask worker HPA in the background for the whole module (bounded by stop()): the
    HPA test reports the CPU peak it saw and, when the HPA never scales, the samples."""

    kube: Kube
    name: str = f"{RELEASE}-dask-worker"
    samples: list[tuple[float, int, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(10):
            proc = self.kube.run("get", "hpa", self.name, "-o", "json", check=False, timeout=30)
            if proc.returncode != 0:
                continue
            status = json.loads(proc.stdout).get("status", {})
            cpu = ""
            for metric in status.get("currentMetrics") or []:
                cpu = str(metric.get("resource", {}).get("current", {}).get("averageUtilization", ""))
            self.samples.append(
                (
                    time.monotonic() - t0,
                    status.get("currentReplicas", 0),
                    status.get("desiredReplicas", 0),
                    cpu,
                )
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


@pytest.fixture(scope="module")
def release(
    kube: Kube, k8s_tools: K8sTools, credentials: Credentials, metrics_server: None, timings: Timings
) -> Iterator[HpaMonitor]:
    """The chart installed with Helm 4 and values-kind.yaml, every pod Ready, both hooks done."""
    helm_env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
    start = time.monotonic()
    # Helm 3 and Helm 4 both accept the chart on the live API server (server-side dry run of every
    # values file: schema, templates, and the API server's own validation).

    def upgrade(helm: Path, *args: str) -> list[str]:
        return [str(helm), "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE, *args]

    for helm_name, helm in k8s_tools.helms().items():
        for values in (None, "values-kind.yaml", "values-production.yaml"):
            args = upgrade(helm, "--dry-run=server", *(["-f", str(CHART / values)] if values else []))
            proc = subprocess.run(args, env=helm_env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{helm_name} dry run {values}: {proc.stderr[-3000:]}"
    timings.add("helm 3 + helm 4 server-side dry runs (3 values files each)", start)

    start = time.monotonic()
    args = upgrade(
        k8s_tools.helm4,
        *("-f", str(CHART / "values-kind.yaml"), "--set-string", f"image.tag={IMAGE_TAG}"),
        *("--wait", "--timeout", "15m"),
    )
    proc = subprocess.run(args, env=helm_env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(f"helm 4 install failed: {proc.stderr[-3000:]}\n{kube.diagnostics()}")
    timings.add("helm 4 upgrade --install --wait (values-kind.yaml)", start)

    start = time.monotonic()
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def all_ready() -> bool:
        pods = [
            p
            for p in kube.pods(selector)
            if p["metadata"].get("ownerReferences", [{}])[0].get("kind") != "Job"
        ]
        return bool(pods) and all(_pod_fine(p) for p in pods)

    wait_for("every docproc pod to be Ready", all_ready, timeout=600, diagnostics=kube.diagnostics)
    timings.add("every pod Ready after install", start)
    monitor = HpaMonitor(kube)
    monitor.start()
    try:
        yield monitor
    finally:
        monitor.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Endpoints:
    prefect: str
    s3: str


class PortForwards:
    """`kubectl port-forward` to services on fixed local ports, restarted when one dies.

    kubectl ends a port-forward for good on the first broken stream ("lost connection to pod",
    seen on kind when the server reset one connection): a watchdog thread starts it again on the
    same port, so the test's clients never notice. Processes are stopped by their PIDs.
    """

    def __init__(self, kube: Kube, logs: Path, targets: dict[str, int]) -> None:
        self.kube = kube
        self.logs = logs
        self.ports = {service: _free_port() for service in targets}
        self.targets = targets
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        for service in targets:
            self._start(service)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _start(self, service: str) -> None:
        log = (self.logs / f"{service}.log").open("ab")
        cmd = [str(self.kube.kubectl), "--kubeconfig", self.kube.kubeconfig, "-n", NAMESPACE, "port-forward"]
        cmd += [f"svc/{service}", f"{self.ports[service]}:{self.targets[service]}", "--address", "127.0.0.1"]
        self.procs[service] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def _watch(self) -> None:
        while not self._stop.wait(1):
            with self._lock:
                for service, proc in self.procs.items():
                    if proc.poll() is not None:
                        self.restarts += 1
                        self._start(service)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.logs.iterdir())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for proc in self.procs.values():
                proc.terminate()
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def endpoints(
    kube: Kube, release: HpaMonitor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoints]:
    """Port-forwards to the Prefect server (API and UI) and MinIO, kept alive by a watchdog."""
    server, minio = f"{RELEASE}-server", f"{RELEASE}-minio"
    forwards = PortForwards(kube, tmp_path_factory.mktemp("port-forward"), {server: 4200, minio: 9000})
    ep = Endpoints(
        prefect=f"http://127.0.0.1:{forwards.ports[server]}", s3=f"127.0.0.1:{forwards.ports[minio]}"
    )

    def answering() -> bool:
        api = httpx.get(f"{ep.prefect}/api/health", timeout=5)
        s3 = httpx.get(f"http://{ep.s3}/minio/health/ready", timeout=5)
        return api.status_code == 200 and s3.status_code == 200

    try:
        wait_for(
            "the port-forwards to answer", answering, timeout=60, interval=1, diagnostics=forwards.log_text
        )
        yield ep
    finally:
        forwards.stop()


@pytest.fixture(scope="module")
def client_env(endpoints: Endpoints, credentials: Credentials) -> dict[str, str]:
    """Environment of the local docproc CLI and checks: the cluster's Prefect API and MinIO."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPROC_", "PREFECT_"))}
    env.update(
        {
            "PREFECT_API_URL": f"{endpoints.prefect}/api",
            "DOCPROC_S3_ENDPOINT": endpoints.s3,
            "DOCPROC_S3_SECURE": "false",
            "DOCPROC_S3_SSE": "s3",
            "DOCPROC_S3_ACCESS_KEY": credentials.access_key,
            "DOCPROC_S3_SECRET_KEY": credentials.secret_key,
        }
    )
    return env


@pytest.fixture(scope="module")
def settings(client_env: dict[str, str]) -> Settings:
    return Settings(
        s3_endpoint=client_env["DOCPROC_S3_ENDPOINT"],
        s3_secure=False,
        s3_sse="s3",
        s3_access_key=client_env["DOCPROC_S3_ACCESS_KEY"],
        s3_secret_key=client_env["DOCPROC_S3_SECRET_KEY"],
    )


@pytest.fixture(scope="module")
def minio_client(endpoints: Endpoints, credentials: Credentials) -> Minio:
    return Minio(
        endpoints.s3, access_key=credentials.access_key, secret_key=credentials.secret_key, secure=False
    )


@pytest.fixture(scope="module")
def prefect(
    client_env: dict[str, str], monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[SyncPrefectClient]:
    monkeypatch_module.setenv("PREFECT_API_URL", client_env["PREFECT_API_URL"])
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: client_env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


RUN_PREFIX = f"e2e-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def docproc_cli(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    exe = Path(sys.executable).parent / "docproc"
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"docproc {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def submit(env: dict[str, str], source: str, priority: str, out: str) -> uuid.UUID:
    text = docproc_cli(env, "submit", source, "--priority", priority, "--out", out)
    match = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)
    assert match, f"no flow run id in `docproc submit` output: {text}"
    return uuid.UUID(match.group(0))


def wait_run(
    prefect: SyncPrefectClient, kube: Kube, run_id: uuid.UUID, timeout: float = RUN_TIMEOUT
) -> FlowRun:
    def final() -> FlowRun | None:
        run = prefect.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    def diag() -> str:
        run = prefect.read_flow_run(run_id)
        jobs = kube.get("jobs", "-l", f"prefect.io/flow-run-id={run_id}")["items"]
        selector = ",".join(f"batch.kubernetes.io/job-name={j['metadata']['name']}" for j in jobs[:1])
        return f"run state {run.state}\n" + kube.diagnostics(selector or "app.kubernetes.io/component=worker")

    run = wait_for(f"flow run {run_id} to finish", final, timeout=timeout, interval=5, diagnostics=diag)
    if run.state is None or not run.state.is_completed():
        pytest.fail(f"flow run {run_id} ended {run.state}: {run.state and run.state.message}\n{diag()}")
    return run


def flow_run_job(kube: Kube, run_id: uuid.UUID) -> dict[str, Any]:
    def job() -> dict[str, Any] | None:
        items = kube.get("jobs", "-l", f"prefect.io/flow-run-id={run_id}")["items"]
        return items[0] if items else None

    return wait_for(f"the flow-run Job of {run_id}", job, timeout=300, diagnostics=kube.diagnostics)


def dask_scheduler_prefixes(kube: Kube) -> dict[str, dict[str, int]]:
    """Task prefixes the chart's Dask scheduler has seen, with their state counts (exec into it)."""
    code = (
        "import json; from distributed import Client\n"
        "with Client('tcp://127.0.0.1:8786', timeout=30) as c:\n"
        "    print(json.dumps(c.run_on_scheduler(lambda dask_scheduler: {k: dict(v.state_counts)"
        " for k, v in dask_scheduler.task_prefixes.items()})))\n"
    )
    proc = kube.run("exec", f"deploy/{RELEASE}-dask-scheduler", "--", "python", "-c", code, timeout=120)
    prefixes: dict[str, dict[str, int]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return prefixes


def _batch_tasks_done(prefixes: dict[str, dict[str, int]]) -> int:
    return sum(
        sum(n for state, n in counts.items() if state in ("memory", "released", "forgotten"))
        for name, counts in prefixes.items()
        if "batch" in name
    )


# -- the release ---------------------------------------------------------------------------


def test_release_is_ready_and_hooks_succeeded(
    kube: Kube, release: HpaMonitor, prefect: SyncPrefectClient, minio_client: Minio
) -> None:
    # Helm waits for hook Jobs and deletes them on success; their Completed events remain.
    events = kube.get("events", "--field-selector", "involvedObject.kind=Job")["items"]
    completed = {e["involvedObject"]["name"] for e in events if e.get("reason") == "Completed"}
    assert {f"{RELEASE}-pool-apply", f"{RELEASE}-minio-setup"} <= completed, kube.diagnostics()
    # What the pool-apply hook made: the pool, its queues, one deployment per queue.
    pool = prefect.read_work_pool(WORK_POOL_NAME)
    assert pool.type == "kubernetes"
    # Prefect 3.8's client sends null for an omitted filter, limit and offset, which the server refuses.
    pool_queues = prefect.read_work_queues(
        work_pool_name=WORK_POOL_NAME, work_queue_filter=WorkQueueFilter(), limit=200, offset=0
    )
    queues = {q.name: q for q in pool_queues}
    for spec in QUEUES.values():
        assert queues[spec.name].priority == spec.priority
        assert queues[spec.name].concurrency_limit == spec.concurrency_limit
    # What the minio-setup hook made: the bucket, default encryption, the inbox notification.
    assert minio_client.bucket_exists(BUCKET)
    rule = minio_client.get_bucket_encryption(BUCKET).rule
    assert rule is not None
    assert rule.sse_algorithm == "AES256"
    queue_configs = minio_client.get_bucket_notification(BUCKET).queue_config_list
    assert [q.queue for q in queue_configs] == ["arn:minio:sqs::DOCPROC:webhook"]


def test_dask_servers_run_without_the_profiler_and_with_slower_housekeeping(
    kube: Kube, release: HpaMonitor
) -> None:
    """The chart's dask.config reaches the live scheduler and workers (as the local cluster's,
    flows/process.py DASK_SERVER_CONFIG): no profiler thread sampling the workers, event loops
    ticking every 200 ms, memory polled every 500 ms and system figures every 2 s, and a
    scheduler that hands each worker thread one queued unit at a time."""
    code = (
        "import json; from distributed import Client\n"
        "def timers(server): return {n: float(c.callback_time) for n, c in server.periodic_callbacks.items()}\n"
        "def scheduler(s): return {**timers(s), 'saturation': s.WORKER_SATURATION}\n"
        "with Client('tcp://127.0.0.1:8786', timeout=30) as c:\n"
        "    print(json.dumps({'scheduler': c.run_on_scheduler(lambda dask_scheduler: scheduler(dask_scheduler)),"
        " 'workers': list(c.run(lambda dask_worker: timers(dask_worker)).values())}))\n"
    )
    proc = kube.run("exec", f"deploy/{RELEASE}-dask-scheduler", "--", "python", "-c", code, timeout=120)
    timers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert timers["workers"], timers
    for worker in timers["workers"]:
        assert "profile" not in worker, worker
        assert (worker["tick"], worker["memory_monitor"], worker["monitor"]) == (200, 500, 2000), worker
    scheduler = timers["scheduler"]
    assert (scheduler["tick"], scheduler["monitor"], scheduler["saturation"]) == (200, 2000, 1), scheduler


def test_prefect_ui_and_api_answer_through_a_port_forward(endpoints: Endpoints) -> None:
    health = httpx.get(f"{endpoints.prefect}/api/health", timeout=10)
    assert health.status_code == 200
    assert health.json() is True
    version = httpx.get(f"{endpoints.prefect}/api/admin/version", timeout=10)
    assert version.status_code == 200, version.text
    assert version.json().startswith("3."), version.text
    ui = httpx.get(f"{endpoints.prefect}/", timeout=10, follow_redirects=True)
    assert ui.status_code == 200
    assert "text/html" in ui.headers["content-type"]
    assert '<div id="app"' in ui.text or "prefect" in ui.text.lower(), ui.text[:500]


# -- security ------------------------------------------------------------------------------


def test_every_pod_runs_as_10001_with_a_read_only_root(kube: Kube, release: HpaMonitor) -> None:
    pods = [
        p for p in kube.pods(f"app.kubernetes.io/instance={RELEASE}") if p["status"]["phase"] == "Running"
    ]
    assert pods
    probed = []
    for pod in pods:
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        assert spec["securityContext"]["runAsUser"] == 10001, name
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}"
            assert sc.get("runAsUser", 10001) == 10001, f"{name}/{c['name']}"
            if c["image"] != IMAGE:
                continue  # MinIO's image has no Python; its uid is the pod's (checked above)
            code = (
                "import os, errno\n"
                "try:\n"
                "    open('/docproc-rootfs-probe', 'w')\n"
                "    w = 'written'\n"
                "except OSError as e:\n"
                "    w = errno.errorcode[e.errno]\n"
                "print(os.getuid(), os.getgid(), w)\n"
            )
            out = kube.run(
                "exec", name, "-c", c["name"], "--", "python", "-c", code, timeout=60
            ).stdout.split()
            assert out == ["10001", "10001", "EROFS"], f"{name}/{c['name']}: {out}"
            probed.append(name)
    assert len(probed) >= 4, probed  # server, worker, events, Dask scheduler and workers


def _can(kube: Kube, sa: str, verb: str, resource: str) -> bool:
    proc = kube.run(
        "auth", "can-i", verb, resource, f"--as=system:serviceaccount:{NAMESPACE}:{sa}", check=False
    )
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource} as {sa}: {proc.stdout}{proc.stderr}"
    return answer == "yes"


def test_service_accounts_least_privilege(kube: Kube, release: HpaMonitor) -> None:
    accounts = {a["metadata"]["name"] for a in kube.get("serviceaccounts")["items"]} - {"default"}
    worker = f"{RELEASE}-worker"
    assert worker in accounts
    assert _can(kube, worker, "create", "jobs.batch")
    assert _can(kube, worker, "watch", "pods")
    assert _can(kube, worker, "get", "pods/log")
    denied = [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
        ("create", "pods/exec"),
        ("create", "deployments.apps"),
        ("update", "roles.rbac.authorization.k8s.io"),
    ]
    for verb, resource in denied:
        assert not _can(kube, worker, verb, resource), f"{worker} may {verb} {resource}"
    everything = [
        *denied,
        ("create", "jobs.batch"),
        ("list", "pods"),
        ("get", "configmaps"),
        ("list", "services"),
    ]
    for sa in sorted(accounts - {worker}):
        allowed = [f"{v} {r}" for v, r in everything if _can(kube, sa, v, r)]
        assert allowed == [], f"{sa} may {allowed}"


def _probe_pod(name: str, labels: dict[str, str], targets: list[str]) -> dict[str, Any]:
    code = (
        "import json, socket, sys\n"
        "out = {}\n"
        "for t in sys.argv[1:]:\n"
        "    host, port = t.rsplit(':', 1)\n"
        "    try:\n"
        "        socket.create_connection((host, int(port)), timeout=5).close()\n"
        "        out[t] = 'open'\n"
        "    except OSError as e:\n"
        "        out[t] = type(e).__name__\n"
        "print(json.dumps(out))\n"
    )
    locked = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "probe",
                    "image": IMAGE,
                    "imagePullPolicy": VALUES_KIND["image"]["pullPolicy"],
                    "args": ["python", "-c", code, *targets],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "256Mi"},
                    },
                    "securityContext": locked,
                }
            ],
        },
    }


def test_network_policies_isolate_minio_and_the_dask_scheduler(kube: Kube, release: HpaMonitor) -> None:
    targets = [f"{RELEASE}-minio:9000", f"{RELEASE}-dask-scheduler:8786"]
    allowed_labels = {
        "app.kubernetes.io/name": "docproc",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "flow-run",
    }
    suffix = secrets.token_hex(3)
    pods = {
        "stranger": (f"netpol-stranger-{suffix}", {"docproc-e2e": "netpol"}),
        "flow-run": (f"netpol-flowrun-{suffix}", {**allowed_labels, "docproc-e2e": "netpol"}),
    }
    for name, labels in pods.values():
        kube.apply(_probe_pod(name, labels, targets))
    results: dict[str, dict[str, str]] = {}
    try:
        for who, (name, _) in pods.items():

            def done(pod_name: str = name) -> str | None:
                phase: str = kube.get("pod", pod_name)["status"].get("phase", "")
                return phase if phase in ("Succeeded", "Failed") else None

            wait_for(
                f"probe pod {name}",
                done,
                timeout=180,
                diagnostics=lambda: kube.diagnostics("docproc-e2e=netpol"),
            )
            results[who] = json.loads(kube.logs(name).strip().splitlines()[-1])
    finally:
        kube.run("delete", "pod", "-l", "docproc-e2e=netpol", "--wait=false", check=False)
    # The labelled pod proves the probe reaches both services, on any CNI.
    assert results["flow-run"] == dict.fromkeys(targets, "open"), results
    policies = {p["metadata"]["name"]: p["spec"] for p in kube.get("networkpolicy")["items"]}
    for target in ("minio", "dask-scheduler"):
        spec = policies.get(f"{RELEASE}-{target}")
        assert spec is not None, f"no NetworkPolicy {RELEASE}-{target} on the cluster: {sorted(policies)}"
        assert spec.get("ingress"), f"{RELEASE}-{target} allows no ingress at all: {spec}"
    kube_system = Kube(kube.kubectl, kube.kubeconfig, "kube-system").run("get", "pods", "-o", "name").stdout
    enforcers = [line for line in kube_system.split() if _ENFORCER.search(line)]
    if enforcers:
        assert all(v != "open" for v in results["stranger"].values()), (
            f"a pod without the allowed labels reached {results['stranger']} although {enforcers} "
            "should enforce NetworkPolicies"
        )
    else:
        # The air-gapped cluster's bridge CNI accepts NetworkPolicies but nothing enforces them (this
        # kernel lacks nft_queue, which kindnetd and kube-network-policies need; README, Kubernetes).
        # Isolation is then not claimed: the stranger gets through, and that is what is asserted, so
        # the test notices when an enforcer appears without this branch being updated.
        assert results["stranger"] == dict.fromkeys(targets, "open"), results
        warnings.warn(
            "NetworkPolicies are on the cluster but not enforced: kube-system runs no enforcer "
            f"(kindnet, kube-network-policies, calico, cilium): {kube_system.split()}",
            stacklevel=1,
        )


_ENFORCER = re.compile(r"kindnet|kube-network-policies|calico|cilium|antrea|kube-router")


# -- processing ----------------------------------------------------------------------------


def test_dask_worker_hpa_scales_up_under_sustained_load(
    kube: Kube,
    release: HpaMonitor,
    client_env: dict[str, str],
    settings: Settings,
    prefect: SyncPrefectClient,
    tmp_path: Path,
    timings: Timings,
) -> None:
    """Bulk runs kept going until the HPA asks for a second Dask worker, which then runs.

    The module's other runs are short: how much of their CPU the 15 s metrics window catches depends
    on the machine (a CI run saw 81-86% of the request against the 80% target, inside the HPA's 10%
    tolerance, and never scaled). So this test comes first, on the fresh release's one worker, and
    makes its own load: two runs in flight at all times (the worker never waits for a flow-run pod to
    start) until the HPA asks, however fast the machine reads a page. The HPA asked 43-67 s after
    the load started in five runs (metrics-server's 15 s resolution, the HPA's 15 s sync, a new
    pod's CPU counted only after its readiness window), not after a number of pages. Once it asks,
    its 300 s scale-down window keeps the second worker, so waiting for that one to be Ready holds
    after the runs end.
    """
    start = time.monotonic()
    name = f"{RELEASE}-dask-worker"
    runs: list[tuple[uuid.UUID, str, list[str]]] = []
    finished: set[uuid.UUID] = set()

    def submit_run() -> None:
        name = f"hpa-{len(runs)}"
        runs.append(submit_scans(client_env, settings, tmp_path / name, HPA_RUN_PAGES, name, "bulk"))

    def in_flight() -> int:
        for run_id, _, _ in runs:
            if run_id not in finished:
                state = prefect.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    finished.add(run_id)
        return len(runs) - len(finished)

    def desired() -> int:
        return int(kube.get("hpa", name).get("status", {}).get("desiredReplicas", 0))

    def diag() -> str:
        return (
            f"HPA samples (s, current, desired, cpu%): {release.samples[-30:]}\n"
            + json.dumps(kube.get("hpa", name).get("status"), indent=1)
            + "\n"
            + kube.diagnostics("app.kubernetes.io/component=dask-worker")
        )

    asked: float | None = None
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if desired() >= 2:
            asked = time.monotonic() - start
            break
        busy = in_flight()
        if busy < 2 and len(runs) < HPA_MAX_RUNS:
            submit_run()
            continue
        if busy == 0:
            break
        time.sleep(5)
    assert asked is not None, (
        f"the Dask worker HPA never asked for a second worker over {len(runs)} runs of "
        f"{HPA_RUN_PAGES} scans ({time.monotonic() - start:.0f} s)\n{diag()}"
    )

    def second_worker() -> int | None:
        ready = [
            pod
            for pod in kube.pods("app.kubernetes.io/component=dask-worker")
            if _pod_fine(pod) and pod["metadata"].get("deletionTimestamp") is None
        ]
        return len(ready) if len(ready) >= 2 else None

    wait_for("a second Dask worker to be Ready", second_worker, timeout=300, interval=5, diagnostics=diag)
    ready_at = time.monotonic() - start
    for run_id, out, names in runs:
        wait_run(prefect, kube, run_id)
        check_results(open_storage(out, settings), names)
    peak = max((int(s[3]) for s in release.samples if s[3].isdigit()), default=0)
    timings.add(
        f"HPA load: {len(runs)} runs x {HPA_RUN_PAGES} scans (2 asked at {asked:.0f}s, "
        f"Ready at {ready_at:.0f}s, CPU peak {peak}%)",
        start,
    )


def test_critical_and_bulk_runs_on_the_kubernetes_worker_and_dask(
    kube: Kube,
    release: HpaMonitor,
    client_env: dict[str, str],
    settings: Settings,
    prefect: SyncPrefectClient,
    minio_client: Minio,
    timings: Timings,
) -> None:
    start = time.monotonic()
    before = _batch_tasks_done(dask_scheduler_prefixes(kube))
    runs = {}
    for queue in ("critical", "bulk"):
        source = f"s3://{BUCKET}/{RUN_PREFIX}/{queue}"
        upload(SAMPLES, open_storage(source, settings))
        runs[queue] = submit(client_env, source, queue, f"s3://{BUCKET}/{RUN_PREFIX}/out-{queue}")
    queues = VALUES_KIND["queues"]
    for queue, run_id in runs.items():
        job = flow_run_job(kube, run_id)
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["priorityClassName"] == queues[queue]["priorityClass"]["name"], queue
        assert container["resources"] == {
            "requests": {k: str(v) for k, v in queues[queue]["resources"]["requests"].items()},
            "limits": {k: str(v) for k, v in queues[queue]["resources"]["limits"].items()},
        }, queue
        assert container["image"] == IMAGE
    for queue, run_id in runs.items():
        run = wait_run(prefect, kube, run_id)
        assert run.work_queue_name == queue
    timings.add("critical + bulk runs (submit to completed)", start)

    # The batches ran on the chart's Dask workers: the shared scheduler counted them, and the
    # flow-run pods connected to it.
    after = _batch_tasks_done(dask_scheduler_prefixes(kube))
    assert after > before, f"the Dask scheduler saw no new batch tasks ({before} -> {after})"
    for queue, run_id in runs.items():
        job_name = flow_run_job(kube, run_id)["metadata"]["name"]
        pods = kube.pods(f"batch.kubernetes.io/job-name={job_name}")
        assert pods, f"no pod for the {queue} run"
        log = kube.logs(pods[0]["metadata"]["name"], tail=400)
        assert f"tcp://{RELEASE}-dask-scheduler:8786" in log, f"{queue} run log:\n{log[-3000:]}"

    for queue in runs:
        out = f"s3://{BUCKET}/{RUN_PREFIX}/out-{queue}"
        check_results(open_storage(out, settings), EXPECTED, quarantined=QUARANTINED)
        assert unencrypted_objects(minio_client, BUCKET, f"{RUN_PREFIX}/out-{queue}/") == []
    assert unencrypted_objects(minio_client, BUCKET, f"{RUN_PREFIX}/critical/") == []


def test_an_inbox_upload_starts_a_run_through_the_bucket_notification(
    kube: Kube, prefect: SyncPrefectClient, settings: Settings, minio_client: Minio, timings: Timings
) -> None:
    start = time.monotonic()
    name = f"{RUN_PREFIX}-letter.txt"
    key = f"inbox/critical/{name}"
    text = (SAMPLES / "letter-globex.txt").read_text() + f"\nReference {RUN_PREFIX}\n"
    data = text.encode()
    minio_client.put_object(BUCKET, key, io.BytesIO(data), len(data), content_type="text/plain")

    def event_run() -> FlowRun | None:
        runs = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["minio-event"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
            offset=0,
        )
        return next((r for r in runs if f"critical/{name}" in (r.parameters.get("keys") or [])), None)

    def diag() -> str:
        return kube.diagnostics("app.kubernetes.io/component=events") + kube.diagnostics(
            "app.kubernetes.io/component=minio"
        )

    run = wait_for(f"a flow run for {key}", event_run, timeout=120, diagnostics=diag)
    assert run.work_queue_name == "critical"
    wait_run(prefect, kube, run.id)
    results, quarantined = collect(open_storage(f"s3://{BUCKET}/results", settings))
    assert len(results.get(f"critical/{name}", [])) == 1, (results.get(f"critical/{name}"), quarantined)
    timings.add("event path (put under inbox/critical/ to completed run)", start)


def _distinct_pages(count: int, folder: Path, mark: str) -> list[str]:
    """``count`` different scans (phototest.tif with a numbered mark): real OCR work, no duplicates.

    ``mark`` keeps one test's scans apart from another's, so none is a re-run of a page already done.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(SAMPLES / "phototest.tif") as im:
        base = im.convert("L")
    names = []
    for i in range(count):
        page = base.copy()
        ImageDraw.Draw(page).text((10, page.height - 20), f"{RUN_PREFIX} {mark} page {i}", fill=0)
        name = f"scan-{i:02d}.png"
        page.save(folder / name)
        names.append(name)
    return names


def submit_scans(
    env: dict[str, str], settings: Settings, folder: Path, count: int, name: str, priority: str
) -> tuple[uuid.UUID, str, list[str]]:
    """``count`` distinct scans uploaded under ``<run prefix>/<name>`` and a run submitted on them
    to ``priority``'s queue: its id, its output location and the scans' names."""
    names = _distinct_pages(count, folder, name)
    source = f"s3://{BUCKET}/{RUN_PREFIX}/{name}"
    upload(folder, open_storage(source, settings))
    out = f"s3://{BUCKET}/{RUN_PREFIX}/out-{name}"
    return submit(env, source, priority, out), out, names


def test_losing_a_dask_worker_mid_run_loses_and_duplicates_nothing(
    kube: Kube,
    release: HpaMonitor,
    client_env: dict[str, str],
    settings: Settings,
    prefect: SyncPrefectClient,
    tmp_path: Path,
    timings: Timings,
) -> None:
    start = time.monotonic()
    run_id, out, names = submit_scans(client_env, settings, tmp_path / "scans", 12, "fault", "standard")

    def busy_worker() -> str | None:
        """A Dask worker pod that is processing a batch of this run right now."""
        code = (
            "import json; from distributed import Client\n"
            "with Client('tcp://127.0.0.1:8786', timeout=30) as c:\n"
            "    print(json.dumps({a: [str(k) for k in ks] for a, ks in c.processing().items()}))\n"
        )
        proc = kube.run("exec", f"deploy/{RELEASE}-dask-scheduler", "--", "python", "-c", code, timeout=60)
        processing = json.loads(proc.stdout.strip().splitlines()[-1])
        busy_ips = {addr.split("://")[1].rsplit(":", 1)[0] for addr, keys in processing.items() if keys}
        for pod in kube.pods("app.kubernetes.io/component=dask-worker"):
            if pod["status"].get("podIP") in busy_ips and pod["metadata"].get("deletionTimestamp") is None:
                return str(pod["metadata"]["name"])
        return None

    victim = wait_for("a Dask worker busy with the run", busy_worker, timeout=600, interval=2)
    kube.run("delete", "pod", victim, "--grace-period=0", "--force", "--wait=false")
    killed_at = time.monotonic() - start
    wait_run(prefect, kube, run_id)
    check_results(open_storage(out, settings), names)
    timings.add(f"fault run, 12 scans (worker killed at {killed_at:.0f}s)", start)
