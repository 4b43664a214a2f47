"""Inline SVG pictures rendered on the server: uptime bars, an incident timeline, a latency chart, gauges.

Pure functions from numbers to one ``<svg>`` string each, so the dashboard, ``/status`` and a forwarded
``report --html`` file show the same pictures without a script or a CDN. Every picture is ``role="img"``
with a ``<title>`` and an ``aria-label`` that carries its numbers, and reads without colour: down time is
drawn hatched, failures as crosses, warnings with a "!" — colour only repeats what a shape already says.
Colours are inline (a report file has no stylesheet); each element also carries a class a page may restyle.
Text is drawn in the surrounding text colour (currentColor), so it keeps its contrast in light and dark pages.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

SVG_NS = "http://www.w3.org/2000/svg"

# Colours readable on light and dark backgrounds alike.
OK = "#1f9d55"
MINOR = "#a3c22e"  # a little down time in a slot
WARN = "#d69e2e"
CRIT = "#e3342f"
UNKNOWN = "#a0aec0"
INK = "#718096"  # axes, ticks, text: mid grey reads on white and on near-black

# Characters XML 1.0 forbids (a probe's message may carry any of them): dropped before escaping.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Slot:
    """One bar of uptime bars: ``down_share`` of its known time spent down (None: nothing known).

    ``known`` is how many seconds of the slot are known (None: all of it); it weighs the slot in the total,
    so the percentage is by time, not by slot."""

    start: float
    end: float
    down_share: float | None
    incident: str | None = None
    known: float | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """An incident on the timeline, from ``start`` to ``end`` (None: still open)."""

    start: float
    end: float | None
    label: str
    severity: str = "critical"  # critical / warning / unknown: the colour, and the word in its title
    key: str | None = None  # marks with the same key are drawn on this incident's lane


MarkKind = Literal["started", "credited", "not_credited"]


@dataclass(frozen=True, slots=True)
class Mark:
    """A healer's action on the timeline: ``started`` (in flight), ``credited`` (it succeeded) or
    ``not_credited`` (recovered by itself, failed, interrupted)."""

    at: float
    kind: MarkKind
    label: str
    key: str | None = None


def esc(value: object) -> str:
    """Text or attribute value made safe for XML and HTML both."""
    return html.escape(_NOT_XML.sub("", str(value if value is not None else "")), quote=True)


def _num(value: float | None) -> float | None:
    """None for None, NaN and infinities: a sensor's garbage is "no data", not a picture of garbage."""
    if value is None:
        return None
    if value.__class__ is float:  # nearly every call: no conversion needed
        return value if math.isfinite(value) else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def format_percent(share_up: float | None, *, measuring: bool = False) -> str:
    """Uptime to two decimals, rounded down: any down time shows as less than 100.00%. `measuring`: nothing
    is known yet but the entity is being observed (a new check's first minute is written when it ends),
    where "no data" would read as broken."""
    share_up = _num(share_up)
    if share_up is None:
        return "measuring" if measuring else "no data"
    share_up = min(1.0, max(0.0, share_up))
    return f"{math.floor(share_up * 10000 + 1e-9) / 100:.2f}%"


def uptime_share(slots: Iterable[Slot]) -> float | None:
    """The share of known time spent up over all slots (None: nothing known)."""
    up = known = 0.0
    for s in slots:
        down = _num(s.down_share)
        if down is None:
            continue
        weight = _num(s.known)
        weight = max(0.0, s.end - s.start) if weight is None else max(0.0, weight)
        known += weight
        up += weight * (1 - min(1.0, max(0.0, down)))
    return up / known if known > 0 else None


