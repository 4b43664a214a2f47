"""`clusterwatch report`: what the history says about a period — uptime, incidents, MTTR, restarts
and how often they worked, recurring failures and their time of day, flapping, slowest probes.
The successor of Cluster AI's empty log analyser (`alerts | performance | errors`).

`--html` writes one self-contained file to forward: inline SVG (each service's uptime bars, every
incident on a timeline with the healer's attempts), inline CSS, no script and nothing fetched from
anywhere, so it opens the same in any browser or mail client, offline.
"""

from __future__ import annotations

import html
import re
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from clusterwatch import redact
from clusterwatch.config.durations import parse_duration
from clusterwatch.store.history import History
from clusterwatch.web import history_svg, svg

RECURRING = 3  # incidents of one entity in the period that make it "recurring"
SLOTS = 48  # uptime bars per service, whatever the period
MINUTES_KEPT = 14 * 86400.0  # store.minute_rollups_max_age's default: older periods are drawn from the hours
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?")


def parse_when(text: str, now: float) -> float:
    """A point in time from `--since`/`--until`: a date or date and time (`2026-03-01`, `2026-03-01 14:00`,
    local time), or a duration back from now (`7d`, `36h`)."""
    text = text.strip()
    if _DATE.fullmatch(text):
        try:
            return datetime.fromisoformat(text.replace(" ", "T")).timestamp()
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a date: {exc}") from None
    try:
        return now - parse_duration(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected a date (2026-03-01, 2026-03-01 14:00) or a duration (7d, 36h)") from None


# An attempt's outcome as counted: "recovered" (healthy again, but the evidence shows it was not this
# action) is neither a restart that worked nor one that failed; anything else unfinished counts as failed.
COUNTED = ("succeeded", "recovered", "failed", "dry_run")


def build(
    store_path: str | Path, since: float, now: float | None = None, *, minutes_kept: float = MINUTES_KEPT
) -> dict[str, Any]:
    """The period of `since` seconds that ends at `now` (default: now). Uptime is by time, from the hours
    the period touches; the bars are SLOTS equal slices of it (from the minutes while they are kept)."""
    now = now or time.time()
    start = now - since
    history = History(store_path)
    try:
        uptime = {
            entity: {
                "uptime_percent": None if u.percent is None else round(u.percent, 3),
                "known_s": round(u.seconds_known, 1),
                "probes": u.probes,
                "p95_ms": u.p95_ms,
                "max_ms": u.max_ms,
            }
            for entity, u in history.uptime(start, now).items()
        }
        incidents = history.incidents_between(start, now)
        actions = history.actions_between(start, now)
        flaps = Counter(r["entity"] for r in history.events_since("flapping_started", start) if r["ts"] < now)
        exhausted = Counter(
            r["check_name"] for r in history.events_since("remediation_exhausted", start) if r["ts"] < now
        )
        old = start < time.time() - minutes_kept
        slots = history.uptime_slots(start, now, SLOTS, hours=True if old else None)
    finally:
        history.close()

    durations = [i["duration"] for i in incidents if i["duration"] is not None]
    by_entity: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for incident in incidents:
        by_entity[incident["entity"]].append(incident)
    restarts: dict[str, dict[str, Any]] = {}
    for action in actions:
        row = restarts.setdefault(
            f"{action['check_name']}:{action['action']}",
            {
                "check": action["check_name"],
                "action": action["action"],
                "attempts": 0,
                "succeeded": 0,
                "recovered": 0,
                "failed": 0,
                "dry_run": 0,
            },
        )
        row["attempts"] += 1
        row[action["outcome"] if action["outcome"] in COUNTED else "failed"] += 1
    for row in restarts.values():
        real = row["attempts"] - row["dry_run"]
        row["success_rate"] = round(100.0 * row["succeeded"] / real, 1) if real else None
        row["gave_up"] = exhausted.get(row["check"], 0)
    recurring = []
    for entity, items in by_entity.items():
        if len(items) < RECURRING:
            continue
        hours = Counter(time.localtime(i["opened"]).tm_hour for i in items)
        hour, count = hours.most_common(1)[0]
        pattern = (
            f"{count} of {len(items)} began between {hour:02d}:00 and {(hour + 1) % 24:02d}:00"
            if count >= max(2, len(items) // 2)
            else "no time-of-day pattern"
        )
        recurring.append(
            {"entity": entity, "incidents": len(items), "time_of_day": pattern, "by_hour": dict(sorted(hours.items()))}
        )
    recurring.sort(key=lambda r: -r["incidents"])
    slowest = sorted(
        (
            {"entity": e, "p95_ms": u["p95_ms"], "max_ms": u["max_ms"]}
            for e, u in uptime.items()
            if u["p95_ms"] is not None
        ),
        key=lambda r: -r["p95_ms"],
    )[:10]
    entities = sorted(set(uptime) | set(by_entity))
    services = []
    for entity in entities:
        items = by_entity.get(entity, [])
        closed = [i["duration"] for i in items if i["duration"] is not None]
        # down time inside the period: an incident still open counts until `now`, one opened before `start`
        # from `start` on (MTTR stays over closed incidents, whose length is known)
        down = sum(max(0.0, min(now, i["closed"] or now) - max(start, i["opened"])) for i in items)
        services.append(
            {
                "entity": entity,
                **uptime.get(entity, {"uptime_percent": None, "known_s": 0.0, "probes": 0}),
                "incidents": len(items),
                "open": sum(1 for i in items if i["closed"] is None),
                "mttr_s": round(statistics.mean(closed), 1) if closed else None,
                "downtime_s": round(down, 1),
            }
        )
    services.sort(key=lambda s: (s["uptime_percent"] if s["uptime_percent"] is not None else 101, s["entity"]))
    return {
        "period": {"since": start, "until": now, "seconds": since},
        "uptime_slots": {
            "count": SLOTS,
            "seconds": since / SLOTS,
            "by_entity": {e: [[round(ok, 1), round(known, 1)] for ok, known in v] for e, v in sorted(slots.items())},
        },
        "attempts": [
            {k: a.get(k) for k in ("started", "check_name", "entity", "action", "attempt", "outcome")} for a in actions
        ],
        "summary": {
            "incidents": len(incidents),
            "open_incidents": sum(1 for i in incidents if i["closed"] is None),
            "mttr_s": round(statistics.mean(durations), 1) if durations else None,
            "restarts": len(actions),
            "restarts_succeeded": sum(1 for a in actions if a["outcome"] == "succeeded"),
            "restarts_recovered": sum(1 for a in actions if a["outcome"] == "recovered"),
        },
        "services": services,
        "incidents": [
            {k: i.get(k) for k in ("id", "entity", "opened", "closed", "duration", "status", "worst", "message")}
            for i in incidents
        ],
        "restarts": sorted(restarts.values(), key=lambda r: -r["attempts"]),
        "recurring": recurring,
        "flapping": [{"entity": e, "times": n} for e, n in flaps.most_common()],
        "slowest": slowest,
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0s"
    from clusterwatch.config.durations import format_duration

    return format_duration(value)


def print_text(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from clusterwatch.output import console

    con: Console = console()
    s = report["summary"]
    period = report["period"]
    con.print(
        f"[bold]clusterwatch report[/bold] {time.strftime('%Y-%m-%d %H:%M', time.localtime(period['since']))}"
        f" – {time.strftime('%Y-%m-%d %H:%M', time.localtime(period['until']))}: {s['incidents']} incident(s)"
        f" ({s['open_incidents']} open), MTTR {_secs(s['mttr_s'])}, {s['restarts']} restart(s), "
        f"{s['restarts_succeeded']} worked, {s['restarts_recovered']} recovered, not by the restart"
    )
    table = Table(title="Uptime", title_justify="left")
    for column in ("entity", "uptime", "probes", "incidents", "MTTR", "downtime"):
        table.add_column(column)
    for row in report["services"]:
        table.add_row(
            row["entity"],
            _uptime(row["uptime_percent"]),
            str(row.get("probes", 0)),
            str(row["incidents"]),
            _secs(row["mttr_s"]),
            _secs(row["downtime_s"]),
        )
    con.print(table)
    if report["restarts"]:
        table = Table(title="Restarts", title_justify="left")
        for column in ("check", "action", "attempts", "worked", "recovered, not by it", "failed", "success", "gave up"):
            table.add_column(column)
        for r in report["restarts"]:
            table.add_row(
                r["check"],
                r["action"],
                str(r["attempts"]),
                str(r["succeeded"]),
                str(r["recovered"]),
                str(r["failed"]),
                _pct(r["success_rate"]),
                str(r["gave_up"]),
            )
        con.print(table)
    for title, rows, render in (
        (
            "Recurring failures",
            report["recurring"],
            lambda r: f"{r['entity']}: {r['incidents']} incidents; {r['time_of_day']}",
        ),
        ("Flapping", report["flapping"], lambda r: f"{r['entity']}: flapped {r['times']} time(s)"),
        (
            "Slowest probes (p95)",
            report["slowest"],
            lambda r: f"{r['entity']}: p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms",
        ),
    ):
        if rows:
            con.print(f"[bold]{title}[/bold]")
            for r in rows:
                con.print(f"  {render(r)}")


CSS = """
:root{color-scheme:light dark;--fg:#1a202c;--bg:#fff;--muted:#4a5568;--line:#e2e8f0}
@media (prefers-color-scheme:dark){:root{--fg:#e8ecf1;--bg:#111418;--muted:#a9b4c2;--line:#2d333b}}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1100px;
padding:0 1rem;color:var(--fg);background:var(--bg)}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid var(--line);padding:.3rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}
.muted{color:var(--muted)}.bars{width:45%;min-width:12rem}.bars svg{display:block;width:100%}
.timeline svg{width:100%;height:auto}h2{margin-top:1.75rem}
@media print{body{margin:0;max-width:none}}
"""


def _uptime(value: float | None) -> str:
    """Uptime in percent to two decimals, rounded down as the bars show it: any down time is below 100.00%."""
    return "—" if value is None else svg.format_percent(value / 100)


def _bars(report: dict[str, Any], entity: str) -> str:
    found = report.get("uptime_slots") or {}
    period = report["period"]
    count = int(found.get("count") or SLOTS)
    seconds = [tuple(x) for x in (found.get("by_entity") or {}).get(entity, [])]
    incidents = [i for i in report["incidents"] if i["entity"] == entity]
    slots = history_svg.slots(seconds or None, period["since"], period["until"], count, incidents)
    return svg.uptime_bars(slots, label=f"{entity}, {_span(period)}")


def _span(period: dict[str, Any]) -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(period['since']))} – "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(period['until']))}"
    )


def to_html(report: dict[str, Any]) -> str:
    """One self-contained page: inline CSS and SVG, no script, no link to anything."""

    def e(value: Any) -> str:
        return html.escape(redact.text(str(value if value is not None else "")), quote=True)

    s = report["summary"]
    period = report["period"]
    rows = "".join(
        f"<tr><td>{e(r['entity'])}</td><td>{_uptime(r['uptime_percent'])}</td>"
        f'<td class="bars">{_bars(report, r["entity"])}</td><td>{r.get("probes", 0)}</td>'
        f"<td>{r['incidents']}</td><td>{_secs(r['mttr_s'])}</td><td>{_secs(r['downtime_s'])}</td></tr>"
        for r in report["services"]
    )
    restarts = "".join(
        f"<tr><td>{e(r['check'])}</td><td>{e(r['action'])}</td><td>{r['attempts']}</td>"
        f"<td>{r['succeeded']}</td><td>{r['recovered']}</td><td>{r['failed']}</td><td>{_pct(r['success_rate'])}</td>"
        f"<td>{r['gave_up']}</td></tr>"
        for r in report["restarts"]
    )
    recurring = "".join(
        f"<li>{e(r['entity'])}: {r['incidents']} incidents; {e(r['time_of_day'])}</li>" for r in report["recurring"]
    )
    flapping = "".join(f"<li>{e(r['entity'])}: {r['times']}×</li>" for r in report["flapping"])
    slowest = "".join(f"<li>{e(r['entity'])}: p95 {r['p95_ms']:.0f} ms</li>" for r in report["slowest"])
    incidents = "".join(
        f"<tr><td>{time.strftime('%Y-%m-%d %H:%M', time.localtime(i['opened']))}</td>"
        f"<td>{e(i['entity'])}</td><td>{e(i['worst'] or i['status'] or '')}</td><td>{_secs(i['duration'])}</td>"
        f"<td>{e(i['message'])}</td></tr>"
        for i in report["incidents"]
    )
    timeline = svg.timeline(
        history_svg.spans([{**i, "message": redact.text(str(i.get("message") or ""))} for i in report["incidents"]]),
        history_svg.marks(report.get("attempts") or [], report["incidents"]),
        period["since"],
        period["until"],
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>clusterwatch report {e(_span(period))}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>
<h1>clusterwatch report</h1>
<p>{e(_span(period))}: {s["incidents"]} incident(s)
({s["open_incidents"]} open), MTTR {_secs(s["mttr_s"])}, {s["restarts"]} restart(s),
{s["restarts_succeeded"]} worked, {s["restarts_recovered"]} recovered, not by the restart.</p>
<h2>Uptime</h2><p class="muted">By time (seconds up / seconds watched). Each bar is 1/{SLOTS} of the period,
hatched and coloured by the share of it spent down; a dashed outline is time nobody watched.</p>
<table><tr><th>entity</th><th>uptime</th><th>over the period</th><th>probes</th><th>incidents</th><th>MTTR</th>
<th>downtime</th></tr>{rows or '<tr><td colspan="7">no history in this period</td></tr>'}</table>
<h2>Incidents on a timeline</h2><div class="timeline">{timeline}</div>
<h2>Restarts</h2><table><tr><th>check</th><th>action</th><th>attempts</th><th>worked</th>
<th>recovered, not by it</th><th>failed</th><th>success</th><th>gave up</th></tr>
{restarts or "<tr><td colspan=8>none</td></tr>"}</table>
<h2>Recurring failures</h2><ul>{recurring or "<li>none</li>"}</ul>
<h2>Flapping</h2><ul>{flapping or "<li>none</li>"}</ul>
<h2>Slowest probes</h2><ul>{slowest or "<li>none</li>"}</ul>
<h2>Incidents</h2><table><tr><th>opened</th><th>entity</th><th>worst</th><th>lasted</th><th>why</th></tr>
{incidents or '<tr><td colspan="5">none</td></tr>'}</table>
</body></html>"""
