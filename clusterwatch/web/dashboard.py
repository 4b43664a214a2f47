"""The dashboard: server-rendered HTML, no CDN, live by polling the API's changes every 1.5 s."""

from __future__ import annotations

import asyncio
import html
import json
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch.config.durations import format_duration
from clusterwatch.model import Group
from clusterwatch.web import overview_data, overview_parts
from clusterwatch.web.api import SNAPSHOT_AT, BadRequest, needs_person, selected
from clusterwatch.web.cache import Snapshot
from clusterwatch.web.metrics import current_leader, recent_members
from clusterwatch.web.overview_data import DEFAULT_WINDOW
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.alerting.routing import Silence
    from clusterwatch.engine.state import EntityState
    from clusterwatch.web.view import MonitorView as Monitor

PAGE_ROWS = 500
ROWS_PER_SLICE = 50  # rows built between two turns of the event loop (a page of 2,500 rows takes a while)
PARTS_TTL = 1.0  # seconds the overview's live parts are shared between the page and its fragment
GROUPS = [
    (Group.SERVICES, "Services"),
    (Group.MODELS, "Models"),
    (Group.WORKERS, "Dask workers"),
    (Group.NODES, "Nodes"),
    (Group.SYSTEM, "This machine"),
]
SEVERITY = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3}

