"""Text a person can act on: what is wrong, since when, what was tried, what to do next."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from clusterwatch.config.durations import format_duration


@dataclass
class Incident:
    """What the alerter knows of one incident."""

    id: str
    entity: str
    check: str
    node: str | None
    kind: str
    severity: str  # warning or critical
    opened: float
    message: str
    attempts: list[str] = field(default_factory=list)
    healed_by: str | None = None
    trying: str | None = None  # the action the healer last started
    exhausted: bool = False
    notified: float | None = None
    repeated: float | None = None
    silenced: float | None = None
    closed: float | None = None
    closing_message: str = ""

    @property
    def labels(self) -> dict[str, str]:
        return {
            "check": self.check,
            "entity": self.entity,
            "kind": self.kind,
            "node": self.node or "",
            "severity": self.severity,
        }


def _where(incident: Incident) -> str:
    return incident.node or socket.gethostname()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def _headline(message: str) -> str:
    head = message.split(" — ", 1)[0]
    return head if len(head) <= 90 else head[:87] + "..."


def _next_step(incident: Incident) -> str:
    if incident.exhausted:
        return f"the healer gave up: fix {incident.check} by hand, then run `clusterwatch heal reset {incident.check}`"
    if " — " in incident.message:
        return incident.message.split(" — ", 1)[1]
    if incident.attempts:
        return "the healer is on it; if it keeps failing, look at the service's own logs"
    return f"look at it with `clusterwatch check --only services` and the service's logs ({incident.entity})"


def _link(dashboard: str | None, incident: Incident) -> str:
    return f"\nDashboard: {dashboard.rstrip('/')}/checks/{incident.check}" if dashboard else ""


def firing(incident: Incident, dashboard: str | None, *, repeat: bool = False) -> tuple[str, str]:
    tag = incident.severity.upper()
    title = (
        f"[{tag}]{' (still)' if repeat else ''} {incident.entity} on {_where(incident)}: {_headline(incident.message)}"
    )
    since = time.time() - incident.opened
    tried = "\n".join(f"  - {a}" for a in incident.attempts) or "  nothing yet"
    body = (
        f"{incident.entity} is {incident.severity} since {_when(incident.opened)} "
        f"({format_duration(since)} ago).\n"
        f"What it says: {incident.message}\n"
        f"What was tried:\n{tried}\n"
        f"Next step: {_next_step(incident)}{_link(dashboard, incident)}"
    )
    return title, body


def escalated(incident: Incident, dashboard: str | None) -> tuple[str, str]:
    title = (
        f"[CRITICAL] {incident.entity} on {_where(incident)}: the healer gave up after "
        f"{len([a for a in incident.attempts if a.startswith('attempt')])} restart(s)"
    )
    _, body = firing(incident, dashboard)
    return title, body


def resolved(incident: Incident, dashboard: str | None) -> tuple[str, str]:
    duration = format_duration(max(0.0, (incident.closed or time.time()) - incident.opened))
    fixer = incident.healed_by or incident.trying
    how = f"; restarted by {fixer}" if fixer else ""
    title = f"[RESOLVED] {incident.entity} on {_where(incident)}: healthy again after {duration}{how}"
    tried = "\n".join(f"  - {a}" for a in incident.attempts) or "  nothing (it recovered by itself)"
    body = (
        f"{incident.entity} was {incident.severity} from {_when(incident.opened)} for {duration}.\n"
        f"It said: {incident.message}\n"
        f"Now: {incident.closing_message}\n"
        f"What was done:\n{tried}{_link(dashboard, incident)}"
    )
    return title, body


def healed(incident: Incident, dashboard: str | None) -> tuple[str, str]:
    """A restart that worked before anyone was told: reported once."""
    duration = format_duration(max(0.0, (incident.closed or time.time()) - incident.opened))
    title = (
        f"[RESOLVED] {incident.entity} on {_where(incident)} was down {duration}; restarted by "
        f"{incident.healed_by or incident.trying}; healthy again"
    )
    body = (
        f"{incident.entity} went {incident.severity} at {_when(incident.opened)}: {incident.message}\n"
        f"What was done:\n"
        + "\n".join(f"  - {a}" for a in incident.attempts)
        + f"\nNow: {incident.closing_message}{_link(dashboard, incident)}"
    )
    return title, body


def grouped(parts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """Several notifications for one channel at once: one message. parts: (severity, title, body)."""
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    worst = "critical" if any(p[0] == "critical" for p in parts) else parts[0][0]
    names = [p[1].split("] ", 1)[-1].split(" on ", 1)[0].split(":", 1)[0] for p in parts]
    shown = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
    what = "recovered" if all(p[0] == "resolved" for p in parts) else "problems"
    title = f"[{worst.upper()}] {len(parts)} {what}: {shown}"
    body = "\n\n".join(f"== {title}\n{body}" for _, title, body in parts)
    return title, body
