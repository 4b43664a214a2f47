"""Docker Engine over its unix socket: the daemon, and each expected container by name."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from datetime import datetime
from typing import Any

import aiohttp

from clusterwatch.config.durations import format_duration
from clusterwatch.config.schema import DockerCheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext, Unreachable, describe_os_error, down, observation

HINT = "is Docker installed and `dockerd` running?"
MAX_BODY = 16 * 1024 * 1024


class Engine:
    """The few Engine API calls the probe and the healer need, bounded in time and size."""

    def __init__(self, socket: str, timeout: float) -> None:
        self.socket = socket
        self.timeout = timeout
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket))

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def request(self, method: str, path: str) -> tuple[int, Any]:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.request(method, f"http://docker{path}") as resp:
                    body = await resp.content.read(MAX_BODY + 1)
                    if len(body) > MAX_BODY:
                        raise Unreachable(f"Docker answer to {path} over {MAX_BODY} bytes")
                    if resp.content_type == "application/json" and body:
                        try:
                            return resp.status, await asyncio.to_thread(json.loads, body)
                        except ValueError:
                            raise Unreachable(f"Docker answered {path} with invalid JSON") from None
                    return resp.status, body.decode("utf-8", "replace")
        except TimeoutError:
            raise Unreachable(f"Docker did not answer {path} within {self.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(describe_os_error(exc.os_error, f"Docker socket {self.socket}")) from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"Docker socket {self.socket}: {exc}") from None


def match_containers(wanted: str, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cluster AI's matching: an exact name first, else `(^|[-_])NAME([-_]|$)`."""

    def names(c: dict[str, Any]) -> list[str]:
        return [n.lstrip("/") for n in c.get("Names") or []]

    exact = [c for c in containers if wanted in names(c)]
    if exact:
        return exact
    pattern = re.compile(rf"(^|[-_]){re.escape(wanted)}([-_]|$)")
    return [c for c in containers if any(pattern.search(n) for n in names(c))]


async def probe(check: DockerCheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    if not os.path.exists(check.socket):
        return [down(check, check.socket, f"Docker socket {check.socket} does not exist", HINT)]
    started = time.perf_counter()
    try:
        async with Engine(check.socket, timeout) as engine:
            status, pong = await engine.request("GET", "/_ping")
            if status != 200:
                return [down(check, check.socket, f"Docker /_ping answered HTTP {status}")]
            latency = (time.perf_counter() - started) * 1000
            _, version = await engine.request("GET", "/version")
            _, containers = await engine.request("GET", "/containers/json?all=1")
            if not isinstance(containers, list):
                raise Unreachable("Docker /containers/json did not return a list")
            observed = []
            for wanted in check.containers:
                found = match_containers(wanted, containers)
                if not found:
                    observed.append(
                        observation(
                            check,
                            Status.CRITICAL,
                            f"no container matches {wanted!r} — start it (`docker compose up -d {wanted}`)",
                            name=f"{check.name}/{wanted}",
                            target=wanted,
                        )
                    )
                for summary in found:
                    code, inspect = await engine.request("GET", f"/containers/{summary['Id']}/json")
                    if code != 200 or not isinstance(inspect, dict):
                        continue  # removed between the list and the inspect: next round sees it
                    observed.append(_container(check, wanted, inspect, len(found) > 1))
    except Unreachable as exc:
        return [down(check, check.socket, str(exc), HINT)]

    running = sum(1 for c in containers if c.get("State") == "running")
    unhealthy = sum(1 for c in containers if "(unhealthy)" in str(c.get("Status", "")))
    server = version.get("Version", "?") if isinstance(version, dict) else "?"
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
        details={"version": server, "ping": pong if isinstance(pong, str) else ""},
    )
    return [daemon, *observed]


def _container(check: DockerCheck, wanted: str, c: dict[str, Any], several: bool) -> Observation:
    state = c.get("State") or {}
    cname = str(c.get("Name", "")).lstrip("/") or wanted
    health = (state.get("Health") or {}).get("Status", "none")
    restarts = int(c.get("RestartCount") or 0)
    exit_code = state.get("ExitCode")
    oom = bool(state.get("OOMKilled"))
    started_at = _parse_time(state.get("StartedAt"))
    since = time.time() - started_at if started_at else None
    metrics: dict[str, float] = {"restart_count": restarts, "running": 1.0 if state.get("Running") else 0.0}
    if since is not None and state.get("Running"):
        metrics["uptime_seconds"] = round(since, 1)
    if isinstance(exit_code, int):
        metrics["exit_code"] = exit_code
    streak = (state.get("Health") or {}).get("FailingStreak")
    if isinstance(streak, int):
        metrics["health_failing_streak"] = streak

    status_text = state.get("Status", "unknown")
    if status_text == "restarting":
        status, message = Status.CRITICAL, f"restarting (crash loop: {restarts} restarts, last exit {exit_code})"
    elif not state.get("Running"):
        why = " (OOM-killed: raise its memory limit)" if oom else ""
        status, message = Status.CRITICAL, f"{status_text}, exit code {exit_code}{why} — `docker start {cname}`"
    elif state.get("Paused"):
        status, message = Status.CRITICAL, f"paused — `docker unpause {cname}`"
    elif health == "unhealthy":
        log = (state.get("Health") or {}).get("Log") or []
        said = str(log[-1].get("Output", "")).strip().replace("\n", " ")[:120] if log else ""
        status = Status.CRITICAL
        message = f"unhealthy ({streak} failed health checks){': ' + said if said else ''}"
        message += " — Docker does not restart unhealthy containers by itself"
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
            "image": (c.get("Config") or {}).get("Image"),
            "health": health,
            "state": status_text,
            "oom_killed": oom,
        },
    )


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{6})\d*", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
