"""Open WebUI: `/health` must say `{"status": true}`, `/health/db` must answer; any 5xx is down."""

from __future__ import annotations

from clusterwatch.config.schema import OpenWebUICheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext, Unreachable, down, fetch, not_running, observation
from clusterwatch.probes.values import label, short

HINT = "is Open WebUI running? (`docker start open-webui`)"


async def probe(check: OpenWebUICheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    base = check.url.rstrip("/")
    try:
        health = await fetch(ctx.http, f"{base}/health", timeout=timeout, max_body=check.max_body)
    except Unreachable as exc:
        reason = str(exc) if not_running(str(exc)) else f"/health: {exc}"
        return [down(check, base, reason, HINT)]
    if health.status >= 500:
        return [
            down(
                check,
                base,
                f"HTTP {health.status} on /health — Open WebUI needs a restart",
                latency_ms=health.latency_ms,
            )
        ]
    if health.status != 200:
        return [down(check, base, f"HTTP {health.status} on /health (not Open WebUI?)", latency_ms=health.latency_ms)]
    try:
        body = health.json()
    except Unreachable as exc:
        return [down(check, base, f"/health: {exc}", latency_ms=health.latency_ms)]
    if not isinstance(body, dict) or body.get("status") is not True:
        return [down(check, base, f'/health said {short(body)}, not {{"status": true}}', latency_ms=health.latency_ms)]

    details: dict[str, object] = {}
    if check.check_db:
        try:
            db = await fetch(ctx.http, f"{base}/health/db", timeout=timeout, max_body=check.max_body)
        except Unreachable as exc:
            return [down(check, base, f"/health/db: {exc}", latency_ms=health.latency_ms)]
        if db.status >= 500:
            return [
                down(
                    check, base, f"database check failed (HTTP {db.status} on /health/db)", latency_ms=health.latency_ms
                )
            ]
        details["database"] = "ok" if db.status == 200 else f"no /health/db (HTTP {db.status})"
    try:
        version = await fetch(ctx.http, f"{base}/api/version", timeout=timeout, max_body=64 * 1024)
        data = version.json() if version.status == 200 else {}
        if isinstance(data, dict) and isinstance(data.get("version"), str):
            details["version"] = label(data["version"], 40)
    except Unreachable:
        pass  # the version is a nicety, not health
    text = "healthy"
    if "version" in details:
        text = f"Open WebUI {details['version']}: healthy"
    if details.get("database") == "ok":
        text += ", database ok"
    return [observation(check, Status.OK, text, target=base, latency_ms=health.latency_ms, details=details)]
