"""The dashboard: server-rendered HTML, no CDN, live by polling the API's changes every 1.5 s."""

from __future__ import annotations

import html
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch.config.durations import format_duration
from clusterwatch.model import Group
from clusterwatch.web.api import SNAPSHOT_AT, BadRequest, needs_person, selected
from clusterwatch.web.metrics import current_leader, recent_members

if TYPE_CHECKING:
    from clusterwatch.engine.state import EntityState
    from clusterwatch.web.view import MonitorView as Monitor

PAGE_ROWS = 500
GROUPS = [
    (Group.SERVICES, "Services"),
    (Group.MODELS, "Models"),
    (Group.WORKERS, "Dask workers"),
    (Group.NODES, "Nodes"),
    (Group.SYSTEM, "This machine"),
]
SEVERITY = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3}

CSS = """
:root{--ok:#1f9d55;--warning:#d69e2e;--critical:#e3342f;--unknown:#9561e2;--bg:#f7f7f9;--fg:#1a202c;--muted:#718096}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
background:var(--bg);color:var(--fg)}header{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;
padding:.75rem 1rem;background:#1a202c;color:#fff}header h1{font-size:1.1rem;margin:0}header a{color:#fff}
.badge{padding:.15rem .5rem;border-radius:.25rem;font-weight:600;color:#fff;text-transform:uppercase;font-size:.75rem}
.b-ok{background:var(--ok)}.b-warning{background:var(--warning)}.b-critical{background:var(--critical)}
.b-unknown{background:var(--unknown)}main{padding:1rem;max-width:1400px;margin:auto}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}form.filters *{font:inherit;padding:.3rem}
section{margin-bottom:1.25rem}h2{font-size:1rem;margin:.5rem 0}
.row{display:grid;grid-template-columns:6.5rem minmax(9rem,16rem) 1fr 5rem 7rem 6rem;gap:.5rem;align-items:center;
background:#fff;border-left:.35rem solid var(--muted);padding:.4rem .6rem;margin:.2rem 0;border-radius:.2rem}
.row.s-ok{border-color:var(--ok)}.row.s-warning{border-color:var(--warning)}.row.s-critical{border-color:var(--critical)}
.row.s-unknown{border-color:var(--unknown)}.name{font-weight:600;word-break:break-all}.msg{color:#2d3748}
.muted{color:var(--muted);font-size:.8rem}.up{display:flex;gap:2px;align-items:flex-end;height:1.6rem}
.up span{display:inline-block;width:1.9rem;font-size:.62rem;overflow:hidden;text-align:center;color:#fff;
border-radius:2px}
svg.spark{width:7rem;height:1.6rem}table{border-collapse:collapse;width:100%;background:#fff;table-layout:fixed}
td,th{overflow-wrap:anywhere}section{min-width:0}.grid2>section{overflow-x:auto}.grid2>.wide{grid-column:1/-1}
td,th{padding:.3rem .5rem;border-bottom:1px solid #e2e8f0;text-align:left;vertical-align:top}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(22rem,100%),1fr));gap:1rem}
@media (max-width:720px){main{padding:.5rem}.row{grid-template-columns:5.5rem minmax(0,1fr)}.msg{min-width:0;
overflow-wrap:anywhere}.row .msg{grid-column:1/3}
.row .since,.row .spark-cell,.row .up{display:none}}
#group p{margin:.3rem 0}#group .grid2{margin-top:.5rem}.b-standby{background:var(--muted)}
.b-recovered{background:#3182ce}#needs-person{background:#fff5f5;border:2px solid var(--critical);
border-radius:.3rem;padding:.5rem 1rem;margin-bottom:1rem}#needs-person h2{color:var(--critical)}
#needs-person ul{margin:.3rem 0;padding-left:1.2rem}#needs-person li{margin:.3rem 0;overflow-wrap:anywhere}
code{background:#edf2f7;padding:0 .25rem;border-radius:.2rem}
"""