CSS = """
:root{color-scheme:light dark;--bg:#f3f4f7;--card:#fff;--fg:#1a202c;--muted:#566170;--line:#dde2ea;
--ok:#1e7b45;--warning:#f0b429;--critical:#c53030;--unknown:#6b46c1;--on-warning:#1a202c;
--ink-ok:#1e7b45;--ink-warning:#8a5300;--ink-critical:#c53030;--ink-unknown:#6b46c1;
--tint-critical:#fff1f1;--tint-warning:#fff8e6;--tint-unknown:#f5f0ff;--head:#1a202c;--focus:#2b6cb0;--code:#edf2f7}
@media (prefers-color-scheme:dark){:root{--bg:#0f1217;--card:#1a1f27;--fg:#e6eaf0;--muted:#a3adbb;--line:#2c3440;
--ink-ok:#68d391;--ink-warning:#f6c343;--ink-critical:#fc8181;--ink-unknown:#b794f4;--tint-critical:#3a1d20;
--tint-warning:#3a3018;--tint-unknown:#2b2240;--head:#0a0d11;--focus:#90cdf4;--code:#2d3748}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
background:var(--bg);color:var(--fg)}a{color:inherit}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px;border-radius:2px}
header{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;padding:.75rem 1rem;background:var(--head);color:#fff}
header h1{font-size:1.1rem;margin:0}header a{color:#fff}header .muted{color:#cbd5e0}
.badge{padding:.15rem .5rem;border-radius:.25rem;font-weight:600;color:#fff;text-transform:uppercase;font-size:.75rem;
white-space:nowrap}
.b-ok{background:var(--ok)}.b-warning{background:var(--warning);color:var(--on-warning)}.b-critical{background:var(--critical)}
.b-unknown{background:var(--unknown)}main{padding:1rem;max-width:1400px;margin:auto}
button{font:inherit;padding:.3rem .7rem;border:1px solid var(--line);border-radius:.3rem;background:var(--card);
color:var(--fg);cursor:pointer}button:hover{border-color:var(--muted)}button[aria-pressed=true]{background:var(--fg);
color:var(--card)}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:.5rem}form.filters *{font:inherit;padding:.3rem}
section{margin-bottom:1.25rem;min-width:0}h2{font-size:1rem;margin:.5rem 0}h3{font-size:.95rem;margin:0}
.bar{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}
.shape{display:inline-block;width:1.1em;text-align:center;font-weight:700}.word{font-weight:600}
.s-ok>.shape,.s-ok>h3>.shape,.s-ok>.word,.s-ok>h3>.word{color:var(--ink-ok)}
.s-warning>.shape,.s-warning>h3>.shape,.s-warning>.word,.s-warning>h3>.word{color:var(--ink-warning)}
.s-critical>.shape,.s-critical>h3>.shape,.s-critical>.word,.s-critical>h3>.word{color:var(--ink-critical)}
.s-unknown>.shape,.s-unknown>h3>.shape,.s-unknown>.word,.s-unknown>h3>.word{color:var(--ink-unknown)}
.calm .shape{color:var(--ink-ok)}
#attention ul{list-style:none;margin:.3rem 0;padding:0}
.attn{background:var(--card);border-left:.35rem solid var(--muted);padding:.45rem .7rem;margin:.3rem 0;
border-radius:.25rem;overflow-wrap:anywhere}.attn.s-critical{border-color:var(--critical)}
.attn.s-warning{border-color:var(--warning)}.attn.s-unknown{border-color:var(--unknown)}.attn.s-ok{border-color:var(--ok)}
.attn a{font-weight:600}.tag{font-size:.72rem;text-transform:uppercase;letter-spacing:.04em;
border:1px solid var(--line);border-radius:.2rem;padding:0 .3rem;color:var(--muted)}
.acts{display:inline-flex;gap:.4rem;margin-left:.5rem}
.acts button{padding:.1rem .5rem;font-size:.85rem}
.nodes{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(17rem,100%),1fr));gap:.75rem;align-items:start}
.node{background:var(--card);border:1px solid var(--line);border-top:.4rem solid var(--muted);border-radius:.35rem;
padding:.55rem .7rem;min-width:0}.node.s-ok{border-top-color:var(--ok)}.node.s-warning{border-top-color:var(--warning);
background:var(--tint-warning)}.node.s-critical{border-top-color:var(--critical);background:var(--tint-critical);
border-width:2px;border-top-width:.4rem;border-color:var(--critical)}.node.s-unknown{border-top-color:var(--unknown);
background:var(--tint-unknown)}.node.loose{grid-column:1/-1}.node.loose .ents{columns:15rem}
.node h3 .title{overflow-wrap:anywhere}.tally{margin:.1rem 0 .3rem}
.ents{list-style:none;margin:0;padding:0}.ent{padding:.12rem 0;break-inside:avoid;overflow-wrap:anywhere}
.ent.sub{padding-left:1.2rem}.ent .word{font-size:.78rem;margin-left:.2rem}.ent a{text-decoration:none}
.ent a:hover{text-decoration:underline}.ent .kind{color:var(--muted);font-size:.75rem;margin-left:.35rem}
.ent.s-ok .word{font-weight:400;color:var(--muted)}
.gauges{display:flex;flex-wrap:wrap;gap:.3rem;margin:.2rem 0 .2rem 1.2rem}.node>.gauges{margin-left:0}
svg.gauge{width:7.5rem;height:1rem}.more{margin:.3rem 0 0}
#cluster{position:relative}#deps{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;
overflow:visible;color:var(--fg)}#deps line{stroke:currentColor;stroke-width:1.5;stroke-dasharray:5 3;opacity:.75}
#timeline svg{display:block;width:100%;height:auto;background:var(--card);border-radius:.3rem;padding:.3rem}
.spans{display:inline-flex;gap:.3rem}
.switch{display:inline-flex;gap:.5rem;align-items:center;color:var(--muted);margin:.3rem 0 .6rem}
.switch a{padding:.1rem .4rem;border-radius:.2rem}.switch a[aria-current]{background:var(--fg);color:var(--card);
text-decoration:none}
.row{display:grid;grid-template-columns:6.5rem minmax(9rem,16rem) 1fr 5rem 7rem minmax(9rem,15rem);gap:.5rem;
align-items:center;background:var(--card);border-left:.35rem solid var(--muted);padding:.4rem .6rem;margin:.2rem 0;
border-radius:.2rem}
.row.s-ok{border-color:var(--ok)}.row.s-warning{border-color:var(--warning)}.row.s-critical{border-color:var(--critical)}
.row.s-unknown{border-color:var(--unknown)}.name{font-weight:600;word-break:break-all}.msg{min-width:0;overflow-wrap:anywhere}
.muted{color:var(--muted);font-size:.8rem}.up{display:flex;gap:.35rem;align-items:center;min-width:0}
.up svg{flex:1;min-width:0;height:1.3rem}.pct{font-size:.78rem;font-variant-numeric:tabular-nums;white-space:nowrap}
svg.spark{width:7rem;height:1.6rem;color:var(--muted)}
table{border-collapse:collapse;width:100%;background:var(--card);table-layout:fixed}
td,th{overflow-wrap:anywhere}.grid2>section{overflow-x:auto}.grid2>.wide{grid-column:1/-1}
td,th{padding:.3rem .5rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(22rem,100%),1fr));gap:1rem}
@media (max-width:720px){main{padding:.5rem}.row{grid-template-columns:5.5rem minmax(0,1fr)}
.row .msg,.row .up{grid-column:1/3}.row .since,.row .spark-cell{display:none}header{padding:.5rem}
.acts{display:flex;margin:.35rem 0 0}}
#group p{margin:.3rem 0}#group .grid2{margin-top:.5rem}.b-standby{background:#4a5568}
.b-recovered{background:#2b6cb0}#needs-person{background:var(--tint-critical);border:2px solid var(--critical);
border-radius:.3rem;padding:.5rem 1rem;margin-bottom:.6rem}#needs-person h2{color:var(--ink-critical)}
#needs-person ul{margin:.3rem 0;padding-left:1.2rem}
#needs-person li{margin:.3rem 0;overflow-wrap:anywhere;list-style:disc}
code{background:var(--code);padding:0 .25rem;border-radius:.2rem}
.tl-narrow{display:none}@media (max-width:720px){.tl-wide{display:none}.tl-narrow{display:block}
.grid2>section>table{min-width:40rem}.grid2>section>table.actions{min-width:0}
table.actions,table.actions tbody,table.actions tr{display:block}
table.actions thead,table.actions colgroup{display:none}
table.actions tr{border-bottom:1px solid var(--line);padding:.25rem 0}
table.actions td{display:inline;border:0;padding:0 .4rem 0 0}
table.actions td:nth-child(5){display:block;padding:.15rem 0}table.actions td:nth-child(6)::before{content:"took "}}
.c-when{width:7.5rem}.c-check{width:9rem}.c-action{width:8rem}.c-outcome{width:10rem}.c-took{width:4.5rem}
dialog{background:var(--card);color:var(--fg);border:1px solid var(--line);border-radius:.4rem;max-width:26rem}
dialog input{font:inherit;width:100%;padding:.4rem;margin:.4rem 0}#act-status:empty{display:none}
#act-status{position:fixed;right:1rem;bottom:1rem;z-index:2;max-width:min(30rem,calc(100vw - 2rem));margin:0;
background:var(--fg);color:var(--card);padding:.5rem .8rem;border-radius:.3rem;box-shadow:0 2px 8px #0004}
"""

