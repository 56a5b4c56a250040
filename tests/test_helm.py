"""The Helm chart helm/docproc, rendered by the real helm and checked against Kubernetes' schemas.

Nothing here needs a cluster: `helm lint --strict` and `helm template` run for the default
values and each example values file, every object is validated against the OpenAPI schema of
Kubernetes 1.33 and the newest release kubernetes-validate ships, and the Job the worker would
create for each queue is built by prefect-kubernetes' own job-configuration code.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pytest
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes import worker as pk_worker
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from docproc.queues import QUEUES, WORK_POOL_NAME
from docproc.settings import Settings
from flows.process import DASK_SERVER_CONFIG
from tests.fixtures.helm import CHART, KUBE_VERSIONS, Chart, HelmError, K8sTools, Manifest, k8s_errors

VALUES_FILES: dict[str, tuple[str, ...]] = {
    "default": (),
    "kind": ("values-kind.yaml",),
    "production": ("values-production.yaml",),
}
# Value sets beyond the example files that switch whole components on or off.
VARIANTS: dict[str, dict[str, Any]] = {
    "operator": {"dask.mode": "operator"},
    "external-s3-no-events": {
        "minio.enabled": False,
        "events.enabled": False,
        "s3": {"endpoint": "s3.example.com", "existingSecret": "s3", "sse": "s3"},
    },
    "postgres-no-netpol-no-hpa": {
        "server.database.type": "postgresql",
        "server.database.postgresql.existingSecret": "pg",
        "networkPolicy.enabled": False,
        "dask.worker.autoscaling.enabled": False,
        "priorityClasses.create": False,
    },
}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


def render(chart: Chart, name: str) -> list[Manifest]:
    if name in VALUES_FILES:
        return chart.render(VALUES_FILES[name])
    return chart.render(**VARIANTS[name])


def by_kind(objs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def values(name: str = "values.yaml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / name).read_text())
    return data


def pool_config(objs: list[Manifest]) -> dict[str, Any]:
    cm = by_kind(objs, "ConfigMap")["docproc-pool"]["data"]
    return {k: json.loads(v) for k, v in cm.items() if k.endswith(".json")}


def flow_run_env(objs: list[Manifest]) -> dict[str, str]:
    """The env the work pool gives every flow-run Job (its base job template's default)."""
    env: dict[str, str] = pool_config(objs)["base-job-template.json"]["variables"]["properties"]["env"][
        "default"
    ]
    return env


def pod_specs(objs: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] in WORKLOADS:
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


# -- lint and schema validation ------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_helm_lint_strict(chart: Chart, name: str) -> None:
    proc = chart.lint(VALUES_FILES[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_both_helm_majors(k8s_tools: K8sTools) -> None:
    """The chart tests really run Helm 3 and Helm 4 (each `chart` test runs once per binary)."""
    majors = {}
    for name, helm in k8s_tools.helms().items():
        proc = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        majors[name] = proc.stdout.strip().split(".")[0]
    assert majors == {"helm3": "v3", "helm4": "v4"}


def _pool_queues(objs: list[Manifest]) -> dict[str, Any]:
    queues: dict[str, Any] = pool_config(objs)["queues.json"]
    return queues


def _job_watch_default(objs: list[Manifest]) -> Any:
    props = pool_config(objs)["base-job-template.json"]["variables"]["properties"]
    return props["job_watch_timeout_seconds"]["default"]


def test_null_means_unlimited_under_both_helms(chart: Chart) -> None:
    """Helm 4 drops null values before validating the schema, Helm 3 keeps them: "unlimited"
    (concurrencyLimit) and "forever" (jobWatchTimeoutSeconds) are null or absent, never required,
    and reach the pool as null either way."""
    objs = chart.render()
    assert _pool_queues(objs)["critical"] == {"priority": 1, "concurrency_limit": None}
    assert _job_watch_default(objs) is None
    # A user's null removes a default limit: unlimited, under both majors.
    objs = chart.render(
        **{"queues.standard.concurrencyLimit": None, "worker.jobTemplate.jobWatchTimeoutSeconds": None}
    )
    assert _pool_queues(objs)["standard"]["concurrency_limit"] is None
    assert _job_watch_default(objs) is None
    objs = chart.render(
        **{"queues.critical.concurrencyLimit": 3, "worker.jobTemplate.jobWatchTimeoutSeconds": 7200}
    )
    assert _pool_queues(objs)["critical"]["concurrency_limit"] == 3
    assert _job_watch_default(objs) == 7200


@pytest.mark.parametrize("name", [n for n in VALUES_FILES if n != "default"])
def test_example_values_keep_unlimited_critical_queue(chart: Chart, name: str) -> None:
    assert _pool_queues(chart.render(VALUES_FILES[name]))["critical"]["concurrency_limit"] is None


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", [*VALUES_FILES, *VARIANTS])
def test_every_object_is_valid_kubernetes(chart: Chart, name: str, version: str) -> None:
    objs = render(chart, name)
    assert len(objs) > 10
    errors = [e for o in objs for e in k8s_errors(o, version)]
    assert errors == []


def test_example_values_files_are_complete_documents() -> None:
    # Each example is a documented override of values.yaml, never a key values.yaml lacks.
    base = values()

    def keys(d: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("settings",) and v:
                out |= keys(v, f"{prefix}{k}.")
        return out

    for name in ("values-kind.yaml", "values-production.yaml"):
        assert keys(values(name)) - keys(base) == set(), name


def test_every_value_is_documented() -> None:
    # Each value has a `# --` comment right above it; a map documented as a whole (resources)
    # covers its children, and an undocumented section header only groups documented values.
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    covered_indent: int | None = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w-]*):\s*(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        if covered_indent is not None and indent > covered_indent:
            continue
        covered_indent = None
        documented = lines[i - 1].strip().startswith("# --")
        has_children = m.group(3) == "" and i + 1 < len(lines) and lines[i + 1].startswith(m.group(1) + "  ")
        if documented and has_children:
            covered_indent = indent
        elif not documented and not has_children:
            undocumented.append(f"{i + 1}: {line.strip()}")
    assert undocumented == []


# -- queues --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["values.yaml", "values-kind.yaml"])
def test_chart_queues_match_docproc_queues(name: str) -> None:
    chart_queues = values(name)["queues"]
    assert set(chart_queues) == {spec.name for spec in QUEUES.values()}
    for spec in QUEUES.values():
        q = chart_queues[spec.name]
        assert (q["priority"], q["concurrencyLimit"]) == (spec.priority, spec.concurrency_limit), spec.name
    assert WORK_POOL_NAME == "docproc"  # the worker's --pool and configure_pool.py's argument


def test_priority_classes_follow_queue_priority(chart: Chart) -> None:
    objs = chart.render()
    classes = by_kind(objs, "PriorityClass")
    v = values()["queues"]
    assert set(classes) == {q["priorityClass"]["name"] for q in v.values()}
    ordered = sorted(QUEUES.values(), key=lambda s: s.priority)
    pc_values = [classes[v[s.name]["priorityClass"]["name"]]["value"] for s in ordered]
    assert pc_values == sorted(pc_values, reverse=True)
    assert classes["docproc-bulk"]["preemptionPolicy"] == "Never"
    assert all(not c["globalDefault"] for c in classes.values())


# -- the Job the worker creates, through prefect-kubernetes --------------------------------


def _queue_job(objs: list[Manifest], queue: str) -> KubernetesWorkerJobConfiguration:
    cfg = pool_config(objs)
    # No block or variable references in the template, so the client is never called; it points
    # at a closed port so that a call would fail the test instead of starting a temporary server.
    client = PrefectClient("http://127.0.0.1:9/api")
    job = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            cfg["base-job-template.json"], cfg["queue-job-variables.json"][queue], client=client
        )
    )
    job.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="gentle-otter", flow_id=uuid.uuid4()))
    return job


