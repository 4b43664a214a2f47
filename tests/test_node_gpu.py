"""This machine's resources, and NVIDIA GPUs (absent here: "not present", never an error)."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psutil
import pynvml
import pytest

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


GiB = 2**30


@dataclass
class FakeGpu:
    """One GPU as NVML describes it; `unsupported` lists the pynvml functions it answers NotSupported (a GeForce)."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-1234"
    pci: str = "00000000:3B:00.0"
    utilization: tuple[int, int] = (87, 40)  # gpu, memory (percent)
    memory: tuple[int, int] = (60 * GiB, 80 * GiB)  # used, total
    temperature: int = 65
    power_mw: int = 350_000
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)  # (error type, counter type) -> count
    retired: dict[int, list[int]] = field(default_factory=dict)  # cause -> page addresses
    retired_pending: bool = False
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)  # correctable, uncorrectable, pending, failure
    clocks_event_reasons: int = 0
    compute: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used GPU memory)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    unsupported: set[str] = field(  # an H100 remaps rows instead of retiring pages; no power figure, for the tests
        default_factory=lambda: {
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetRetiredPages",
            "nvmlDeviceGetRetiredPagesPendingStatus",
        }
    )
    lost: bool = False  # fallen off the bus: NVML_ERROR_GPU_IS_LOST
    permitted: bool = True  # False: listed, but not this process's (a container given other GPUs)
    reset_required: bool = False


class FakeEventSet:
    def __init__(self) -> None:
        self.registered: dict[int, int] = {}  # device address -> event types
        self.queue: deque[pynvml.c_nvmlEventData_t] = deque()
        self.freed = False


class FakeNVML:
    """pynvml as NVML answers it (no GPU on the test machines): its real constants, exception classes,
    structures and device handles (ctypes pointers), the functions the GPU probe calls under their real
    names, a refcounted init, and XID events that reach only the event sets registered before they happen."""

    def __init__(self, *gpus: FakeGpu, driver: bool = True) -> None:
        for attr in dir(pynvml):
            if attr.startswith(("NVML_", "NVMLError", "nvmlEventType", "nvmlClocks")):
                setattr(self, attr, getattr(pynvml, attr))
        self.gpus = list(gpus)  # what nvmlDeviceGetCount lists: remove one and it has gone from the device list
        self.driver = driver
        self.inits = 0  # NVML's refcount
        self.init_calls = 0
        self.sets: list[FakeEventSet] = []
        self._address: dict[int, int] = {}  # id(gpu) -> its handle's address

    def _fail(self, code: int) -> NoReturn:
        raise pynvml.NVMLError(code)  # NVMLError(code) is the subclass for that code, as pynvml raises it

    def _live(self) -> None:
        if self.inits <= 0:
            self._fail(pynvml.NVML_ERROR_UNINITIALIZED)

    def _handle(self, gpu: FakeGpu) -> Any:
        address = self._address.setdefault(id(gpu), 0x1000 * (len(self._address) + 1))
        return ctypes.cast(ctypes.c_void_p(address), pynvml.c_nvmlDevice_t)

    def _gpu(self, handle: Any, function: str) -> FakeGpu:
        self._live()
        address = ctypes.cast(handle, ctypes.c_void_p).value
        gpu = next((g for g in self.gpus if self._address.get(id(g)) == address), None)
        if gpu is None or gpu.lost:
            self._fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        if gpu.reset_required:
            self._fail(pynvml.NVML_ERROR_RESET_REQUIRED)
        if function in gpu.unsupported:
            self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def xid(self, gpu: FakeGpu, code: int) -> int:
        """The driver reports XID `code` on `gpu`; how many event sets it reached."""
        reached = 0
        for events in self.sets:
            if events.registered.get(self._address.get(id(gpu), -1), 0) & pynvml.nvmlEventTypeXidCriticalError:
                data = pynvml.c_nvmlEventData_t()
                data.device = self._handle(gpu)
                data.eventType = pynvml.nvmlEventTypeXidCriticalError
                data.eventData = code
                events.queue.append(data)
                reached += 1
        return reached

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if not self.driver:
            self._fail(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self._live()
        self.inits -= 1
        if self.inits == 0:
            self.sets.clear()  # the driver's event sets go with the last session

    def nvmlSystemGetDriverVersion(self) -> str:
        self._live()
        return "570.86.15"

    def nvmlDeviceGetCount(self) -> int:
        self._live()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._live()
        if not 0 <= index < len(self.gpus):
            self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if not gpu.permitted:  # nvmlDeviceGetCount_v2 counts it all the same
            self._fail(pynvml.NVML_ERROR_NO_PERMISSION)
        if gpu.lost:  # as nvidia-smi shows it: "Unable to determine the device handle for GPU ...: GPU is lost"
            self._fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        return self._handle(gpu)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._gpu(handle, "nvmlDeviceGetPciInfo").pci.encode()
        return info

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu, memory = self._gpu(handle, "nvmlDeviceGetUtilizationRates").utilization
        return pynvml.c_nvmlUtilization_t(gpu=gpu, memory=memory)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        used, total = self._gpu(handle, "nvmlDeviceGetMemoryInfo").memory
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle, "nvmlDeviceGetTemperature").temperature

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetTotalEccErrors").ecc.get((errorType, counterType), 0)

    def nvmlDeviceGetRetiredPages(self, device: Any, sourceFilter: int) -> list[int]:
        return list(self._gpu(device, "nvmlDeviceGetRetiredPages").retired.get(sourceFilter, []))

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int:
        pending = self._gpu(device, "nvmlDeviceGetRetiredPagesPendingStatus").retired_pending
        return pynvml.NVML_FEATURE_ENABLED if pending else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        return self._gpu(device, "nvmlDeviceGetRemappedRows").remapped_rows

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons").clocks_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").clocks_event_reasons

    def _processes(self, listed: list[tuple[int, int | None]]) -> list[Any]:
        return [
            pynvml.nvmlFriendlyObject(
                {"pid": pid, "usedGpuMemory": used, "gpuInstanceId": 0xFFFFFFFF, "computeInstanceId": 0xFFFFFFFF}
            )
            for pid, used in listed
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(self._gpu(handle, "nvmlDeviceGetComputeRunningProcesses").compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(self._gpu(handle, "nvmlDeviceGetGraphicsRunningProcesses").graphics)

    def nvmlEventSetCreate(self) -> FakeEventSet:
        self._live()
        events = FakeEventSet()
        self.sets.append(events)
        return events

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: FakeEventSet) -> None:
        self._gpu(handle, "nvmlDeviceRegisterEvents")
        address = ctypes.cast(handle, ctypes.c_void_p).value
        eventSet.registered[address] = eventSet.registered.get(address, 0) | eventTypes

    def nvmlEventSetWait_v2(self, eventSet: FakeEventSet, timeoutms: int) -> Any:
        self._live()
        if eventSet.freed:
            self._fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not eventSet.queue:
            self._fail(pynvml.NVML_ERROR_TIMEOUT)  # as pynvml says: "raises NVML_ERROR_TIMEOUT exception on timeout"
        return eventSet.queue.popleft()

    def nvmlEventSetWait(self, eventSet: FakeEventSet, timeoutms: int) -> Any:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: FakeEventSet) -> None:
        self._live()
        eventSet.freed = True
        self.sets.remove(eventSet)