JS = r"""
let version = Number(document.body.dataset.version);
const SHAPE = {ok: '●', warning: '▲', critical: '✖', unknown: '?'};
const fmt = s => s < 90 ? Math.round(s) + 's' : s < 5400 ? Math.round(s / 60) + 'm' : s < 172800 ?
  Math.round(s / 3600) + 'h' : Math.round(s / 86400) + 'd';
function paint(el, c) {
  if (el.classList.contains('row')) {
    el.className = 'row s-' + c.status; el.dataset.status = c.status; el.dataset.since = c.since;
    const badge = el.querySelector('.badge'); badge.className = 'badge b-' + c.status; badge.textContent = c.status;
    el.querySelector('.msg').textContent = c.message;
    const lat = el.querySelector('.lat');
    if (lat) lat.textContent = c.latency_ms == null ? '' : Math.round(c.latency_ms) + ' ms';
    return;
  }
  for (const s of ['ok', 'warning', 'critical', 'unknown']) el.classList.toggle('s-' + s, s === c.status);
  el.dataset.status = c.status;
  const word = el.querySelector('.word'); if (word) word.textContent = c.status;
  const shape = el.querySelector('.shape'); if (shape) shape.textContent = SHAPE[c.status] || '?';
  el.title = (c.kind ? c.kind + ': ' : '') + c.message;
}
async function poll() {
  try {
    const r = await fetch('/api/v1/status?since_version=' + version, {credentials: 'same-origin'});
    if (r.ok) {
      const data = await r.json();
      for (const c of data.checks) {
        const found = document.querySelectorAll('[data-name="' + CSS.escape(c.name) + '"]');
        if (!found.length) { if (!document.body.dataset.partial) location.reload(); continue; }
        found.forEach(el => paint(el, c));
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
// The attention list, the cluster and the timeline: replaced in place when they changed, focus kept.
let span = localStorage.getItem('cw-span') || '24h';
const shown = {};
function where(el) {
  if (!el || el === document.body) return null;
  if (el.id) return '#' + CSS.escape(el.id);
  for (const a of ['data-act', 'data-span']) if (el.hasAttribute(a)) {
    let sel = '[' + a + '="' + CSS.escape(el.getAttribute(a)) + '"]';
    for (const k of ['data-entity', 'data-name', 'data-id'])
      if (el.hasAttribute(k)) sel += '[' + k + '="' + CSS.escape(el.getAttribute(k)) + '"]';
    return sel;
  }
  if (el.getAttribute('href')) return 'a[href="' + CSS.escape(el.getAttribute('href')) + '"]';
  return null;
}
function swap(id, text) {
  const box = document.getElementById(id);
  if (!box || !text || shown[id] === text) return;
  shown[id] = text;
  const inside = box.contains(document.activeElement) ? where(document.activeElement) : null;
  box.outerHTML = text;
  if (inside) { const again = document.getElementById(id).querySelector(inside); if (again) again.focus(); }
}
async function live() {
  if (!document.getElementById('cluster')) return;
  try {
    const r = await fetch('/fragments/overview?span=' + encodeURIComponent(span), {credentials: 'same-origin'});
    if (!r.ok || !(r.headers.get('Content-Type') || '').includes('json')) return;  // not a login page
    const data = await r.json();
    for (const id of ['attention', 'cluster', 'timeline', 'history']) swap(id, data[id]);
    deps();
  } catch (e) {}
}
setInterval(live, 1500);
// Dependency lines: on the toggle, or for the entity under the pointer or the focus.
function deps(only) {
  const box = document.getElementById('cluster'), svg = document.getElementById('deps');
  if (!box || !svg) return;
  const on = localStorage.getItem('cw-deps') === '1';
  const button = document.getElementById('deps-toggle');
  if (button) { button.setAttribute('aria-pressed', String(on));
    button.textContent = on ? 'hide dependencies' : 'show dependencies'; }
  const base = box.getBoundingClientRect();
  let out = '<defs><marker id="dep-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" ' +
    'orient="auto"><path d="M0 0L8 4L0 8z" fill="currentColor"/></marker></defs>';
  const from = only ? [only] : on ? box.querySelectorAll('[data-deps]') : [];
  for (const el of from) {
    for (const dep of (el.dataset.deps || '').split(' ')) {
      if (!dep) continue;
      const q = CSS.escape(dep);
      const to = box.querySelector('[data-check="' + q + '"]') || box.querySelector('[data-node="' + q + '"] h3');
      if (!to) continue;
      const a = el.getBoundingClientRect(), b = to.getBoundingClientRect();
      const x1 = a.left + Math.min(a.width, 120) / 2 - base.left, y1 = a.top + a.height / 2 - base.top;
      const x2 = b.left + Math.min(b.width, 120) / 2 - base.left, y2 = (b.top > a.top ? b.top : b.bottom) - base.top;
      out += '<line x1="' + x1 + '" y1="' + y1 + '" x2="' + x2 + '" y2="' + y2 + '" marker-end="url(#dep-arrow)"/>';
    }
  }
  svg.innerHTML = out;
}
document.addEventListener('mouseover', e => {
  const el = e.target.closest && e.target.closest('#cluster [data-deps]');
  if (el && el.dataset.deps && localStorage.getItem('cw-deps') !== '1') deps(el);
});
document.addEventListener('mouseout', e => {
  if (e.target.closest && e.target.closest('#cluster [data-deps]')) deps();
});
document.addEventListener('focusin', e => {
  const el = e.target.closest && e.target.closest('#cluster [data-deps]');
  if (el && el.dataset.deps && localStorage.getItem('cw-deps') !== '1') deps(el);
});
window.addEventListener('resize', () => deps());
// Changes need the token (sent as a header, never a cookie): asked once, kept for this tab only.
function say(text) { document.getElementById('act-status').textContent = text; }
function token() {
  const kept = sessionStorage.getItem('cw-token'); if (kept) return Promise.resolve(kept);
  const dialog = document.getElementById('token-dialog'), input = document.getElementById('token-input');
  return new Promise(done => {
    dialog.addEventListener('close', () => {
      const t = dialog.returnValue === 'ok' ? input.value.trim() : ''; input.value = '';
      if (t) sessionStorage.setItem('cw-token', t); done(t);
    }, {once: true});
    dialog.showModal();
  });
}
async function act(button) {
  const t = await token(); if (!t) { say('nothing done: no token given'); button.focus(); return; }
  const kind = button.dataset.act;
  let url, body = null, method = 'POST', done;
  if (kind === 'silence') {
    url = '/api/v1/silences'; done = 'silenced ' + button.dataset.entity + ' for 1 h';
    body = {matchers: {entity: button.dataset.entity}, duration: '1h', reason: 'silenced from the dashboard'};
  } else if (kind === 'reset') {
    url = '/api/v1/heal/reset'; body = {name: button.dataset.name};
    done = 'asked the healer to reset the restart budget of ' + button.dataset.name;
  } else if (kind === 'unsilence') {
    url = '/api/v1/silences/' + encodeURIComponent(button.dataset.id); method = 'DELETE'; done = 'silence ended';
  } else return;
  button.disabled = true;
  try {
    const r = await fetch(url, {method, credentials: 'same-origin', headers: {'Authorization': 'Bearer ' + t,
      'Content-Type': 'application/json'}, body: body ? JSON.stringify(body) : undefined});
    if (r.status === 401) sessionStorage.removeItem('cw-token');
    let why = ''; if (!r.ok) { try { why = (await r.json()).error; } catch (e) { why = 'HTTP ' + r.status; } }
    say(r.ok ? done : 'refused: ' + why);
  } catch (e) { say('failed: ' + e); }
  button.disabled = false;
  live(); setTimeout(live, 2500);  // the change as the monitor's next reads see it
}
document.addEventListener('click', e => {
  const button = e.target.closest && e.target.closest('button');
  if (!button) return;
  if (button.dataset.act) act(button);
  else if (button.dataset.span) { span = button.dataset.span; localStorage.setItem('cw-span', span); live(); }
  else if (button.id === 'deps-toggle') {
    localStorage.setItem('cw-deps', localStorage.getItem('cw-deps') === '1' ? '0' : '1'); deps(); }
});
deps();
if (span !== '24h') live();
"""