JS = """
let version = Number(document.body.dataset.version);
const fmt = s => s < 90 ? Math.round(s) + 's' : s < 5400 ? Math.round(s / 60) + 'm' : s < 172800 ?
  Math.round(s / 3600) + 'h' : Math.round(s / 86400) + 'd';
async function poll() {
  try {
    const r = await fetch('/api/v1/status?since_version=' + version, {credentials: 'same-origin'});
    if (r.ok) {
      const data = await r.json();
      for (const c of data.checks) {
        const row = document.querySelector('[data-name="' + CSS.escape(c.name) + '"]');
        if (!row) { if (!document.body.dataset.partial) location.reload(); continue; }
        row.className = 'row s-' + c.status; row.dataset.status = c.status; row.dataset.since = c.since;
        row.querySelector('.badge').className = 'badge b-' + c.status;
        row.querySelector('.badge').textContent = c.status;
        row.querySelector('.msg').textContent = c.message;
        row.querySelector('.lat').textContent = c.latency_ms == null ? '' : Math.round(c.latency_ms) + ' ms';
      }
      version = data.version;
      const overall = document.getElementById('overall');
      overall.className = 'badge b-' + data.status; overall.textContent = data.status;
      document.getElementById('counts').textContent = Object.entries(data.summary).filter(e => e[1])
        .map(e => e[1] + ' ' + e[0]).join(', ');
    }
  } catch (e) {}
  const now = Date.now() / 1000;
  document.querySelectorAll('.row').forEach(r => {
    const el = r.querySelector('.since'); if (el) el.textContent = fmt(now - Number(r.dataset.since)); });
  document.getElementById('updated').textContent = new Date().toLocaleTimeString();
}
setInterval(poll, 1500);
async function side() {
  const box = document.getElementById('side'); if (!box) return;
  try {
    const r = await fetch('/fragments/side', {credentials: 'same-origin'});
    if (r.ok) box.innerHTML = await r.text();
  }
  catch (e) {}
}
setInterval(side, 3000);
async function group() {
  const box = document.getElementById('group'); if (!box) return;
  try {
    const r = await fetch('/fragments/group', {credentials: 'same-origin'});
    const text = r.ok ? await r.text() : '';
    if (text.startsWith('<section id="group">')) box.outerHTML = text;  // not a login page after a redirect
  }
  catch (e) {}
}
setInterval(group, 3000);
async function needsPerson() {
  const box = document.getElementById('needs-person'); if (!box) return;
  try {
    const r = await fetch('/fragments/needs-person', {credentials: 'same-origin'});
    const text = r.ok ? await r.text() : '';
    if (text.startsWith('<section id="needs-person"')) box.outerHTML = text;  // not a login page
  }
  catch (e) {}
}
setInterval(needsPerson, 3000);
"""


_OUTCOME = {
    "succeeded": "ok",
    "recovered": "recovered",
    "failed": "critical",
    "interrupted": "warning",
    "running": "warning",
}
# How an outcome reads to a person; "recovered" is not "succeeded": healthy again, but not by this action.
OUTCOME_LABEL = {"recovered": "recovered, not by this action", "dry_run": "dry run"}
HEALING_COUNTED = ("succeeded", "recovered", "failed")  # counted apart in the healing history
_HA_EVENT = {"leader": ("ok", "took over"), "stood_down": ("warning", "stood down")}
GROUP_LOG_ROWS = 5
GROUP_MEMBER_ROWS = 20


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f} ms"


def esc(value: Any) -> str:
    return html.escape(str(value if value is not None else ""), quote=True)


def sparkline(values: Iterable[float | None]) -> str:
    points = [v for v in values if v is not None]
    if len(points) < 2:
        return '<svg class="spark" viewBox="0 0 100 20"></svg>'
    top = max(points) or 1.0
    step = 100 / (len(points) - 1)
    coords = " ".join(f"{i * step:.1f},{20 - 18 * v / top:.1f}" for i, v in enumerate(points))
    return (
        f'<svg class="spark" viewBox="0 0 100 20" preserveAspectRatio="none"><polyline fill="none" '
        f'stroke="#4a5568" stroke-width="1.5" points="{coords}"/></svg>'
    )


def uptime_bars(uptime: dict[str, float | None]) -> str:
    out = []
    for window in ("24h", "7d", "30d"):
        value = uptime.get(window)
        if value is None:
            out.append(f'<span title="{window}: no data" style="background:#cbd5e0;height:40%">{window}</span>')
            continue
        color = "var(--ok)" if value >= 99.9 else "var(--warning)" if value >= 99 else "var(--critical)"
        out.append(
            f'<span title="uptime {window}: {value:.2f}%" style="background:{color};'
            f'height:{max(35, value):.0f}%">{"100" if value >= 99.95 else f"{value:.1f}"}</span>'
        )
    return '<div class="up">' + "".join(out) + "</div>"


