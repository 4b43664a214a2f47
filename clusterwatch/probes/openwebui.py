"""Open WebUI: `/health` (the process answers), `/ready` (its startup is done and its database and
Redis answer), `/health/db`, and, with `data_dir:`, its `webui.db` on disk.

`/ready` answers 503 with the reason (`{"detail": "Database not ready"}`, "Startup not complete",
"Redis not ready"); a version without it answers 404, or its web app's index page with 200.
`/health/db` only pings the connection Open WebUI already holds: a `webui.db` deleted under a
running instance goes unnoticed there until the next restart creates an empty one.
"""

from __future__ import annotations

import asyncio
import os
import stat

from clusterwatch.config.schema import OpenWebUICheck
from clusterwatch.model import Observation, Status
from clusterwatch.probes import blocking
from clusterwatch.probes.base import (
    HttpAnswer,
    ProbeContext,
    Unreachable,
    down,
    fetch,
    human_bytes,
    not_running,
    observation,
)
from clusterwatch.probes.values import label, short

_SQLITE_HEADER = b"SQLite format 3\x00"


def hint(check: OpenWebUICheck) -> str:
    """What to do when nothing answers: this check's own restart when it has one; no guess at Docker."""
    fix = check.fix_hint()
    return f"is Open WebUI running? (restart: {fix})" if fix else "is Open WebUI running?"


async def probe(check: OpenWebUICheck, ctx: ProbeContext) -> list[Observation]:
    timeout = ctx.timeout_for(check)
    base = check.url.rstrip("/")
    try:
        health = await fetch(ctx.http, f"{base}/health", timeout=timeout, max_body=check.max_body)
    except Unreachable as exc:
        reason = str(exc) if not_running(str(exc)) else f"/health: {exc}"
        return [down(check, base, reason, hint(check))]
    if health.status >= 500:
        fix = check.fix_hint()
        text = f"HTTP {health.status} on /health — Open WebUI needs a restart" + (f" ({fix})" if fix else "")
        return [down(check, base, text, latency_ms=health.latency_ms)]
    if health.status != 200:
        return [down(check, base, f"HTTP {health.status} on /health (not Open WebUI?)", latency_ms=health.latency_ms)]
    try:
        body = health.json()
    except Unreachable as exc:
        return [down(check, base, f"/health: {exc}", latency_ms=health.latency_ms)]
    if not isinstance(body, dict) or body.get("status") is not True:
        return [down(check, base, f'/health said {short(body)}, not {{"status": true}}', latency_ms=health.latency_ms)]

    async def get(path: str, max_body: int) -> HttpAnswer | Unreachable:
        try:
            return await fetch(ctx.http, base + path, timeout=timeout, max_body=max_body)
        except Unreachable as exc:
            return exc

    async def nothing() -> None:
        return None

    ready, db, version, db_file = await asyncio.gather(
        get("/ready", check.max_body),
        get("/health/db", check.max_body) if check.check_db else nothing(),
        get("/api/version", 64 * 1024),
        _webui_db(check, ctx, timeout) if check.data_dir else nothing(),
    )
    problems: list[tuple[Status, str]] = []
    details: dict[str, object] = {}
    metrics: dict[str, float] = {}
    serving = True  # False: Open WebUI itself says it cannot take traffic

    problem, details["ready"] = _ready(ready)
    if problem:
        problems.append(problem)
        serving = False
    if db is not None:
        problem, details["database"] = _database(db)
        if problem:
            problems.append(problem)
            serving = False
    if db_file is not None:
        problem, details["webui_db"], size = db_file
        if problem:
            problems.append(problem)
        if size is not None:
            metrics["webui_db_bytes"] = size
    if isinstance(version, HttpAnswer) and version.status == 200:
        try:
            data = version.json()
        except Unreachable:
            data = None  # the version is a nicety, not health
        if isinstance(data, dict) and isinstance(data.get("version"), str):
            details["version"] = label(data["version"], 40)

    if problems:
        status = Status.worst([s for s, _ in problems])
        text = "; ".join(t for _, t in sorted(problems, key=lambda p: -p[0].severity))
    else:
        status = Status.OK
        text = "healthy" + (", ready" if details["ready"] == "ready" else "")
        if "version" in details:
            text = f"Open WebUI {details['version']}: {text}"
        if details.get("database") == "ok":
            text += ", database ok"
        if "webui_db_bytes" in metrics:
            text += f", webui.db {human_bytes(metrics['webui_db_bytes'])}"
    obs = observation(check, status, text, target=base, latency_ms=health.latency_ms, metrics=metrics, details=details)
    obs.down = not serving
    return [obs]


