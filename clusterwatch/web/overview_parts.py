"""The overview's pictures as HTML: what needs attention, the cluster as boxes, the incident timeline, and
uptime bars for each check's row. Rendered from the live state and the background reads (overview_data),
never from a store read of its own, and bounded: a box shows its worst entities first and counts the rest,
so 10,000 checks cost about what a few hundred do."""

from __future__ import annotations

import fnmatch
import heapq
import json
import math
import socket
import time
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch.alerting.routing import Silence, matches
from clusterwatch.config.durations import format_duration
from clusterwatch.model import Group, Status
from clusterwatch.web import overview_data, svg
from clusterwatch.web.api import BadRequest, needs_person
from clusterwatch.web.overview_data import DEFAULT_WINDOW, WINDOWS
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.engine.state import EntityState
    from clusterwatch.web.view import MonitorView as Monitor

SEVERITY = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3}
SHAPE = {"ok": "●", "warning": "▲", "critical": "✖", "unknown": "?"}  # the status without colour
BOX_ENTITIES = 24  # entities drawn in one node box; the rest are counted
LOOSE_ENTITIES = 48  # ... in the row of services without a node
ATTENTION_ITEMS = 40
SPANS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
WIDE, NARROW = 1200, 420  # the timeline drawn twice: for a desktop and for a phone (CSS shows one)
THIS_MACHINE = "\x00this machine"  # the box key of entities on the monitor's own machine (no node)
NO_NODE = "\x00no node"


def esc(value: Any) -> str:
    return svg.esc(value)


_WORD = {s: s.value for s in Status}  # enum .value is a descriptor call: a dict is ten times faster


def status_of(state: EntityState) -> str:
    return _WORD[state.last.status] if state.last else "unknown"


def worst(statuses: Iterable[str]) -> str:
    return min(statuses, key=lambda s: SEVERITY.get(s, 1), default="unknown")


def word(status: str) -> str:
    """A status as shape and word, so it reads without colour."""
    return (
        f'<span class="shape" aria-hidden="true">{SHAPE.get(status, "?")}</span><span class="word">{esc(status)}</span>'
    )


def ago(seconds: float) -> str:
    return format_duration(max(0.0, seconds))


# --- uptime bars for the rows --------------------------------------------------------------------------


def window_name(q: Any) -> str:
    name = q.get("window") or DEFAULT_WINDOW
    if name not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
    return name


def row_uptime(m: Monitor, name: str, window: str = DEFAULT_WINDOW) -> str:
    """One row's uptime bars and its uptime by time over the window, to two decimals (drawn once per read of
    the slots: a page rebuilt every second for thousands of rows draws them from memory)."""
    w = overview_data.of(m).window(window)
    if not w.ready:
        return f'<span class="up muted">uptime {esc(window)}: being read</span>'
    drawn = w.drawn.get(name)
    if drawn is None:
        bars = svg.uptime_bars(w.slots(name), label=f"{name}, uptime {window}", merge=True)
        state = m.entities.get(name)
        pct = svg.format_percent(w.share_up(name), measuring=state is not None and state.last is not None)
        drawn = w.drawn[name] = f'<span class="up">{bars}<span class="pct">{pct}</span></span>'
    return drawn


def window_switch(q: Any, chosen: str) -> str:
    """Links to the same page with another window (the other filters kept)."""
    links = []
    for name in WINDOWS:
        params = {k: v for k, v in q.items() if k != "window"}
        if name != DEFAULT_WINDOW:
            params["window"] = name
        href = "?" + urllib.parse.urlencode(params) if params else "/"
        current = ' aria-current="true"' if name == chosen else ""
        links.append(f'<a href="{esc(href)}"{current}>{esc(name)}</a>')
    return f'<nav class="switch" aria-label="uptime window">uptime over {"".join(links)}</nav>'


# --- attention --------------------------------------------------------------------------------------------