def _svg(width: float, height: float, label: str, body: str, cls: str, *, stretch: bool = False) -> str:
    """Stretched pictures (bars) fill the width at a fixed height; the others keep their proportions and shrink
    to fit (an inline style, so a report file without a stylesheet does the same)."""
    if stretch:
        size = f'width="100%" height="{height:g}" preserveAspectRatio="none"'
    else:
        size = f'width="{width:g}" height="{height:g}" style="max-width:100%;height:auto"'
    return (
        f'<svg xmlns="{SVG_NS}" class="{cls}" role="img" aria-label="{esc(label)}" viewBox="0 0 {width:g} {height:g}"'
        f" {size}><title>{esc(label)}</title>{body}</svg>"
    )


def _clock(at: float, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(at))


def _range(start: float, end: float) -> str:
    """A slot's time range: times of day when it is within a day, dates and times otherwise."""
    if end - start <= 86400 and _clock(start, "%Y-%m-%d") == _clock(end - 1, "%Y-%m-%d"):
        return f"{_clock(start, '%Y-%m-%d %H:%M')}–{_clock(end, '%H:%M')}"
    return f"{_clock(start, '%Y-%m-%d %H:%M')} – {_clock(end, '%Y-%m-%d %H:%M')}"


def _down_colour(down: float) -> str:
    if down <= 0:
        return OK
    if down < 0.02:
        return MINOR
    if down < 0.5:
        return WARN
    return CRIT


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _same_run(s: Slot) -> str | None:
    """The run a slot may be drawn in with its neighbours: all up, or nothing known (no incident under it)."""
    if s.incident:
        return None
    down = _num(s.down_share)
    return "none" if down is None else "up" if down <= 0 else None


def uptime_bars(slots: Sequence[Slot], *, label: str, merge: bool = False) -> str:
    """Gatus-style bars, one per slot (48 for 24 h): green when the slot was up all its known time, hatched
    and yellow→red by the share of it spent down, a low grey bar when nothing is known. Each slot's
    tooltip gives its time range, uptime and the incident under it; the label carries the total by time.

    `merge`: neighbouring slots that were all up (or all unknown) share one element and one tooltip for
    their whole range (still drawn as separate bars): a page with thousands of rows stays small."""
    n = max(1, len(slots))
    gap, bar, height = 1.0, 6.0, 24.0
    width = n * (bar + gap) - gap
    parts = []
    i = 0
    while i < len(slots):
        s = slots[i]
        run = _same_run(s) if merge else None
        if run is not None:
            j = i
            while j + 1 < len(slots) and _same_run(slots[j + 1]) == run:
                j += 1
            span = _range(s.start, slots[j].end)
            x, run_w = i * (bar + gap), (j - i + 1) * (bar + gap) - gap
            # one dashed line draws the run's bars: a dash per slot, a gap between them
            if run == "none":
                parts.append(
                    f'<g class="slot slot-none"><title>{esc(span)}: no data</title><line x1="{x:g}" '
                    f'y1="{height - 3:g}" x2="{x + run_w:g}" y2="{height - 3:g}" stroke="{UNKNOWN}" stroke-width="6" '
                    f'stroke-dasharray="{bar:g} {gap:g}"/><rect x="{x:g}" y="0" width="{run_w:g}" '
                    f'height="{height:g}" fill="transparent"/></g>'
                )
            else:
                parts.append(
                    f'<g class="slot slot-up"><title>{esc(span)}: {format_percent(1.0)} up</title><line x1="{x:g}" '
                    f'y1="{height / 2:g}" x2="{x + run_w:g}" y2="{height / 2:g}" stroke="{OK}" '
                    f'stroke-width="{height:g}" stroke-dasharray="{bar:g} {gap:g}"/></g>'
                )
            i = j + 1
            continue
        x = i * (bar + gap)
        i += 1
        down = _num(s.down_share)
        span = _range(s.start, s.end)
        if down is None:
            tip = f"{span}: no data" + (f" — {s.incident}" if s.incident else "")
            parts.append(
                f'<g class="slot slot-none"><title>{esc(tip)}</title><rect x="{x:g}" y="{height - 6:g}" '
                f'width="{bar:g}" height="6" fill="{UNKNOWN}"/>'
                f'<rect x="{x:g}" y="0" width="{bar:g}" height="{height:g}" fill="transparent"/></g>'
            )
            continue
        down = min(1.0, max(0.0, down))
        known = _num(s.known)
        tip = f"{span}: {format_percent(1 - down)} up"
        if down > 0:
            slot_s = known if known is not None else max(0.0, s.end - s.start)
            tip += f" ({_duration(down * slot_s)} down)"
        if s.incident:
            tip += f" — {s.incident}"
        hatch = ""
        if down > 0:  # diagonal strokes: down time seen without colour
            hatch = (
                f'<path d="M{x:g} {height * 0.4:g}L{x + bar:g} {height * 0.15:g}M{x:g} {height * 0.75:g}'
                f'L{x + bar:g} {height * 0.5:g}M{x:g} {height:g}L{x + bar:g} {height * 0.85:g}" '
                f'stroke="#fff" stroke-opacity=".8" stroke-width="1.2"/>'
            )
        cls = "slot-down" if down > 0 else "slot-up"
        parts.append(
            f'<g class="slot {cls}"><title>{esc(tip)}</title><rect x="{x:g}" y="0" width="{bar:g}" '
            f'height="{height:g}" rx="1" fill="{_down_colour(down)}"/>{hatch}</g>'
        )
    total = uptime_share(slots)
    down_slots = sum(1 for s in slots if (_num(s.down_share) or 0) > 0)
    summary = f"{label}: {format_percent(total)} up"
    if slots:
        summary += f" from {_range(slots[0].start, slots[-1].end)}, {down_slots} of {len(slots)} slots with down time"
    return _svg(width, height, summary, "".join(parts), "uptime-bars", stretch=True)