@pytest.mark.parametrize("name", list(VALUES_FILES))
@pytest.mark.parametrize("queue", [s.name for s in QUEUES.values()])
def test_worker_job_per_queue(chart: Chart, name: str, queue: str) -> None:
    objs = chart.render(VALUES_FILES[name])
    v = values(VALUES_FILES[name][0]) if VALUES_FILES[name] else values()
    q = {**values()["queues"], **v.get("queues", {})}[queue]
    job = _queue_job(objs, queue)
    manifest = job.job_manifest
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert pod["priorityClassName"] == q["priorityClass"]["name"]
    assert container["resources"] == {
        "requests": {k: str(x) for k, x in q["resources"]["requests"].items()},
        "limits": {k: str(x) for k, x in q["resources"]["limits"].items()},
    }
    assert job.pod_watch_timeout_seconds >= 300
    assert (
        manifest["spec"]["ttlSecondsAfterFinished"]
        == {**values()["worker"], **v.get("worker", {})}["jobTemplate"]["ttlSecondsAfterFinished"]
    )
    assert pod["serviceAccountName"] == "docproc-flow-run"
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert (
        container["image"]
        == by_kind(objs, "Deployment")["docproc-worker"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    # NetworkPolicies select flow-run pods by this label.
    assert manifest["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "flow-run"
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["DOCPROC_S3_SECRET_KEY"]["valueFrom"]
    assert env["PREFECT_API_URL"]["value"] == "http://docproc-server:4200/api"

    # prefect-kubernetes requires parallelism/completions inside the pod spec (its manifest
    # check), where the API server drops them as unknown fields; everything else must be valid.
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    for version in KUBE_VERSIONS:
        assert k8s_errors(manifest, version) == []


def test_flow_run_env_is_docproc_settings(chart: Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = chart.render(VALUES_FILES["production"])
    env = flow_run_env(objs)
    docproc_env = {k: v for k, v in env.items() if k.startswith("DOCPROC_")}
    fields = {f"DOCPROC_{n.upper()}" for n in Settings.model_fields}
    assert set(docproc_env) <= fields
    for k in list(os.environ):
        if k.startswith("DOCPROC_"):
            monkeypatch.delenv(k)
    for k, v in docproc_env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    assert settings.dpi == values("values-production.yaml")["settings"]["dpi"]
    assert settings.s3_sse == "c"
    assert settings.s3_secure is True
    assert settings.dask_address == "tcp://docproc-dask-scheduler:8786"


def test_settings_schema_names_real_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["settings"]["propertyNames"]["enum"])
    secret = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    assert allowed <= set(Settings.model_fields) - secret


def test_operator_mode(chart: Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = render(chart, "operator")
    deployments = by_kind(objs, "Deployment")
    assert "docproc-dask-scheduler" not in deployments
    assert "docproc-dask-worker" not in deployments
    env = flow_run_env(objs)
    assert env["DOCPROC_DASK_CLUSTER_CLASS"] == "dask_kubernetes.operator.KubeCluster"
    assert "DOCPROC_DASK_ADDRESS" not in env
    for k, v in env.items():
        if k.startswith("DOCPROC_"):
            monkeypatch.setenv(k, v)
    settings = Settings()
    kwargs = settings.dask_cluster_kwargs
    assert settings.dask_adapt_max == values()["dask"]["operator"]["adaptMax"]
    assert kwargs["image"] == "ghcr.io/docproc/docproc:0.1.0"
    assert kwargs["worker_command"][:2] == ["dask", "worker"]
    assert "docproc.dask_preload" in kwargs["worker_command"]
    assert {e["name"] for e in kwargs["env"]} >= {"DOCPROC_S3_ACCESS_KEY", "DOCPROC_S3_ENDPOINT"}
    # The flow run's own ServiceAccount may now create Dask clusters, and nothing else.
    roles = by_kind(objs, "Role")
    rules = {
        (g, r): sorted(rule["verbs"])
        for rule in roles["docproc-flow-run"]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert rules == {
        ("kubernetes.dask.org", "daskclusters"): ["create", "delete", "get", "list", "patch", "watch"],
        ("kubernetes.dask.org", "daskworkergroups"): ["create", "delete", "get", "list", "patch", "watch"],
        ("kubernetes.dask.org", "daskautoscalers"): ["create", "delete", "get", "list", "patch", "watch"],
        ("", "pods"): ["get", "list", "watch"],
        ("", "pods/log"): ["get", "list", "watch"],
        ("", "services"): ["get", "list", "watch"],
    }
    accounts = by_kind(objs, "ServiceAccount")
    assert accounts["docproc-flow-run"]["automountServiceAccountToken"] is True


# -- security ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*VALUES_FILES, *VARIANTS])
def test_every_pod_is_locked_down(chart: Chart, name: str) -> None:
    objs = render(chart, name)
    specs = list(pod_specs(objs))
    flow_run = _queue_job(objs, "standard").job_manifest
    specs.append(("flow-run Job", flow_run["spec"]["template"]["spec"]))
    problems = []
    for where, pod in specs:
        psc = pod.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
            problems.append(f"{where}: pod securityContext {psc}")
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c.get("securityContext", {})
            if not (
                sc.get("readOnlyRootFilesystem") is True
                and sc.get("runAsNonRoot") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]
                and "add" not in sc.get("capabilities", {})
                and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            ):
                problems.append(f"{where}/{c['name']}: securityContext {sc}")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                if set(res.get(kind, {})) < {"cpu", "memory"}:
                    problems.append(f"{where}/{c['name']}: resources.{kind} {res.get(kind)}")
            if not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])):
                problems.append(f"{where}/{c['name']}: no writable /tmp on a read-only root")
    assert problems == []


@pytest.mark.parametrize("name", [*VALUES_FILES, *VARIANTS])
def test_one_service_account_per_component(chart: Chart, name: str) -> None:
    objs = render(chart, name)
    accounts = by_kind(objs, "ServiceAccount")
    used: dict[str, str] = {}
    for where, pod in pod_specs(objs):
        sa = pod["serviceAccountName"]
        assert sa in accounts, where
        assert sa not in used, f"{where} shares {sa} with {used.get(sa)}"
        used[sa] = where
        # A pod talks to the Kubernetes API only if its account may.
        assert pod.get("automountServiceAccountToken") is (sa == "docproc-worker"), where
    assert set(accounts) - set(used) == {"docproc-flow-run"}  # used by the worker's Jobs
    api_users = {n for n, a in accounts.items() if a["automountServiceAccountToken"]}
    expected = {"docproc-worker", "docproc-flow-run"} if name == "operator" else {"docproc-worker"}
    assert api_users == expected


# Table: what prefect-kubernetes' worker and observer call, and the verbs that needs.
WORKER_PERMISSIONS = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get", "list", "watch"},
    ("", "events"): {"get", "list", "watch"},
}