def _labels(state: EntityState, m: Monitor) -> dict[str, str]:
    return {
        "check": state.check,
        "entity": state.name,
        "kind": m.kinds.get(state.name, ""),
        "node": state.node or "",
        "severity": status_of(state),
    }


def silenced_by(state: EntityState, m: Monitor, silences: list[Silence], now: float) -> Silence | None:
    labels = _labels(state, m)
    return next((s for s in silences if s.active(now) and matches(s.matchers, labels)), None)


def _tried(m: Monitor, state: EntityState, since: float | None) -> str:
    """What the healer tried for this entity since its trouble began, in one sentence."""
    item = m.items.get(state.check)
    if item is None or not getattr(item, "restart", None):
        return "no restart configured"
    action = overview_data.of(m).last_action(state.check, state.name)
    if action is None or (since is not None and float(action["started"]) < since - 60):
        return "nothing tried yet"
    outcome = action["outcome"]
    outcome = {"recovered": "recovered, not by this action", "running": "running now"}.get(outcome, outcome)
    return (
        f"tried {esc(action['action'])} <code>{esc(action['target'])}</code> #{int(action['attempt'])}: "
        f"{esc(outcome)} {ago(time.time() - float(action['started']))} ago"
    )


def _silence_button(state: EntityState) -> str:
    return (
        f'<button type="button" data-act="silence" data-entity="{esc(state.name)}" '
        f'aria-label="silence 1 h: {esc(state.name)}">silence 1 h</button>'
    )


def _item(state: EntityState, status: str, tag: str, text: str, buttons: str) -> str:
    return (
        f'<li class="attn s-{status}" data-key="{esc(tag)}:{esc(state.name)}">{word(status)} '
        f'<a href="/checks/{esc(state.name)}">{esc(state.name)}</a> <span class="tag">{esc(tag)}</span> '
        f"{text}<span class=acts>{buttons}</span></li>"
    )


def attention_items(m: Monitor, silences: list[Silence], now: float) -> tuple[list[str], int]:
    """Open incidents, flapping checks and silenced problems, worst and oldest first; (items, how many)."""
    open_, flapping, quiet = [], [], []
    for state in m.entities.values():
        status = status_of(state)
        troubled = state.incident is not None or (state.hard is not None and status != "ok")
        if not troubled and not state.flapping:
            continue
        silence = silenced_by(state, m, silences, now)
        if silence is not None and troubled:
            quiet.append((state, status, silence))
        elif state.flapping:
            flapping.append((state, status))
        elif state.incident is not None:
            open_.append((state, status))
    open_.sort(
        key=lambda p: (p[1] == "ok", p[0].affected_by is not None, SEVERITY.get(p[1], 1), p[0].incident_started or 0)
    )
    total = len(open_) + len(flapping) + len(quiet)
    items: list[str] = []
    for state, status in open_:
        if len(items) >= ATTENTION_ITEMS:
            break
        since = state.incident_started or state.since
        if status == "ok":  # healthy again, the incident not closed yet (it closes after `rise` good checks)
            text = (
                f"ok again for {ago(now - state.since)} after {ago(state.since - since)} of trouble; the incident "
                f'closes once it stays ok. <span class="muted">{_tried(m, state, since)}.</span>'
            )
            items.append(_item(state, status, "recovering", text, ""))
            continue
        why = esc(state.last.message if state.last else "")
        note = f' <span class="muted">(affected: {esc(state.affected_by)} is down)</span>' if state.affected_by else ""
        text = (
            f"{esc(status)} for <b>{ago(now - since)}</b>: {why}{note}. "
            f'<span class="muted">{_tried(m, state, since)}.</span>'
        )
        items.append(_item(state, status, "incident", text, _silence_button(state)))
    for state, status in flapping:
        if len(items) >= ATTENTION_ITEMS:
            break
        text = (
            f"flapping: {state.flap_percent:.0f}% state changes over its last checks, now {esc(status)} "
            f'for {ago(now - state.since)}. <span class="muted">{_tried(m, state, None)}.</span>'
        )
        items.append(_item(state, status, "flapping", text, _silence_button(state)))
    for state, status, silence in quiet:
        if len(items) >= ATTENTION_ITEMS:
            break
        text = (
            f"{esc(status)} for {ago(now - (state.incident_started or state.since))}, silenced until "
            f"{time.strftime('%H:%M', time.localtime(silence.ends))} ({ago(silence.ends - now)} left): "
            f'{esc(silence.reason)}. <span class="muted">{_tried(m, state, state.incident_started)}.</span>'
        )
        button = (
            f'<button type="button" data-act="unsilence" data-id="{esc(silence.id)}" '
            f'aria-label="end silence: {esc(state.name)}">end silence</button>'
        )
        items.append(_item(state, status, "silenced", text, button))
    return items, total


