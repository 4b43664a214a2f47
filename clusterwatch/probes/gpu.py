"""NVIDIA GPUs through NVML: utilisation, memory, temperature, power.

No GPU or no driver is "not present", never an error: most nodes of a small cluster have none.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

_NOT_PRESENT = (
    "NVMLError_LibraryNotFound",
    "NVMLError_DriverNotLoaded",
    "NVMLError_NoPermission",
    "NVMLError_NotSupported",
)
_lock = threading.Lock()  # NVML init/shutdown are process-global


@dataclass
class GpuReading:
    index: int
    name: str
    uuid: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class GpuSurvey:
    present: bool
    reason: str  # why none are present, or an NVML error
    gpus: list[GpuReading] = field(default_factory=list)
    error: str | None = None


def survey(nvml: Any = None) -> GpuSurvey:
    """Blocking (a wedged driver can hang it): run it in `blocking.nvml`. `nvml` is pynvml (injectable for tests)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return GpuSurvey(False, "nvidia-ml-py is not installed")
    with _lock:
        try:
            nvml.nvmlInit()
        except Exception as exc:
            if type(exc).__name__ in _NOT_PRESENT:
                return GpuSurvey(False, f"no NVIDIA GPU driver ({exc})")
            return GpuSurvey(False, "", error=f"NVML init failed: {exc}")
        try:
            count = nvml.nvmlDeviceGetCount()
            if count == 0:
                return GpuSurvey(False, "NVML found no GPU")
            return GpuSurvey(True, "", [_read(nvml, i) for i in range(count)])
        except Exception as exc:
            return GpuSurvey(True, "", error=f"NVML error: {exc}")
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()


def _read(nvml: Any, index: int) -> GpuReading:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    uuid = _text(_optional(lambda: nvml.nvmlDeviceGetUUID(handle)) or f"gpu{index}")
    metrics: dict[str, float] = {}
    util = _optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    if util is not None:
        metrics["utilization_percent"] = float(util.gpu)
        metrics["memory_utilization_percent"] = float(util.memory)
    mem = _optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    if mem is not None:
        metrics["memory_used_bytes"] = float(mem.used)
        metrics["memory_total_bytes"] = float(mem.total)
        if mem.total:
            metrics["memory_percent"] = round(100.0 * mem.used / mem.total, 1)
    temp = _optional(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    if temp is not None:
        metrics["temperature_celsius"] = float(temp)
    power = _optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    if power is not None:
        metrics["power_watts"] = power / 1000.0
    return GpuReading(index, name, uuid, metrics)


def _optional(read: Any) -> Any:
    """Some GPUs don't report everything (NVMLError_NotSupported): skip that figure only."""
    try:
        return read()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
