"""Dask: the scheduler's port and its HTTP endpoints, and every worker by name.

Uses `/health`, `/json/identity.json`, `/json/counts.json` and `/metrics` rather than a
`distributed.Client`, which would have to match the cluster's Dask version.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
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
            )
        ]

    now = _reference_time(identity, info)
    workers = info.get("workers") or {}
    worker_obs = [_worker(check, addr, w, now) for addr, w in workers.items() if isinstance(w, dict)]
    missing = _missing(check, workers)
    scheduler = _scheduler(check, info, health, counts, metrics, len(worker_obs), port_ms)
    return [scheduler, *worker_obs, *missing]


def _reference_time(answer: HttpAnswer, info: dict[str, Any]) -> float:
    """The scheduler's "now", so a clock skew between machines can't fake a hung worker.

    The HTTP Date header has one-second resolution; the freshest heartbeat refines it.
    """
    candidates = [time.time()]
    date = answer.headers.get("Date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            candidates = [email.utils.parsedate_to_datetime(date).timestamp() + 0.5]
    seen = [w.get("last_seen") for w in (info.get("workers") or {}).values() if isinstance(w, dict)]
    seen = [float(s) for s in seen if isinstance(s, int | float)]
    return max([*candidates, *seen])


def _worker(check: DaskCheck, address: str, w: dict[str, Any], now: float) -> Observation:
    name = str(w.get("name", address))
    m = w.get("metrics") if isinstance(w.get("metrics"), dict) else {}
    metrics: dict[str, float] = {}
    problems: list[tuple[Status, str]] = []

    last_seen = w.get("last_seen")
    if isinstance(last_seen, int | float):
        age = max(0.0, now - float(last_seen))
        metrics["heartbeat_age_seconds"] = round(age, 2)
        if age >= check.heartbeat_critical:
            problems.append(
                (Status.CRITICAL, f"no heartbeat for {age:.0f}s — hung (stopped, deadlocked or swapping)? restart it")
            )
        elif age >= check.heartbeat_warning:
            problems.append((Status.WARNING, f"heartbeat {age:.1f}s late"))

    state = str(w.get("status", "running"))
    if state == "paused":
        problems.append((Status.WARNING, "paused by Dask: memory above its pause threshold"))
    elif state not in ("running", "init"):
        problems.append((Status.WARNING, f"worker status is {state!r}"))

    memory, limit = m.get("memory"), w.get("memory_limit")
    if isinstance(memory, int | float):
        metrics["memory_bytes"] = float(memory)
    if isinstance(limit, int | float) and limit > 0:
        metrics["memory_limit_bytes"] = float(limit)
        if isinstance(memory, int | float):
            percent = 100.0 * memory / limit
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
        if isinstance(m.get(key), int | float):
            metrics[metric] = float(m[key])
    if isinstance(w.get("nthreads"), int):
        metrics["threads"] = float(w["nthreads"])
    tasks = m.get("task_counts")
    if isinstance(tasks, dict):
        for state_name, count in tasks.items():
            if isinstance(count, int | float):
                metrics[f"tasks_{state_name}"] = float(count)

    status = Status.worst([s for s, _ in problems]) if problems else Status.OK
    if problems:
        message = "; ".join(text for _, text in sorted(problems, key=lambda p: -p[0].severity))
    else:
        mem = f", memory {metrics['memory_percent']:.0f}%" if "memory_percent" in metrics else ""
        message = f"running, {w.get('nthreads', '?')} thread(s){mem}"
    return observation(
        check,
        status,
        message,
        name=f"{check.name}/{name}",
        target=address,
        group=Group.WORKERS,
        metrics=metrics,
        details={"host": w.get("host"), "status": state, "nanny": w.get("nanny")},
    )


def _matches(expected: ExpectedWorker, address: str, w: dict[str, Any]) -> bool:
    if str(w.get("name")) == expected.name:
        return True
    if expected.host:
        host = str(w.get("host") or address.split("://", 1)[-1].rsplit(":", 1)[0])
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
    details: dict[str, Any] = {"id": info.get("id"), "address": info.get("address")}

    if isinstance(health, Unreachable) or health.status != 200 or health.text.strip() != "ok":
        said = health if isinstance(health, Unreachable) else f"HTTP {health.status} {health.text[:40]!r}"
        problems.append((Status.CRITICAL, f"/health did not say ok ({said})"))

    for key in ("total_threads", "total_memory"):
        if isinstance(info.get(key), int | float):
            metrics[key] = float(info[key])

    if n_workers < check.min_workers:
        problems.append((Status.CRITICAL, f"{n_workers} worker(s) connected, at least {check.min_workers} needed"))

    if isinstance(counts, HttpAnswer) and counts.status == 200:
        try:
            data = counts.json()
            for key, metric in _COUNTS.items():
                if isinstance(data.get(key), int | float):
                    metrics[metric] = float(data[key])
        except (Unreachable, AttributeError):
            pass

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
    out: dict[str, float] = {}
    samples = 0
    try:
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples += 1
                if sample.name == "dask_scheduler_workers":
                    key = f"workers_{sample.labels.get('state', 'unknown')}"
                elif sample.name == "dask_scheduler_tasks":
                    key = f"tasks_{sample.labels.get('state', 'unknown')}"
                elif sample.name in (
                    "dask_scheduler_clients",
                    "dask_scheduler_tick_duration_maximum_seconds",
                    "dask_scheduler_workers_added_total",
                    "dask_scheduler_workers_removed_total",
                ):
                    key = sample.name.removeprefix("dask_scheduler_")
                else:
                    continue
                out[key] = out.get(key, 0.0) + float(sample.value)
    except Exception:  # whatever the parser makes of a garbled page: no metrics, not a probe error
        return None
    return out if samples else None