def row(m: Monitor, state: EntityState, now: float) -> str:
    last = state.last
    status = last.status.value if last else "unknown"
    latency = f"{last.latency_ms:.0f} ms" if last and last.latency_ms is not None else ""
    note = ""
    if state.affected_by:
        note = f' <span class="muted">(affected: {esc(state.affected_by)} is down)</span>'
    elif state.flapping:
        note = ' <span class="muted">(flapping)</span>'
    return (
        f'<div class="row s-{status}" data-name="{esc(state.name)}" data-status="{status}" '
        f'data-kind="{esc(m.kinds.get(state.name, ""))}" data-since="{state.since:.0f}">'
        f'<span><span class="badge b-{status}">{status}</span></span>'
        f'<span class="name"><a href="/checks/{esc(state.name)}">{esc(state.name)}</a><br>'
        f'<span class="muted">{esc(m.kinds.get(state.name, ""))}{" @ " + esc(state.node) if state.node else ""}'
        f'</span></span><span class="msg">{esc(last.message if last else "not checked yet")}</span>{note}'
        f'<span class="since" title="in this state since">{format_duration(now - state.since)}</span>'
        f'<span class="spark-cell">{sparkline(m.latencies.get(state.name, ()))}<span class="lat muted">'
        f"{latency}</span></span>{uptime_bars(m.web.history.uptime.get(state.name, {}))}</div>"
    )


def page(title: str, body: str, m: Monitor, *, partial: bool = False) -> web.Response:
    return web.Response(
        text=page_html(title, body, m, partial=partial), content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def page_html(title: str, body: str, m: Monitor, *, partial: bool = False) -> str:
    worst = min((e.last.status.value for e in m.entities.values() if e.last), key=SEVERITY.get, default="unknown")
    counts: dict[str, int] = {}
    for e in m.entities.values():
        key = e.last.status.value if e.last else "unknown"
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: SEVERITY[i[0]]))
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>{esc(title)} · clusterwatch</title>'
        f'<style>{CSS}</style></head><body data-version="{m.version}"{" data-partial=1" if partial else ""}>'
        f'<header><h1><a href="/">clusterwatch</a></h1><span id="overall" class="badge b-{worst}">{worst}</span>'
        f'<span id="counts">{summary}</span><span class="muted">{esc(socket.gethostname())} · updated '
        f'<span id="updated">{time.strftime("%H:%M:%S")}</span></span></header><main>{body}</main>'
        f"<script>{JS}</script></body></html>"
    )
    return text


def _options(values: Iterable[str], chosen: str | None, label: str) -> str:
    opts = [f'<option value="">{label}: all</option>']
    for value in sorted(set(values)):
        mark = " selected" if value == chosen else ""
        opts.append(f'<option value="{esc(value)}"{mark}>{esc(value)}</option>')
    return "".join(opts)