def fake_nvml(temperature: int = 65) -> FakeNVML:
    """One H100 that reports no power draw (NotSupported), as the GPU probe's first tests knew it."""
    return FakeNVML(FakeGpu(temperature=temperature))


def test_the_fake_speaks_pynvml():
    """Every NVML call of the fake is pynvml's, with the same parameters; constants and errors are pynvml's own."""
    fake = fake_nvml()
    calls = [name for name in dir(fake) if name.startswith("nvml") and callable(getattr(fake, name))]
    assert len(calls) > 20
    for name in calls:
        real = getattr(pynvml, name, None)
        assert real is not None, f"pynvml has no {name}"
        assert list(inspect.signature(getattr(fake, name)).parameters) == list(inspect.signature(real).parameters), name
    assert fake.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()


def test_survey_maps_nvml_readings():
    found = gpu.survey(fake_nvml(), watch=gpu.Watch())
    assert found.present and found.error is None
    [reading] = found.gpus
    assert reading.name == "NVIDIA H100 80GB HBM3" and reading.uuid == "GPU-1234"
    assert reading.metrics["utilization_percent"] == 87
    assert reading.metrics["memory_percent"] == 75.0
    assert reading.metrics["temperature_celsius"] == 65
    assert "power_watts" not in reading.metrics  # not supported on this GPU: skipped, not an error
    assert reading.details["not_read"] == {
        "power": "Not Supported",
        "retired_pages": "Not Supported",
        "retired_pages_pending": "Not Supported",
    }


def test_hot_gpu_is_critical(tmp_path: Path, monkeypatch):
    hot = gpu.survey(fake_nvml(93), watch=gpu.Watch())
    monkeypatch.setattr(gpu, "survey", lambda **_: hot)
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
    monkeypatch.setattr(gpu, "WATCH", gpu.Watch())
    monkeypatch.setattr(gpu, "survey", lambda **_: stuck.wait(8))
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
