"""What the web may see of the running monitor: read-only mappings and a few questions, plus the
one thing it may change (silences, behind the token). The web never reaches into the monitor."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from clusterwatch.alerting.routing import Silence
from clusterwatch.config.schema import Config
from clusterwatch.engine.pipeline import Item
from clusterwatch.engine.state import EntityState

if TYPE_CHECKING:
    from clusterwatch.agent import protocol
    from clusterwatch.daemon import Monitor


class AgentEndpoints(Protocol):
    """All the web may ask of the agents' side: who is asking, and the three exchanges."""

    async def authenticate(self, header: str, addr: str | None) -> str: ...
    async def config(self, name: str, addr: str | None) -> protocol.AgentConfig: ...
    async def push(self, name: str, addr: str | None, push: protocol.Push) -> protocol.PushAnswer: ...
    async def poll(self, name: str, addr: str | None, poll: protocol.Poll) -> protocol.PollAnswer: ...
    def refused(self, addr: str | None, why: str) -> None: ...


class MonitorView:
    def __init__(self, monitor: Monitor) -> None:
        self._m = monitor
        self.web: Any = None  # the web server itself: its history reader, snapshots and counters

    @property
    def config(self) -> Config:
        return self._m.config

    @property
    def agents(self) -> AgentEndpoints:
        """The node agents' side of the monitor (their pushes, polls and config), behind their own tokens."""
        return self._m.agents

    @property
    def started_at(self) -> float:
        return self._m.started_at

    # --- the live state ----------------------------------------------------------------------------

    @property
    def entities(self) -> Mapping[str, EntityState]:
        return MappingProxyType(self._m.states.entities)

    def entities_of(self, check: str) -> list[EntityState]:
        return self._m.states.entities_of(check)

    @property
    def kinds(self) -> Mapping[str, str]:
        return MappingProxyType(self._m.pipeline.kinds)

    @property
    def versions(self) -> Mapping[str, int]:
        return MappingProxyType(self._m.pipeline.versions)

    @property
    def version(self) -> int:
        return self._m.pipeline.version

    @property
    def latencies(self) -> Mapping[str, Any]:
        return MappingProxyType(self._m.pipeline.latencies)

    @property
    def items(self) -> Mapping[str, Item]:
        return MappingProxyType(self._m.plan.items)

    def interval(self, item: Item) -> float:
        return self._m.plan.interval(item)

    # --- the monitor's own health --------------------------------------------------------------------

    def lag_percentiles(self) -> tuple[float, float]:
        return self._m.scheduler.lag_percentiles()

    @property
    def probes_started(self) -> int:
        return self._m.scheduler.started

    def problems(self) -> list[str]:
        return self._m.health.problems()

    # --- a group of monitors (high availability) -----------------------------------------------------

    @property
    def ha_enabled(self) -> bool:
        return self._m.lease is not None

    def group(self) -> dict[str, Any] | None:
        """Blocking (the shared store): who leads, since when, each member's last renewal, and this
        monitor's own view: whether it leads, its epoch, its takeovers and stand-downs. None: alone."""
        lease = self._m.lease
        if lease is None:
            return None
        found = lease.store.group()
        found["self"] = self.group_self()
        return found

    def group_self(self) -> dict[str, Any] | None:
        """This monitor's own part of `group()`, without the store: it still answers while the store
        is away, which is when its stand-down and its last error matter."""
        lease = self._m.lease
        if lease is None:
            return None
        return {
            "member": lease.member,
            "node": lease.node,
            "leading": self._m.acting(),
            "epoch": lease.epoch,
            "lease_s": lease.lease,
            "last_error": lease.last_error,
            "log": list(self._m.ha_log[-20:]),
        }

    def store_health(self) -> dict[str, Any]:
        return self._m.store.health()

    @property
    def store_path(self) -> str:
        return self._m.store.location

    # --- silences (a change, so the web asks for the token first) ------------------------------------

    async def silences(self) -> list[Silence]:
        outbox = self._m.outbox
        return await self._m.blocking(outbox.silences) if outbox is not None else []

    async def add_silence(self, silence: Silence) -> None:
        assert self._m.outbox is not None, "the monitor has not started"
        await self._m.blocking(self._m.outbox.add_silence, silence)

    async def remove_silence(self, silence_id: str) -> bool:
        assert self._m.outbox is not None, "the monitor has not started"
        return bool(await self._m.blocking(self._m.outbox.remove_silence, silence_id))

    # --- a restart budget given back (a change: the web asks for the token first) --------------------

    def ask_heal_reset(self, name: str) -> None:
        """Ask the healer to give `name`'s restart budget back, as `clusterwatch heal reset` does: through
        the store's command queue, which the leader reads (the healer owns the budgets)."""
        self._m.store.command("heal_reset", name)


MONITOR = web.AppKey("monitor", MonitorView)  # where the web's handlers find the view
