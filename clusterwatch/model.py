"""The values that flow from probes to everything else."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any

MESSAGE_LIMIT = 1000  # characters of a message; a service can answer megabytes of text
NAME_LIMIT = 300  # characters of a name or target taken from an answer (a Dask worker's name)
METRICS_LIMIT = 200  # figures per observation
DETAILS_DEPTH, DETAILS_ITEMS, DETAILS_TEXT = 6, 100, 1000
_LARGEST_INT = 2**63  # beyond this an integer is not a figure anyone measured
_CONTROL = re.compile(r"[ ]*[\x00-\x1f\x7f-\x9f\u2028\u2029][\s\x00-\x1f\x7f-\x9f\u2028\u2029]*")


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

    def __post_init__(self) -> None:
        """Whatever a service answered, an observation holds one line of text, finite figures and small JSON."""
        self.name = one_line(self.name, NAME_LIMIT)
        self.target = one_line(self.target, NAME_LIMIT)
        self.message = one_line(self.message, MESSAGE_LIMIT)
        self.latency_ms = finite_number(self.latency_ms)
        self.metrics = finite_metrics(self.metrics)
        if self.details:
            self.details = json_safe(self.details, depth=DETAILS_DEPTH, items=DETAILS_ITEMS, text=DETAILS_TEXT)

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
            "metrics": finite_metrics(self.metrics),  # again: a field may have been set after construction
            "details": json_safe(self.details, depth=DETAILS_DEPTH, items=DETAILS_ITEMS, text=DETAILS_TEXT),
            "down": self.down,
        }


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """Text as one printable line of at most `limit` characters (control characters become spaces)."""
    if type(text) is str and len(text) <= limit and text.isprintable():
        return text  # nearly every message: no copy, no regex
    line = _CONTROL.sub(" ", text if isinstance(text, str) else str(text))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def finite_number(value: object) -> float | None:
    """A finite number, or None: NaN, ±Infinity, absurd integers, bools and non-numbers are no figure."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value if -_LARGEST_INT <= value <= _LARGEST_INT else None  # type: ignore[return-value]
    return value if math.isfinite(value) else None


def finite_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The figures worth keeping: finite numbers under short names (a bool counts as 0 or 1)."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if len(out) >= METRICS_LIMIT:
            break
        number = float(value) if isinstance(value, bool) else finite_number(value)
        if number is not None:
            out[one_line(key, 100)] = number
    return out


def json_safe(value: Any, *, depth: int = 64, items: int | None = None, text: int | None = None) -> Any:
    """`value` as JSON that always encodes: finite numbers only, string keys, at most `depth` levels.

    `items` and `text` bound how many entries a list or mapping keeps and how long a string is.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return finite_number(value)
    if isinstance(value, str):
        return value if text is None or len(value) <= text else value[: text - 1] + "…"
    if depth <= 0:
        return "…"
    if isinstance(value, dict):
        pairs = list(value.items()) if items is None else [p for _, p in zip(range(items), value.items(), strict=False)]
        return {
            (k if isinstance(k, str) else str(k))[: text or None]: json_safe(v, depth=depth - 1, items=items, text=text)
            for k, v in pairs
        }
    if isinstance(value, list | tuple | set | frozenset):
        kept = list(value) if items is None else [v for _, v in zip(range(items), value, strict=False)]
        return [json_safe(v, depth=depth - 1, items=items, text=text) for v in kept]
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth=depth, items=items, text=text)
    return json_safe(str(value), depth=depth, items=items, text=text)
