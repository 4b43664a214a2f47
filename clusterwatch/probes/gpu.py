"""NVIDIA GPUs through NVML: load and temperature, and what goes wrong with a GPU that a load figure hides.

No GPU or no driver is "not present", never an error: most nodes of a small cluster have none. But a
GPU seen earlier in this run (or promised by `expect_gpus`) that NVML no longer lists, or one NVML
calls lost ("fallen off the bus"), is critical and named.

XID errors reach NVML as events, not as a value to poll: a gauge of the last XID hides a burst and
keeps a stale one forever. So the NVML session stays open between rounds with an event set
registered on every GPU, each round drains what arrived, and the XIDs are counted per GPU over a
window. Events only reach a set registered before they happen: the count covers the time this
process has been watching, and says so while that is shorter than the window.

Every reading but the GPU list itself is optional: a consumer GPU answers NotSupported to many
(ECC, retired pages, processes), and that figure is simply absent, never a failed probe.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from clusterwatch.config.durations import format_duration
from clusterwatch.model import Status
from clusterwatch.probes.values import finite, label

_NOT_PRESENT = (
    "NVMLError_LibraryNotFound",
    "NVMLError_DriverNotLoaded",
    "NVMLError_NoPermission",
    "NVMLError_NotSupported",
)
# The GPU itself is unusable: every further call on it fails the same way.
_UNUSABLE = {
    "NVMLError_GpuIsLost": "has fallen off the bus",
    "NVMLError_ResetRequired": "needs a reset",
}
# XIDs that mean the GPU (not the program on it) is failing: critical when seen in the window. Others
# (13 graphics engine exception, 31 memory page fault, 43 a program stopped) are usually a program's
# fault: a warning, so that a burst of them is seen.
CRITICAL_XIDS: dict[int, str] = {
    48: "double-bit ECC error",
    63: "ECC page retirement or row remapping",
    64: "ECC page retirement or row remapping failed",
    74: "NVLink error",
    79: "fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}
_XID_WORDS: dict[int, str] = {
    **CRITICAL_XIDS,
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    68: "video processor exception",
    92: "high single-bit ECC error rate",
}
_XID_EVENT = 0x0000000000000008  # nvmlEventTypeXidCriticalError
_MAX_EVENTS = 10_000  # drained per round at most: a storm must not hold the round
_KEPT_XIDS = 10_000  # kept per GPU at most
# nvmlClocksEventReason* bits (the same values as the deprecated nvmlClocksThrottleReason*)
_SLOWDOWNS = (  # a slowdown makes the GPU slower than it should be: warning
    (0x40, "hardware thermal slowdown"),
    (0x20, "software thermal slowdown"),
    (0x80, "hardware power brake slowdown"),
    (0x08, "hardware slowdown"),  # set too whenever one of the two hardware ones above is
)
_POWER_CAP = 0x04
_OTHER_REASONS = ((0x01, "idle"), (0x02, "application clocks"), (0x10, "sync boost"), (0x100, "display clock"))


@dataclass
class GpuProcess:
    pid: int
    name: str | None  # None: the PID is not visible from here (another PID namespace, gone meanwhile)
    memory_bytes: float | None  # None: NVML cannot say (Windows WDDM, some containers)
    kind: str  # "compute" (CUDA: Ollama, PyTorch) or "graphics"


@dataclass
class GpuReading:
    index: int  # its entity, `<check>/gpu<index>`: NVML's index when first seen, kept for its UUID all run long
    name: str
    uuid: str
    metrics: dict[str, float] = field(default_factory=dict)
    findings: list[tuple[Status, str]] = field(default_factory=list)  # what is wrong with it, worst first
    notes: list[str] = field(default_factory=list)  # facts for the message that change no status (power cap)
    processes: list[GpuProcess] | None = None  # None: NVML cannot list them on this GPU
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class GpuSurvey:
    present: bool
    reason: str  # why none are present, or an NVML error
    gpus: list[GpuReading] = field(default_factory=list)
    error: str | None = None
    expected: int | None = None  # `expect_gpus`, when set
    shortfall: str | None = None  # fewer GPUs listed than expected: for `<check>/gpu`
    driver: str | None = None
    not_permitted: list[int] = field(default_factory=list)  # NVML indexes of GPUs this process may not use
    listed: int = 0  # how many GPUs NVML lists


@dataclass
class _Seen:
    entity: int
    name: str
    nvml_index: int
    pci: str | None = None


class _Unusable(Exception):
    """NVML says this GPU is lost or needs a reset: no further reading of it makes sense."""


class Watch:
    """What one process keeps of NVML between rounds: the open session and its XID event set, the GPUs
    seen in this run (so one that goes missing is named) and the XIDs of the longest window asked for.

    Bound to one NVML module: another one (a test's fake) starts a new run."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:  # internal times only: never wall time
        self.clock = clock
        self.lock = threading.Lock()
        self._start(None)

    def _start(self, nvml: Any) -> None:
        self.nvml = nvml
        self.seen: dict[str, _Seen] = {}  # uuid -> where and what it was
        self.xids: dict[str, deque[tuple[float, int]]] = {}  # uuid -> (when drained, XID code), oldest first
        self.watched_since: dict[str, float] = {}  # uuid -> when its XIDs were first registered
        self.xid_note: dict[str, str] = {}  # uuid -> why its XIDs are not counted
        self.keep = 0.0  # the longest window asked for
        self._session_reset()

    def _session_reset(self) -> None:
        self.open = False
        self.reopen = False  # something changed (a GPU lost or missing): enumerate afresh next round
        self.events: Any = None
        self.events_error: str | None = None  # the event set could not be made
        self.uuid_of: dict[Any, str] = {}  # handle -> uuid, this session
        self.registered: set[Any] = set()  # handles whose XIDs reach `events` (or never can: NotSupported)

    def known(self) -> list[tuple[int, str, str]]:
        """(entity, name, uuid) of every GPU seen in this run; safe without the lock (a copy)."""
        return [(s.entity, s.name, uuid) for uuid, s in list(self.seen.items())]

    def survey(self, nvml: Any, xid_window: float, expect_gpus: int | None, why_none: str = "") -> GpuSurvey:
        with self.lock:
            if nvml is not self.nvml:
                self.close()
                self._start(nvml)
            self.keep = max(self.keep, xid_window)
            now = self.clock()
            if nvml is None:
                return self._absent(why_none, expect_gpus)
            if self.open and self.reopen:
                self._drain(now)  # what arrived since the last round, before the set goes
                self.close()
            if not self.open:
                try:
                    nvml.nvmlInit()
                except Exception as exc:
                    if type(exc).__name__ in _NOT_PRESENT:
                        return self._absent(f"no NVIDIA GPU driver ({exc})", expect_gpus)
                    return self._failed(f"NVML init failed: {exc}", expect_gpus)
                self.open = True
            try:
                count = int(nvml.nvmlDeviceGetCount())
            except Exception as exc:
                self.reopen = True
                return self._failed(f"NVML error: {exc}", expect_gpus)
            driver = _text(_quiet(lambda: nvml.nvmlSystemGetDriverVersion()) or "") or None
            answers = [(i, self._device_or_error(i, now)) for i in range(count)]
            found = [reading for _, reading in answers if reading is not None]
            listed = {reading.uuid for reading in found}
            now_listed = f"is no longer listed by NVML ({count} GPU{'s' * (count != 1)} now)"
            gone = [self._gone(uuid, now_listed) for uuid in self.seen]
            gone = [reading for reading in gone if reading.uuid not in listed]
            self._drain(now)
            readings = sorted(found + gone, key=lambda r: r.index)
            for reading in readings:
                self._xids(reading, now, xid_window)
                reading.findings.sort(key=lambda f: -f[0].severity)
                if driver:
                    reading.details["driver"] = driver
            if gone:
                self.reopen = True
            survey = GpuSurvey(count > 0 or bool(gone), "" if count else "NVML found no GPU", readings, driver=driver)
            survey.not_permitted = [i for i, reading in answers if reading is None]
            survey.listed = count
            return _expect(survey, expect_gpus, count)

    def close(self) -> None:
        """End the NVML session (the event set with it); the GPUs seen and their XIDs stay."""
        nvml = self.nvml
        if self.events is not None:
            with contextlib.suppress(Exception):
                nvml.nvmlEventSetFree(self.events)
        if self.open:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        self._session_reset()

    def _absent(self, reason: str, expect_gpus: int | None) -> GpuSurvey:
        gone = [self._gone(uuid, f"is gone: {reason}") for uuid in self.seen]
        return _expect(GpuSurvey(bool(gone), reason, gone), expect_gpus, 0)

    def _failed(self, error: str, expect_gpus: int | None) -> GpuSurvey:
        return GpuSurvey(bool(self.seen), "", self.unread(f"not read: {error}"), error=error, expected=expect_gpus)

    def unread(self, why: str) -> list[GpuReading]:
        """Every GPU seen in this run as unknown, `why`: an NVML that fails or hangs is no reason to forget them."""
        return [
            GpuReading(entity, name, uuid, findings=[(Status.UNKNOWN, why)], details={"uuid": uuid, "model": name})
            for entity, name, uuid in sorted(self.known())
        ]

    def _gone(self, uuid: str, why: str) -> GpuReading:
        seen = self.seen[uuid]
        where = ", ".join(filter(None, [uuid, seen.pci and f"PCI {seen.pci}"]))
        text = f"GPU {seen.nvml_index} ({where}), seen earlier in this run, {why}"
        details = {"uuid": uuid, "model": seen.name, "index": seen.nvml_index, "pci": seen.pci, "gone": True}
        return GpuReading(seen.entity, seen.name, uuid, findings=[(Status.CRITICAL, text)], details=details)

    def _entity(self, uuid: str, nvml_index: int, name: str) -> int:
        seen = self.seen.get(uuid)
        if seen is None:
            taken = {s.entity for s in self.seen.values()}
            entity = nvml_index if nvml_index not in taken else max(taken) + 1
            seen = self.seen[uuid] = _Seen(entity, name, nvml_index)
        seen.nvml_index, seen.name = nvml_index, name
        return seen.entity

    def _seen_at(self, nvml_index: int) -> str | None:
        return next((uuid for uuid, s in self.seen.items() if s.nvml_index == nvml_index), None)

    def _device_or_error(self, index: int, now: float) -> GpuReading | None:
        try:
            return self._device(index, now)
        except Exception as exc:  # an answer no NVML should give: this GPU unknown, the others still read
            return self._unreadable(index, f"GPU {index} cannot be read: {type(exc).__name__}: {exc}")

    def _device(self, index: int, now: float) -> GpuReading | None:
        """One GPU read; None for one this process may not use (a container given other GPUs of the machine)."""
        nvml = self.nvml
        reader = _Reader(nvml)
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            if type(exc).__name__ in _UNUSABLE:
                return self._lost(index, self._seen_at(index), exc)
            if type(exc).__name__ == "NVMLError_NoPermission" and self._seen_at(index) is None:
                return None
            return self._unreadable(index, f"GPU {index} cannot be read: NVML error: {exc}")
        key = _key(handle)
        uuid = self.uuid_of.get(key)
        try:
            if uuid is None:
                uuid = label(_text(reader.get("uuid", "nvmlDeviceGetUUID", handle) or f"gpu{index}"), 80)
                self.uuid_of[key] = uuid
            name = label(_text(reader.get("name", "nvmlDeviceGetName", handle) or f"GPU {index}"), 80)
            reading = GpuReading(self._entity(uuid, index, name), name, uuid)
            pci = reader.get("pci", "nvmlDeviceGetPciInfo", handle)
            if pci is not None:
                self.seen[uuid].pci = label(_text(getattr(pci, "busId", "")), 40) or None
            reading.details.update({"uuid": uuid, "model": name, "index": index, "pci": self.seen[uuid].pci})
            self._register(handle, uuid, reader, now)
            _load(nvml, handle, reader, reading)
            _memory_health(nvml, handle, reader, reading)
            _clocks(handle, reader, reading)
            _processes(handle, reader, reading)
        except _Unusable as exc:
            return self._lost(index, uuid, exc.__cause__ or exc)
        if reader.not_read:
            reading.details["not_read"] = reader.not_read
        return reading

    def _lost(self, index: int, uuid: str | None, exc: BaseException) -> GpuReading:
        self.reopen = True  # enumerate afresh next round: NVML may list it again, or no more
        seen = self.seen.get(uuid) if uuid else None
        name = seen.name if seen else f"GPU {index}"
        entity = self._entity(uuid, index, name) if uuid else self._free_entity(index)
        where = ", ".join(filter(None, [uuid, seen and seen.pci and f"PCI {seen.pci}"]))
        what = _UNUSABLE.get(type(exc).__name__, "is unusable")
        advice = "reset it (nvidia-smi -r) or reboot" if "bus" in what else "reset it (nvidia-smi -r)"
        text = f"GPU {index}{f' ({where})' if where else ''} {what}: NVML says {str(exc)!r}; {advice}"
        details = {"uuid": uuid, "model": name, "index": index, "lost": str(exc)}
        return GpuReading(entity, name, uuid or "", findings=[(Status.CRITICAL, text)], details=details)

    def _unreadable(self, index: int, why: str) -> GpuReading:
        self.reopen = True
        uuid = self._seen_at(index)
        seen = self.seen.get(uuid) if uuid else None
        entity = seen.entity if seen else self._free_entity(index)
        name = seen.name if seen else f"GPU {index}"
        return GpuReading(entity, name, uuid or "", findings=[(Status.UNKNOWN, why)], details={"index": index})

    def _free_entity(self, index: int) -> int:
        taken = {s.entity for s in self.seen.values()}
        return index if index not in taken else max(taken) + 1

    def _register(self, handle: Any, uuid: str, reader: _Reader, now: float) -> None:
        """XID events of this GPU into the session's event set, once per session."""
        key = _key(handle)
        if key in self.registered:
            return
        nvml = self.nvml
        if self.events is None and self.events_error is None:
            try:
                self.events = nvml.nvmlEventSetCreate()
            except Exception as exc:
                self.events_error = f"no NVML event set: {exc}"
        if self.events is None:
            self.xid_note[uuid] = self.events_error or "no NVML event set"
            return
        try:
            nvml.nvmlDeviceRegisterEvents(
                handle, getattr(nvml, "nvmlEventTypeXidCriticalError", _XID_EVENT), self.events
            )
        except Exception as exc:
            if type(exc).__name__ in _UNUSABLE:
                raise _Unusable() from exc
            self.xid_note[uuid] = f"XID events not watched: {exc}"
            if type(exc).__name__ == "NVMLError_NotSupported":
                self.registered.add(key)  # not worth asking again each round
            return
        self.registered.add(key)
        self.xid_note.pop(uuid, None)
        self.watched_since.setdefault(uuid, now)

    def _drain(self, now: float) -> None:
        """The XID events that arrived since the last round, stamped now (NVML's events carry no time)."""
        nvml = self.nvml
        if self.events is None:
            return
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or nvml.nvmlEventSetWait
        for _ in range(_MAX_EVENTS):
            try:
                data = wait(self.events, 0)
            except Exception as exc:
                if type(exc).__name__ != "NVMLError_Timeout":  # Timeout: none left
                    self.reopen = True  # a GPU lost meanwhile, most likely: this round's readings say which
                break
            if not int(getattr(data, "eventType", 0)) & _XID_EVENT:
                continue
            device = getattr(data, "device", None)
            uuid = self.uuid_of.get(_key(device))
            if uuid is None:
                uuid = label(_text(_quiet(lambda d=device: nvml.nvmlDeviceGetUUID(d)) or ""), 80)
            if uuid:
                self.xids.setdefault(uuid, deque(maxlen=_KEPT_XIDS)).append((now, int(data.eventData)))
        for kept in self.xids.values():
            while kept and kept[0][0] <= now - self.keep:
                kept.popleft()

    def _xids(self, reading: GpuReading, now: float, window: float) -> None:
        """The XIDs of the last `window`: how many, which, the last one; a GPU-failure XID among them is critical."""
        uuid = reading.uuid
        since = self.watched_since.get(uuid)
        if since is None:
            if uuid in self.xid_note:
                reading.details["xid"] = {"watched": False, "why": self.xid_note[uuid]}
            return
        recent = [code for at, code in self.xids.get(uuid, ()) if at > now - window]
        watched = now - since
        reading.metrics["xid_count"] = len(recent)
        reading.details["xid"] = {
            "window_s": window,
            "watched_s": round(watched, 1),
            "count": len(recent),
            "codes": dict(Counter(recent)),
            "last": recent[-1] if recent else None,
        }
        if not recent:
            return
        reading.metrics["xid_last"] = recent[-1]
        if watched >= window:
            span = f"in the last {format_duration(window)}"
        else:
            span = f"in the {format_duration(watched)} watched so far"
        counts = Counter(recent)
        last_at = {code: i for i, code in enumerate(recent)}
        listed = ", ".join(_xid_words(code, counts[code]) for code in sorted(counts, key=lambda code: -last_at[code]))
        text = f"{len(recent)} XID error{'s' * (len(recent) > 1)} {span}: {listed}"
        if len(counts) > 1:
            text += f"; last {recent[-1]}"
        critical = any(code in CRITICAL_XIDS for code in counts)
        reading.findings.append((Status.CRITICAL if critical else Status.WARNING, text))


def _xid_words(code: int, times: int) -> str:
    words = f"{code} ({_XID_WORDS[code]})" if code in _XID_WORDS else str(code)
    return f"{words} ×{times}" if times > 1 else words


WATCH = Watch()  # this process's NVML: shared by every node check (one machine, one set of GPUs)


def survey(
    nvml: Any = None, *, xid_window: float = 3600.0, expect_gpus: int | None = None, watch: Watch | None = None
) -> GpuSurvey:
    """Blocking (a wedged driver can hang it): run it in `blocking.nvml`. `nvml` is pynvml (injectable for tests)."""
    why_none = ""
    if nvml is None:
        why_none = _no_nvml_library()
    if nvml is None and not why_none:
        try:
            import pynvml as nvml
        except ImportError:
            why_none = "nvidia-ml-py is not installed"
    return (watch or WATCH).survey(nvml, xid_window, expect_gpus, why_none)


NVML_LIBRARY = "libnvidia-ml.so.1"  # what pynvml loads on Linux


def _no_nvml_library() -> str:
    """Why NVML cannot answer on this machine ("" when its library loads). Most nodes have no GPU: pynvml
    (over a megabyte of RSS for its structures) is imported only where the driver's library is there."""
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return "no NVIDIA GPU driver (NVML Shared Library Not Found)"  # pynvml's own words for it
    return ""


def unread(why: str, watch: Watch | None = None) -> list[GpuReading]:
    """The GPUs seen in this run, unknown for `why` (NVML hung): never taken for GPUs that went away."""
    return (watch or WATCH).unread(why)


def _expect(survey: GpuSurvey, expect_gpus: int | None, count: int) -> GpuSurvey:
    survey.expected = expect_gpus
    if expect_gpus is not None and count < expect_gpus:
        why = f": {survey.reason}" if count == 0 and survey.reason else ""
        survey.shortfall = f"expected {expect_gpus} GPU{'s' if expect_gpus > 1 else ''}, NVML lists {count}{why}"
    return survey


class _Reader:
    """One GPU's readings: one NVML cannot give (NotSupported, an older driver) is noted and skipped;
    a GPU that NVML calls lost ends the reading (`_Unusable`)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.not_read: dict[str, str] = {}

    def get(self, what: str, function: str, *args: Any) -> Any:
        call = getattr(self.nvml, function, None)
        if call is None:
            self.not_read[what] = f"{function} is not in this nvidia-ml-py"
            return None
        try:
            value = call(*args)
        except Exception as exc:
            if type(exc).__name__ in _UNUSABLE:
                raise _Unusable() from exc
            self.not_read[what] = label(str(exc) or type(exc).__name__, 80)
            return None
        self.not_read.pop(what, None)
        return value

    def const(self, name: str, default: int) -> int:
        return int(getattr(self.nvml, name, default))


def _keep(reading: GpuReading, key: str, value: Any, scale: float = 1.0) -> float | None:
    """A reading as a finite figure; a driver's odd value (NaN, a sentinel too large) is left out."""
    number = finite(value)
    if number is not None:
        reading.metrics[key] = number / scale
    return number


def _load(nvml: Any, handle: Any, reader: _Reader, reading: GpuReading) -> None:
    util = reader.get("utilization", "nvmlDeviceGetUtilizationRates", handle)
    if util is not None:
        _keep(reading, "utilization_percent", getattr(util, "gpu", None))
        _keep(reading, "memory_utilization_percent", getattr(util, "memory", None))
    mem = reader.get("memory", "nvmlDeviceGetMemoryInfo", handle)
    if mem is not None:
        used = _keep(reading, "memory_used_bytes", getattr(mem, "used", None))
        total = _keep(reading, "memory_total_bytes", getattr(mem, "total", None))
        if used is not None and total:
            _keep(reading, "memory_percent", round(100.0 * (used / total), 1))
    sensor = reader.const("NVML_TEMPERATURE_GPU", 0)
    _keep(reading, "temperature_celsius", reader.get("temperature", "nvmlDeviceGetTemperature", handle, sensor))
    _keep(reading, "power_watts", reader.get("power", "nvmlDeviceGetPowerUsage", handle), 1000.0)


def _memory_health(nvml: Any, handle: Any, reader: _Reader, reading: GpuReading) -> None:
    """ECC counters, retired pages (before Ampere) and remapped rows (Ampere and later)."""
    uncorrected = reader.const("NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    corrected = reader.const("NVML_MEMORY_ERROR_TYPE_CORRECTED", 0)
    volatile, aggregate = reader.const("NVML_VOLATILE_ECC", 0), reader.const("NVML_AGGREGATE_ECC", 1)
    counters = {
        "ecc_uncorrected_volatile": (uncorrected, volatile),
        "ecc_uncorrected_aggregate": (uncorrected, aggregate),
        "ecc_corrected_volatile": (corrected, volatile),
        "ecc_corrected_aggregate": (corrected, aggregate),
    }
    for key, (kind, counter) in counters.items():
        _keep(reading, key, reader.get("ecc", "nvmlDeviceGetTotalEccErrors", handle, kind, counter))
    m = reading.metrics
    if m.get("ecc_uncorrected_volatile", 0) > 0:
        n = int(m["ecc_uncorrected_volatile"])
        reading.findings.append(
            (Status.CRITICAL, f"{n} uncorrectable ECC error{'s' * (n > 1)} since the driver loaded")
        )
    elif m.get("ecc_uncorrected_aggregate", 0) > 0:
        n = int(m["ecc_uncorrected_aggregate"])
        reading.findings.append((Status.WARNING, f"{n} uncorrectable ECC error{'s' * (n > 1)} in the GPU's lifetime"))

    for key, cause in (
        ("retired_pages_sbe", reader.const("NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS", 0)),
        ("retired_pages_dbe", reader.const("NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR", 1)),
    ):
        pages = reader.get("retired_pages", "nvmlDeviceGetRetiredPages", handle, cause)
        if pages is not None:
            m[key] = float(len(pages))
    pending = reader.get("retired_pages_pending", "nvmlDeviceGetRetiredPagesPendingStatus", handle)
    if pending is not None:
        m["retired_pages_pending"] = float(int(pending) == reader.const("NVML_FEATURE_ENABLED", 1))
        if m["retired_pages_pending"]:
            reading.findings.append((Status.WARNING, "page retirement pending: reset the GPU or reboot to apply it"))

    rows = reader.get("remapped_rows", "nvmlDeviceGetRemappedRows", handle)
    if rows is not None and len(rows) == 4:
        correctable, uncorrectable, pending_remap, failed = (int(v) for v in rows)
        m.update(
            remapped_rows_correctable=float(correctable),
            remapped_rows_uncorrectable=float(uncorrectable),
            remap_pending=float(bool(pending_remap)),
            remap_failure=float(bool(failed)),
        )
        if failed:
            reading.findings.append((Status.CRITICAL, "row remapping failed: the GPU needs service"))
        elif pending_remap:
            reading.findings.append((Status.WARNING, "row remapping pending: reset the GPU to apply it"))


def _clocks(handle: Any, reader: _Reader, reading: GpuReading) -> None:
    """Why the clocks are held down now: thermal or hardware slowdown is a warning, the power cap a note."""
    reasons = reader.get("clocks_event_reasons", "nvmlDeviceGetCurrentClocksEventReasons", handle)
    if reasons is None:  # drivers and nvidia-ml-py before 12.535 have only the older name
        reasons = reader.get("clocks_event_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    if reasons is None:
        return
    reasons = int(reasons)
    reading.metrics["clocks_event_reasons"] = float(reasons)
    slow = [words for bit, words in _SLOWDOWNS if reasons & bit]
    if len(slow) > 1 and "hardware slowdown" in slow:
        slow.remove("hardware slowdown")  # the generic one: the specific ones say why
    active = slow + (["power cap"] if reasons & _POWER_CAP else []) + [w for b, w in _OTHER_REASONS if reasons & b]
    reading.details["clocks_held_by"] = active
    if slow:
        reading.findings.append((Status.WARNING, f"clocks slowed: {', '.join(slow)}"))
    if reasons & _POWER_CAP:
        reading.notes.append("clocks held at the power cap")


def _processes(handle: Any, reader: _Reader, reading: GpuReading) -> None:
    """Who is on this GPU, by PID and (where this process can see it) name, largest first."""
    found: list[GpuProcess] = []
    answered = False
    for kind, function in (
        ("compute", "nvmlDeviceGetComputeRunningProcesses"),
        ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
    ):
        listed = reader.get(f"{kind}_processes", function, handle)
        if listed is None:
            continue
        answered = True
        for proc in listed:
            pid = finite(getattr(proc, "pid", None))
            if pid is None or any(p.pid == int(pid) for p in found):
                continue  # one process both computing and drawing: listed once, as compute
            found.append(
                GpuProcess(int(pid), _process_name(int(pid)), finite(getattr(proc, "usedGpuMemory", None)), kind)
            )
    if not answered:
        return
    found.sort(key=lambda p: (p.kind != "compute", -(p.memory_bytes or 0), p.pid))
    reading.processes = found
    reading.metrics["processes"] = float(len(found))
    reading.details["processes"] = [
        {"pid": p.pid, "name": p.name, "memory_bytes": p.memory_bytes, "kind": p.kind} for p in found
    ]


def _process_name(pid: int) -> str | None:
    try:
        return label(psutil.Process(pid).name(), 40) or None
    except (psutil.Error, OSError):
        return None


def _key(handle: Any) -> Any:
    """A device handle as a dict key: pynvml's are ctypes pointers (a new object per event), compared by address."""
    if isinstance(handle, ctypes._Pointer):
        return ctypes.cast(handle, ctypes.c_void_p).value
    return handle


def _quiet(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
