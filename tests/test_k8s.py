"""Raw manifests (kustomize), the kind workflow's checks, and the processes the image runs.

No Docker engine or cluster here: the kustomize tree is built by the real kustomize and compared
with the chart; every command a container runs is checked against the real CLI installed in
.venv; the pool setup script runs against a real Prefect server and the Dask worker's preStop
hook against a real scheduler and workers.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from docproc.dask_preload import dask_setup
from docproc.models import DocumentResult, QuarantineRecord
from docproc.queues import QUEUES
from docproc.storage import LocalStorage
from tests.e2e_checks import check_results, upload
from tests.fixtures.helm import KUBE_VERSIONS, Chart, K8sTools, Manifest, k8s_errors
from tests.fixtures.minio import MinioFactory
from tests.fixtures.prefect_server import PrefectServer, free_port
from tests.processes import stop

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
VENV_BIN = Path(sys.executable).parent
PRELOAD_OPTIONS = {opt for param in dask_setup.params for opt in param.opts}
sys.path.insert(0, str(K8S))
import render as k8s_render  # noqa: E402  (k8s/render.py is a script, not a package)


def _kustomize(tools: K8sTools, folder: Path) -> list[Manifest]:
    out = subprocess.run(
        [str(tools.kustomize), "build", str(folder)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _by_key(objs: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    out = {}
    for o in objs:
        o = json.loads(json.dumps(o))
        # kustomize sets the namespace that `helm install -n docproc` would give.
        assert o["metadata"].pop("namespace", "docproc") == "docproc"
        out[(o["kind"], o["metadata"]["name"])] = o
    return out


# -- kustomize -----------------------------------------------------------------------------


def test_generated_manifests_are_current(k8s_tools: K8sTools) -> None:
    files = k8s_render.render_files(str(k8s_tools.helm))
    stale = [str(p.relative_to(ROOT)) for p in k8s_render.stale_files(files)]
    assert stale == [], "run `make k8s-render`"


@pytest.mark.parametrize("overlay", ["base", "kind", "production"])
def test_kustomize_builds_what_the_chart_renders(k8s_tools: K8sTools, chart: Chart, overlay: str) -> None:
    folder = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    built = _by_key(_kustomize(k8s_tools, folder))
    expected = _by_key(chart.render() if overlay == "base" else chart.render((f"values-{overlay}.yaml",)))
    assert set(built) == set(expected)
    differing = [k for k in built if built[k] != expected[k]]
    assert differing == []


def test_kind_cluster_runs_a_validated_kubernetes() -> None:
    cluster = yaml.safe_load((K8S / "kind" / "cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster"
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    for node in cluster["nodes"]:
        major, minor = node["image"].split(":v")[1].split(".")[:2]
        assert (int(major), int(minor)) >= (1, 33)
    assert {n["role"] for n in cluster["nodes"]} == {"control-plane", "worker"}


# -- the commands the image runs -----------------------------------------------------------


def _image_commands(chart: Chart) -> dict[str, list[str]]:
    """Every docproc-image container's args across the example values, by where they are."""
    out: dict[str, list[str]] = {}
    for values in [(), ("values-production.yaml",)]:
        for o in chart.render(values):
            if o["kind"] not in ("Deployment", "StatefulSet", "Job"):
                continue
            pod = o["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                if "docproc" in c["image"].rsplit("/", 1)[-1]:
                    out[f"{o['metadata']['name']}/{c['name']}"] = c["args"]
    return out


def _subcommand(args: list[str]) -> list[str]:
    words = []
    for a in args:
        if a.startswith("-") or "://" in a or "/" in a:
            break
        words.append(a)
    return words


def test_image_commands_exist(chart4: Chart) -> None:
    """Each container's command and every option it passes are in that command's --help."""
    commands = _image_commands(chart4)
    assert {" ".join(_subcommand(a)) for a in commands.values()} >= {
        "prefect server start",
        "prefect worker start",
        "dask scheduler",
        "dask worker",
        "docproc events serve",
        "docproc pool apply",
    }
    # One --help per distinct command (each costs a CLI start), checking the union of its options.
    options: dict[tuple[str, ...], set[str]] = {}
    for args in commands.values():
        words = tuple(_subcommand(args))
        options.setdefault(words, set()).update(a for a in args if a.startswith("--"))
    missing_docproc: list[str] = []
    for words, opts in options.items():
        if words[0] == "python":
            continue  # configure_pool.py runs for real in test_configure_pool_script
        proc = subprocess.run(
            [str(VENV_BIN / words[0]), *words[1:], "--help"], capture_output=True, text=True, timeout=120
        )
        if words[0] == "docproc" and proc.returncode != 0:
            # Built in parallel by the queues work (issue 4); listed in the assertion below.
            missing_docproc.append(" ".join(words))
            continue
        assert proc.returncode == 0, f"{' '.join(words)} --help: {proc.stderr[-500:]}"
        for option in sorted(opts):
            if words == ("dask", "worker") and option in PRELOAD_OPTIONS:
                continue  # `dask worker` hands options it does not know to the preload
            assert option in proc.stdout, f"{option} is not an option of {' '.join(words)}"
    assert set(missing_docproc) <= {"docproc events serve", "docproc pool apply"}, missing_docproc


@pytest.fixture
def dask_scheduler(tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` as the chart runs it, on free loopback ports."""
    port, dash = free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            f"127.0.0.1:{dash}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "scheduler.log").open("wb"),
    )
    address = f"tcp://127.0.0.1:{port}"
    try:
        yield address
    finally:
        stop(proc, timeout=30)


def _dask_worker(address: str, name: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    # The chart's worker args, minus --preload docproc.dask_preload (the model loading is
    # tested with the core) and with a loopback host.
    return subprocess.Popen(
        [
            str(VENV_BIN / "dask"),
            "worker",
            address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--local-directory",
            str(tmp_path / name),
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / f"{name}.log").open("wb"),
    )


def _chart_worker(chart: Chart) -> dict[str, Any]:
    deployment = next(
        o
        for o in chart.render()
        if o["metadata"]["name"] == "docproc-dask-worker" and o["kind"] == "Deployment"
    )
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_dask_worker_is_ready_once_its_models_are_loaded(
    chart4: Chart, dask_scheduler: str, tmp_path: Path
) -> None:
    """The chart's worker command, as the pod runs it, against a real scheduler: its preload
    replaces the ready file left by an earlier worker process once the models are loaded, and
    the readiness probe passes; a worker whose models fail to load never becomes ready.

    Only the places differ (scheduler, ready file, scratch, ports); DOCPROC_ENGINE=tesseract
    keeps the load short (the default engine's is the same code path)."""
    from distributed import Client

    container = _chart_worker(chart4)
    chart_file = container["args"][container["args"].index("--ready-file") + 1]
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe == ["test", "-f", chart_file]

    def command(name: str) -> tuple[list[str], Path]:
        ready = tmp_path / f"{name}-ready"
        places = {
            container["args"][2]: dask_scheduler,
            "$(POD_NAME)": name,
            "$(DASK_MEMORY_LIMIT)": "2GiB",
            "/tmp/dask-worker-space": str(tmp_path / name),
            ":8788": "127.0.0.1:0",
            chart_file: str(ready),
        }
        args = [places.get(a, a) for a in container["args"]]
        return [str(VENV_BIN / args[0]), *args[1:], "--host", "127.0.0.1"], ready

    good, good_ready = command("loads")
    bad, bad_ready = command("fails")
    good_ready.write_text("left by the previous worker process")
    logs = {name: tmp_path / f"{name}.log" for name in ("loads", "fails")}
    workers = [
        subprocess.Popen(
            args,
            env={**os.environ, "DOCPROC_ENGINE": engine},
            stdout=subprocess.DEVNULL,
            stderr=logs[name].open("wb"),
        )
        for name, args, engine in (
            ("loads", good, "tesseract"),
            ("fails", bad, "docproc.no_such_engine:Engine"),
        )
    ]
    try:
        with Client(dask_scheduler, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            failed = "warm-up of the models failed" in logs["fails"].read_text(errors="replace")
            if failed and good_ready.exists() and good_ready.read_text() == "":
                break
            time.sleep(0.5)
        assert good_ready.read_text() == "", logs["loads"].read_text(errors="replace")[-3000:]
        assert "warm-up of the models failed" in logs["fails"].read_text(errors="replace")
        assert "docproc.no_such_engine" in logs["fails"].read_text(errors="replace")
        ready_probe = subprocess.run([probe[0], probe[1], str(good_ready)], timeout=30)
        unready_probe = subprocess.run([probe[0], probe[1], str(bad_ready)], timeout=30)
        assert (ready_probe.returncode, unready_probe.returncode) == (0, 1)
        assert all(w.poll() is None for w in workers), "a worker exited"
    finally:
        for w in workers:
            stop(w, timeout=30)


def test_dask_worker_prestop_retires_without_losing_results(
    chart4: Chart, dask_scheduler: str, tmp_path: Path
) -> None:
    from distributed import Client

    pre_stop = _chart_worker(chart4)["lifecycle"]["preStop"]["exec"]["command"]
    workers = [_dask_worker(dask_scheduler, name, tmp_path) for name in ("dask-worker-a", "dask-worker-b")]
    try:
        with Client(dask_scheduler, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            names = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
            held = client.submit(sum, [1, 2, 3], workers=[names["dask-worker-a"]], pure=False)
            assert held.result(timeout=60) == 6
            env = {
                **os.environ,
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # the image's venv comes first
                "DASK_SCHEDULER_ADDRESS": dask_scheduler,
                "POD_NAME": "dask-worker-a",
            }
            proc = subprocess.run(pre_stop, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            workers[0].wait(timeout=60)  # close_workers=True: the worker process exits by itself
            remaining = {w["name"] for w in client.scheduler_info()["workers"].values()}
            assert remaining == {"dask-worker-b"}
            assert client.who_has(held)[held.key] == (names["dask-worker-b"],)
            assert held.result(timeout=30) == 6
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)


@pytest.fixture
def webhook_catcher() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """A loopback HTTP endpoint that records each POST (Authorization header, JSON body)."""
    received: list[tuple[str, dict[str, Any]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                received.append((self.headers.get("Authorization", ""), json.loads(body or b"{}")))
            except json.JSONDecodeError:
                received.append((self.headers.get("Authorization", ""), {}))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/minio/events", received
    finally:
        server.shutdown()
        server.server_close()


def test_minio_setup_script(
    chart4: Chart,
    minio_factory: MinioFactory,
    webhook_catcher: tuple[str, list[tuple[str, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    """files/setup_minio.py, with the Job's own arguments, against a real MinIO whose webhook
    target is configured by environment as the chart's StatefulSet does: buckets, default
    encryption and the inbox notification all work, and a second run changes nothing."""
    url, received = webhook_catcher
    minio = minio_factory(
        extra_env={
            "MINIO_NOTIFY_WEBHOOK_ENABLE_DOCPROC": "on",
            "MINIO_NOTIFY_WEBHOOK_ENDPOINT_DOCPROC": url,
            "MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_DOCPROC": "token-for-test",
        }
    )
    objs = chart4.render(**{"minio.buckets": ["docproc", "extra"]})
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "docproc-minio-setup")
    script = tmp_path / "setup_minio.py"
    script.write_text(cm["data"]["setup_minio.py"])
    job = next(o for o in objs if o["kind"] == "Job" and o["metadata"]["name"] == "docproc-minio-setup")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["python", "/etc/docproc/setup_minio.py"]
    args = [str(VENV_BIN / "python"), str(script), *args[2:]]
    args[args.index("--endpoint") + 1] = minio.endpoint
    env = {**os.environ, "MINIO_ROOT_USER": minio.access_key, "MINIO_ROOT_PASSWORD": minio.secret_key}
    for attempt in (1, 2):
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"run {attempt}: {proc.stderr[-3000:]}\n{minio.log_tail()}"

    client = minio.client()
    assert {b.name for b in client.list_buckets()} >= {"docproc", "extra"}
    for bucket in ("docproc", "extra"):
        # Default encryption: an object written without any SSE header is stored encrypted.
        client.put_object(bucket, "results/plain.json", io.BytesIO(b"{}"), 2)
        stat = client.stat_object(bucket, "results/plain.json")
        assert stat.metadata.get("x-amz-server-side-encryption") == "AES256", bucket
    client.put_object("docproc", "inbox/critical/a.txt", io.BytesIO(b"a"), 1)
    client.put_object("extra", "inbox/critical/b.txt", io.BytesIO(b"b"), 1)  # not the first bucket
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # anything else MinIO would send arrives too
    keys = [r["Records"][0]["s3"]["object"]["key"] for _, r in received if r.get("Records")]
    assert keys == ["inbox%2Fcritical%2Fa.txt"], (received, minio.log_tail())
    assert received[0][0] == "Bearer token-for-test"


def test_configure_pool_script(chart4: Chart, prefect_api: PrefectServer, tmp_path: Path) -> None:
    """files/configure_pool.py against a real Prefect server, after a stand-in for `docproc pool apply`."""
    objs = chart4.render()
    data = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "docproc-pool")[
        "data"
    ]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    pool = f"docproc-chart-{os.getpid()}-{int(time.time())}"

    async def pool_apply() -> None:
        # What `docproc pool apply --type kubernetes` leaves behind: the pool with Prefect's
        # default template, the queues, one deployment per queue with prefect.yaml's variables.
        async with get_client() as client:
            from prefect.client.schemas.actions import WorkPoolCreate

            await client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes"))
            flow_id = await client.create_flow_from_name("process-documents")
            for spec in QUEUES.values():
                await client.create_work_queue(
                    name=spec.name, work_pool_name=pool, priority=spec.priority + 1
                )
                await client.create_deployment(
                    flow_id=flow_id,
                    name=f"{pool}-{spec.name}",
                    work_pool_name=pool,
                    work_queue_name=spec.name,
                    job_variables={"cpu_request": "9", "keep": "me"},
                    entrypoint="flows/process.py:process_documents",
                )

    asyncio.run(pool_apply())
    proc = subprocess.run(
        [str(VENV_BIN / "python"), str(tmp_path / "configure_pool.py"), pool, str(tmp_path)],
        env=prefect_api.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    async def read_back() -> tuple[Any, dict[str, Any], list[Any]]:
        async with get_client() as client:
            work_pool = await client.read_work_pool(pool)
            from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName, WorkQueueFilter
            from prefect.client.schemas.sorting import DeploymentSort

            pool_queues = await client.read_work_queues(
                work_pool_name=pool, work_queue_filter=WorkQueueFilter(), limit=200, offset=0
            )
            queues = {q.name: q for q in pool_queues}

            deployments = await client.read_deployments(
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
                limit=200,
                sort=DeploymentSort.NAME_ASC,
            )
            return work_pool, queues, deployments

    work_pool, queues, deployments = asyncio.run(read_back())
    assert work_pool.base_job_template == json.loads(data["base-job-template.json"])
    for spec in QUEUES.values():
        assert (queues[spec.name].priority, queues[spec.name].concurrency_limit) == (
            spec.priority,
            spec.concurrency_limit,
        )
    queue_vars = json.loads(data["queue-job-variables.json"])
    assert len(deployments) == len(QUEUES)
    for d in deployments:
        assert d.job_variables == {"keep": "me", **queue_vars[d.work_queue_name]}
        # The Job the worker builds from what the server now holds, as the worker does it.
        job = asyncio.run(
            KubernetesWorkerJobConfiguration.from_template_and_values(
                work_pool.base_job_template, d.job_variables, client=PrefectClient("http://127.0.0.1:9/api")
            )
        )
        job.prepare_for_flow_run(FlowRun(id=d.id, name="x", flow_id=d.flow_id))
        pod = job.job_manifest["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == queue_vars[d.work_queue_name]["priority_class_name"]
        pod.pop("parallelism"), pod.pop("completions")  # see test_helm.test_worker_job_per_queue
        assert k8s_errors(job.job_manifest, KUBE_VERSIONS[0]) == []


# -- the kind end-to-end checks ------------------------------------------------------------


def _result(source: str) -> DocumentResult:
    return DocumentResult.model_validate(
        {
            "id": "0" * 64,
            "source": source,
            "media_type": "text/plain",
            "size_bytes": 5,
            "pages": [],
            "text": "hello",
            "language": {"code": "en", "score": 0.9},
            "entities": [],
            "document_type": {"label": "letter", "score": 0.8},
            "quality": {"status": "ok", "reasons": []},
            "timings": {},
            "pipeline_version": "0.1.0",
            "settings_fingerprint": "f" * 16,
            "processed_at": datetime.now(UTC).isoformat(),
        }
    )


def test_e2e_checks(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    for i, source in enumerate(["a.pdf", "b.tif"]):
        store.write_bytes(f"results/{i}.json", _result(source).model_dump_json().encode())
    record = QuarantineRecord(
        id=None,
        source="bad.pdf",
        reason="corrupt",
        message="no pages",
        pipeline_version="0.1.0",
        quarantined_at=datetime.now(UTC),
    )
    store.write_bytes("quarantine/bad.json", record.model_dump_json().encode())
    store.write_bytes("report.json", b'{"run_id": "r"}')

    parsed = check_results(store, ["a.pdf", "b.tif"], quarantined=["bad.pdf"])
    assert set(parsed) == {"a.pdf", "b.tif"}

    with pytest.raises(AssertionError, match=r"c\.pdf: expected exactly one result, found 0"):
        check_results(store, ["a.pdf", "b.tif", "c.pdf"], quarantined=["bad.pdf"])
    with pytest.raises(AssertionError, match=r"not expected: \['b\.tif'\]"):
        check_results(store, ["a.pdf"], quarantined=["bad.pdf"])
    store.write_bytes("results/dup.json", _result("a.pdf").model_dump_json().encode())
    with pytest.raises(AssertionError, match=r"a\.pdf: expected exactly one result, found 2"):
        check_results(store, ["a.pdf", "b.tif"], quarantined=["bad.pdf"])
    store.delete("results/dup.json")
    broken = json.loads(_result("a.pdf").model_dump_json())
    broken["quality"]["status"] = "great"
    store.write_bytes("results/0.json", json.dumps(broken).encode())
    with pytest.raises(AssertionError, match=r"a\.pdf: result results/0\.json does not validate"):
        check_results(store, ["a.pdf", "b.tif"], quarantined=["bad.pdf"])


def test_e2e_upload_skips_readme(tmp_path: Path) -> None:
    dest = LocalStorage(tmp_path / "dest")
    keys = upload(ROOT / "samples", dest)
    assert "README.md" not in keys
    assert keys
    assert sorted(o.key for o in dest.iter_objects()) == sorted(keys)


# -- the image -----------------------------------------------------------------------------


def test_dockerfile(k8s_tools: K8sTools) -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "USER 10001:10001" in text
    assert "uv export --frozen" in text  # installs exactly uv.lock's versions
    # The default engine's models are converted at build time, checked as the runtime user, and
    # the runtime reads them from there (a read-only root: it could not convert them).
    assert "docproc models convert --cache-dir /opt/docproc-models" in text
    assert "setpriv --reuid=10001" in text
    assert "COPY --from=models /opt/docproc-models /opt/docproc-models" in text
    assert "DOCPROC_MODEL_CACHE_DIR=/opt/docproc-models" in text
    for var in ("HOME=/tmp", "TMPDIR=/tmp", "PREFECT_HOME=/tmp/", "MPLCONFIGDIR=/tmp/", "TORCH_HOME=/tmp/"):
        assert var in text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*"
    assert "!src/" in ignore
    assert "!uv.lock" in ignore
    proc = subprocess.run([str(k8s_tools.hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
