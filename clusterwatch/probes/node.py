"""This machine: CPU, memory, each disk, load, and its NVIDIA GPUs."""

from __future__ import annotations

import asyncio
import functools
import os
import socket

import psutil

from clusterwatch.config.schema import NodeCheck, Thresholds
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes import blocking, gpu
from clusterwatch.probes.base import ProbeContext, human_bytes, level_status, observation

_PSEUDO_FS = {
    "tmpfs",
    "devtmpfs",
    "squashfs",
    "overlay",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "nsfs",
    "autofs",
    "fuse.snapfuse",
    "iso9660",
    "ramfs",
    "devpts",
    "mqueue",
    "tracefs",
    "debugfs",
}


async def probe(check: NodeCheck, ctx: ProbeContext) -> list[Observation]:
    limits = check.thresholds or ctx.config.thresholds
    host = socket.gethostname()
    # statvfs and NVML can block for good (a hung NFS mount, a wedged driver): their own threads, bounded.
    timeout = ctx.timeout_for(check)
    survey_task = asyncio.create_task(_survey(check, timeout)) if check.gpus else None
    disks_task = asyncio.create_task(_disks(check, limits, host, timeout))
    try:
        return await _observe(check, limits, host, disks_task, survey_task)
    finally:
        for task in (disks_task, survey_task):
            if task is not None and not task.done():
                task.cancel()


async def _observe(
    check: NodeCheck,
    limits: Thresholds,
    host: str,
    disks_task: asyncio.Task[list[Observation]],
    survey_task: asyncio.Task[gpu.GpuSurvey] | None,
) -> list[Observation]:
    psutil.cpu_percent(None)
    await asyncio.sleep(check.cpu_sample)
    cpu = psutil.cpu_percent(None)
    memory = psutil.virtual_memory()
    cores = psutil.cpu_count() or 1
    load1, load5, load15 = os.getloadavg()

    metrics = {
        "cpu_percent": cpu,
        "memory_percent": memory.percent,
        "memory_used_bytes": memory.used,
        "memory_total_bytes": memory.total,
        "load1": load1,
        "load5": load5,
        "load15": load15,
        "cpus": cores,
    }
    checks = [
        ("cpu", cpu, limits.cpu, f"cpu {cpu:.0f}%"),
        ("memory", memory.percent, limits.memory, f"memory {memory.percent:.0f}% of {human_bytes(memory.total)}"),
        ("load", load1 / cores, limits.load, f"load {load1:.2f} on {cores} cpu(s)"),
    ]
    status, message = _judge(checks)
    observed = [observation(check, status, message, target=host, group=Group.SYSTEM, metrics=metrics)]
    observed.extend(await disks_task)
    if survey_task is not None:
        observed.extend(_gpus(check, limits, host, await survey_task, observed[0]))
    return observed


def _judge(checks: list[tuple[str, float, object, str]]) -> tuple[Status, str]:
    graded = [
        (level_status(value, level.warning, level.critical), text)  # type: ignore[attr-defined]
        for _, value, level, text in checks
    ]
    status = Status.worst([s for s, _ in graded])
    bad = [f"{text} ({s.value})" for s, text in graded if s is not Status.OK]
    return status, "; ".join(bad) if bad else ", ".join(text for _, text in graded)


async def _survey(check: NodeCheck, timeout: float) -> gpu.GpuSurvey:
    read = functools.partial(gpu.survey, xid_window=check.xid_window, expect_gpus=check.expect_gpus)
    try:
        return await blocking.nvml.run("nvml", timeout, read)
    except blocking.Blocked as exc:
        error = f"NVML: {exc} (driver hung?)"
        # the GPUs seen so far stay, unknown: left out, each would be taken for gone (its incident closed)
        return gpu.GpuSurvey(False, "", gpu.unread(f"not read: {error}"), error=error, expected=check.expect_gpus)


