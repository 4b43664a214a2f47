"""This machine's resources, and NVIDIA GPUs (absent here: "not present", never an error)."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from pathlib import Path

import psutil

from clusterwatch.config.schema import Config, NodeCheck
from clusterwatch.engine.once import run_probe
from clusterwatch.model import Group, Status
from clusterwatch.probes import blocking, gpu
from clusterwatch.probes.base import ProbeContext, new_http_session
from tests.conftest import observe
from tests.helpers import wait_until


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
                    "thresholds": {  # cpu and load off: a busy test machine must not decide this test
                        "memory": {"warning": max(0.0, used - 1), "critical": 100},
                        "cpu": {"warning": None, "critical": None},
                        "load": {"warning": None, "critical": None},
                    },
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


NO_LIMITS = {k: {"warning": None, "critical": None} for k in ("cpu", "memory", "disk", "load")}


def test_hung_mount_is_unknown_and_starves_nothing(monkeypatch):
    """statvfs on a hung NFS mount does not return: that disk is unknown within the probe's timeout,
    the loop keeps answering (a DNS lookup meanwhile takes no longer than usual), and the next
    round does not start a second stuck call."""
    stuck = threading.Event()
    real = psutil.disk_usage

    def disk_usage(path: str):
        if path == "/hung":
            stuck.wait(8)  # bounded: long enough to show the loop was never blocked
        return real("/")

    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    check = NodeCheck(
        name="system", kind="node", gpus=False, cpu_sample=0.1, timeout=1.0, disks=["/", "/hung"], thresholds=NO_LIMITS
    )

    async def round_with_lookup() -> tuple[dict, float, float]:
        async with new_http_session() as session:
            started = time.monotonic()
            probe = asyncio.create_task(run_probe(check, ProbeContext(config=Config(), http=session)))
            await asyncio.sleep(0.3)  # the probe is now waiting on the hung mount
            await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("localhost", 80), 5)
            lookup = time.monotonic() - started  # since the probe started: a blocked loop would show here
            observed = await probe
            return {o.name: o for o in observed}, lookup, time.monotonic() - started

    try:
        first, lookup, elapsed = asyncio.run(round_with_lookup())
        assert lookup < 2 and elapsed < 4  # the stuck call (8 s) held neither the loop nor the probe
        hung = first["system/disk:/hung"]
        assert hung.status is Status.UNKNOWN and "no answer within 1s" in hung.message and "hung mount" in hung.message
        assert first["system/disk:/"].status is Status.OK and first["system"].status is Status.OK
        second, _, _ = asyncio.run(round_with_lookup())
        assert "still blocked" in second["system/disk:/hung"].message
        assert list(blocking.disks.busy()) == ["/hung"]  # one thread for the bad mount, not one per round
    finally:
        stuck.set()
        wait_until(lambda: not blocking.disks.busy(), 15, what="the stuck statvfs to return")


def test_hung_nvml_is_an_unknown_gpu(tmp_path: Path, monkeypatch):
    stuck = threading.Event()
    monkeypatch.setattr(gpu, "survey", lambda: stuck.wait(8))
    config = {"checks": [{"name": "system", "kind": "node", "cpu_sample": "100ms", "timeout": "1s"}]}
    try:
        started = time.monotonic()
        obs = observe(tmp_path, config)
        assert time.monotonic() - started < 5
        card = obs["system/gpu"]
        assert card.status is Status.UNKNOWN and card.message.startswith("NVML: no answer within 1s")
    finally:
        stuck.set()
        wait_until(lambda: not blocking.nvml.busy(), 15, what="the stuck NVML call to return")
