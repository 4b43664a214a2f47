"""Docker Engine over its unix socket: the daemon, and each expected container by name."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from typing import Any

from clusterwatch.config.durations import format_duration
from clusterwatch.config.schema import DockerCheck
from clusterwatch.model import Observation, Status, finite_number, one_line
from clusterwatch.probes.base import ProbeContext, Unreachable, down, observation

HINT = "is Docker installed and `dockerd` running?"


def match_containers(wanted: str, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cluster AI's matching: an exact name first, else `(^|[-_])NAME([-_]|$)`."""

    def names(c: dict[str, Any]) -> list[str]:
        listed = c.get("Names")
        return [n.lstrip("/") for n in listed if isinstance(n, str)] if isinstance(listed, list) else []

    exact = [c for c in containers if wanted in names(c)]
    if exact:
        return exact
    pattern = re.compile(rf"(^|[-_]){re.escape(wanted)}([-_]|$)")
    return [c for c in containers if any(pattern.search(n) for n in names(c))]


async def probe(check: DockerCheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    if not os.path.exists(check.socket):
        return [down(check, check.socket, f"Docker socket {check.socket} does not exist", HINT)]
    from clusterwatch.probes.docker_client import Engine  # aiodocker: loaded only where a Docker socket is

    started = time.perf_counter()
    try:
        async with Engine(check.socket, timeout) as engine:
            pong = await engine.ping()
            latency = (time.perf_counter() - started) * 1000
            version = await engine.version()
            containers = await engine.containers()
            observed = []
            for wanted in check.containers:
                found = match_containers(wanted, containers)
                if not found:
                    start = check.fix_hint(wanted) or f"`docker compose up -d {wanted}`"
                    observed.append(
                        observation(
                            check,
                            Status.CRITICAL,
                            f"no container matches {wanted!r} — start it ({start})",
                            name=f"{check.name}/{wanted}",
                            target=wanted,
                        )
                    )
                for summary in found:
                    try:
                        inspect = await engine.inspect(summary["Id"])
                    except Unreachable as exc:  # this container, not the daemon: the others are still known
                        observed.append(_uninspected(check, wanted, summary, len(found) > 1, str(exc)))
                        continue
                    if inspect is None:
                        continue  # removed between the list and the inspect: next round sees it
                    observed.append(_container(check, wanted, inspect, len(found) > 1))
    except Unreachable as exc:
        return [down(check, check.socket, str(exc), HINT)]

    running = sum(1 for c in containers if c.get("State") == "running")
    unhealthy = sum(1 for c in containers if "(unhealthy)" in str(c.get("Status", "")))
    server = _text(version.get("Version"), "?", 60)
    message = f"Docker {server}: {running} running, {len(containers) - running} stopped"
    daemon_status = Status.OK
    if unhealthy:
        message += f", {unhealthy} unhealthy"
        if not check.containers:
            daemon_status = Status.WARNING
    daemon = observation(
        check,
        daemon_status,
        message,
        target=check.socket,
        latency_ms=latency,
        metrics={"containers_running": running, "containers_total": len(containers), "containers_unhealthy": unhealthy},
        details={"version": server, "ping": pong[:60]},
    )
    return [daemon, *observed]


def _container(check: DockerCheck, wanted: str, c: dict[str, Any], several: bool) -> Observation:
    """One container from its inspect answer; a field of the wrong type reads as absent."""
    state = _object(c.get("State"))
    health_state = _object(state.get("Health"))
    cname = _text(c.get("Name"), "", 200).lstrip("/") or wanted
    fix = check.fix_hint(cname if several else wanted)  # what this check's own restart would do
    health = _text(health_state.get("Status"), "none", 40)
    restarts = _count(c.get("RestartCount")) or 0
    exit_code = _count(state.get("ExitCode"))
    oom = state.get("OOMKilled") is True
    started_at = _parse_time(state.get("StartedAt"))
    since = time.time() - started_at if started_at else None
    metrics: dict[str, float] = {"restart_count": restarts, "running": 1.0 if state.get("Running") else 0.0}
    if since is not None and state.get("Running"):
        metrics["uptime_seconds"] = round(since, 1)
    if exit_code is not None:
        metrics["exit_code"] = exit_code
    streak = _count(health_state.get("FailingStreak"))
    if streak is not None:
        metrics["health_failing_streak"] = streak

    status_text = _text(state.get("Status"), "unknown", 40)
    if status_text == "restarting":
        status, message = Status.CRITICAL, f"restarting (crash loop: {restarts} restarts, last exit {exit_code})"
    elif not state.get("Running"):
        why = " (OOM-killed: raise its memory limit)" if oom else ""
        start = fix or f"`docker start {cname}`"
        status, message = Status.CRITICAL, f"{status_text}, exit code {exit_code}{why} — {start}"
    elif state.get("Paused"):
        status, message = Status.CRITICAL, f"paused — `docker unpause {cname}`"
    elif health == "unhealthy":
        log = health_state.get("Log")
        last = _object(log[-1]) if isinstance(log, list) and log else {}
        said = _text(last.get("Output"), "", 120)
        status = Status.CRITICAL
        message = f"unhealthy ({streak} failed health checks){': ' + said if said else ''}"
        message += " — Docker does not restart unhealthy containers by itself" + (f" (restart: {fix})" if fix else "")
    elif health == "starting":
        status, message = Status.WARNING, "running, health check still starting"
    elif restarts and since is not None and since < check.restart_window:
        status, message = Status.WARNING, f"restarted {restarts} time(s), last {since:.0f}s ago"
    else:
        status = Status.OK
        message = f"running{', healthy' if health == 'healthy' else ''}"
        if since is not None:
            message += f", up {format_duration(since)}"
    if oom and state.get("Running"):
        status = Status.worst([status, Status.WARNING])
        message += "; was OOM-killed before"
    return observation(
        check,
        status,
        message,
        name=f"{check.name}/{cname if several else wanted}",
        target=cname,
        metrics=metrics,
        details={
            "id": str(c.get("Id", ""))[:12],
            "image": _text(_object(c.get("Config")).get("Image"), "", 200) or None,
            "health": health,
            "state": status_text,
            "oom_killed": oom,
        },
    )


def _uninspected(check: DockerCheck, wanted: str, summary: dict[str, Any], several: bool, why: str) -> Observation:
    """A listed container whose details Docker did not give: its state is unknown, not gone."""
    cname = next(iter(n.lstrip("/") for n in summary.get("Names") or [] if isinstance(n, str)), wanted)
    return observation(
        check,
        Status.UNKNOWN,
        why,
        name=f"{check.name}/{cname if several else wanted}",
        target=cname,
        details={"id": summary["Id"][:12], "state": _text(summary.get("State"), "unknown", 40)},
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any, default: str, limit: int) -> str:
    """A string field as one short line (a daemon that answers garbage must not break a message)."""
    return one_line(" ".join(value.split()), limit) if isinstance(value, str) else default


def _count(value: Any) -> int | None:
    """An integer as Docker sends it (a count, an exit code); a fraction, NaN or not a number reads as absent."""
    number = finite_number(value)
    return int(number) if number is not None and float(number).is_integer() else None


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or len(value) > 64 or value.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{6})\d*", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
