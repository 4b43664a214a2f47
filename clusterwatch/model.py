"""The values that flow from probes to everything else."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> int:
        """Nagios plugin convention, so `check` drops into Nagios, Icinga or cron as it is."""
        return _EXIT[self]

    @property
    def severity(self) -> int:
        """Order for "worst first": critical > unknown > warning > ok (as Icinga sorts)."""
        return _SEVERITY[self]

    @classmethod
    def worst(cls, statuses: list[Status] | tuple[Status, ...]) -> Status:
        return max(statuses, key=lambda s: s.severity, default=cls.OK)


_EXIT = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2, Status.UNKNOWN: 3}
_SEVERITY = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


class Group(enum.StrEnum):
    """What an observation is about; `check --only` takes these (Cluster AI's action names)."""

    SERVICES = "services"
    WORKERS = "workers"
    NODES = "nodes"
    MODELS = "models"
    SYSTEM = "system"


@dataclass(slots=True)
class Observation:
    """One entity's state at one moment: the only thing a probe returns.

    `name` is unique per entity (`dask/worker-1`, `docker/open-webui`), `check` is the
    configured check that produced it, so one check can observe many entities.
    """

    name: str
    kind: str
    target: str
    status: Status
    message: str
    latency_ms: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    check: str = ""
    group: Group = Group.SERVICES
    node: str | None = None
    down: bool = False  # not serving at all (unreachable, refused, broken), not merely degraded

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "check": self.check or self.name,
            "kind": self.kind,
            "group": self.group.value,
            "node": self.node,
            "target": self.target,
            "status": self.status.value,
            "message": self.message,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "metrics": self.metrics,
            "details": self.details,
            "down": self.down,
        }
