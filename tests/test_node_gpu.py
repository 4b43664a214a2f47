"""This machine's resources, and NVIDIA GPUs (absent here: "not present", never an error)."""

from __future__ import annotations

import types
from pathlib import Path

import psutil

from clusterwatch.model import Group, Status
from clusterwatch.probes import gpu
from tests.conftest import observe


def test_node_reads_this_machine(tmp_path: Path):
    obs = observe(tmp_path, {"checks": [{"name": "system", "kind": "node", "cpu_sample": "200ms"}]})
    system = obs["system"]
    assert system.group is Group.SYSTEM and system.status in (Status.OK, Status.WARNING, Status.CRITICAL)
    assert 0 <= system.metrics["cpu_percent"] <= 100
    assert system.metrics["memory_total_bytes"] == psutil.virtual_memory().total
    assert system.metrics["cpus"] == psutil.cpu_count()
    root = obs["system/disk:/"]
    assert abs(root.metrics["disk_percent"] - psutil.disk_usage("/").percent) < 1


def test_thresholds_decide_the_status(tmp_path: Path):
    used = psutil.virtual_memory().percent
    obs = observe(
        tmp_path,
        {
            "checks": [
                {
                    "name": "system",
                    "kind": "node",
                    "gpus": False,
                    "cpu_sample": "100ms",
                    "thresholds": {"memory": {"warning": max(0.0, used - 1), "critical": 100}},
                }
            ]
        },
    )
    assert obs["system"].status is Status.WARNING
    assert "memory" in obs["system"].message and "(warning)" in obs["system"].message


def test_no_gpu_is_not_present_not_an_error(tmp_path: Path):
    found = gpu.survey()
    assert not found.present and found.error is None
    obs = observe(tmp_path, {"checks": [{"name": "system", "kind": "node", "cpu_sample": "100ms"}]})
    assert not [name for name in obs if "gpu" in name]
    assert obs["system"].details["gpu"].startswith("not present")


class FakeNVMLError(Exception):
    pass


def fake_nvml(temperature: int = 65) -> types.SimpleNamespace:
    """pynvml's calls as NVML answers them for one GPU (no GPU on the test machines)."""

    def not_supported(handle):
        raise FakeNVMLError("Not Supported")

    return types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=60 * 2**30, total=80 * 2**30, free=20 * 2**30),
        nvmlDeviceGetTemperature=lambda h, sensor: temperature,
        nvmlDeviceGetPowerUsage=not_supported,
    )


def test_survey_maps_nvml_readings():
    found = gpu.survey(fake_nvml())
    assert found.present and found.error is None
    [reading] = found.gpus
    assert reading.name == "NVIDIA H100 80GB HBM3" and reading.uuid == "GPU-1234"
    assert reading.metrics["utilization_percent"] == 87
    assert reading.metrics["memory_percent"] == 75.0
    assert reading.metrics["temperature_celsius"] == 65
    assert "power_watts" not in reading.metrics  # not supported on this GPU: skipped, not an error


def test_hot_gpu_is_critical(tmp_path: Path, monkeypatch):
    hot = gpu.survey(fake_nvml(93))
    monkeypatch.setattr(gpu, "survey", lambda: hot)
    obs = observe(tmp_path, {"checks": [{"name": "system", "kind": "node", "cpu_sample": "100ms"}]})
    card = obs["system/gpu0"]
    assert card.status is Status.CRITICAL and card.message == "NVIDIA H100 80GB HBM3: 93°C (critical)"
