"""`/status`: the cluster as the people who use it need to see it, and nothing more.

For each check chosen by `web.status_page.checks` (globs on check names): its state as a word and a
shape (not colour alone), since when, its uptime over the last 24 h as 48 bars and as a percentage
by time (two decimals); the open incidents; the maintenance windows (`alerts.maintenance`) coming up
that touch a chosen check. With `public: true` anyone who can reach the web may read it (server.py
lets this path, and only it, through without the token).

What it never shows, because a public page must hold nothing secret or internal:
- hosts, URLs, ports, commands, node names, entity names inside a check (a Dask worker's name may be
  its address), the checks' config, anything about checks that were not chosen;
- probe messages, even of chosen checks, even redacted: a probe's message names what it reached
  ("connection refused to 10.0.0.5:8080", "GET http://ollama:11434/api/tags"), which the redactor
  does not (and should not) mask. An incident is therefore told by its status word and a fixed text
  for that status; a maintenance window by its `reason` (written by the operator for people) and times.

A check with several parts (a Dask cluster and its workers) is shown as one service: the worst of its
parts' confirmed (hard) states, and the uptime of its parts averaged by time.
"""

from __future__ import annotations

import fnmatch
import html
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch import redact
from clusterwatch.alerting.routing import matches
from clusterwatch.config.durations import format_duration
from clusterwatch.config.schema import DAYS, MaintenanceWindow, StatusPage
from clusterwatch.web import svg
from clusterwatch.web.cache import Snapshot
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.engine.state import EntityState
    from clusterwatch.web.view import MonitorView as Monitor

PATHS = frozenset({"/status"})  # what a public status page opens without the token: this page, no assets
SLOTS = 48
WINDOW = 86400.0
SLOT = WINDOW / SLOTS
MAINTENANCE_AHEAD = 7 * 86400.0
MAINTENANCE_SHOWN = 10
TTL = 2.0  # the page is built at most this often, however many people read it
SNAPSHOT = web.AppKey("status_page", Snapshot)  # the page as last built
SEVERITY = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3}
# What a person reads for each status: a shape and a sentence, never the probe's own message.
SHAPE = {"ok": "✓", "warning": "!", "critical": "✕", "unknown": "?"}
STATE_TEXT = {
    "ok": "operating normally",
    "warning": "degraded",
    "critical": "not available",
    "unknown": "state unknown",
}
INCIDENT_TEXT = {
    "critical": "The service is not available or not answering as it should. It is being looked into.",
    "warning": "The service works, but slower or less completely than it should.",
    "unknown": "The service's state cannot be determined at the moment.",
    "ok": "The service is answering again and is being watched.",
}

CSS = """
:root{color-scheme:light dark;--bg:#f7f7f9;--card:#fff;--fg:#1a202c;--muted:#4a5568;--line:#e2e8f0;
--ok:#17663a;--warning:#8a5300;--critical:#b91c1c;--unknown:#5a4b8a}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1c2128;--fg:#e8ecf1;--muted:#a9b4c2;--line:#2d333b}}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
background:var(--bg);color:var(--fg)}header,main,footer{max-width:56rem;margin:auto;padding:.5rem 1rem}
h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}h3{font-size:1rem;margin:0}
.overall{font-size:1.05rem;font-weight:600;padding:.75rem 1rem;border-radius:.4rem;color:#fff}
.o-ok{background:var(--ok)}.o-warning{background:var(--warning)}.o-critical{background:var(--critical)}
.o-unknown{background:var(--unknown)}
ul{list-style:none;margin:0;padding:0}.card{background:var(--card);border:1px solid var(--line);
border-left:.4rem solid var(--unknown);border-radius:.4rem;padding:.75rem 1rem;margin:.5rem 0}
.card.s-ok{border-left-color:var(--ok)}.card.s-warning{border-left-color:var(--warning)}
.card.s-critical{border-left-color:var(--critical)}
.head{display:flex;flex-wrap:wrap;gap:.25rem .75rem;align-items:baseline}.head h3{flex:1 1 10rem;
overflow-wrap:anywhere}.badge{display:inline-block;padding:.05rem .5rem;border-radius:.25rem;font-weight:700;
font-size:.8rem;color:#fff;white-space:nowrap}.b-ok{background:var(--ok)}.b-warning{background:var(--warning)}
.b-critical{background:var(--critical)}.b-unknown{background:var(--unknown)}.muted{color:var(--muted)}
.bars{margin:.5rem 0 .1rem}.bars svg{display:block;max-width:100%}.scale{display:flex;justify-content:space-between;
font-size:.8rem;color:var(--muted)}.uptime{font-weight:600}p{margin:.25rem 0}
footer{font-size:.85rem;color:var(--muted)}
"""