@pytest.mark.parametrize("name", [*VALUES_FILES, *VARIANTS])
def test_worker_role_grants_exactly_what_prefect_kubernetes_uses(chart: Chart, name: str) -> None:
    objs = render(chart, name)
    roles = by_kind(objs, "Role")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles["docproc-worker"]["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no wildcards
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                granted.setdefault((g, r), set()).update(rule["verbs"])
    assert granted == WORKER_PERMISSIONS
    assert not any("*" in str(rule) for rule in roles["docproc-worker"]["rules"])
    assert by_kind(objs, "ClusterRole") == {}
    assert by_kind(objs, "ClusterRoleBinding") == {}
    binding = by_kind(objs, "RoleBinding")["docproc-worker"]
    assert binding["roleRef"]["name"] == "docproc-worker"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "docproc-worker", "namespace": "docproc"}
    ]
    other_roles = set(roles) - {"docproc-worker"}
    assert other_roles == ({"docproc-flow-run"} if name == "operator" else set())
    # The observer must watch this namespace only, or it would need cluster-wide list/watch.
    worker = by_kind(objs, "Deployment")["docproc-worker"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "docproc"


VERBS = {
    "create": "create",
    "read": "get",
    "list": "list",
    "delete": "delete",
    "patch": "patch",
    "replace": "update",
}
RESOURCES = {
    "job": ("batch", "jobs"),
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "secret": ("", "secrets"),
}


def test_worker_table_covers_prefect_kubernetes_calls() -> None:
    """Derive the calls from prefect-kubernetes' source, so an upgrade that needs more shows up here."""
    needed: dict[tuple[str, str], set[str]] = {}
    for module in ("worker", "observer"):
        source = Path(getattr(pk_worker, "__file__", "")).with_name(f"{module}.py").read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute):
                m = re.fullmatch(r"(create|read|list|delete|patch|replace)_namespaced_(\w+?)", node.attr)
                if m and m.group(2) in RESOURCES:
                    needed.setdefault(RESOURCES[m.group(2)], set()).add(VERBS[m.group(1)])
    # Secrets are touched only for Prefect Cloud API keys (create_secret_for_api_key /
    # api_key_secret_name settings), which this chart never sets.
    needed.pop(("", "secrets"), None)
    # The observer (kopf) lists and watches the flow-run pods and Jobs.
    needed.setdefault(("", "pods"), set()).update({"list", "watch"})
    needed.setdefault(("batch", "jobs"), set()).update({"list", "watch"})
    for key, verbs in needed.items():
        assert verbs <= WORKER_PERMISSIONS[key], key
    assert ("batch", "jobs") in needed
    assert ("", "pods/log") in needed


