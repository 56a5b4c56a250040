"""The chart's GPU Dask worker group (dask.gpuWorker), rendered by the real helm and checked
against Kubernetes' schemas. No GPU node can run here: the rendering is what is tested."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.helm import KUBE_VERSIONS, Chart, HelmError, Manifest, k8s_errors

GPU_VALUES: dict[str, Any] = {
    "dask.gpuWorker.enabled": True,
    "dask.gpuWorker.replicas": 2,
    "image.tag": "1.2.3",
}


def gpu_deployment(objs: list[Manifest]) -> Manifest:
    [deployment] = [
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("dask-gpu-worker")
    ]
    return deployment


def test_gpu_workers_are_off_by_default(chart: Chart) -> None:
    assert not [o for o in chart.render() if o["metadata"]["name"].endswith("dask-gpu-worker")]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_gpu_worker_group_is_valid_kubernetes(chart: Chart, version: str) -> None:
    objs = chart.render(**GPU_VALUES)
    assert [e for o in objs for e in k8s_errors(o, version)] == []


def test_gpu_worker_pods_ask_for_a_gpu_on_gpu_nodes(chart: Chart) -> None:
    deployment = gpu_deployment(chart.render(**GPU_VALUES))
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    # The CUDA variant of the image: same repository, tag with the suffix.
    assert container["image"].endswith(":1.2.3-cuda")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DOCPROC_GPU"] == "true"
    assert "docproc.dask_preload" in container["args"]
    # Ready once its models are loaded, like the CPU workers (tests/test_k8s.py runs that command).
    ready_file = container["args"][container["args"].index("--ready-file") + 1]
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", ready_file]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_gpu_worker_image_and_count_are_set_by_values(chart: Chart) -> None:
    deployment = gpu_deployment(
        chart.render(
            **GPU_VALUES,
            **{
                "dask.gpuWorker.gpus": 2,
                "dask.gpuWorker.image": {"repository": "r/gpu", "tag": "cu12", "tagSuffix": ""},
            },
        )
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "r/gpu:cu12"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "GPU=2" in container["args"]


def test_gpu_worker_values_are_checked_by_the_schema(chart: Chart) -> None:
    with pytest.raises(HelmError, match="gpus"):
        chart.render(**{"dask.gpuWorker.gpus": 0})
    with pytest.raises(HelmError, match="gpuWorker"):
        chart.render(**{"dask.gpuWorker.gpu": 1})


def test_gpu_workers_need_the_scheduler_mode(chart: Chart) -> None:
    objs = chart.render(**GPU_VALUES, **{"dask.mode": "operator"})
    assert not [o for o in objs if o["metadata"]["name"].endswith("dask-gpu-worker")]
