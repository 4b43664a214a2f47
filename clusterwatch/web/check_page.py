"""A check's own page (`/checks/{entity}`): what it is now, its latency and uptime over the last 24 h as
pictures, its incidents on a timeline with the healer's attempts, its events and actions, and its
config with secrets masked. For the people who run the monitor (behind the token when reading is).

The pictures come from the rollups (never from raw observations), read in the web's own threads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from clusterwatch import redact
from clusterwatch.config.durations import format_duration
from clusterwatch.web import history_svg, svg
from clusterwatch.web.dashboard import actions_box, esc, page, row
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.web.view import MonitorView as Monitor

WINDOW = 86400.0
SLOTS = 48
LATENCY_BUCKETS = 144  # ten minutes each
INCIDENT_ROWS = 20
OBSERVATION_ROWS = 20
EVENT_ROWS = 50
SCROLL = 'style="overflow-x:auto"'
# The charts at the page's width up to a reading width (svg.py's inline max-width:100% caps them at the
# column; a report file without this keeps their own size).
STYLE = "<style>.chart{max-width:56rem}.chart svg{width:100%}</style>"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f} ms"


def _stamp(at: float | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def config_of(m: Monitor, check: str) -> str:
    """The check's (or node's) config as YAML, every secret masked: values the config took from the
    environment or a file, and anything under a secret's name (headers such as Authorization, passwords)."""
    item = m.items.get(check)
    if item is None:
        return "(no longer in the config)"
    data = redact.current().data(item.model_dump(mode="json", exclude_none=True))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _last(incident: dict[str, Any]) -> str:
    """The incident's last message, when it says something its first did not."""
    last = incident.get("last_message")
    if not last or last == incident.get("message"):
        return ""
    return f'<br><span class="muted">last: {esc(last)}</span>'


def _incident_rows(items: list[dict[str, Any]], now: float) -> str:
    rows = []
    for i in items:
        closed = i.get("closed")
        lasted = (closed if closed is not None else now) - float(i["opened"])
        severity = i.get("worst") or i.get("status") or "unknown"
        rows.append(
            f"<tr><td>{_stamp(i['opened'])}</td><td>{_stamp(closed) if closed is not None else '<b>open</b>'}</td>"
            f"<td>{format_duration(max(0.0, lasted))}</td>"
            f'<td><span class="badge b-{esc(severity)}">{esc(severity)}</span></td>'
            f"<td>{esc(i.get('message'))}"
            f"{_last(i)}"
            f"</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="5" class="muted">none</td></tr>'
    return f"<table><tr><th>opened</th><th>closed</th><th>lasted</th><th>worst</th><th>why</th></tr>{body}</table>"


async def check_page(request: web.Request) -> web.Response:
    m: Monitor = request.app[MONITOR]
    name = request.match_info["name"]
    state = m.entities.get(name)
    if state is None:
        raise web.HTTPNotFound(text=f"no check named {name}")
    history = m.web.history
    now = time.time()
    end = (now // (WINDOW / SLOTS) + 1) * (WINDOW / SLOTS)  # bars on whole half hours
    start = end - WINDOW
    last = state.last
    latency = await history.latency_series(name, now - WINDOW, now, LATENCY_BUCKETS)
    seconds = await history.uptime_slots(start, end, SLOTS, [name])
    window_incidents = await history.incidents_between(start, end, [name])
    actions = [a for a in await history.actions_between(start, end, state.check) if a["entity"] in (name, state.check)]
    recent = (await history.page("incidents", limit=INCIDENT_ROWS, before=None, equals={"entity": name}))["items"]
    events = await history.recent_events(name, EVENT_ROWS)
    observations = await history.recent_observations(name, OBSERVATION_ROWS)

    width = WINDOW / LATENCY_BUCKETS
    chart = svg.latency_chart([(p["ts"] + width / 2, p["p50"], p["p95"]) for p in latency], now - WINDOW, now)
    slots = history_svg.slots(seconds.get(name), start, end, SLOTS, window_incidents)
    bars = svg.uptime_bars(slots, label=f"{name}, last 24 hours")
    timeline = svg.timeline(
        history_svg.spans(window_incidents, with_entity=False), history_svg.marks(actions, window_incidents), start, now
    )
    metrics = (
        "".join(
            f"<tr><td>{esc(k)}</td><td>{v:g}</td></tr>"
            for k, v in sorted((last.metrics or {}).items())
            if isinstance(v, int | float)
        )
        if last
        else ""
    )
    event_rows = (
        "".join(
            f"<tr><td>{time.strftime('%m-%d %H:%M:%S', time.localtime(e['ts']))}</td>"
            f"<td>{esc(e['kind'])}</td><td>{esc(e['old'] or '')} → {esc(e['new'] or '')}</td>"
            f"<td>{esc(e['message'])}</td></tr>"
            for e in events
        )
        or '<tr><td colspan="4" class="muted">none</td></tr>'
    )
    obs_rows = (
        "".join(
            f'<tr><td>{time.strftime("%H:%M:%S", time.localtime(o["ts"]))}</td><td><span class="badge '
            f'b-{esc(o["status"])}">{esc(o["status"])}</span></td><td>{esc(o["message"])}</td><td>'
            f"{_ms(o['latency_ms'])}</td></tr>"
            for o in observations
        )
        or '<tr><td colspan="4" class="muted">none</td></tr>'
    )
    body = (
        f"{STYLE}<section><h2>{esc(name)}</h2>{row(m, state, now)}"
        f'<p class="muted">check {esc(state.check)} · target {esc(last.target if last else "")} · '
        f"in this state since {_stamp(state.since)}</p></section>"
        f'<section id="latency"><h2>Latency, last 24 hours</h2><div class="chart">{chart}</div></section>'
        f'<section id="uptime"><h2>Uptime, last 24 hours</h2><div class="chart">{bars}</div>'
        f"<p><b>{svg.format_percent(svg.uptime_share(slots), measuring=last is not None)}</b> "
        f'<span class="muted">up by time, in half-hour bars</span></p></section>'
        f'<section id="incidents"><h2>Incidents</h2><div class="chart">{timeline}</div>'
        f"<div {SCROLL}>{_incident_rows(recent, now)}</div></section>"
        f'<div class="grid2"><section><h2>Metrics</h2><table>{metrics or "<tr><td class=muted>none</td></tr>"}'
        f'</table></section><section id="events"><h2>Events</h2><table>{event_rows}</table></section></div>'
        f"{await actions_box(m, state.check, 20)}"
        f'<section id="config"><h2>Configuration <span class="muted">(secrets masked)</span></h2>'
        f'<pre style="overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;background:var(--card,#fff);'
        f'padding:.5rem;border-radius:.3rem">{esc(config_of(m, state.check))}</pre></section>'
        f"<section><h2>Recent observations</h2><table>{obs_rows}</table></section>"
    )
    return page(name, body, m, partial=True)


def routes(app: web.Application) -> None:
    app.router.add_get("/checks/{name:.+}", check_page)
