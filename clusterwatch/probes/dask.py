"""Dask: the scheduler's port and its HTTP endpoints, and every worker by name.

Uses `/health`, `/json/identity.json`, `/json/counts.json` and `/metrics` rather than a
`distributed.Client`, which would have to match the cluster's Dask version.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from clusterwatch.config.schema import DaskCheck, ExpectedWorker
from clusterwatch.model import Group, Observation, Status
from clusterwatch.probes.base import (
    HttpAnswer,
    ProbeContext,
    Unreachable,
    down,
    fetch,
    human_bytes,
    observation,
    tcp_connect,
)
from clusterwatch.probes.values import finite, label

HINT = "is `dask scheduler` running?"
_COUNTS = {
    "erred": "tasks_erred",
    "processing": "tasks_processing",
    "waiting": "tasks_waiting",
    "unrunnable": "tasks_unrunnable",
    "memory": "tasks_in_memory",
    "tasks": "tasks_total",
    "clients": "clients",
}
# The samples read from /metrics; every other line of the page is skipped before parsing, so a
# page of megabytes costs a string scan, not seconds of the Prometheus parser on the event loop.
_SAMPLES = (
    "dask_scheduler_workers",
    "dask_scheduler_tasks",
    "dask_scheduler_clients",
    "dask_scheduler_tick_duration_maximum_seconds",
)
_MAX_SAMPLE_LINES, _MAX_LINE = 1000, 1000  # a real scheduler writes a few dozen such lines of under 200 characters
_MAX_TASK_STATES = 20
_MAX_WORKERS = 5000  # entities from one answer: more is an answer built to swamp the monitor


async def probe(check: DaskCheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    host, port = check.scheduler_host_port
    try:
        port_ms = await tcp_connect(host, port, timeout)
    except Unreachable as exc:
        return [
            down(check, check.scheduler, f"scheduler port: {exc}", HINT),
            *_unknown_expected(check, "scheduler unreachable"),
        ]

    base = check.dashboard_url

    async def get(path: str) -> HttpAnswer | Unreachable:
        try:
            return await fetch(ctx.http, base + path, timeout=timeout, max_body=check.max_body)
        except Unreachable as exc:
            return exc

    health, identity, counts, metrics = await asyncio.gather(
        get("/health"), get("/json/identity.json"), get("/json/counts.json"), get("/metrics")
    )

    if isinstance(identity, Unreachable) or identity.status != 200:
        reason = identity if isinstance(identity, Unreachable) else f"HTTP {identity.status}"
        return [
            observation(
                check,
                Status.WARNING,
                f"scheduler port open but its HTTP endpoint {base} failed ({reason}): workers not visible"
                " — start the scheduler with --dashboard-address",
                target=check.scheduler,
                latency_ms=port_ms,
            ),
            *_unknown_expected(check, "scheduler HTTP endpoint unreachable"),
        ]
    try:
        info = identity.json()
        if not isinstance(info, dict) or not isinstance(info.get("workers", {}), dict):
            raise Unreachable("identity.json has no `workers` mapping")
    except Unreachable as exc:
        return [
            observation(
                check,
                Status.CRITICAL,
                f"unexpected answer from {base}/json/identity.json: {exc}",
                target=check.scheduler,
                latency_ms=port_ms,
            ),
            *_unknown_expected(check, "the scheduler's answer is unreadable"),
        ]

    now = _reference_time(identity, info)
    workers = info.get("workers") if isinstance(info.get("workers"), dict) else {}
    listed = [(addr, w) for addr, w in workers.items() if isinstance(w, dict)]
    worker_obs = [_worker(check, addr, w, now) for addr, w in listed[:_MAX_WORKERS]]
    missing = _missing(check, dict(listed[:_MAX_WORKERS]))
    scheduler = _scheduler(check, info, health, counts, metrics, len(listed), port_ms)
    if len(listed) > _MAX_WORKERS:
        scheduler.message += f"; only the first {_MAX_WORKERS} workers are shown one by one"
    return [scheduler, *worker_obs, *missing]


def _reference_time(answer: HttpAnswer, info: dict[str, Any]) -> float:
    """The scheduler's "now", so a clock skew between machines can't fake a hung worker.

    The HTTP Date header has one-second resolution; the freshest heartbeat refines it.
    """
    candidates = [time.time()]
    date = answer.headers.get("Date")
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            candidates = [email.utils.parsedate_to_datetime(date).timestamp() + 0.5]
    workers = info.get("workers") if isinstance(info.get("workers"), dict) else {}
    seen = [finite(w.get("last_seen")) for w in itertools.islice(workers.values(), _MAX_WORKERS) if isinstance(w, dict)]
    return max([*candidates, *(s for s in seen if s is not None)])


def _worker(check: DaskCheck, address: str, w: dict[str, Any], now: float) -> Observation:
    name = label(w.get("name", address))
    m = w.get("metrics") if isinstance(w.get("metrics"), dict) else {}
    metrics: dict[str, float] = {}
    problems: list[tuple[Status, str]] = []

    last_seen = finite(w.get("last_seen"))
    if last_seen is not None:
        age = max(0.0, now - last_seen)
        metrics["heartbeat_age_seconds"] = round(age, 2)
        if age >= check.heartbeat_critical:
            problems.append(
                (Status.CRITICAL, f"no heartbeat for {age:.0f}s — hung (stopped, deadlocked or swapping)? restart it")
            )
        elif age >= check.heartbeat_warning:
            problems.append((Status.WARNING, f"heartbeat {age:.1f}s late"))

    state = label(w.get("status", "running"), 40)
    if state == "paused":
        problems.append((Status.WARNING, "paused by Dask: memory above its pause threshold"))
    elif state not in ("running", "init"):
        problems.append((Status.WARNING, f"worker status is {state!r}"))

    memory, limit = finite(m.get("memory")), finite(w.get("memory_limit"))
    if memory is not None:
        metrics["memory_bytes"] = memory
    if limit is not None and limit > 0:
        metrics["memory_limit_bytes"] = limit
        percent = None if memory is None else finite(100.0 * (memory / limit))
        if percent is not None:
            metrics["memory_percent"] = round(percent, 1)
            if percent >= check.memory_critical:
                problems.append((Status.CRITICAL, f"memory {percent:.0f}% of its {human_bytes(limit)} limit"))
            elif percent >= check.memory_warning:
                problems.append((Status.WARNING, f"memory {percent:.0f}% of its {human_bytes(limit)} limit"))
    for key, metric in (
        ("cpu", "cpu_percent"),
        ("num_fds", "open_fds"),
        ("event_loop_interval", "event_loop_interval_seconds"),
    ):
        value = finite(m.get(key))
        if value is not None:
            metrics[metric] = value
    threads = finite(w.get("nthreads"))
    if threads is not None:
        metrics["threads"] = threads
    tasks = m.get("task_counts")
    if isinstance(tasks, dict):
        for state_name, count in list(tasks.items())[:_MAX_TASK_STATES]:
            if finite(count) is not None:
                metrics[f"tasks_{label(state_name, 40)}"] = finite(count)  # type: ignore[assignment]

    status = Status.worst([s for s, _ in problems]) if problems else Status.OK
    if problems:
        message = "; ".join(text for _, text in sorted(problems, key=lambda p: -p[0].severity))
    else:
        mem = f", memory {metrics['memory_percent']:.0f}%" if "memory_percent" in metrics else ""
        message = f"running, {'?' if threads is None else f'{threads:.0f}'} thread(s){mem}"
    return observation(
        check,
        status,
        message,
        name=f"{check.name}/{name}",
        target=label(address, 200),
        group=Group.WORKERS,
        metrics=metrics,
        details={"host": _text(w.get("host")), "status": state, "nanny": _text(w.get("nanny"))},
    )


def _text(value: object) -> str | None:
    """A short string the scheduler reported (a host, an id), or None."""
    return None if value is None else label(value, 200)


def _matches(expected: ExpectedWorker, address: str, w: dict[str, Any]) -> bool:
    if label(w.get("name")) == expected.name:
        return True
    if expected.host:
        host = label(w.get("host") or address.split("://", 1)[-1].rsplit(":", 1)[0])
        return host == expected.host
    return False


def _missing(check: DaskCheck, workers: dict[str, Any]) -> list[Observation]:
    out = []
    for expected in check.expect_workers:
        if any(_matches(expected, a, w) for a, w in workers.items() if isinstance(w, dict)):
            continue
        where = f" ({expected.host})" if expected.host and expected.host != expected.name else ""
        out.append(
            observation(
                check,
                Status.CRITICAL,
                f"worker {expected.name}{where} is not connected to the scheduler — start it there with "
                f"`dask worker {check.scheduler}`",
                name=f"{check.name}/{expected.name}",
                target=expected.host or expected.name,
                group=Group.WORKERS,
            )
        )
    return out


def _unknown_expected(check: DaskCheck, why: str) -> list[Observation]:
    return [
        observation(
            check,
            Status.UNKNOWN,
            f"unknown: {why}",
            name=f"{check.name}/{e.name}",
            target=e.host or e.name,
            group=Group.WORKERS,
        )
        for e in check.expect_workers
    ]


def _scheduler(
    check: DaskCheck,
    info: dict[str, Any],
    health: HttpAnswer | Unreachable,
    counts: HttpAnswer | Unreachable,
    metrics_answer: HttpAnswer | Unreachable,
    n_workers: int,
    port_ms: float,
) -> Observation:
    problems: list[tuple[Status, str]] = []
    metrics: dict[str, float] = {"workers": float(n_workers)}
    details: dict[str, Any] = {"id": _text(info.get("id")), "address": _text(info.get("address"))}

    if isinstance(health, Unreachable) or health.status != 200 or health.text.strip() != "ok":
        said = health if isinstance(health, Unreachable) else f"HTTP {health.status} {health.text[:40]!r}"
        problems.append((Status.CRITICAL, f"/health did not say ok ({said})"))

    for key in ("total_threads", "total_memory"):
        value = finite(info.get(key))
        if value is not None:
            metrics[key] = value

    if n_workers < check.min_workers:
        problems.append((Status.CRITICAL, f"{n_workers} worker(s) connected, at least {check.min_workers} needed"))

    if isinstance(counts, HttpAnswer) and counts.status == 200:
        try:
            data = counts.json()
        except Unreachable:
            data = None  # the counts are a nicety: the scheduler's health is /health and identity.json
        if isinstance(data, dict):
            for key, metric in _COUNTS.items():
                value = finite(data.get(key))
                if value is not None:
                    metrics[metric] = value

    families = _parse_metrics(metrics_answer)
    if families is None:
        details["metrics"] = "not available (no prometheus_client in the scheduler's environment)"
    else:
        details["metrics"] = "available"
        for key, value in families.items():
            metrics.setdefault(key, value)

    erred = metrics.get("tasks_erred", 0)
    if erred:
        problems.append((Status.WARNING, f"{erred:.0f} erred task(s)"))
    unrunnable = metrics.get("tasks_unrunnable", 0) or metrics.get("tasks_no-worker", 0)
    if unrunnable:
        problems.append((Status.WARNING, f"{unrunnable:.0f} task(s) no worker can run"))

    status = Status.worst([s for s, _ in problems]) if problems else Status.OK
    summary = (
        f"{n_workers} worker(s) (min {check.min_workers}), {metrics.get('total_threads', 0):.0f} threads,"
        f" {erred:.0f} erred task(s)"
    )
    message = "; ".join(text for _, text in sorted(problems, key=lambda p: -p[0].severity)) if problems else summary
    if problems and n_workers >= check.min_workers:
        message += f" ({n_workers} worker(s))"
    return observation(
        check, status, message, target=check.scheduler, latency_ms=port_ms, metrics=metrics, details=details
    )


def _parse_metrics(answer: HttpAnswer | Unreachable) -> dict[str, float] | None:
    """Dask's Prometheus text, or None when the endpoint holds no samples (only a comment)."""
    if isinstance(answer, Unreachable) or answer.status != 200:
        return None
    lines = answer.text.splitlines()
    if not any(line.strip() and not line.startswith("#") for line in lines):
        return None
    wanted = [line for line in lines if line.startswith(_SAMPLES) and len(line) <= _MAX_LINE][:_MAX_SAMPLE_LINES]
    out: dict[str, float] = {}
    unusable: set[str] = set()  # a NaN or infinite part makes the whole figure unknown, not a partial sum
    try:
        for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
            for sample in family.samples:
                if sample.name in ("dask_scheduler_workers", "dask_scheduler_tasks"):
                    what = label(sample.labels.get("state", "unknown"), 40)
                    key = f"{sample.name.removeprefix('dask_scheduler_')}_{what}"
                elif sample.name in (
                    "dask_scheduler_clients",
                    "dask_scheduler_tick_duration_maximum_seconds",
                    "dask_scheduler_workers_added_total",
                    "dask_scheduler_workers_removed_total",
                ):
                    key = sample.name.removeprefix("dask_scheduler_")
                else:
                    continue
                value = finite(sample.value)
                total = None if value is None else finite(out.get(key, 0.0) + value)
                if total is None:
                    unusable.add(key)
                elif key in out or len(out) < 100:
                    out[key] = total
    except Exception:  # whatever the parser makes of a garbled page: no metrics, not a probe error
        return None
    return {key: value for key, value in out.items() if key not in unusable}