def test_no_generated_credentials(chart: Chart) -> None:
    templates = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    assert "randAlphaNum" not in templates
    assert "randAscii" not in templates
    for name in [*VALUES_FILES, *VARIANTS]:
        assert by_kind(render(chart, name), "Secret") == {}, name


def test_network_policies(chart: Chart) -> None:
    objs = chart.render()
    policies = by_kind(objs, "NetworkPolicy")
    deny = policies["docproc-default-deny"]["spec"]
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "docproc",
        "app.kubernetes.io/instance": "docproc",
    }
    assert deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny

    def sources(policy: str) -> set[str]:
        return {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in policies[policy]["spec"]["ingress"]
            for peer in rule["from"]
        }

    assert sources("docproc-minio") == {"flow-run", "minio-setup", "dask-worker"}
    assert sources("docproc-server") == {"worker", "pool-apply", "flow-run", "events", "dask-worker"}
    assert sources("docproc-dask-scheduler") == {"flow-run", "dask-worker"}
    assert sources("docproc-events") == {"minio"}
    # Every component's pods carry the labels the policies select on.
    for where, _pod in pod_specs(objs):
        kind, obj_name = where.split("/")
        labels = next(o for o in objs if o["metadata"]["name"] == obj_name and o["kind"] == kind)["spec"][
            "template"
        ]["metadata"]["labels"]
        assert labels.items() >= deny["podSelector"]["matchLabels"].items(), where