# Live without a reload: the page asks for itself again and swaps its main part in (no other path needed).
JS = """
async function refresh() {
  try {
    const r = await fetch(location.pathname, {credentials: 'same-origin', cache: 'no-store'});
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
    for (const id of ['status-main', 'status-overall', 'status-updated']) {
      const fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }
  } catch (e) {}
}
setInterval(refresh, 5000);
"""


@dataclass(frozen=True)
class Service:
    """One chosen check as the page shows it: no node, no entity names, no message."""

    name: str
    status: str
    since: float | None
    parts: int
    entities: tuple[str, ...]
    incident_since: float | None  # the earliest open incident among its parts


def esc(value: Any) -> str:
    return html.escape(str(value if value is not None else ""), quote=True)


def chosen_checks(m: Monitor, page: StatusPage) -> list[str]:
    """The configured checks (and nodes) whose names match the page's globs, in config order."""
    return [name for name in m.items if any(fnmatch.fnmatchcase(name, glob) for glob in page.checks)]


def _status(state: EntityState) -> str:
    """The confirmed (hard) state: a blip that the monitor has not confirmed is not news for users."""
    return state.hard.value if state.hard is not None else "unknown"


def services(m: Monitor, page: StatusPage) -> list[Service]:
    found = []
    for check in chosen_checks(m, page):
        parts = m.entities_of(check)
        if not parts:
            found.append(Service(check, "unknown", None, 0, (), None))
            continue
        worst = min((_status(p) for p in parts), key=SEVERITY.__getitem__)
        if worst == "ok":  # up since the last part came back
            since: float | None = max(p.since for p in parts)
        else:  # down since the first part went
            since = min(p.since for p in parts if _status(p) == worst)
        opened = [p.incident_started for p in parts if p.incident and p.incident_started]
        found.append(
            Service(
                check,
                worst,
                since or None,
                len(parts),
                tuple(p.name for p in parts),
                min(opened) if opened else None,
            )
        )
    return found


def window_end(now: float) -> float:
    """The end of the last bar: the end of the current half hour, so bars stay put between builds."""
    return (now // SLOT + 1) * SLOT


def combined_slots(
    service: Service,
    found: dict[str, list[tuple[float, float]]],
    start: float,
    incidents: list[dict[str, Any]] | None = None,
) -> list[svg.Slot]:
    """The service's bars: its parts' seconds up and known, averaged over the parts; a slot an incident of
    the service touched says so by its severity only (its message may name a host)."""
    n = max(1, service.parts)
    mine = [i for i in incidents or () if i["entity"] in service.entities]
    slots = []
    for i in range(SLOTS):
        a, b = start + i * SLOT, start + (i + 1) * SLOT
        ok = known = 0.0
        for entity in service.entities:
            got = found.get(entity)
            if got:
                ok += got[i][0]
                known += got[i][1]
        share = None if known <= 0 else max(0.0, 1.0 - ok / known)
        under = [x for x in mine if x["opened"] < b and (x.get("closed") is None or x["closed"] >= a)]
        label = None
        if under:
            worst = min((str(x.get("worst") or x.get("status") or "critical") for x in under), key=_rank)
            label = f"incident: {STATE_TEXT.get(worst, worst)} ({worst})"
        slots.append(svg.Slot(a, b, share, incident=label, known=known / n if known else None))
    return slots


def _rank(status: str) -> int:
    return SEVERITY.get(status, 0)


def _at(day: datetime, hhmm: str) -> datetime:
    hours, minutes = int(hhmm[:2]), int(hhmm[3:])
    return day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=hours, minutes=minutes)