DIALOG = (
    '<p id="act-status" role="status" aria-live="polite"></p>'
    '<dialog id="token-dialog" aria-labelledby="token-h"><form method="dialog"><h2 id="token-h">Token needed</h2>'
    "<p>Changes need the monitor's token (<code>web.token_file</code>); it is kept in this tab only.</p>"
    '<label for="token-input">token</label><input id="token-input" type="password" autocomplete="off">'
    '<div class="bar"><button value="ok">use it</button><button value="cancel">cancel</button></div></form></dialog>'
)


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
        f'stroke="currentColor" stroke-width="1.5" points="{coords}"/></svg>'
    )


def row(m: Monitor, state: EntityState, now: float, window: str = DEFAULT_WINDOW) -> str:
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
        f"{latency}</span></span>{overview_parts.row_uptime(m, state.name, window)}</div>"
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
        f'content="width=device-width,initial-scale=1"><link rel="icon" href="/favicon.svg" type="image/svg+xml">'
        f"<title>{esc(title)} · clusterwatch</title>"
        f'<style>{CSS}</style></head><body data-version="{m.version}"{" data-partial=1" if partial else ""}>'
        f'<header><h1><a href="/">clusterwatch</a></h1><span id="overall" class="badge b-{worst}">{worst}</span>'
        f'<span id="counts">{summary}</span><span class="muted">{esc(socket.gethostname())} · updated '
        f'<span id="updated">{time.strftime("%H:%M:%S")}</span></span></header><main>{body}</main>'
        f"{DIALOG}<script>{JS}</script></body></html>"
    )
    return text