async def attention_html(m: Monitor, now: float, needs_person_box: str) -> str:
    items, total = attention_items(m, overview_data.of(m).silences, now)
    gave_up = len(needs_person(m))
    if not items and not gave_up:
        return (
            '<section id="attention" aria-labelledby="attention-h"><h2 id="attention-h" class="calm">'
            f"{word('ok')} Nothing needs attention</h2>{needs_person_box}</section>"
        )
    more = (
        f'<p class="muted">{total - len(items)} more not listed: filter the checks below</p>'
        if total > len(items)
        else ""
    )
    return (
        f'<section id="attention" aria-labelledby="attention-h"><h2 id="attention-h">Needs attention '
        f"({total + gave_up})</h2>{needs_person_box}<ul class=attn-list>{''.join(items)}</ul>{more}</section>"
    )


# --- the cluster as a picture ------------------------------------------------------------------------------


def _box_key(state: EntityState) -> str:
    node = state.node
    if node and node != "local":
        return node
    if state.last is not None and state.last.group is Group.SYSTEM:
        return THIS_MACHINE
    return THIS_MACHINE if node == "local" else NO_NODE


def _gpu_gauges(m: Monitor, metrics: dict[str, float]) -> str:
    t = m.config.thresholds
    out = []
    for key, label, unit, level, top in (
        ("utilization_percent", "util", "%", t.gpu_utilization, 100.0),
        ("memory_percent", "mem", "%", t.gpu_memory, 100.0),
        ("temperature_celsius", "temp", "°C", t.gpu_temperature, 100.0),
    ):
        if key in metrics:
            warn = level.warning if level.warning is not None else math.inf
            crit = level.critical if level.critical is not None else math.inf
            out.append(svg.gauge(metrics[key], label=label, unit=unit, warn=warn, crit=crit, maximum=top))
    return f'<span class="gauges">{"".join(out)}</span>' if out else ""


def _node_gauges(m: Monitor, state: EntityState | None) -> str:
    if state is None or state.last is None:
        return ""
    metrics = state.last.metrics
    out = []
    node = next((n for n in m.config.nodes if n.name == state.name), None)
    limits = (node.thresholds if node else None) or (m.config.node_thresholds if node else m.config.thresholds)
    for key, label, level in (("cpu_percent", "cpu", limits.cpu), ("memory_percent", "mem", limits.memory)):
        if key in metrics:
            warn = level.warning if level.warning is not None else math.inf
            crit = level.critical if level.critical is not None else math.inf
            out.append(svg.gauge(metrics[key], label=label, unit="%", warn=warn, crit=crit))
    if "battery_percent" in metrics:
        warn = node.battery_warning if node else 20.0
        crit = node.battery_critical if node else 10.0
        out.append(svg.gauge(metrics["battery_percent"], label="battery", unit="%", warn=warn, crit=crit))
    return f'<div class="gauges">{"".join(out)}</div>' if out else ""


def _deps(m: Monitor, state: EntityState, box: str) -> str:
    """What this entity depends on, for the dependency lines: its check's depends_on, and its check's node
    when the entity is drawn elsewhere."""
    item = m.items.get(state.check)
    if item is None:
        return ""
    found = list(getattr(item, "depends_on", []) or [])
    node = getattr(item, "node", None)
    if node and node != "local" and node != box and node != state.name:
        found.append(node)
    return " ".join(found)


