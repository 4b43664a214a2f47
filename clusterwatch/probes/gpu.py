"""NVIDIA GPUs through NVML: utilisation, memory, temperature, power.

No GPU or no driver is "not present", never an error: most nodes of a small cluster have none.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from clusterwatch.probes.values import finite, label

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
    name = label(_text(nvml.nvmlDeviceGetName(handle)), 80)
    uuid = label(_text(_optional(lambda: nvml.nvmlDeviceGetUUID(handle)) or f"gpu{index}"), 80)
    metrics: dict[str, float] = {}

    def keep(key: str, value: Any, scale: float = 1.0) -> float | None:
        """A reading as a finite figure; a driver's odd value (NaN, a sentinel too large) is left out."""
        number = finite(value)
        if number is not None:
            metrics[key] = number / scale
        return number

    util = _optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    if util is not None:
        keep("utilization_percent", getattr(util, "gpu", None))
        keep("memory_utilization_percent", getattr(util, "memory", None))
    mem = _optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    if mem is not None:
        used = keep("memory_used_bytes", getattr(mem, "used", None))
        total = keep("memory_total_bytes", getattr(mem, "total", None))
        if used is not None and total:
            keep("memory_percent", round(100.0 * (used / total), 1))
    keep("temperature_celsius", _optional(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
    keep("power_watts", _optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle)), 1000.0)
    return GpuReading(index, name, uuid, metrics)


def _optional(read: Any) -> Any:
    """Some GPUs don't report everything (NVMLError_NotSupported): skip that figure only."""
    try:
        return read()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