def _ticks(start: float, end: float, want: int = 6) -> list[float]:
    """Round times between start and end for an axis: whole hours, or whole days for longer spans."""
    span = max(1.0, end - start)
    steps = [60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600, 2592000]
    step = next((s for s in steps if span / s <= want), steps[-1])
    offset = time.localtime(start).tm_gmtoff  # round in local time: ticks on local midnights and hours
    first = math.ceil((start + offset) / step) * step - offset
    return [first + i * step for i in range(int((end - first) // step) + 1) if first + i * step <= end]


def _tick_label(at: float, span: float) -> str:
    if span > 3 * 86400:
        return _clock(at, "%m-%d")
    if span > 86400:
        return _clock(at, "%m-%d %H:%M") if _clock(at, "%H:%M") == "00:00" else _clock(at, "%H:%M")
    return _clock(at, "%H:%M")


def _time_axis(start: float, end: float, x0: float, x1: float, y: float) -> str:
    span = max(1.0, end - start)
    out = [f'<line x1="{x0:g}" y1="{y:g}" x2="{x1:g}" y2="{y:g}" stroke="{INK}" stroke-width=".5"/>']
    for t in _ticks(start, end):
        x = x0 + (t - start) / span * (x1 - x0)
        label = _tick_label(t, span)
        half = len(label) * 2.6  # about half the label's width at font-size 9
        # a label near either end is anchored inside the axis, not cut by the picture's edge
        anchor = "start" if x - half < x0 else "end" if x + half > x1 else "middle"
        out.append(
            f'<line x1="{x:.1f}" y1="{y:g}" x2="{x:.1f}" y2="{y + 3:g}" stroke="{INK}" stroke-width=".5"/>'
            f'<text x="{x:.1f}" y="{y + 12:g}" font-size="9" text-anchor="{anchor}" fill="currentColor">'
            f"{esc(label)}</text>"
        )
    return "".join(out)


_SEVERITY_COLOUR = {"critical": CRIT, "warning": WARN, "unknown": UNKNOWN}
_MARK_WORD = {"started": "started", "credited": "credited (succeeded)", "not_credited": "not credited"}


def _mark_shape(kind: str, x: float, y: float) -> str:
    """Started: an open circle; credited: a filled diamond; not credited: a cross."""
    if kind == "credited":
        return (
            f'<path d="M{x:.1f} {y - 5:.1f}L{x + 4:.1f} {y:.1f}L{x:.1f} {y + 5:.1f}L{x - 4:.1f} {y:.1f}Z" '
            f'fill="{OK}" stroke="#fff" stroke-width=".8"/>'
        )
    if kind == "not_credited":
        return (
            f'<path d="M{x - 3.5:.1f} {y - 3.5:.1f}L{x + 3.5:.1f} {y + 3.5:.1f}M{x - 3.5:.1f} {y + 3.5:.1f}'
            f'L{x + 3.5:.1f} {y - 3.5:.1f}" stroke="{CRIT}" stroke-width="2.2"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#fff" stroke="{INK}" stroke-width="1.5"/>'


def timeline(
    incidents: Sequence[Span],
    marks: Sequence[Mark],
    start: float,
    end: float,
    *,
    max_lanes: int = 12,
    width: float = 600.0,
) -> str:
    """Every incident as a bar from open to close (an open one runs to ``end`` and is drawn with an arrow),
    on lanes so overlapping ones stay apart, the healer's actions as marks on their incident's lane (or on a
    row of their own when they match none), an hour or day axis under it, and a legend of the shapes.

    `width` in user units (text is 9-10 units high): about the pixels it will be shown at keeps text legible,
    so a page may draw a wide one for a desktop and a narrow one for a phone."""
    span = max(1.0, end - start)
    width = max(300.0, width)
    x0, x1, lane_h = 4.0, width - 4.0, 14.0

    def x_of(t: float) -> float:
        return x0 + (min(end, max(start, t)) - start) / span * (x1 - x0)

    shown = sorted(
        (i for i in incidents if (i.end is None or i.end >= start) and i.start <= end), key=lambda i: i.start
    )
    lane_ends: list[float] = []
    lanes: list[tuple[Span, int]] = []
    hidden = 0
    for inc in shown:
        finish = end if inc.end is None else inc.end
        lane = next((n for n, last in enumerate(lane_ends) if last < inc.start), None)
        if lane is None:
            if len(lane_ends) >= max_lanes:
                hidden += 1
                continue
            lane_ends.append(finish)
            lane = len(lane_ends) - 1
        else:
            lane_ends[lane] = finish
        lanes.append((inc, lane))
    by_key = {inc.key: lane for inc, lane in lanes if inc.key is not None}
    loose = [m for m in marks if m.key not in by_key and start <= m.at <= end]
    top = lane_h if loose else 0.0  # a row for marks that belong to no incident drawn
    n_lanes = max(1, len(lane_ends))
    axis_y = top + n_lanes * lane_h + 4
    height = axis_y + 26
    parts = []
    for inc, lane in lanes:
        a, b = x_of(inc.start), x_of(end if inc.end is None else inc.end)
        y = top + lane * lane_h + 2
        colour = _SEVERITY_COLOUR.get(inc.severity, CRIT)
        closed = inc.end is not None
        took = (inc.end if closed else end) - inc.start
        when = f"{_range(inc.start, inc.end) if closed else _clock(inc.start, '%Y-%m-%d %H:%M') + ' – now'}"
        tip = f"{inc.label}: {inc.severity}, {when} ({_duration(took)}{'' if closed else ', still open'})"
        arrow = ""
        if not closed:
            arrow = f'<path d="M{b:.1f} {y - 1:.1f}L{b + 4:.1f} {y + 5:.1f}L{b:.1f} {y + 11:.1f}Z" fill="{colour}"/>'
        parts.append(
            f'<g class="incident incident-{esc(inc.severity)}{"" if closed else " open"}"><title>{esc(tip)}</title>'
            f'<rect x="{a:.1f}" y="{y:g}" width="{max(2.0, b - a):.1f}" height="{lane_h - 4:g}" rx="2" '
            f'fill="{colour}" fill-opacity=".85"/>{arrow}</g>'
        )
    for m in marks:
        if not start <= m.at <= end:
            continue
        lane = by_key.get(m.key) if m.key is not None else None
        y = top + lane * lane_h + lane_h / 2 if lane is not None else lane_h / 2
        tip = f"{_clock(m.at, '%Y-%m-%d %H:%M:%S')}: {m.label} — {_MARK_WORD.get(m.kind, m.kind)}"
        parts.append(
            f'<g class="mark mark-{esc(m.kind)}"><title>{esc(tip)}</title>{_mark_shape(m.kind, x_of(m.at), y)}</g>'
        )
    if not lanes:
        parts.append(
            f'<text x="{(x0 + x1) / 2:g}" y="{top + lane_h - 3:g}" font-size="10" text-anchor="middle" '
            f'fill="currentColor">no incidents</text>'
        )
    parts.append(_time_axis(start, end, x0, x1, axis_y))
    legend_y = axis_y + 22
    parts.append(
        f'<g class="legend" font-size="9" fill="currentColor">{_mark_shape("started", 10, legend_y - 3)}'
        f'<text x="17" y="{legend_y:g}">healer started</text>{_mark_shape("credited", 100, legend_y - 3)}'
        f'<text x="107" y="{legend_y:g}">credited</text>{_mark_shape("not_credited", 165, legend_y - 3)}'
        f'<text x="172" y="{legend_y:g}">not credited</text></g>'
    )
    if hidden:
        parts.append(
            f'<text x="{x1:g}" y="{legend_y:g}" font-size="9" text-anchor="end" fill="currentColor">'
            f"{hidden} more not drawn</text>"
        )
    open_n = sum(1 for i in shown if i.end is None)
    counts = {k: sum(1 for m in marks if m.kind == k and start <= m.at <= end) for k in _MARK_WORD}
    label = (
        f"Incidents from {_range(start, end)}: {len(shown)} ({open_n} open); healer actions: "
        f"{counts['started']} started, {counts['credited']} credited, {counts['not_credited']} not credited"
    )
    return _svg(width, height, label, "".join(parts), "timeline")


def _nice_top(value: float) -> float:
    """The smallest 1/2/5×10^n at or above value: an axis top a person reads at a glance."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= value)


def _polyline(coords: list[tuple[float, float] | None], colour: str, dash: str, cls: str) -> str:
    """Polylines broken where a value is missing: a gap, not a line across no data."""
    runs: list[list[tuple[float, float]]] = [[]]
    for c in coords:
        if c is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(c)
    out = []
    for run in runs:
        if len(run) == 1:
            x, y = run[0]
            out.append(f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="1.5" fill="{colour}"/>')
        elif run:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            extra = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<polyline class="{cls}" fill="none" stroke="{colour}" stroke-width="1.6"{extra} points="{pts}"/>'
            )
    return "".join(out)


def latency_chart(points: Sequence[tuple[float, float | None, float | None]], start: float, end: float) -> str:
    """p50 (solid) and p95 (dashed) latency over time in milliseconds, with a time axis and a millisecond axis;
    a missing value breaks the line."""
    span = max(1.0, end - start)
    x0, x1, y0, y1 = 48.0, 596.0, 8.0, 126.0
    clean = [(t, _num(p50), _num(p95)) for t, p50, p95 in points if _num(t) is not None and start <= t <= end]
    clean.sort(key=lambda p: p[0])
    values = [v for _, a, b in clean for v in (a, b) if v is not None]
    top = _nice_top(max(values)) if values else 1.0

    def xy(t: float, v: float | None) -> tuple[float, float] | None:
        if v is None:
            return None
        return x0 + (t - start) / span * (x1 - x0), y1 - min(max(v, 0.0), top) / top * (y1 - y0)

    parts = []
    for i in range(5):
        v = top * i / 4
        y = y1 - (y1 - y0) * i / 4
        dash = "" if i == 0 else ' stroke-dasharray="2 3"'
        parts.append(
            f'<line x1="{x0:g}" y1="{y:.1f}" x2="{x1:g}" y2="{y:.1f}" stroke="{INK}" stroke-width=".3"{dash}/>'
            f'<text x="{x0 - 4:g}" y="{y + 3:.1f}" font-size="9" text-anchor="end" fill="currentColor">'
            f"{v:g}{' ms' if i == 4 else ''}</text>"
        )
    parts.append(_time_axis(start, end, x0, x1, y1))
    parts.append(_polyline([xy(t, b) for t, _, b in clean], WARN, "4 2", "p95"))
    parts.append(_polyline([xy(t, a) for t, a, _ in clean], "#3182ce", "", "p50"))
    legend_y = y1 + 24
    parts.append(
        f'<g class="legend" font-size="9" fill="currentColor"><line x1="{x0:g}" y1="{legend_y - 3:g}" x2="{x0 + 16:g}" '
        f'y2="{legend_y - 3:g}" stroke="#3182ce" stroke-width="1.6"/><text x="{x0 + 20:g}" y="{legend_y:g}">p50'
        f'</text><line x1="{x0 + 50:g}" y1="{legend_y - 3:g}" x2="{x0 + 66:g}" y2="{legend_y - 3:g}" '
        f'stroke="{WARN}" stroke-width="1.6" stroke-dasharray="4 2"/><text x="{x0 + 70:g}" y="{legend_y:g}">p95'
        f"</text></g>"
    )
    if not values:
        parts.append(
            f'<text x="{(x0 + x1) / 2:g}" y="{(y0 + y1) / 2:g}" font-size="11" text-anchor="middle" '
            f'fill="currentColor">no latency recorded</text>'
        )
    p50s = [a for _, a, _ in clean if a is not None]
    p95s = [b for _, _, b in clean if b is not None]
    label = f"Latency from {_range(start, end)}"
    if p50s:
        label += f": p50 median {sorted(p50s)[len(p50s) // 2]:.0f} ms"
    if p95s:
        label += f", p95 highest {max(p95s):.0f} ms"
    if not values:
        label += ": no data"
    return _svg(600, legend_y + 4, label, "".join(parts), "latency-chart")


def gauge(value: float | None, *, label: str, unit: str, warn: float, crit: float, maximum: float = 100.0) -> str:
    """A small bar gauge (GPU utilisation, memory, temperature; battery): filled to ``value`` of ``maximum``,
    its text says the number and, past ``warn``/``crit``, "!"/"!!" and the word. When ``crit`` is below ``warn``
    lower is worse (a battery)."""
    v = _num(value)
    width, height = 120.0, 16.0
    low_bad = crit < warn
    if v is None:
        state, colour = "no data", UNKNOWN
    elif (v <= crit) if low_bad else (v >= crit):
        state, colour = "critical", CRIT
    elif (v <= warn) if low_bad else (v >= warn):
        state, colour = "warning", WARN
    else:
        state, colour = "ok", OK
    top = maximum if maximum > 0 else 100.0
    fill = 0.0 if v is None else min(1.0, max(0.0, v / top)) * (width - 2)
    number = "–" if v is None else f"{v:.0f}{unit}"
    flag = {"critical": " !!", "warning": " !"}.get(state, "")
    text = f"{label} {number}{flag}"
    aria = f"{label}: {'no data' if v is None else f'{v:g}{unit}'} ({state})"
    body = (
        f'<rect x=".5" y=".5" width="{width - 1:g}" height="{height - 1:g}" rx="3" fill="none" stroke="{INK}"/>'
        f'<rect class="gauge-fill" x="1" y="1" width="{fill:.1f}" height="{height - 2:g}" rx="2.5" '
        f'fill="{colour}" fill-opacity=".55"/>'
        f'<text x="4" y="{height - 4:g}" font-size="10" fill="currentColor">{esc(text)}</text>'
    )
    return (
        f'<svg xmlns="{SVG_NS}" class="gauge gauge-{state.replace(" ", "-")}" role="img" aria-label="{esc(aria)}" '
        f'viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}"><title>{esc(aria)}</title>'
        f"{body}</svg>"
    )