def _options(values: Iterable[str], chosen: str | None, label: str) -> str:
    opts = [f'<option value="">{label}: all</option>']
    for value in sorted(set(values)):
        mark = " selected" if value == chosen else ""
        opts.append(f'<option value="{esc(value)}"{mark}>{esc(value)}</option>')
    return "".join(opts)


async def overview(request: web.Request) -> web.Response:
    m: Monitor = request.app[MONITOR]
    only_window = set(request.query) == {"window"}
    if (not request.query or only_window) and len(m.entities) > SNAPSHOT_AT:
        window = overview_parts.window_name(request.query)
        key = "overview" if window == DEFAULT_WINDOW else f"overview:{window}"
        if key not in m.web.snapshots:  # a long window's page: built like the default one, once asked for
            m.web.snapshots[key] = Snapshot(lambda: render_overview(m, window), ttl=5.0)
        text = await m.web.snapshots[key].get()
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


async def render_overview(m: Monitor, window: str = DEFAULT_WINDOW) -> str:
    return await overview_html(m, list(m.entities.values()), {"window": window} if window != DEFAULT_WINDOW else {})


async def overview_html(m: Monitor, states: list[EntityState], q: Any) -> str:
    """Attention first, then the cluster as a picture, the incident timeline, and every check's row with its
    uptime bars; the first three are refreshed in place by the page (/fragments/overview)."""
    now = time.time()
    window = overview_parts.window_name(q)
    await overview_data.of(m).wait_ready(window)  # a long window asked for the first time: read it first
    filters = (
        f'<form class="filters" method="get" aria-label="filter the checks"><input name="q" '
        f'placeholder="search by name" aria-label="search by name" value="{esc(q.get("q", ""))}">'
        f'<select name="status" aria-label="status">'
        f"{_options(['ok', 'warning', 'critical', 'unknown'], q.get('status'), 'status')}</select>"
        f'<select name="kind" aria-label="kind">{_options(m.kinds.values(), q.get("kind"), "kind")}</select>'
        f'<select name="node" aria-label="node">'
        f"{_options((e.node for e in m.entities.values() if e.node), q.get('node'), 'node')}</select>"
        + (f'<input type="hidden" name="window" value="{esc(window)}">' if window != DEFAULT_WINDOW else "")
        + "<button>filter</button></form>"
    )
    show_all = q.get("all") == "1"
    live = await live_parts(m, "24h")
    parts = [live["attention"], group_box(m), live["cluster"], live["timeline"]]
    parts.append(f'<section id="checks" aria-label="every check">{filters}')
    parts.append(overview_parts.window_switch(q, window))
    partial = bool(set(q) - {"window"})
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
        rows = []
        for i, s in enumerate(shown):
            if i % ROWS_PER_SLICE == ROWS_PER_SLICE - 1:
                await asyncio.sleep(0)  # let the loop answer others between slices of a big page
            rows.append(row(m, s, now, window))
        parts.append(f"<section><h2>{title} ({len(members)})</h2>{''.join(rows)}{more}</section>")
    parts.append("</section>")
    parts.append(live["history"])
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
        text += (
            f"<br>Once it is fixed: <code>{esc(item['reset'])}</code> or "
            f'<button type="button" data-act="reset" data-name="{esc(check or item["target"])}">reset heal budget'
            "</button>"
        )
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
    m: Monitor = request.app[MONITOR]
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
    m: Monitor = request.app[MONITOR]
    return web.Response(text=group_box(m), content_type="text/html", headers={"Cache-Control": "no-store"})


