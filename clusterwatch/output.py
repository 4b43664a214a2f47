"""How a round of observations looks: a table for people, JSON for machines."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterwatch.engine.once import Round
from clusterwatch.model import Group, Observation, Status, json_safe

STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}
TITLES = [
    (Group.SERVICES, "Services"),
    (Group.MODELS, "Models"),
    (Group.WORKERS, "Dask workers"),
    (Group.NODES, "Nodes"),
    (Group.SYSTEM, "This machine"),
]


def worst_first(observations: list[Observation]) -> list[Observation]:
    return sorted(observations, key=lambda o: (-o.status.severity, o.name))


def summary(observations: list[Observation]) -> dict[str, int]:
    counts = {s.value: 0 for s in Status}
    for obs in observations:
        counts[obs.status.value] += 1
    return counts


def to_json(result: Round, source: str) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "checked_at": datetime.fromtimestamp(result.started_at, UTC).isoformat(timespec="seconds"),
        "duration_s": round(result.duration_s, 3),
        "config": source,
        "summary": summary(result.observations),
        "checks": [o.to_dict() for o in worst_first(result.observations)],
    }


def print_json(data: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """Always valid JSON: a non-finite number anywhere becomes null, whatever a service answered."""
    out.write(dumps(data) + "\n")


def dumps(data: dict[str, Any]) -> str:
    try:
        return json.dumps(json_safe(data), indent=2, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # json_safe should make this unreachable
        fallback = {"status": Status.UNKNOWN.value, "error": f"output could not be encoded: {exc}", "checks": []}
        return json.dumps(json_safe(fallback), indent=2)


def console(out: TextIO = sys.stdout) -> Console:
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() else (None if out.isatty() else 140)
    return Console(file=out, width=width, highlight=False)


def print_table(result: Round, source: str, out: TextIO = sys.stdout) -> None:
    con = console(out)
    for group, title in TITLES:
        rows = [o for o in result.observations if o.group is group]
        if not rows:
            continue
        table = Table(title=title, title_justify="left", title_style="bold", expand=False, pad_edge=False)
        table.add_column("status", no_wrap=True)
        table.add_column("name", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("message", overflow="fold")
        table.add_column("latency", justify="right", no_wrap=True)
        for obs in worst_first(rows):
            latency = "" if obs.latency_ms is None else f"{obs.latency_ms:.0f} ms"
            table.add_row(  # Text, not str: a service's words are shown as they are, never read as markup
                Text(obs.status.value.upper(), style=STYLE[obs.status]),
                Text(obs.name),
                Text(obs.kind),
                Text(obs.message),
                Text(latency),
            )
        con.print(table)
    counts = summary(result.observations)
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    overall = Text(result.status.value.upper(), style=STYLE[result.status])
    con.print(
        Text.assemble(
            overall,
            f": {len(result.observations)} checked ({', '.join(parts) or 'nothing'}) "
            f"in {result.duration_s:.1f}s — config: {source}",
        )
    )