async def _disks(check: NodeCheck, limits: Thresholds, host: str, timeout: float) -> list[Observation]:
    mounts = check.disks or _local_mounts()
    usages = await asyncio.gather(
        *(blocking.disks.run(mount, timeout, psutil.disk_usage, mount) for mount in mounts), return_exceptions=True
    )
    observed = []
    for mount, usage in zip(mounts, usages, strict=True):
        name = f"{check.name}/disk:{mount}"
        if isinstance(usage, BaseException):
            if isinstance(usage, blocking.Blocked):
                why = f"disk {mount}: {usage} — a hung mount (NFS, CIFS, FUSE)?"
            elif isinstance(usage, OSError):
                why = f"cannot read disk {mount}: {usage.strerror or usage}"
            else:
                raise usage
            observed.append(observation(check, Status.UNKNOWN, why, name=name, target=host, group=Group.SYSTEM))
            continue
        status = level_status(usage.percent, limits.disk.warning, limits.disk.critical)
        message = f"disk {mount} {usage.percent:.0f}% used, {human_bytes(usage.free)} free"
        observed.append(
            observation(
                check,
                status,
                message,
                name=name,
                target=host,
                group=Group.SYSTEM,
                metrics={"disk_percent": usage.percent, "disk_free_bytes": usage.free, "disk_total_bytes": usage.total},
            )
        )
    return observed


def _local_mounts() -> list[str]:
    seen_devices: set[str] = set()
    mounts = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in _PSEUDO_FS or part.device in seen_devices or part.mountpoint.startswith("/snap"):
            continue
        seen_devices.add(part.device)
        mounts.append(part.mountpoint)
    return mounts or ["/"]


def _gpus(
    check: NodeCheck, limits: Thresholds, host: str, found: gpu.GpuSurvey, system: Observation
) -> list[Observation]:
    observed = []
    whole = f"{check.name}/gpu"  # the GPUs as a whole: NVML failing, or fewer GPUs than `expect_gpus`
    if found.error:
        observed.append(observation(check, Status.UNKNOWN, found.error, name=whole, target=host, group=Group.SYSTEM))
    elif found.expected is not None:
        plural = "s" if found.expected > 1 else ""
        status, message = (
            (Status.CRITICAL, found.shortfall)
            if found.shortfall
            else (Status.OK, f"{found.expected} GPU{plural} as expected")
        )
        details = {"expected": found.expected, "listed": found.listed}
        observed.append(
            observation(check, status, message, name=whole, target=host, group=Group.SYSTEM, details=details)
        )
    if not found.present and not found.gpus and not found.error:
        system.details["gpu"] = f"not present: {found.reason}"
    if found.not_permitted:
        system.details["gpu_not_permitted"] = found.not_permitted  # NVML lists them; this process may not use them
    observed.extend(_gpu(check, limits, host, reading) for reading in found.gpus)
    return observed


def _gpu(check: NodeCheck, limits: Thresholds, host: str, reading: gpu.GpuReading) -> Observation:
    """One GPU: its health (XIDs, lost, ECC, slowdowns) and the thresholds, then who is on it."""
    m = reading.metrics
    util, memory, heat = (m.get(key) for key in ("utilization_percent", "memory_percent", "temperature_celsius"))
    graded = [
        (level_status(value, level.warning, level.critical), text)
        for value, level, text in (
            (util, limits.gpu_utilization, f"utilisation {util or 0:.0f}%"),
            (memory, limits.gpu_memory, f"memory {memory or 0:.0f}%"),
            (heat, limits.gpu_temperature, f"{heat or 0:.0f}°C"),
        )
        if value is not None
    ]
    graded = reading.findings + graded  # findings come worst first; a threshold is about load, less urgent
    status = Status.worst([s for s, _ in graded])
    bad = [f"{text} ({s.value})" for s, text in graded if s is not Status.OK]
    parts = ["; ".join(bad) if bad else ", ".join(text for _, text in graded)]
    parts.extend(reading.notes)
    on_it = _on_gpu(reading.processes)
    if on_it:
        parts.append(on_it)
    message = "; ".join(part for part in parts if part)
    return observation(
        check,
        status,
        f"{reading.name}: {message}" if message else reading.name,
        name=f"{check.name}/gpu{reading.index}",
        target=host,
        group=Group.SYSTEM,
        metrics=m,
        details={"uuid": reading.uuid, "model": reading.name, **reading.details},
    )


def _on_gpu(processes: list[gpu.GpuProcess] | None, shown: int = 3) -> str:
    """The compute processes, largest first: "on GPU: ollama 12.3 GB, python 2.0 GB" (graphics: in details)."""
    compute = [p for p in processes or [] if p.kind == "compute"]
    if not compute:
        return ""
    named = [
        f"{p.name or f'pid {p.pid}'}{f' {human_bytes(p.memory_bytes)}' if p.memory_bytes is not None else ''}"
        for p in compute[:shown]
    ]
    more = f" and {len(compute) - shown} more" if len(compute) > shown else ""
    return f"on GPU: {', '.join(named)}{more}"
