"""The JSON API under /api/v1/: status, checks and their history, events, incidents, actions,
silences. Reads are cheap (live state in memory, history paginated by cursor); writes need the token."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch import redact
from clusterwatch.alerting.routing import Silence
from clusterwatch.config.durations import parse_duration
from clusterwatch.config.schema import MATCH_KEYS
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Status, json_safe
from clusterwatch.web.metrics import current_leader
from clusterwatch.web.openapi import spec
from clusterwatch.web.queries import MAX_LIMIT
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.web.view import MonitorView as Monitor

STATUSES = {s.value for s in Status}
SNAPSHOT_AT = 1000  # entities above which the unfiltered answers come from a snapshot
_ENTITY, _NODE = re.escape("{entity}"), re.escape("{node}")  # a per-entity step's target, as a pattern


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def monitor_of(request: web.Request) -> Monitor:
    return request.app[MONITOR]  # type: ignore[no-any-return]


def entity_json(m: Monitor, state: EntityState) -> dict[str, Any]:
    last = state.last
    return {
        "name": state.name,
        "check": state.check,
        "kind": m.kinds.get(state.name, last.kind if last else ""),
        "node": state.node,
        "group": last.group.value if last else None,
        "status": last.status.value if last else "unknown",
        "hard": state.hard.value if state.hard else None,
        "since": state.since,
        "message": last.message if last else "",
        "target": last.target if last else "",
        "latency_ms": last.latency_ms if last else None,
        "checked_at": state.last_at,
        "flapping": state.flapping,
        "incident": state.incident,
        "affected_by": state.affected_by,
        "version": m.versions.get(state.name, 0),
    }


def _int(request: web.Request, name: str, default: int | None, low: int = 0, high: int = 2**62) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def selected(m: Monitor, request: web.Request) -> list[EntityState]:
    """Filters shared by the API and the dashboard: status, kind, node, q (a name search)."""
    status, kind, node = request.query.get("status"), request.query.get("kind"), request.query.get("node")
    query = (request.query.get("q") or "").lower()
    if status and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(sorted(STATUSES))}")
    since = _int(request, "since_version", None)
    out = []
    for state in m.entities.values():
        last = state.last
        if status and (last is None or last.status.value != status):
            continue
        if kind and m.kinds.get(state.name) != kind:
            continue
        if node and (state.node or "") != node and not fnmatch.fnmatchcase(state.node or "", node):
            continue
        if query and query not in state.name.lower():
            continue
        if since is not None and m.versions.get(state.name, 0) <= since:
            continue
        out.append(state)
    return out


async def status(request: web.Request) -> web.Response:
    m = monitor_of(request)
    if not request.query and len(m.entities) > SNAPSHOT_AT:
        return web.Response(body=await m.web.snapshots["status"].get(), content_type="application/json")
    return web.json_response(status_body(m, selected(m, request)), dumps=_dumps)


async def render_status(m: Monitor) -> bytes:
    return _dumps(status_body(m, list(m.entities.values()))).encode()


def status_body(m: Monitor, states: list[EntityState]) -> dict[str, Any]:
    counts = {s: 0 for s in STATUSES}
    for state in m.entities.values():
        counts[state.last.status.value if state.last else "unknown"] += 1
    worst = Status.worst([e.last.status for e in m.entities.values() if e.last])
    body = {
        "status": worst.value,
        "version": m.version,
        "generated_at": time.time(),
        "summary": counts,
        "open_incidents": sum(1 for e in m.entities.values() if e.incident),
        "needs_person": needs_person(m),
        "checks": [entity_json(m, s) for s in states],
    }
    if m.web.history.needs_person_error:
        body["needs_person_error"] = m.web.history.needs_person_error
    return body


def needs_person(m: Monitor) -> list[dict[str, Any]]:
    """Restart targets the healer gave up on (`remediation_exhausted`), newest first, until a reset or a
    recovery gives their budget back; each with the command that resets it. From the web's last read of
    the store (every 2 s), never read per request. A ladder's earlier step used up is no giving up (the
    next step is tried), and a check no longer healed has nobody to give up: both are left out."""
    found = []
    for item in m.web.history.needs_person:
        name = item.get("check") or item["target"]
        if item.get("check") is not None and not _gave_up(m, item["check"], item["target"]):
            continue
        found.append({**item, "reset": f"clusterwatch heal reset {shlex.quote(name)}"})
    return found


def _gave_up(m: Monitor, check_name: str, target: str) -> bool:
    """Whether an exhausted target is where its check's ladder ends (its last step, for any entity)."""
    check = next((c for c in m.config.checks if c.name == check_name), None)
    restart = getattr(check, "restart", None)
    steps = restart if isinstance(restart, list) else [restart] if restart else []
    if not steps:
        return False
    key = redact.current().text  # targets are stored redacted
    matching = [
        i
        for i, step in enumerate(steps)
        if re.fullmatch(re.escape(key(step.target)).replace(_ENTITY, ".+").replace(_NODE, ".+"), target)
    ]
    return not matching or len(steps) - 1 in matching  # a target no step names: the config changed, still spent


def _dumps(data: Any) -> str:
    """Always valid JSON (RFC 8259 has no NaN): whatever a service answered, the API answers JSON."""
    return json.dumps(json_safe(data), separators=(",", ":"), default=str, allow_nan=False)