async def side(m: Monitor, now: float) -> str:
    return incidents_box(m, now) + await silences_box(m) + await actions_box(m)


async def side_fragment(request: web.Request) -> web.Response:
    """The incidents, actions and silences boxes, refreshed in place by the page."""
    m: Monitor = request.app[MONITOR]
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


# the detail column takes what the others leave: in equal columns its text was wrapped a few words a line
ACTION_COLUMNS = (
    '<colgroup><col class="c-when"><col class="c-check"><col class="c-action"><col class="c-outcome"><col>'
    '<col class="c-took"></colgroup>'
)


async def actions_box(
    m: Monitor, check: str | None = None, limit: int = 10, rows: list[dict[str, Any]] | None = None
) -> str:
    """The healer's newest attempts (`rows` when the caller has them already, else read from the store)."""
    if rows is None:
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
        # focusable: on a phone the table scrolls sideways, and a keyboard must be able to scroll it too
        f'<section class="wide" tabindex="0" aria-labelledby="actions-h"><h2 id="actions-h">The healer\'s actions</h2>'
        f'{healing_counts(m, check)}<table class="actions">{ACTION_COLUMNS}<thead><tr><th>when</th>'
        f"<th>check</th><th>action</th><th>outcome</th><th>detail</th><th>took</th></tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