def _chip(m: Monitor, state: EntityState, box: str, short: str, sub: bool) -> str:
    status = status_of(state)
    message = state.last.message if state.last else "not checked yet"
    kind = m.kinds.get(state.name, "")
    extra = ""
    if state.last is not None and "utilization_percent" in state.last.metrics:
        extra = _gpu_gauges(m, state.last.metrics)
    deps = _deps(m, state, box)
    main = ' data-check="' + esc(state.check) + '"' if state.name == state.check else ""
    return (
        f'<li class="ent s-{status}{" sub" if sub else ""}" data-name="{esc(state.name)}"{main} '
        f'data-status="{status}" data-deps="{esc(deps)}" title="{esc(kind)}: {esc(message)}">'
        f'{word(status)} <a href="/checks/{esc(state.name)}">{esc(short)}</a>'
        f'<span class="kind">{esc(kind)}</span>{extra}</li>'
    )


def _box(m: Monitor, key: str, members: list[EntityState], limit: int) -> str:
    """One node: its own entity's status and gauges, then what runs on it grouped by check (Ollama and its
    models, Dask and its workers, a container set), worst first, at most `limit` drawn and the rest counted.
    One pass over the members and a partial sort: a row of 10,000 services costs a few milliseconds."""
    own = None
    counts: dict[str, int] = {}
    by_check: dict[str, list[EntityState]] = {}
    rank: dict[str, int] = {}  # check -> its worst entity's severity in this box
    for s in members:
        st = status_of(s)
        counts[st] = counts.get(st, 0) + 1
        if s.name == key:
            own = s
            continue
        found = by_check.get(s.check)
        if found is None:
            by_check[s.check] = [s]
            rank[s.check] = SEVERITY.get(st, 1)
        else:
            found.append(s)
            rank[s.check] = min(rank[s.check], SEVERITY.get(st, 1))
    status = worst(counts)
    groups = [(c, by_check[c]) for c in heapq.nsmallest(limit, by_check, key=lambda c: (rank[c], c))]
    chips: list[str] = []
    drawn: dict[str, int] = {}
    for check, group in groups:
        if len(chips) >= limit:
            break
        has_main = any(s.name == check for s in group)
        group.sort(key=lambda s: (s.name != check, SEVERITY.get(status_of(s), 1), s.name))
        for s in group[: limit - len(chips)]:
            short = s.name[len(check) + 1 :] if s.name.startswith(check + "/") else s.name
            chips.append(_chip(m, s, key, short, sub=has_main and s.name != check))
            st = status_of(s)
            drawn[st] = drawn.get(st, 0) + 1
    if own is not None:
        drawn[status_of(own)] = drawn.get(status_of(own), 0) + 1
    hidden = {st: n - drawn.get(st, 0) for st, n in counts.items() if n - drawn.get(st, 0) > 0}
    more = ""
    if hidden:
        said = ", ".join(f"{n} {st}" for st, n in sorted(hidden.items(), key=lambda i: SEVERITY.get(i[0], 1)))
        where = "" if key in (THIS_MACHINE, NO_NODE) else f' (<a href="/?node={esc(key)}#checks">list them</a>)'
        more = f'<p class="more muted">+{sum(hidden.values())} more: {esc(said)}{where}</p>'
    if key == THIS_MACHINE:
        title, sub, node_attr = "this machine", esc(socket.gethostname()), ""
    elif key == NO_NODE:
        title, sub, node_attr = "services without a node", "", ""
    else:
        title, sub, node_attr = key, esc(m.kinds.get(key, "")), f' data-node="{esc(key)}"'
        if own is None:
            sub = "node"
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: SEVERITY.get(i[0], 1)))
    label = f"{title}: {status} ({tally})"
    return (
        f'<article class="node s-{status}{" loose" if key == NO_NODE and len(members) > 8 else ""}"{node_attr} '
        f'data-status="{status}" '
        f'aria-label="{esc(label)}">'
        f'<h3>{word(status)} <span class="title">{esc(title)}</span> <span class="muted">{sub}</span></h3>'
        f'<p class="tally muted">{esc(tally)}</p>{_node_gauges(m, own)}<ul class="ents">{"".join(chips)}</ul>'
        f"{more}</article>"
    )