async def checks(request: web.Request) -> web.Response:
    m = monitor_of(request)
    items = []
    for name, item in m.items.items():
        restart = getattr(item, "restart", None)
        steps = restart if isinstance(restart, list) else [restart] if restart else []
        items.append(
            {
                "name": name,
                "kind": getattr(item, "kind", "ssh"),  # a node (SSH) has no kind of its own
                "node": getattr(item, "node", None),
                "interval": m.interval(item),
                "depends_on": list(item.depends_on),
                "restart": steps[0].action if steps else None,  # the first step: what is tried first
                "restart_steps": [step.action for step in steps],  # a ladder: each tried when the last did not help
                "entities": [e.name for e in m.entities_of(name)],
            }
        )
    return web.json_response({"items": items}, dumps=_dumps)


async def check(request: web.Request) -> web.Response:
    m = monitor_of(request)
    name = request.match_info["name"]
    state = m.entities.get(name)
    if state is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no check or entity {name!r}"}), content_type="application/json"
        )
    body = entity_json(m, state)
    body["metrics"] = state.last.metrics if state.last else {}
    body["details"] = state.last.details if state.last else {}
    body["uptime"] = m.web.history.uptime.get(name, {})
    body["recent_latency_ms"] = list(m.latencies.get(name, []))
    return web.json_response(body, dumps=_dumps)


async def history(request: web.Request) -> web.Response:
    m = monitor_of(request)
    name = request.match_info["name"]
    limit = _int(request, "limit", 100, 1, MAX_LIMIT) or 100
    page = await m.web.history.page(
        "observations", limit=limit, before=_int(request, "before", None), equals={"entity": name}
    )
    return web.json_response(page, dumps=_dumps)


async def events(request: web.Request) -> web.Response:
    m = monitor_of(request)
    equals = {
        column: request.query[param]
        for param, column in (("entity", "entity"), ("kind", "kind"), ("check", "check_name"))
        if request.query.get(param)
    }
    page = await m.web.history.page(
        "events",
        limit=_int(request, "limit", 100, 1, MAX_LIMIT) or 100,
        before=_int(request, "before", None),
        equals=equals,
    )
    return web.json_response(page, dumps=_dumps)


async def incidents(request: web.Request) -> web.Response:
    m = monitor_of(request)
    state = request.query.get("state")
    if state not in (None, "", "open", "closed"):
        raise BadRequest("state must be open or closed")
    page = await m.web.history.page(
        "incidents",
        limit=_int(request, "limit", 100, 1, MAX_LIMIT) or 100,
        before=_int(request, "before", None),
        closed={"open": False, "closed": True}.get(state or ""),
    )
    return web.json_response(page, dumps=_dumps)


async def actions(request: web.Request) -> web.Response:
    m = monitor_of(request)
    page = await m.web.history.page(
        "actions",
        limit=_int(request, "limit", 100, 1, MAX_LIMIT) or 100,
        before=_int(request, "before", None),
    )
    return web.json_response(page, dumps=_dumps)


def silence_json(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": s.matchers,
        "starts": s.starts,
        "ends": s.ends,
        "reason": s.reason,
        "created_by": s.created_by,
    }


async def silences(request: web.Request) -> web.Response:
    m = monitor_of(request)
    found = await m.silences()
    return web.json_response({"items": [silence_json(s) for s in found]}, dumps=_dumps)


async def create_silence(request: web.Request) -> web.Response:
    m = monitor_of(request)
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body must be JSON: {matchers, duration, reason}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    matchers, reason, duration = data.get("matchers"), data.get("reason"), data.get("duration")
    if (
        not isinstance(matchers, dict)
        or not matchers
        or not all(isinstance(k, str) and k in MATCH_KEYS and isinstance(v, str) and v for k, v in matchers.items())
    ):
        raise BadRequest(
            f"matchers must be a non-empty object with keys among {', '.join(MATCH_KEYS)} and glob strings as values"
        )
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason must be a non-empty string")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise BadRequest(f"duration: {exc}") from None
    if not 0 < seconds <= 366 * 86400:
        raise BadRequest("duration must be between 1s and 366d")
    silence = Silence.new(matchers, seconds, reason.strip()[:500], request.get("actor", "api"))
    await m.add_silence(silence)
    return web.json_response(silence_json(silence), status=201, dumps=_dumps)


async def delete_silence(request: web.Request) -> web.Response:
    m = monitor_of(request)
    if not await m.remove_silence(request.match_info["id"]):
        raise web.HTTPNotFound(text=json.dumps({"error": "no such silence"}), content_type="application/json")
    return web.Response(status=204)


async def group(request: web.Request) -> web.Response:
    """The group of monitors as this monitor last read it (see server.GroupRead: never read per request).

    Alone: `{"ha": false}` (an answer, not a missing page: a script asks every monitor the same)."""
    m = monitor_of(request)
    if not m.ha_enabled:
        return web.json_response({"ha": False}, dumps=_dumps)
    return web.json_response(group_body(m), dumps=_dumps)


def group_body(m: Monitor) -> dict[str, Any]:
    read = m.web.group
    found = read.value or {}
    age = read.age()
    lease = found.get("lease")
    return {
        "ha": True,
        "leader": current_leader(found) if read.fresh() is not None else None,
        "lease": lease,
        "members": found.get("members", []),
        "self": found.get("self"),
        "read_age_s": None if age is None else round(age, 3),
        "stale": read.fresh() is None,
        "error": read.error,
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


def routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/status", status)
    r.add_get("/api/v1/checks", checks)
    r.add_get("/api/v1/checks/{name:.+}/history", history)
    r.add_get("/api/v1/checks/{name:.+}", check)
    r.add_get("/api/v1/events", events)
    r.add_get("/api/v1/incidents", incidents)
    r.add_get("/api/v1/actions", actions)
    r.add_get("/api/v1/silences", silences)
    r.add_post("/api/v1/silences", create_silence)
    r.add_delete("/api/v1/silences/{id}", delete_silence)
    r.add_get("/api/v1/group", group)
    r.add_get("/api/v1/openapi.json", openapi)