def upcoming(
    windows: list[MaintenanceWindow], now: float, ahead: float = MAINTENANCE_AHEAD
) -> list[tuple[float, float, MaintenanceWindow]]:
    """(start, end, window) of each weekly window's times that end after `now` and begin within `ahead`,
    soonest first, local time as the alerter reads them (a window whose end is before its start runs
    over midnight; `24:00` is the day's end)."""
    here = datetime.fromtimestamp(now)
    found = []
    for window in windows:
        if window.start == window.end:
            continue
        for offset in range(-1, int(ahead // 86400) + 2):
            day = here + timedelta(days=offset)
            if DAYS[day.weekday()] not in window.days:
                continue
            begin, finish = _at(day, window.start), _at(day, window.end)
            if finish <= begin:
                finish += timedelta(days=1)
            b, f = begin.timestamp(), finish.timestamp()
            if f > now and b < now + ahead:
                found.append((b, f, window))
    found.sort(key=lambda item: item[0])
    return found


def touches(window: MaintenanceWindow, m: Monitor, service: Service) -> bool:
    """Whether a window holds notifications for any part of the service (any severity)."""
    item = m.items.get(service.name)
    kind = getattr(item, "kind", "node")
    for entity in service.entities or (service.name,):
        state = m.entities.get(entity)
        labels = {
            "check": service.name,
            "entity": entity,
            "kind": str(kind),
            "node": (state.node if state else None) or "",
            "severity": "critical",
        }
        if matches(window.match, labels):  # type: ignore[arg-type]
            return True
    return False


def _clock(at: float, now: float) -> str:
    same_day = time.localtime(at)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M" if same_day else "%a %d %b %H:%M", time.localtime(at))


def _badge(status: str) -> str:
    return f'<span class="badge b-{status}">{SHAPE[status]} {status}</span>'


def service_card(service: Service, slots: list[svg.Slot], now: float) -> str:
    share = svg.uptime_share(slots)
    if service.since is None:
        since = '<span class="muted">not checked yet</span>'
    else:
        lasted = format_duration(max(0.0, now - service.since))
        since = (
            f'<span class="muted">{esc(STATE_TEXT[service.status])} for {lasted}'
            f" (since {_clock(service.since, now)})</span>"
        )
    bars = svg.uptime_bars(slots, label=f"{service.name}, last 24 hours")
    return (
        f'<li class="card s-{service.status}" data-service="{esc(service.name)}" data-status="{service.status}">'
        f'<div class="head">{_badge(service.status)}<h3>{esc(service.name)}</h3>{since}</div>'
        f'<div class="bars">{bars}</div><div class="scale" aria-hidden="true"><span>24 h ago</span><span>now</span>'
        f"</div><p>{_uptime(share, slots)}</p></li>"
    )


def _uptime(share: float | None, slots: list[svg.Slot]) -> str:
    if share is None:  # the minute a service is in is written when it ends
        return '<span class="uptime">no data</span> <span class="muted">recorded in the last 24 hours yet</span>'
    return (
        f'<span class="uptime">{svg.format_percent(share)}</span> '
        f'<span class="muted">up over the last 24 hours, by time{_measured(slots)}</span>'
    )


def _measured(slots: list[svg.Slot]) -> str:
    """How much of the day was watched, when not nearly all of it: 100% of five minutes is not 100% of a day."""
    known = sum(s.known or 0.0 for s in slots if s.down_share is not None)
    if known >= 0.95 * WINDOW:
        return ""
    return f" (watched for {format_duration(known)} of them)" if known > 0 else ""


def incidents_section(found: list[Service], now: float) -> str:
    items = [
        f'<li class="card s-{s.status}" data-incident="{esc(s.name)}"><div class="head">{_badge(s.status)}'
        f'<h3>{esc(s.name)}</h3><span class="muted">open for {format_duration(max(0.0, now - s.incident_since))} '
        f"(since {_clock(s.incident_since, now)})</span></div><p>{esc(INCIDENT_TEXT[s.status])}</p></li>"
        for s in sorted((s for s in found if s.incident_since is not None), key=lambda s: s.incident_since or 0)
    ]
    body = f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">None: nothing is being looked into.</p>'
    return f'<section aria-labelledby="incidents-h"><h2 id="incidents-h">Open incidents</h2>{body}</section>'


def _repeats(window: MaintenanceWindow) -> str:
    if set(window.days) == set(DAYS):
        return "every day"
    return "every " + ", ".join(day.capitalize() for day in DAYS if day in window.days)


def _span(begin: float, end: float, now: float) -> str:
    if begin <= now:
        return f"<b>now</b>, until {_clock(end, now)}"
    same_day = time.localtime(begin)[:3] == time.localtime(end - 1)[:3]
    until = time.strftime("%H:%M", time.localtime(end)) if same_day else _clock(end, now)
    return f"{_clock(begin, now)} – {until} (in {format_duration(begin - now)})"


def maintenance_section(m: Monitor, found: list[Service], now: float) -> str:
    """Each window that touches a chosen service once, at its next (or current) time, with how it repeats."""
    items = []
    seen: set[int] = set()
    for begin, end, window in upcoming(list(m.config.alerts.maintenance), now):
        if id(window) in seen:
            continue
        seen.add(id(window))
        touched = [s.name for s in found if touches(window, m, s)]
        if not touched:
            continue
        items.append(
            f'<li class="card s-unknown"><p>{_span(begin, end, now)}: {esc(redact.text(window.reason))}</p>'
            f'<p class="muted">{_repeats(window)}; affects {esc(", ".join(touched))}</p></li>'
        )
        if len(items) >= MAINTENANCE_SHOWN:
            break
    body = f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">None planned in the next 7 days.</p>'
    return f'<section aria-labelledby="maintenance-h"><h2 id="maintenance-h">Maintenance</h2>{body}</section>'


def overall(found: list[Service]) -> tuple[str, str]:
    if not found:
        return "unknown", "No services are shown here."
    worst = min((s.status for s in found), key=SEVERITY.__getitem__)
    bad = sum(1 for s in found if s.status != "ok")
    if worst == "ok":
        return "ok", "All services are operating normally."
    return worst, f"{bad} of {len(found)} service{'' if len(found) == 1 else 's'} with a problem."


async def build(m: Monitor) -> str:
    page = m.config.web.status_page
    assert page is not None
    now = time.time()
    found = services(m, page)
    end = window_end(now)
    start = end - WINDOW
    entities = sorted({e for s in found for e in s.entities})
    try:
        history = await m.web.history.uptime_slots(start, end, SLOTS, entities)
        incidents = await m.web.history.incidents_between(start, end, entities)
    except Exception:  # the store away: the states still show, the bars say "no data"
        history, incidents = {}, []
    cards = "".join(service_card(s, combined_slots(s, history, start, incidents), now) for s in found)
    status, summary = overall(found)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>{esc(page.title)}</title><style>{CSS}</style></head>'
        f'<body><header><h1>{esc(page.title)}</h1><p id="status-overall" class="overall o-{status}">'
        f"{SHAPE[status]} {esc(summary)}</p></header>"
        f'<main id="status-main"><section aria-labelledby="services-h"><h2 id="services-h">Services</h2>'
        f"<ul>{cards}</ul></section>{incidents_section(found, now)}{maintenance_section(m, found, now)}</main>"
        f'<footer><p id="status-updated">Updated {time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))}; '
        f"the bars are half hours, each showing the share of that time a service was down.</p></footer>"
        f"<script>{JS}</script></body></html>"
    )


async def status(request: web.Request) -> web.Response:
    m: Monitor = request.app[MONITOR]
    if m.config.web.status_page is None:
        raise web.HTTPNotFound(text="no status page: set web.status_page in the config")
    text = await request.app[SNAPSHOT].get()
    return web.Response(
        text=text,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def routes(app: web.Application) -> None:
    snapshot = Snapshot(lambda: build(app[MONITOR]), ttl=TTL)
    app[SNAPSHOT] = snapshot

    async def stop(_: web.Application) -> None:
        await snapshot.stop()

    app.on_cleanup.append(stop)
    app.router.add_get("/status", status)
