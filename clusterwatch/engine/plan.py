"""The config as the engine runs it: what is checked, how often, under which rules; and what a
reload changes (a changed check starts afresh, an unchanged one keeps its state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterwatch.config.schema import DEFAULT_VERIFY, CheckBase, Config, Node
from clusterwatch.engine.state import Rules

Item = CheckBase | Node
# A failure is confirmed (`fall`) a tenth of an interval later: a refused port stays refused, and a
# check every second must be known down, and its service restarted, about a second after a kill.
RETRY_FLOOR = 0.1


@dataclass
class Change:
    changed: list[str]
    added: list[str]
    removed: list[str]
    unchanged: int


class Plan:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.items: dict[str, Item] = {c.name: c for c in config.checks}
        self.items.update({n.name: n for n in config.nodes})
        self.specs = {name: self._spec(item) for name, item in self.items.items()}

    def _spec(self, item: Item) -> Any:
        """Everything that decides how a check runs: a change restarts it, anything else keeps its state."""
        config = self.config
        spec = item.model_dump(mode="json")
        spec["_effective"] = [config.interval, config.timeout, config.fall, config.rise]
        if isinstance(item, Node):
            spec["_node"] = [config.ssh.model_dump(mode="json"), config.node_thresholds.model_dump(mode="json")]
        elif getattr(item, "kind", "") == "node":
            spec["_node"] = config.thresholds.model_dump(mode="json")
        return spec

    def diff(self, new: Plan) -> Change:
        removed = [name for name in self.items if name not in new.items]
        changed = [name for name in new.items if name in self.specs and new.specs[name] != self.specs[name]]
        added = [name for name in new.items if name not in self.items]
        return Change(changed, added, removed, len(new.items) - len(changed) - len(added))

    def rules(self, name: str) -> Rules:
        item = self.items.get(name)
        if item is None:
            return Rules(self.config.fall, self.config.rise)
        roots = list(item.depends_on)
        node = getattr(item, "node", None) if not isinstance(item, Node) else None
        if node and node != "local":
            roots.append(node)
        return Rules(item.fall or self.config.fall, item.rise or self.config.rise, tuple(roots))

    def interval(self, item: Item) -> float:
        return item.interval if item.interval is not None else self.config.interval

    def expected_every(self, name: str) -> float | None:
        """How long an observation's status holds for uptime: its interval, with room for jitter."""
        item = self.items.get(name)
        return self.interval(item) * 1.5 if item is not None else None

    def retry_interval(self, item: Item) -> float:
        """How soon to look again after a soft failure, so `fall` is reached in seconds, not intervals."""
        if item.retry_interval is not None:
            return min(item.retry_interval, self.interval(item))
        if self.config.retry_interval is not None:
            return min(self.config.retry_interval, self.interval(item))
        return min(self.interval(item), max(RETRY_FLOOR, self.interval(item) / 10))

    def longest_heal(self) -> float:
        """The longest one restart and its verification may take (for `run --once` to wait)."""
        return max(
            (
                (step.verify_timeout or DEFAULT_VERIFY) + step.limit
                for c in self.config.checks
                for step in c.restart or []
            ),
            default=0.0,
        )