def _ready(answer: HttpAnswer | Unreachable) -> tuple[tuple[Status, str] | None, str]:
    """A problem `/ready` shows (or None), and what it said in a word for the details."""
    if isinstance(answer, Unreachable):
        return (Status.CRITICAL, f"/ready: {answer}"), "no answer"
    if answer.status in (404, 405):
        return None, f"no /ready (HTTP {answer.status}: an Open WebUI before it had one)"
    body = _json_or_none(answer)
    if answer.status == 200:  # readiness is the status code; only a body that says otherwise outweighs it
        if body is None:
            return None, "no /ready (its web app answered: an Open WebUI before it had one)"
        if isinstance(body, dict) and body.get("status") is False:
            return (Status.CRITICAL, f"/ready said {short(body)}"), "not ready"
        return None, "ready"
    if answer.status == 503:
        detail = body.get("detail") if isinstance(body, dict) else None
        said = detail if isinstance(detail, str) and detail.strip() else answer.text.strip()[:200]
        reason = label(said, 200) if said else "no reason given"
        return (Status.CRITICAL, f"not ready: {reason} (HTTP 503 on /ready)"), f"not ready: {reason}"
    if answer.status >= 500:
        return (Status.CRITICAL, f"HTTP {answer.status} on /ready"), f"HTTP {answer.status}"
    return None, f"no usable /ready (HTTP {answer.status})"


def _database(answer: HttpAnswer | Unreachable) -> tuple[tuple[Status, str] | None, str]:
    if isinstance(answer, Unreachable):
        return (Status.CRITICAL, f"/health/db: {answer}"), "no answer"
    if answer.status >= 500:
        return (Status.CRITICAL, f"database check failed (HTTP {answer.status} on /health/db)"), "failed"
    if answer.status != 200:
        return None, f"no /health/db (HTTP {answer.status})"
    body = _json_or_none(answer)  # a failed ping is a 500: a 200 is a good one, unless its body says otherwise
    if body is None:
        return None, "no /health/db (its web app answered)"
    if isinstance(body, dict) and body.get("status") is False:
        return (Status.CRITICAL, f"/health/db said {short(body)}"), "failed"
    return None, "ok"


def _json_or_none(answer: HttpAnswer) -> object | None:
    try:
        return answer.json()
    except Unreachable:
        return None


async def _webui_db(
    check: OpenWebUICheck, ctx: ProbeContext, timeout: float
) -> tuple[tuple[Status, str] | None, str, float | None]:
    """`webui.db` in data_dir, where this probe runs: (a problem, a word for the details, its size)."""
    assert check.data_dir is not None
    node = next((n for n in ctx.config.nodes if n.name == check.node), None)
    if check.node not in (None, "local") and not (node is not None and node.agent):
        # The probe runs here, the data on a node reached over SSH: nothing honest to say about it.
        return None, f"not checked: {check.data_dir} is on {check.node}", None
    path = os.path.join(check.data_dir, "webui.db")
    try:
        return await blocking.disks.run(f"openwebui:{path}", timeout, _read_db, check.data_dir, path)
    except blocking.Blocked as exc:
        return (Status.CRITICAL, f"{path}: {exc} (its disk hangs)"), "blocked", None


def _read_db(data_dir: str, path: str) -> tuple[tuple[Status, str] | None, str, float | None]:
    restart = "the next restart would start Open WebUI on a new, empty database"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if not os.path.isdir(data_dir):
            return (Status.CRITICAL, f"data_dir {data_dir} does not exist — {restart}"), "missing", None
        return (Status.CRITICAL, f"{path} is missing — {restart}; restore it from a backup first"), "missing", None
    except OSError as exc:
        return (Status.CRITICAL, f"cannot reach {path}: {exc.strerror or exc}"), "unreadable", None
    if not stat.S_ISREG(info.st_mode):
        return (Status.CRITICAL, f"{path} is not a file"), "not a file", None
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return (Status.CRITICAL, f"cannot read {path}: {exc.strerror or exc}"), "unreadable", None
    if info.st_size == 0:
        return (Status.CRITICAL, f"{path} is empty (0 bytes): no users, no chats"), "empty", 0.0
    if head != _SQLITE_HEADER:
        return (Status.CRITICAL, f"{path} is not a SQLite database"), "not SQLite", float(info.st_size)
    return None, "ok", float(info.st_size)