# -- components ----------------------------------------------------------------------------


def test_dask_workers_scale_and_retire_gracefully(chart: Chart) -> None:
    objs = chart.render(VALUES_FILES["production"])
    v = values("values-production.yaml")["dask"]["worker"]
    hpa = by_kind(objs, "HorizontalPodAutoscaler")["docproc-dask-worker"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (
        v["autoscaling"]["minReplicas"],
        v["autoscaling"]["maxReplicas"],
    )
    assert (
        hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
        == v["autoscaling"]["targetCPUUtilizationPercentage"]
    )
    assert hpa["scaleTargetRef"]["name"] == "docproc-dask-worker"
    deployment = by_kind(objs, "Deployment")["docproc-dask-worker"]["spec"]
    assert "replicas" not in deployment  # the HPA owns it
    pod = deployment["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == v["terminationGracePeriodSeconds"]
    container = pod["containers"][0]
    assert container["args"][:3] == ["dask", "worker", "tcp://docproc-dask-scheduler:8786"]
    assert "docproc.dask_preload" in container["args"]
    # Ready once the preload has loaded the models (tests/test_k8s.py runs the command): the HPA
    # leaves a starting worker's CPU out of its average.
    ready_file = container["args"][container["args"].index("--ready-file") + 1]
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", ready_file]
    # Dask's "auto" memory limit divides the pod's limit by the node's cores over --nthreads:
    # the worker gets the container's whole limit instead (found on the kind cluster).
    assert container["args"][container["args"].index("--memory-limit") + 1] == "$(DASK_MEMORY_LIMIT)"
    env = {e["name"]: e for e in container["env"]}
    assert env["DASK_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": "worker",
        "resource": "limits.memory",
    }
    assert "retire_workers" in container["lifecycle"]["preStop"]["exec"]["command"][-1]
    pdb = by_kind(objs, "PodDisruptionBudget")["docproc-dask-worker"]["spec"]
    assert pdb["maxUnavailable"] == v["podDisruptionBudget"]["maxUnavailable"]
    service = by_kind(objs, "Service")["docproc-dask-scheduler"]["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == {"tcp-comm": 8786, "http-dashboard": 8787}


def _dask_config_of(env: list[dict[str, Any]]) -> dict[str, Any]:
    """The Dask configuration a process with this container env reads, by Dask's own parser."""
    return dask.config.collect_env({e["name"]: e["value"] for e in env if "value" in e})


def _dask_servers(objs: list[Manifest]) -> dict[str, list[dict[str, Any]]]:
    """Env of every Dask server the rendered chart runs: its Dask containers, or the per-run
    clusters' (operator mode: KubeCluster's env applies to their scheduler and workers)."""
    envs = {
        f"{o['metadata']['name']}/{c['name']}": c.get("env", [])
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("docproc-dask-")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    env = flow_run_env(objs)
    if "DOCPROC_DASK_CLUSTER_KWARGS" in env:
        envs["operator cluster"] = json.loads(env["DOCPROC_DASK_CLUSTER_KWARGS"])["env"]
    return envs


@pytest.mark.parametrize("name", ["default", "production", "operator", "gpu"])
def test_dask_servers_run_with_the_local_clusters_dask_config(chart: Chart, name: str) -> None:
    """Dask's profiler off, slower housekeeping and one queued unit per worker thread
    (flows/process.py DASK_SERVER_CONFIG) in every Dask server the chart runs, as Dask itself
    reads its environment; never in a flow run."""
    objs = chart.render(**{"dask.gpuWorker.enabled": True}) if name == "gpu" else render(chart, name)
    servers = _dask_servers(objs)
    expected = {
        "default": {"docproc-dask-scheduler/scheduler", "docproc-dask-worker/worker"},
        "production": {"docproc-dask-scheduler/scheduler", "docproc-dask-worker/worker"},
        "operator": {"operator cluster"},
        "gpu": {
            "docproc-dask-scheduler/scheduler",
            "docproc-dask-worker/worker",
            "docproc-dask-gpu-worker/worker",
        },
    }[name]
    assert set(servers) == expected
    for server, env in servers.items():
        config = _dask_config_of(env)
        for key, value in DASK_SERVER_CONFIG.items():
            assert dask.config.get(key, config=config) == value, (server, key, config)
    flow_run = flow_run_env(objs)
    assert not any(k.startswith("DASK_") for k in flow_run), flow_run


def test_dask_config_values_override_and_unset(chart: Chart) -> None:
    """A dask.config key set to null keeps Dask's default; a new dotted key reaches the servers."""
    objs = chart.render(
        **{
            "dask.config": {
                "distributed.admin.tick.interval": None,
                "distributed.scheduler.work-stealing": False,
            }
        }
    )
    for server, env in _dask_servers(objs).items():
        config = _dask_config_of(env)
        assert dask.config.get("distributed.admin.tick.interval", None, config=config) is None, server
        assert dask.config.get("distributed.scheduler.work-stealing", config=config) is False, server
        assert dask.config.get("distributed.worker.profile.enabled", config=config) is False, server


def test_prefect_server_storage(chart: Chart) -> None:
    objs = chart.render()
    server = by_kind(objs, "Deployment")["docproc-server"]["spec"]
    env = {e["name"]: e for e in server["template"]["spec"]["containers"][0]["env"]}
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"]["value"] == "sqlite+aiosqlite:////data/prefect.db"
    assert server["strategy"]["type"] == "Recreate"
    assert "docproc-server" in by_kind(objs, "PersistentVolumeClaim")
    prod = chart.render(VALUES_FILES["production"])
    assert "docproc-server" not in by_kind(prod, "PersistentVolumeClaim")
    env = {
        e["name"]: e
        for e in by_kind(prod, "Deployment")["docproc-server"]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "docproc-postgres",
        "key": "connection-url",
    }


def test_worker_and_pool_setup(chart: Chart) -> None:
    objs = chart.render()
    worker = by_kind(objs, "Deployment")["docproc-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"][:7] == ["prefect", "worker", "start", "--pool", "docproc", "--type", "kubernetes"]
    job = by_kind(objs, "Job")["docproc-pool-apply"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"] == [
        "docproc",
        "pool",
        "apply",
        "--type",
        "kubernetes",
        "--image",
        "ghcr.io/docproc/docproc:0.1.0",
        "--inbox",
        "s3://docproc/inbox",
    ]
    assert pod["containers"][0]["args"] == [
        "python",
        "/etc/docproc/configure_pool.py",
        "docproc",
        "/etc/docproc",
    ]
    cm = by_kind(objs, "ConfigMap")["docproc-pool"]["data"]
    assert cm["configure_pool.py"] == (CHART / "files" / "configure_pool.py").read_text()
    template = json.loads(cm["base-job-template.json"])
    props = template["variables"]["properties"]
    assert props["pod_watch_timeout_seconds"]["default"] >= 300
    assert (
        props["finished_job_ttl"]["default"] == values()["worker"]["jobTemplate"]["ttlSecondsAfterFinished"]
    )


def test_minio_encryption_and_notification(chart: Chart) -> None:
    objs = chart.render()
    minio = by_kind(objs, "StatefulSet")["docproc-minio"]["spec"]
    env = {e["name"]: e for e in minio["template"]["spec"]["containers"][0]["env"]}
    assert env["MINIO_KMS_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "docproc-credentials"
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "minio-root-password"
    from flows.events import EVENTS_PATH  # the receiver's route

    assert env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_DOCPROC"]["value"] == f"http://docproc-events:8080{EVENTS_PATH}"
    assert "secretKeyRef" in env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_DOCPROC"]["valueFrom"]
    assert minio["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    setup = by_kind(objs, "Job")["docproc-minio-setup"]["spec"]["template"]["spec"]
    container = setup["containers"][0]
    # The setup runs on the docproc image (no `mc` image exists without a registry); the script
    # itself runs against a real MinIO in tests/test_k8s.py.
    assert container["image"] == "ghcr.io/docproc/docproc:0.1.0"
    assert container["args"] == [
        "python",
        "/etc/docproc/setup_minio.py",
        "--endpoint",
        "docproc-minio:9000",
        "--bucket",
        "docproc",
        "--sse",
        "--notify-arn",
        "arn:minio:sqs::DOCPROC:webhook",
        "--notify-prefix",
        "inbox/",
    ]
    cm = by_kind(objs, "ConfigMap")["docproc-minio-setup"]["data"]
    assert cm["setup_minio.py"] == (CHART / "files" / "setup_minio.py").read_text()
    images = {
        c["image"] for _, pod in pod_specs(objs) for c in pod.get("initContainers", []) + pod["containers"]
    }
    assert images == {"ghcr.io/docproc/docproc:0.1.0", "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"}
    events = by_kind(objs, "Deployment")["docproc-events"]["spec"]["template"]["spec"]["containers"][0]
    assert events["args"] == ["docproc", "events", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert {e["name"] for e in events["env"]} == {"PREFECT_API_URL", "DOCPROC_EVENTS_TOKEN"}


# -- values rejected, one case per rule ----------------------------------------------------

BAD_VALUES = [
    ("typo-top", {"imagee": {}}, "additional properties 'imagee' not allowed"),
    (
        "typo-nested",
        {"dask.worker.autoscalling": {}},
        "at '/dask/worker': additional properties 'autoscalling'",
    ),
    ("enum", {"dask.mode": "kubernetes"}, "at '/dask/mode': value must be one of 'scheduler', 'operator'"),
    (
        "pod-watch",
        {"worker.jobTemplate.podWatchTimeoutSeconds": 60},
        "podWatchTimeoutSeconds': minimum: got 60, want 300",
    ),
    ("setting", {"settings": {"dpii": 300}}, "invalid propertyName 'dpii'"),
    (
        "limit-typo",
        {"queues.critical.concurrencyLimitt": 3},
        "at '/queues/critical': additional properties 'concurrencyLimitt'",
    ),
    ("limit-negative", {"queues.bulk.concurrencyLimit": -1}, "/queues/bulk/concurrencyLimit"),
    ("limit-word", {"queues.critical.concurrencyLimit": "unlimited"}, "/queues/critical/concurrencyLimit"),
    (
        "job-watch-typo",
        {"worker.jobTemplate.jobWatchTimeoutSecs": 60},
        "at '/worker/jobTemplate': additional properties 'jobWatchTimeoutSecs'",
    ),
    (
        "job-watch-zero",
        {"worker.jobTemplate.jobWatchTimeoutSeconds": 0},
        "/worker/jobTemplate/jobWatchTimeoutSeconds",
    ),
    (
        "limits",
        {"queues.bulk.resources.limits": None},
        "at '/queues/bulk/resources': missing property 'limits'",
    ),
    ("quantity", {"queues.bulk.resources.requests.memory": "lots"}, "/queues/bulk/resources/requests/memory"),
    ("sse-enum", {"s3.sse": "kms"}, "at '/s3/sse': value must be one of 'none', 's3', 'c'"),
    (
        "replicas",
        {"server.replicas": 2},
        "server.replicas: more than 1 replica needs server.database.type=postgresql",
    ),
    (
        "postgres-secret",
        {"server.database.type": "postgresql"},
        "server.database.postgresql.existingSecret: required with server.database.type=postgresql",
    ),
    (
        "minio-secret",
        {"minio.auth.existingSecret": ""},
        "minio.auth.existingSecret: required with minio.enabled=true",
    ),
    ("s3-endpoint", {"minio.enabled": False}, "s3.endpoint: required with minio.enabled=false"),
    ("s3-secret", {"minio.enabled": False, "s3.endpoint": "s3.example.com"}, "s3.existingSecret: required"),
    (
        "events-secret",
        {"events.auth.existingSecret": ""},
        "events.auth.existingSecret: required with events.enabled=true",
    ),
    ("notify", {"events.enabled": False}, "minio.notification.enabled: needs events.enabled=true"),
    (
        "hpa",
        {"dask.worker.autoscaling.minReplicas": 5},
        "dask.worker.autoscaling.minReplicas: 5 is above dask.worker.autoscaling.maxReplicas (4)",
    ),
    (
        "queue-order",
        {"queues.standard.priority": 200},
        "queues.standard.priority: must be lower than queues.bulk.priority (100)",
    ),
    (
        "class-order",
        {"queues.critical.priorityClass.value": 10},
        "queues.critical.priorityClass.value: must be higher than "
        "queues.standard.priorityClass.value (10000)",
    ),
    (
        "class-name",
        {"queues.standard.priorityClass.name": "docproc-bulk"},
        'queues.standard.priorityClass.name: "docproc-bulk" is also queues.bulk.priorityClass.name',
    ),
]


@pytest.mark.parametrize(("case", "overrides", "message"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_rejected(chart: Chart, case: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as exc:
        chart.render(**overrides)
    assert message in str(exc.value)


def test_validation_rules_all_have_a_case() -> None:
    rules = re.findall(r"fail", (CHART / "templates" / "_validation.tpl").read_text())
    validation_cases = [
        c
        for c in BAD_VALUES
        if c[0]
        in {
            "replicas",
            "postgres-secret",
            "minio-secret",
            "s3-endpoint",
            "s3-secret",
            "events-secret",
            "notify",
            "hpa",
            "queue-order",
            "class-order",
            "class-name",
        }
    ]
    assert len(rules) == len(validation_cases)