async def overview(request: web.Request) -> web.Response:
    m: Monitor = request.app["monitor"]
    if not request.query and len(m.entities) > SNAPSHOT_AT:
        text = await m.web.snapshots["overview"].get()
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})
    try:
        states = selected(m, request)
    except BadRequest as exc:
        raise web.HTTPBadRequest(text=exc.text) from None
    return web.Response(
        text=await overview_html(m, states, request.query),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def render_overview(m: Monitor) -> str:
    return await overview_html(m, list(m.entities.values()), {})


async def overview_html(m: Monitor, states: list[EntityState], q: Any) -> str:
    now = time.time()
    filters = (
        f'<form class="filters" method="get"><input name="q" placeholder="search by name" '
        f'value="{esc(q.get("q", ""))}"><select name="status">'
        f"{_options(['ok', 'warning', 'critical', 'unknown'], q.get('status'), 'status')}</select>"
        f'<select name="kind">{_options(m.kinds.values(), q.get("kind"), "kind")}</select>'
        f'<select name="node">{_options((e.node for e in m.entities.values() if e.node), q.get("node"), "node")}'
        f"</select><button>filter</button></form>"
    )
    show_all = q.get("all") == "1"
    parts = [needs_person_box(m, now), group_box(m), filters]
    partial = bool(q)
    if not m.entities:
        parts.append("<p>Nothing checked yet: the first results arrive within one interval.</p>")
    for group, title in GROUPS:
        members = [s for s in states if s.last is not None and s.last.group is group]
        if not members:
            continue
        members.sort(key=lambda s: (SEVERITY[s.last.status.value if s.last else "unknown"], s.name))
        shown = members if show_all else members[:PAGE_ROWS]
        more = ""
        if len(shown) < len(members):
            partial = True
            more = (
                f'<p class="muted">{len(members) - len(shown)} more (healthy) not shown — '
                f'<a href="?all=1">show all</a> or filter</p>'
            )
        parts.append(
            f"<section><h2>{title} ({len(members)})</h2>" + "".join(row(m, s, now) for s in shown) + more + "</section>"
        )
    parts.append(
        '<div class="grid2">' + incidents_box(m, now) + await actions_box(m) + await silences_box(m) + "</div>"
    )
    return page_html("overview", "".join(parts), m, partial=partial)


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(max(0.0, seconds))


def _when(at: float, now: float) -> str:
    """A time of day, with the date when it is not today."""
    same_day = time.localtime(at)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", time.localtime(at))


def needs_person_box(m: Monitor, now: float) -> str:
    """The banner at the top: every restart target the healer gave up on (`remediation_exhausted`), until
    a reset or a recovery gives its budget back, with the command that resets it. From the web's last
    read of the store; an empty, hidden section otherwise (the page refreshes it in place)."""
    found = needs_person(m)
    if not found:
        return '<section id="needs-person" hidden></section>'
    items = []
    for item in found:
        since = float(item["since"])
        check, entity = item.get("check"), item.get("entity")
        name = f"<b>{esc(check or item['target'])}</b>"
        if entity and entity != check:
            name += f' <span class="muted">({esc(entity)})</span>'
        n = int(item["attempts"])
        text = (
            f"{name}: the healer gave up on <code>{esc(item['target'])}</code> at "
            f'<span title="{esc(_stamp(since))}">{_when(since, now)}</span> ({_ago(now - since)} ago) after '
            f"{n} attempt{'' if n == 1 else 's'}."
        )
        last = item.get("last_attempt")
        if last:
            outcome = OUTCOME_LABEL.get(last["outcome"], last["outcome"])
            text += f"<br>Last attempt (#{int(last['attempt'])}, {esc(outcome)}): {esc(last.get('detail') or '')}"
        text += f"<br>Once it is fixed: <code>{esc(item['reset'])}</code>"
        if item.get("healthy_since") is not None:
            healthy = float(item["healthy_since"])
            text += (
                f' <span class="muted">(healthy again since {_when(healthy, now)}: the budget comes back by itself '
                "once it stays healthy)</span>"
            )
        items.append(f"<li>{text}</li>")
    error = m.web.history.needs_person_error
    stale = f'<p class="muted">as last read; the store could not be read since: {esc(error)}</p>' if error else ""
    return (
        f'<section id="needs-person" role="alert"><h2>A person is needed ({len(found)})</h2>'
        f"<ul>{''.join(items)}</ul>{stale}</section>"
    )


async def needs_person_fragment(request: web.Request) -> web.Response:
    """The banner, refreshed in place by the page."""
    m: Monitor = request.app["monitor"]
    return web.Response(
        text=needs_person_box(m, time.time()), content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def group_box(m: Monitor) -> str:
    """The group of monitors (ha enabled): who leads and since when, the epoch, each member's last renewal,
    and this monitor's own takeovers and stand-downs. From the web's last read: no store read here."""
    if not m.ha_enabled:
        return ""
    read = m.web.group
    found = read.value
    title = "<h2>Group of monitors</h2>"
    if found is None:
        why = f": {esc(read.error)}" if read.error else ""
        return f'<section id="group">{title}<p class="muted">not read from the shared store yet{why}</p></section>'
    now = read.db_now()  # the group's times are on the database's clock
    lease = found.get("lease") or {}
    me = found.get("self") or {}
    leader = current_leader(found) if read.fresh() is not None else None
    holder = lease.get("holder") if leader is not None else None
    if leader is not None:
        mine = " (this monitor)" if holder == me.get("member") else ""
        since, renewed = lease.get("acquired_at") or now, lease.get("renewed_at") or now
        head = (
            f'<span class="badge b-ok">leader</span> <b>{esc(leader)}</b>{esc(mine)} has led for '
            f'<span title="since {esc(_stamp(since))}">{_ago(now - since)}</span>'
            f" · epoch {int(lease.get('epoch') or 0)} · lease renewed {_ago(now - renewed)} ago"
        )
    elif read.fresh() is None:
        head = '<span class="badge b-unknown">unknown</span> the shared store has not been read recently'
    else:
        last = f" (last: {esc(lease.get('node'))}, epoch {int(lease.get('epoch') or 0)})" if lease.get("node") else ""
        head = f'<span class="badge b-critical">no leader</span> the lease is free or ran out{last}'
    role = (
        f"leads (epoch {int(me.get('epoch') or 0)})"
        if me.get("leading")
        else "follows: probes and serves, does not heal or alert"
    )
    notes = [f'This monitor: <b>{esc(me.get("node"))}</b> <span class="muted">{esc(me.get("member"))}</span> {role}']
    if me.get("last_error"):
        notes.append(f'<span class="muted">last lease renewal failed: {esc(me["last_error"])}</span>')
    age = read.age()
    if read.error or (age is not None and read.fresh() is None):
        notes.append(
            f'<span class="muted">as read {_ago(age)} ago; the shared store could not be read since'
            f"{': ' + esc(read.error) if read.error else ''}</span>"
        )
    return (
        f'<section id="group">{title}<p>{head}</p><p>{"<br>".join(notes)}</p><div class="grid2">'
        f"{_members_table(found, now, holder, me.get('member'), read.fresh() is None)}"
        f"{_group_log(me, time.time())}</div></section>"
    )


def _stamp(at: float | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _members_table(found: dict[str, Any], now: float, holder: str | None, me: str | None, stale: bool) -> str:
    recent = {m.get("member") for m in recent_members(found)}
    members = sorted(found.get("members") or [], key=lambda m: -(m.get("last_seen") or 0))[:GROUP_MEMBER_ROWS]
    rows = []
    for member in members:
        if stale:  # an old read: who was what then is no answer now
            badge = '<span class="badge b-unknown">unknown</span>'
        elif member.get("member") == holder:
            badge = '<span class="badge b-ok">leader</span>'
        elif member.get("member") in recent:
            badge = '<span class="badge b-standby">standby</span>'
        else:
            badge = '<span class="badge b-critical">gone</span>'
        this = " · this monitor" if member.get("member") == me else ""
        rows.append(
            f'<tr><td>{esc(member.get("node"))}{esc(this)}<br><span class="muted">{esc(member.get("member"))}'
            f"</span></td><td>{badge}</td><td>{_ago(now - (member.get('last_seen') or now))} ago</td>"
            f"<td>{_ago(now - (member.get('started') or now))}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="4" class="muted">none</td></tr>'
    return (
        f"<section><h2>Members</h2><table><tr><th>monitor</th><th>role</th><th>last renewal</th><th>up for</th></tr>"
        f"{body}</table></section>"
    )


def _group_log(me: dict[str, Any], now: float) -> str:
    entries = list(reversed(me.get("log") or []))[:GROUP_LOG_ROWS]  # newest first
    rows = []
    for entry in entries:
        status, label = _HA_EVENT.get(str(entry.get("event")), ("unknown", str(entry.get("event"))))
        at = entry.get("at")
        epoch = entry.get("epoch")
        rows.append(
            f'<tr><td title="{esc(_stamp(at))}">{time.strftime("%H:%M:%S", time.localtime(at)) if at else ""}'
            f'<br><span class="muted">{_ago(now - at) if at else ""} ago</span></td>'
            f'<td><span class="badge b-{status}">{esc(label)}</span></td>'
            f"<td>{'' if epoch is None else int(epoch)}</td><td>{esc(entry.get('message'))}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="4" class="muted">none since this monitor started</td></tr>'
    return (
        f"<section><h2>This monitor's takeovers and stand-downs</h2><table><tr><th>when</th><th>what</th>"
        f"<th>epoch</th><th>message</th></tr>{body}</table></section>"
    )


async def group_fragment(request: web.Request) -> web.Response:
    """The group box, refreshed in place by the page."""
    m: Monitor = request.app["monitor"]
    return web.Response(text=group_box(m), content_type="text/html", headers={"Cache-Control": "no-store"})


async def side(m: Monitor, now: float) -> str:
    return incidents_box(m, now) + await silences_box(m) + await actions_box(m)


async def side_fragment(request: web.Request) -> web.Response:
    """The incidents, actions and silences boxes, refreshed in place by the page."""
    m: Monitor = request.app["monitor"]
    return web.Response(
        text=await side(m, time.time()), content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def incidents_box(m: Monitor, now: float) -> str:
    rows = [
        f'<tr><td><a href="/checks/{esc(e.name)}">{esc(e.name)}</a></td>'
        f"<td>{format_duration(now - (e.incident_started or now))}</td>"
        f"<td>{esc(e.last.message if e.last else '')}</td></tr>"
        for e in m.entities.values()
        if e.incident
    ]
    body = "".join(rows) or '<tr><td colspan="3" class="muted">none</td></tr>'
    return (
        f"<section><h2>Open incidents</h2><table><tr><th>what</th><th>for</th><th>why</th></tr>{body}</table></section>"
    )


def healing_counts(m: Monitor, check: str | None = None) -> str:
    """All attempts by outcome, "recovered, not by this action" apart from "succeeded" and "failed"
    (from the counters /metrics has, refreshed every 10 s)."""
    totals: dict[str, int] = {}
    for r in m.web.counts.get("restarts", []):
        if check is None or r["check_name"] == check:
            totals[r["outcome"]] = totals.get(r["outcome"], 0) + int(r["n"])
    if not totals:
        return ""
    shown = [*HEALING_COUNTED, *sorted(set(totals) - set(HEALING_COUNTED))]
    parts = [f'<span class="count-{esc(o)}">{totals.get(o, 0)} {esc(OUTCOME_LABEL.get(o, o))}</span>' for o in shown]
    return f'<p class="muted healing-counts">all attempts: {" · ".join(parts)}</p>'


async def actions_box(m: Monitor, check: str | None = None, limit: int = 10) -> str:
    rows = await m.web.history.recent_actions(check, limit)
    body = (
        "".join(
            f"<tr><td>{time.strftime('%m-%d %H:%M:%S', time.localtime(r['started']))}</td>"
            f"<td>{esc(r['check_name'])}</td><td>{esc(r['action'])} #{r['attempt']}</td>"
            f'<td><span class="badge b-{_OUTCOME.get(r["outcome"], "unknown")}">'
            f"{esc(OUTCOME_LABEL.get(r['outcome'], r['outcome']))}</span></td><td>{esc(r['detail'] or '')}</td>"
            f"<td>{r['duration'] or 0:.1f}s</td></tr>"
            for r in rows
        )
        or '<tr><td colspan="6" class="muted">none</td></tr>'
    )
    return (
        f'<section class="wide"><h2>The healer\'s actions</h2>{healing_counts(m, check)}<table><tr><th>when</th>'
        f"<th>check</th><th>action</th><th>outcome</th><th>detail</th><th>took</th></tr>{body}</table></section>"
    )


async def silences_box(m: Monitor) -> str:

    found = await m.silences()
    body = (
        "".join(
            f"<tr><td>{esc(s.id)}</td><td>{esc(' '.join(f'{k}={v}' for k, v in s.matchers.items()))}</td>"
            f"<td>{time.strftime('%m-%d %H:%M', time.localtime(s.ends))}</td><td>{esc(s.reason)}</td></tr>"
            for s in found
        )
        or '<tr><td colspan="4" class="muted">none</td></tr>'
    )
    return (
        f"<section><h2>Silences</h2><table><tr><th>id</th><th>matches</th><th>until</th><th>why</th></tr>"
        f"{body}</table></section>"
    )


def routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/fragments/side", side_fragment)
    app.router.add_get("/fragments/group", group_fragment)
    app.router.add_get("/fragments/needs-person", needs_person_fragment)
    from clusterwatch.web import check_page  # its own module, which draws on this one's page and rows

    app.router.add_get("/checks/{name:.+}", check_page.check_page)
