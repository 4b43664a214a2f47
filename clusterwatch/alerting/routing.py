"""Which channels a notification goes to, and whether a silence or maintenance window holds it."""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clusterwatch.config.schema import DAYS, AlertOptions, MaintenanceWindow, Route

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def matches(matchers: dict[str, str], labels: dict[str, str]) -> bool:
    return all(fnmatch.fnmatchcase(labels.get(key, "") or "", pattern) for key, pattern in matchers.items())


def channels_for(options: AlertOptions, labels: dict[str, str], severity: str) -> list[str]:
    """The first matching route decides (plus any after it while `continue: true`)."""
    routes = options.routes
    if not routes and options.channels:  # the default route: every channel, critical only
        routes = [Route(channels=list(options.channels), min_severity="critical")]
    chosen: list[str] = []
    for route in routes:
        if not matches(route.match, labels):  # type: ignore[arg-type]
            continue
        if SEVERITY_RANK.get(severity, 2) >= SEVERITY_RANK[route.min_severity]:
            chosen.extend(c for c in route.channels if c not in chosen)
        if not route.continue_:
            break
    return chosen


@dataclass
class Silence:
    id: str
    matchers: dict[str, str]
    starts: float
    ends: float
    reason: str
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    @classmethod
    def new(cls, matchers: dict[str, str], seconds: float, reason: str, created_by: str = "") -> Silence:
        now = time.time()
        return cls(uuid.uuid4().hex[:8], matchers, now, now + seconds, reason, created_by)

    @classmethod
    def from_row(cls, row: Any) -> Silence:
        return cls(
            row["id"], json.loads(row["matchers"]), row["starts"], row["ends"], row["reason"], row["created_by"] or ""
        )


def in_window(window: MaintenanceWindow, when: datetime) -> bool:
    """Local time; a window whose end is before its start runs over midnight."""
    day = DAYS[when.weekday()]
    minute = when.hour * 60 + when.minute
    start = int(window.start[:2]) * 60 + int(window.start[3:])
    end = int(window.end[:2]) * 60 + int(window.end[3:])
    if start <= end:
        return day in window.days and start <= minute < end
    yesterday = DAYS[(when.weekday() - 1) % 7]
    return (day in window.days and minute >= start) or (yesterday in window.days and minute < end)


def held_by(
    silences: list[Silence], windows: list[MaintenanceWindow], labels: dict[str, str], now: float
) -> str | None:
    """Why a notification is held back, or None."""
    for silence in silences:
        if silence.active(now) and matches(silence.matchers, labels):
            return f"silence {silence.id} ({silence.reason})"
    local = datetime.fromtimestamp(now)
    for window in windows:
        if matches(window.match, labels) and in_window(window, local):  # type: ignore[arg-type]
            return f"maintenance window ({window.reason})"
    return None
