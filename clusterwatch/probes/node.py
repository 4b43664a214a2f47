"""This machine: CPU, memory, each disk, load, and its NVIDIA GPUs."""

from __future__ import annotations

import asyncio
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
    survey_task = asyncio.create_task(_survey(timeout)) if check.gpus else None
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


async def _survey(timeout: float) -> gpu.GpuSurvey:
    try:
        return await blocking.nvml.run("nvml", timeout, gpu.survey)
    except blocking.Blocked as exc:
        return gpu.GpuSurvey(False, "", error=f"NVML: {exc} (driver hung?)")


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
    if found.error:
        return [
            observation(check, Status.UNKNOWN, found.error, name=f"{check.name}/gpu", target=host, group=Group.SYSTEM)
        ]
    if not found.present:
        system.details["gpu"] = f"not present: {found.reason}"
        return []
    observed = []
    for reading in found.gpus:
        m = reading.metrics
        checks = [
            (
                "gpu_utilization",
                m.get("utilization_percent"),
                limits.gpu_utilization,
                f"utilisation {m.get('utilization_percent', 0):.0f}%",
            ),
            ("gpu_memory", m.get("memory_percent"), limits.gpu_memory, f"memory {m.get('memory_percent', 0):.0f}%"),
            (
                "gpu_temperature",
                m.get("temperature_celsius"),
                limits.gpu_temperature,
                f"{m.get('temperature_celsius', 0):.0f}°C",
            ),
        ]
        status, message = _judge([c for c in checks if c[1] is not None])
        observed.append(
            observation(
                check,
                status,
                f"{reading.name}: {message}",
                name=f"{check.name}/gpu{reading.index}",
                target=host,
                group=Group.SYSTEM,
                metrics=m,
                details={"uuid": reading.uuid, "model": reading.name},
            )
        )
    return observed
