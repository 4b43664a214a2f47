"""From the store's rows to what web/svg.py draws: uptime slots, incident spans, the healer's marks.

One place for these, so a check's page and a forwarded `report --html` draw the same history the same
way. Pure functions: no store, no web; the callers read the rows (store/history.py) and draw (svg.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from clusterwatch.web import svg

# The healer's outcomes as marks: credited only when the evidence says the action did it.
MARK_OF = {"running": "started", "succeeded": "credited"}


def slots(
    seconds: Sequence[tuple[float, float]] | None,
    start: float,
    end: float,
    count: int,
    incidents: Iterable[dict[str, Any]] = (),
    *,
    parts: int = 1,
    describe: bool = True,
) -> list[svg.Slot]:
    """`count` bars from (seconds ok, seconds known) per slot (the store's uptime_slots); `parts`
    entities summed in them are averaged. Each slot names the worst incident open in it (its entity and
    message when `describe`, else its severity only)."""
    width = (end - start) / count
    opened = list(incidents)
    found = []
    for i in range(count):
        a, b = start + i * width, start + (i + 1) * width
        ok, known = seconds[i] if seconds else (0.0, 0.0)
        share = None if known <= 0 else max(0.0, 1.0 - ok / known)
        label = None
        under = [x for x in opened if x["opened"] < b and (x.get("closed") is None or x["closed"] >= a)]
        if under:
            worst = min(under, key=lambda x: _rank(x.get("worst") or x.get("status")))
            severity = worst.get("worst") or worst.get("status") or "critical"
            label = f"incident ({severity})"
            if describe:
                label = f"{worst['entity']}: {worst.get('last_message') or worst.get('message') or ''} ({severity})"
        found.append(svg.Slot(a, b, share, incident=label, known=known / max(1, parts) if known else None))
    return found


def _rank(severity: str | None) -> int:
    return {"critical": 0, "unknown": 1, "warning": 2}.get(severity or "", 3)


def spans(incidents: Iterable[dict[str, Any]], *, with_entity: bool = True) -> list[svg.Span]:
    """Each incident as a bar, keyed by its id so that the actions taken during it sit on its lane."""
    found = []
    for i in incidents:
        severity = i.get("worst") or i.get("status") or "critical"
        label = f"{i['entity']}: {i.get('message') or ''}" if with_entity else str(i.get("message") or "")
        found.append(
            svg.Span(
                float(i["opened"]),
                None if i.get("closed") is None else float(i["closed"]),
                label,
                severity if severity in ("critical", "warning", "unknown") else "critical",
                key=str(i["id"]),
            )
        )
    return found


def marks(actions: Iterable[dict[str, Any]], incidents: Sequence[dict[str, Any]]) -> list[svg.Mark]:
    """Each attempt as a mark: started (still running), credited (succeeded), not credited (recovered by
    itself, failed, interrupted, a dry run), on the lane of its entity's incident open when it began."""
    found = []
    for a in actions:
        at = float(a["started"])
        key = next(
            (
                str(i["id"])
                for i in incidents
                if i["entity"] == a["entity"] and i["opened"] <= at and (i.get("closed") is None or at <= i["closed"])
            ),
            None,
        )
        kind = MARK_OF.get(str(a.get("outcome")), "not_credited")
        label = f"{a['check_name']}: {a['action']} #{a['attempt']} ({a.get('outcome')})"
        found.append(svg.Mark(at, kind, label, key=key))  # type: ignore[arg-type]
    return found