def cluster_html(m: Monitor) -> str:
    """Every node as a box holding what runs on it; this machine first, services without a node last."""
    boxes: dict[str, list[EntityState]] = {}
    for state in m.entities.values():
        boxes.setdefault(_box_key(state), []).append(state)
    for node in m.config.nodes:  # a node not observed yet still has its box
        boxes.setdefault(node.name, [])
    order = sorted((k for k in boxes if k not in (THIS_MACHINE, NO_NODE)), key=str.lower)
    keys = ([THIS_MACHINE] if THIS_MACHINE in boxes else []) + order
    parts = [_box(m, k, boxes[k], BOX_ENTITIES) for k in keys]
    if NO_NODE in boxes:
        parts.append(_box(m, NO_NODE, boxes[NO_NODE], LOOSE_ENTITIES))
    if not parts:
        parts.append('<p class="muted">Nothing observed yet: the first results arrive within one interval.</p>')
    return (
        '<section id="cluster" aria-labelledby="cluster-h"><div class="bar"><h2 id="cluster-h">The cluster</h2>'
        '<button type="button" id="deps-toggle" aria-pressed="false">show dependencies</button></div>'
        f'<div class="nodes">{"".join(parts)}</div><svg id="deps" aria-hidden="true"></svg></section>'
    )


# --- the incident timeline -----------------------------------------------------------------------------------


def span_name(q: Any) -> str:
    name = q.get("span") or "24h"
    return name if name in SPANS else "24h"


def timeline_html(m: Monitor, span: str, now: float) -> str:
    start = now - SPANS[span]
    incidents, marks = overview_data.of(m).timeline_data(start, now)
    links = "".join(
        f'<button type="button" data-span="{name}" aria-pressed="{"true" if name == span else "false"}">'
        f"{name.replace('h', ' h').replace('d', ' d')}</button>"
        for name in SPANS
    )
    wide = svg.timeline(incidents, marks, start, now, width=WIDE)
    narrow = svg.timeline(incidents, marks, start, now, width=NARROW, max_lanes=8)
    return (
        f'<section id="timeline" data-span="{span}" aria-labelledby="timeline-h"><div class="bar">'
        f'<h2 id="timeline-h">Incidents and the healer</h2><span class="spans" role="group" '
        f'aria-label="time span">{links}</span></div><div class="tl-wide">{wide}</div>'
        f'<div class="tl-narrow">{narrow}</div></section>'
    )


# --- the one change the overview asks for besides silences ------------------------------------------------------


async def heal_reset(request: web.Request) -> web.Response:
    """POST /api/v1/heal/reset {"name": check or target}: give a restart budget back, as `clusterwatch heal
    reset` does, through the store's command queue (the healer owns the budgets). Needs the token (the
    server asks for it for every change). 202: asked; the banner goes once the healer has done it."""
    m: Monitor = request.app[MONITOR]
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('body must be JSON: {"name": check or restart target}') from None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("name must be a check's name or a restart target")
    name = name.strip()
    known = {c.name for c in m.config.checks if getattr(c, "restart", None)}
    known |= {str(i.get("target")) for i in needs_person(m)}
    if name not in known and not any(fnmatch.fnmatchcase(name, k) for k in known if "*" in k):
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no check with a restart action and no exhausted target is named {name!r}"}),
            content_type="application/json",
        )
    m.ask_heal_reset(name)
    return web.json_response({"asked": name, "command": "heal_reset"}, status=202)