async def silences_box(m: Monitor, found: list[Silence] | None = None) -> str:
    if found is None:
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
        '<section tabindex="0" aria-labelledby="silences-h"><h2 id="silences-h">Silences</h2><table><tr><th>id</th>'
        "<th>matches</th><th>until</th><th>why</th></tr>"
        f"{body}</table></section>"
    )


def routes(app: web.Application) -> None:
    app.cleanup_ctx.append(overview_data.lifespan)  # the pictures' background reads live with the app
    app.router.add_get("/", overview)
    app.router.add_get("/fragments/overview", overview_fragment)
    app.router.add_get("/favicon.svg", favicon)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_post("/api/v1/heal/reset", overview_heal_reset)
    app.router.add_get("/fragments/side", side_fragment)
    app.router.add_get("/fragments/group", group_fragment)
    app.router.add_get("/fragments/needs-person", needs_person_fragment)
    from clusterwatch.web import check_page  # its own module, which draws on this one's page and rows

    app.router.add_get("/checks/{name:.+}", check_page.check_page)


FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1a202c"/>'
    '<path d="M2 9h3l2-5 2 8 2-3h3" fill="none" stroke="#68d391" stroke-width="1.6"/></svg>'
)


async def favicon(request: web.Request) -> web.Response:
    """The tab's icon (a browser asks for one; without it every page load logs a 404)."""
    return web.Response(text=FAVICON, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


async def live_parts(m: Monitor, span: str) -> dict[str, str]:
    """The overview's parts that the page refreshes in place: attention, cluster, timeline, history. At many
    checks built at most once a second, shared by the page and its live fragment."""
    data = overview_data.of(m)
    kept = data.parts.get(span)
    if kept is not None and len(m.entities) > SNAPSHOT_AT and time.monotonic() - kept[0] < PARTS_TTL:
        return kept[1]
    built = await _live_parts(m, span)
    data.parts[span] = (time.monotonic(), built)
    return built


async def _live_parts(m: Monitor, span: str) -> dict[str, str]:
    """From the live state and the background reads' copies: no store read while the page is built."""
    now = time.time()
    data = overview_data.of(m)
    recent = list(reversed(data.actions[-10:]))
    return {
        "attention": await overview_parts.attention_html(m, now, needs_person_box(m, now)),
        "cluster": overview_parts.cluster_html(m),
        "timeline": overview_parts.timeline_html(m, span, now),
        "history": f'<div id="history" class="grid2">{await actions_box(m, rows=recent)}'
        f"{await silences_box(m, data.silences)}</div>",
    }


async def overview_fragment(request: web.Request) -> web.Response:
    """/fragments/overview: the live parts as JSON, fetched by the page every 1.5 s; at many checks built at
    most once a second for all viewers."""
    m: Monitor = request.app[MONITOR]
    span = overview_parts.span_name(request.query)

    async def build() -> str:
        return json.dumps({**await live_parts(m, span), "version": m.version})

    if len(m.entities) <= SNAPSHOT_AT:
        text = await build()
    else:
        snapshots = overview_data.of(m).snapshots
        if span not in snapshots:
            snapshots[span] = Snapshot(build, ttl=1.0)
        text = await snapshots[span].get()
    return web.Response(text=text, content_type="application/json", headers={"Cache-Control": "no-store"})


overview_heal_reset = overview_parts.heal_reset
