"""The monitor's side of its node agents: who may push, what they push, who is silent, and the
commands (a restart, a probe now) that wait for an agent's next poll.

What an agent pushes goes through the monitor's own pipeline (state machine, store, healer,
alerter) as if the monitor had probed it, with two exceptions that keep people from being told old
news: a round that happened while the monitor called the agent silent (or longer ago than the
agent's timeout) is filed as history only, and what the agent did while cut off is filed as history
and counted in the restart budget, never alerted. Silence is itself a failure: the node is critical
and its checks are affected, exactly as for a node SSH cannot reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from clusterwatch import redact
from clusterwatch.agent import protocol
from clusterwatch.config.schema import CheckBase, Node, RestartPolicy
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.heal.actions import Outcome
from clusterwatch.model import Group, Observation, Status
from clusterwatch.store.agents import AgentRegistry, AgentRow, token_hash
from clusterwatch.store.db import errors as db_errors

if TYPE_CHECKING:
    from clusterwatch.daemon import Monitor

log = logging.getLogger("clusterwatch.agents")
AUTH_CACHE = 5.0  # seconds a token's lookup is reused: a revocation takes effect within this
REFUSAL_LOG_EVERY = 10.0  # per address: a flood of bad tokens is not a flood of log lines
PROBE_WAIT = 3.0  # how long a verification waits for the round it asked an agent for
COMMAND_SLACK = 5.0  # beyond the action's own timeout: the agent's poll and answer


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Link:
    """One agent as this monitor hears it (in memory; what must survive a restart is in the store)."""

    name: str
    last_mono: float | None = None  # when this process last heard it
    last_wall: float | None = None
    addr: str | None = None
    filed: int = 0  # the highest seq handled (the store's `acked` trails it until the writer commits)
    committed: int = 0  # the highest seq known written (flushed) by the store
    silent_since: float | None = None  # wall time this monitor called it silent; None while it is heard
    gap_from: float | None = None  # when it was last heard before that silence
    watched_since: float | None = None  # when this monitor first looked at it as an agent's node
    agent_cut: bool = False  # between the agent's healing_taken and healing_returned: what it sends is history
    back_at: float = 0.0  # when it was heard again after a silence: rounds before this are history
    gap_note: str | None = None  # said with the node's recovery
    last_round: dict[str, float] = field(default_factory=dict)  # check -> time of its last live round
    commands: list[protocol.Command] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: dict[str, asyncio.Future[protocol.CommandResult]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) at each live round


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class AgentHub:
    def __init__(self, monitor: Monitor, registry: AgentRegistry, clock: Callable[[], float] = time.time) -> None:
        self.monitor = monitor
        self.registry = registry
        self.clock = clock
        self.started = time.monotonic()
        self.links: dict[str, Link] = {}
        self.stored: dict[str, AgentRow] = {}  # what the store knew of each agent at start
        self._auth: dict[str, tuple[float, AgentRow | None]] = {}
        self._refusals: dict[str, float] = {}
        self._versions: dict[str, tuple[Any, protocol.AgentConfig]] = {}
        self._by_node: tuple[Any, dict[str, list[CheckBase]]] = (None, {})
        self._flush_waiters: list[asyncio.Future[bool]] = []
        self._flusher: asyncio.Future[None] | None = None
        self._flush_thread = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-agents-flush")

    # --- life cycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Blocking: the registry, and each agent's last filed item (a resend is filed once)."""
        self.registry.open()
        self.resync(self.read_marks())

    def read_marks(self) -> list[AgentRow]:
        """Blocking: what the store holds of each agent (the last leader filed what agents pushed to it)."""
        return self.registry.all()

    def resync(self, rows: list[AgentRow]) -> None:
        """On the event loop, at start and when this monitor takes over a group, before it accepts a push:
        what is filed comes from the store, and silence is counted afresh (a follower did not listen to the
        agents; a new leader gives them their timeout to find it)."""
        self.started = time.monotonic()
        for row in rows:
            self.stored[row.name] = row
        for link in self.links.values():
            row = self.stored.get(link.name)
            link.filed = link.committed = row.acked if row is not None else 0
            link.last_mono, link.silent_since, link.gap_from, link.gap_note = None, None, None, None
            link.agent_cut = False
            link.back_at = self.clock()  # what an agent queued before this is history to this leader
            link.last_round.clear()
        for row in rows:
            link = self.link(row.name)
            link.filed = link.committed = row.acked

    def link(self, name: str) -> Link:
        found = self.links.get(name)
        if found is None:
            found = self.links[name] = Link(name)
        return found

    # --- who is asking --------------------------------------------------------------------------------

    async def authenticate(self, header: str, addr: str | None) -> str:
        """The agent a bearer token stands for; Refused(401) otherwise, logged with the address only."""
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token:
            self.refused(addr, "no bearer token")
            raise Refused(401, "missing bearer token (an agent sends the token `clusterwatch agent enroll` printed)")
        key = token_hash(token)
        cached = self._auth.get(key)
        if cached is None or time.monotonic() - cached[0] > AUTH_CACHE:
            try:
                found = await asyncio.get_running_loop().run_in_executor(None, self.registry.holder, token)
            except db_errors() as exc:  # the store away: a token known a moment ago still is; others wait
                if cached is None or cached[1] is None:
                    log.error("agent tokens cannot be looked up: the store did not answer (%s)", exc)
                    raise Refused(503, "the monitor's store does not answer: keep the queue and try again") from None
                found = cached[1]
            if found is None and len(self._auth) > 10_000:
                self._auth = {k: v for k, v in self._auth.items() if v[1] is not None}  # random tokens go first
                if len(self._auth) > 10_000:
                    self._auth.clear()
            cached = self._auth[key] = (time.monotonic(), found)
        row = cached[1]
        if row is None:
            self.refused(addr, "unknown token")
            raise Refused(401, "unknown token")
        if row.revoked is not None:
            self.refused(addr, f"revoked token of agent {row.name}")
            raise Refused(401, "this agent's token was revoked (`clusterwatch agent enroll` issues a new one)")
        if not self.monitor.acting():
            raise Refused(503, "this monitor is a follower in a group of monitors: push to the leader")
        return row.name

    def refused(self, addr: str | None, why: str) -> None:
        """One log line per address and kind of refusal every REFUSAL_LOG_EVERY: a flood of bad requests
        is not a flood of lines, and a different mistake from the same address is still said."""
        where = addr or "unknown address"
        key = f"{where} {re.sub(r'[0-9]+', '#', why)[:60]}"
        now = time.monotonic()
        if now - self._refusals.get(key, -REFUSAL_LOG_EVERY) >= REFUSAL_LOG_EVERY:
            if len(self._refusals) > 10_000:
                self._refusals.clear()
            self._refusals[key] = now
            log.warning("agent request from %s refused: %s", where, why)

    def _touch(self, name: str, addr: str | None) -> Link:
        link = self.link(name)
        link.last_mono, link.last_wall, link.addr = time.monotonic(), self.clock(), addr
        if link.silent_since is not None:
            self._back(link)
        return link

    def _node(self, name: str) -> Node:
        node = next((n for n in self.monitor.config.nodes if n.name == name), None)
        if node is None or not node.agent:
            raise Refused(403, f"{name!r} is not a node with `agent: true` in the monitor's config")
        return node

    # --- the agent's config ------------------------------------------------------------------------

    def timeout(self, node: Node) -> float:
        return node.agent_timeout or 3 * self.monitor.plan.interval(node)

    def checks_of(self, name: str) -> list[CheckBase]:
        plan = self.monitor.plan
        if self._by_node[0] is not plan:  # once per config: a push asks for them several times
            by_node: dict[str, list[CheckBase]] = {}
            for check in plan.config.checks:
                if check.node:
                    by_node.setdefault(check.node, []).append(check)
            self._by_node = (plan, by_node)
        return self._by_node[1].get(name, [])

    def _described(self, name: str) -> protocol.AgentConfig:
        """The node's part of the config, built once per config (its version is a hash of it)."""
        node = self._node(name)
        plan = self.monitor.plan
        cached = self._versions.get(name)
        if cached is None or cached[0] is not plan:
            config = self.monitor.config
            body = {
                "node": node.model_dump(mode="json", exclude={"ssh", "host"}),
                "checks": [c.model_dump(mode="json", by_alias=True) for c in self.checks_of(name)],
                "defaults": {
                    "interval": config.interval,
                    "retry_interval": config.retry_interval,
                    "timeout": config.timeout,
                    "fall": config.fall,
                    "rise": config.rise,
                    "concurrency": min(config.concurrency, 20),
                    "thresholds": config.thresholds.model_dump(mode="json"),
                    "node_thresholds": config.node_thresholds.model_dump(mode="json"),
                    "flapping": config.flapping.model_dump(mode="json"),
                    "healing": config.healing.model_dump(mode="json"),
                },
                "agent_timeout": self.timeout(node),
            }
            version = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
            cached = (plan, protocol.AgentConfig(**body, version=version, server_time=0.0))
            self._versions[name] = cached
        return cached[1]

    def config_for(self, name: str) -> protocol.AgentConfig:
        return self._described(name).model_copy(update={"budgets": self.budgets(name), "server_time": self.clock()})

    def version(self, name: str) -> str:
        return self._described(name).version

    def budgets(self, name: str) -> dict[str, list[float]]:
        """Each restart target's attempts that still count (the monitor's clock): the agent's share is the rest."""
        healer, now, out = self.monitor.healer, self.clock(), {}
        for check in self.checks_of(name):
            for step in check.restart or []:
                budget = healer.budgets.get(healer.key(step.target))
                if budget is not None:
                    out[step.target] = [t for t in budget.attempts if now - t <= step.window]
        return out

    async def config(self, name: str, addr: str | None) -> protocol.AgentConfig:
        self._touch(name, addr)
        return self.config_for(name)

    # --- pushes ---------------------------------------------------------------------------------------

    async def push(self, name: str, addr: str | None, push: protocol.Push) -> protocol.PushAnswer:
        if push.node != name:
            raise Refused(403, f"this token is agent {name}'s: it may not push for node {push.node}")
        node = self._node(name)
        self._check_belongs(node, push)
        link = self._touch(name, addr)
        now, lost = self.clock(), self._lost()  # before filing: a write refused at once counts too
        offset = now - push.sent_at  # the agent's clock to ours, within the network's latency
        items: list[tuple[int, Any]] = [(r.seq, r) for r in push.rounds] + [(e.seq, e) for e in push.events]
        for seq, item in sorted(items, key=lambda pair: pair[0]):
            if seq <= link.filed:
                continue  # sent again after an answer that was lost: filed already
            at = min(item.at + offset, now)
            if isinstance(item, protocol.Round):
                self._round(node, link, item, at, now)
            else:
                self._event(node, item, at)
            link.filed = seq
        store = self.monitor.store
        store.agent_filed(name, link.filed, now, addr)
        if link.filed > link.committed:  # answered only once written: what it acks, the store holds
            mark = link.filed
            if not await self._written() or self._lost() != lost:
                # Not all written (a writer behind, a write refused or given up): filed again on the resend.
                link.filed = link.committed
                raise Refused(503, "the store did not write everything now: keep the queue and push again")
            link.committed = max(link.committed, mark)
        return protocol.PushAnswer(accepted=link.filed, config_version=self.version(name), budgets=self.budgets(name))

    def _lost(self) -> int:
        health = self.monitor.store.health()
        return int(health.get("dropped", 0)) + int(health.get("fenced", 0)) + int(health.get("failed_items", 0))

    async def _written(self) -> bool:
        """Whether what was queued for the store so far is written. Pushes that arrive together share one
        flush (in a thread of its own): hundreds of agents pushing each second are a few flushes, not hundreds."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())
        return await waiter

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._flush_waiters:
            waiters, self._flush_waiters = self._flush_waiters, []  # all queued their writes before this flush
            try:
                written = await loop.run_in_executor(
                    self._flush_thread, partial(self.monitor.store.flush, 10.0, checkpoint=False)
                )
            except Exception:
                written = False
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(written)

    def _check_belongs(self, node: Node, push: protocol.Push) -> None:
        """All or nothing: one round or event for another node's check and nothing is filed."""
        own = {c.name for c in self.checks_of(node.name)} | {node.name}
        for round_ in push.rounds:
            if round_.check not in own:
                raise Refused(403, f"check {round_.check!r} is not on node {node.name}")
            for obs in round_.observations:
                if obs.name != round_.check and not obs.name.startswith(round_.check + "/"):
                    raise Refused(422, f"observation {obs.name!r} does not belong to check {round_.check!r}")
        for event in push.events:
            if event.check is not None and event.check not in own:
                raise Refused(403, f"check {event.check!r} is not on node {node.name}")
            check = event.check or node.name
            if event.entity is not None and event.entity != check and not event.entity.startswith(check + "/"):
                raise Refused(422, f"event entity {event.entity!r} does not belong to check {check!r}")

    def _round(self, node: Node, link: Link, round_: protocol.Round, at: float, now: float) -> None:
        m = self.monitor
        item = node if round_.check == node.name else m.plan.items.get(round_.check)
        if item is None:
            return
        redactor = redact.current()
        observations = []
        for wire in round_.observations:
            obs = wire.observation(round_.check, node.name)
            obs.message, obs.target = redactor.text(obs.message), redactor.text(obs.target)
            obs.details = redactor.data(obs.details)
            if item is node and obs.name == node.name:
                obs.kind, obs.group = "agent", Group.NODES
                if link.gap_note is not None:
                    obs.message = f"{obs.message} — {link.gap_note}"
            observations.append(obs)
        every = m.plan.expected_every(round_.check)
        if link.agent_cut or at < link.back_at or now - at > self.timeout(node):
            for obs in observations:  # old news: history, not alerts
                m.store.observation(obs, at, expected_every=every, late=True)
            return
        at = max(at, link.last_round.get(round_.check, 0.0))
        link.last_round[round_.check] = at
        m.pipeline.handle(item, observations, at=at)
        if item is node and link.gap_note is not None:
            state = m.states.entities.get(node.name)
            if state is not None and state.hard is Status.OK:
                link.gap_note = None
        self._notify(link)

    @staticmethod
    def _notify(link: Link) -> None:
        link.arrived.set()  # wakes whoever waits on this one; the next waiters get a fresh one
        link.arrived = asyncio.Event()

    def _event(self, node: Node, event: protocol.AgentEvent, at: float) -> None:
        """What the agent did while cut off: filed in the history and counted in the budget, not alerted."""
        m = self.monitor
        if event.kind in ("healing_taken", "healing_returned"):  # the agent's own word on when it was cut off
            self.link(node.name).agent_cut = event.kind == "healing_taken"
        kind = {
            "healing_taken": EventKind.AGENT_HEALING_TAKEN,
            "healing_returned": EventKind.AGENT_HEALING_RETURNED,
        }.get(event.kind) or EventKind(event.kind)
        details = {**event.details, "by": f"agent:{node.name}", "late": True}
        filed = Event(
            kind,
            event.entity or event.check or node.name,
            event.check or node.name,
            at,
            redact.current().text(f"[agent {node.name}] {event.message}"),
            node=node.name,
            details=redact.current().data(details),
        )
        m.store.event(filed)
        log.info("%s %s (filed from agent %s): %s", kind.value, filed.entity, node.name, filed.message)
        if kind in (EventKind.REMEDIATION_SUCCEEDED, EventKind.REMEDIATION_FAILED) and event.check:
            check = m.plan.items.get(event.check)
            if isinstance(check, CheckBase) and check.restart is not None:
                duration = event.details.get("duration_s")
                started = at - float(duration) if isinstance(duration, int | float) and 0 <= duration < 86400 else at
                m.healer.record_elsewhere(
                    check,
                    event.entity or check.name,
                    started=started,
                    finished=at,
                    succeeded=kind is EventKind.REMEDIATION_SUCCEEDED,
                    attempt=int(event.details.get("attempt") or 0),
                    detail=filed.message,
                    by=f"agent:{node.name}",
                    step=_step_of(event.details.get("step")),
                )

    # --- silence ----------------------------------------------------------------------------------------

    def watch(self, node: Node) -> list[tuple[Any, list[Observation]]]:
        """The scheduler's look at an agent's node: nothing while it is heard; when it is silent, the
        node is critical (down) and its checks are not seen (affected by it)."""
        link = self.link(node.name)
        timeout = self.timeout(node)
        if link.watched_since is None:  # a node given an agent by a reload gets its timeout from then
            link.watched_since = time.monotonic()
        heard = link.last_mono if link.last_mono is not None else max(self.started, link.watched_since)
        silent_for = time.monotonic() - heard
        if silent_for <= timeout:
            return []
        now = self.clock()
        stored = self.stored.get(node.name)
        last_wall = link.last_wall or (stored.last_seen if stored else None)
        addr = link.addr or (stored.last_addr if stored else None)
        if stored is None and link.last_mono is None:
            message = (
                f"no agent has reported for {node.name} — enroll one (`clusterwatch agent enroll {node.name}`) "
                "and start `clusterwatch agent run` on the node"
            )
        elif last_wall is not None:
            since = now - last_wall
            message = f"agent silent for {since:.0f}s (last seen {_clock(last_wall)} from {addr or 'unknown address'})"
        else:
            message = f"agent silent for {silent_for:.0f}s (not heard since this monitor started)"
        if link.silent_since is None:
            link.silent_since = now
            link.gap_from = last_wall
        found = [
            (
                node,
                [
                    Observation(
                        node.name,
                        "agent",
                        addr or "",
                        Status.CRITICAL,
                        message,
                        check=node.name,
                        group=Group.NODES,
                        node=node.name,
                        down=True,
                    )
                ],
            )
        ]
        for check in self.checks_of(node.name):
            found.append(
                (
                    check,
                    [
                        Observation(
                            check.name,
                            str(getattr(check, "kind", "")),
                            "",
                            Status.UNKNOWN,
                            f"not seen: the agent of {node.name} is silent",
                            check=check.name,
                            node=node.name,
                            down=True,
                        )
                    ],
                )
            )
        return found

    def _back(self, link: Link) -> None:
        """Heard again after a silence: said once, with when to when; what it queued meanwhile is history."""
        now = self.clock()
        gap_from = link.gap_from or link.silent_since or now
        link.silent_since, link.back_at = None, now
        link.gap_note = f"back after being unreachable from {_clock(gap_from)} to {_clock(now)} ({now - gap_from:.0f}s)"
        self.monitor.pipeline.emit(
            Event(
                EventKind.AGENT_BACK,
                link.name,
                link.name,
                now,
                f"the agent of {link.name} is {link.gap_note}; what it queued meanwhile is filed as history",
                node=link.name,
                details={"from": gap_from, "to": now, "addr": link.addr},
            )
        )

    # --- commands -------------------------------------------------------------------------------------

    def connected(self, node: Node) -> bool:
        link = self.links.get(node.name)
        return (
            link is not None and link.last_mono is not None and time.monotonic() - link.last_mono <= self.timeout(node)
        )

    def _command(
        self, link: Link, kind: str, check: str, *, policy: dict[str, Any] | None = None, after: float = 0.0
    ) -> str:
        command = protocol.Command(id=uuid.uuid4().hex[:16], kind=kind, check=check, policy=policy)  # type: ignore[arg-type]
        if kind == "probe" and any(c.kind == "probe" and c.check == check for c in link.commands):
            return command.id  # one probe request per check is enough
        if after > 0:
            asyncio.get_running_loop().call_later(after, self._queue, link, command)
        else:
            self._queue(link, command)
        return command.id

    @staticmethod
    def _queue(link: Link, command: protocol.Command) -> None:
        if len(link.commands) < 1000:
            link.commands.append(command)
            link.wake.set()

    async def restart(self, node: Node, check: CheckBase, policy: RestartPolicy) -> Outcome:
        """A restart the monitor's healer decided, run by the node's agent (the command is the monitor's)."""
        if not self.connected(node):
            return Outcome(False, f"the agent of {node.name} is not connected: it heals on its own while cut off")
        link = self.link(node.name)
        future: asyncio.Future[protocol.CommandResult] = asyncio.get_running_loop().create_future()
        command_id = self._command(link, "restart", check.name, policy=policy.model_dump(mode="json", by_alias=True))
        link.waiting[command_id] = future
        try:
            # The agent may first wait out a restart of its own on the target (up to the timeout), then run it.
            result = await asyncio.wait_for(future, 2 * policy.limit + COMMAND_SLACK)
        except TimeoutError:
            return Outcome(False, f"the agent of {node.name} did not report the restart within {policy.limit:g}s")
        finally:
            link.waiting.pop(command_id, None)
            link.commands = [c for c in link.commands if c.id != command_id]
        return Outcome(result.ok, f"{result.detail} (on {node.name}, by its agent)")

    async def probe_now(self, node: Node, check: CheckBase) -> None:
        """Ask the agent for a round of `check` now and wait (briefly) for it: the healer's verification."""
        link = self.link(node.name)
        before = link.last_round.get(check.name, 0.0)
        self._command(link, "probe", check.name)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROBE_WAIT):
                while link.last_round.get(check.name, 0.0) <= before:
                    await link.arrived.wait()

    async def poll(self, name: str, addr: str | None, poll: protocol.Poll) -> protocol.PollAnswer:
        if poll.node != name:
            raise Refused(403, f"this token is agent {name}'s: it may not poll for node {poll.node}")
        node = self._node(name)
        link = self._touch(name, addr)
        for result in poll.results:
            future = link.waiting.get(result.id)
            if future is not None and not future.done():
                future.set_result(result)
        # Held a little less than asked, by a random part: a fleet that connected at once (a monitor's restart)
        # does not come back all in the same instant, poll after poll.
        wait = min(poll.wait, protocol.POLL_WAIT, self.timeout(node) / 2) * random.uniform(0.8, 1.0)
        if not link.commands and wait > 0:
            link.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.wake.wait(), wait)
        # Heard when the poll arrived, not when its hold ends: an agent killed meanwhile is not "seen" then.
        commands, link.commands = link.commands, []
        return protocol.PollAnswer(commands=commands, config_version=self.version(name))


def _step_of(value: object) -> int:
    """A ladder step index as an agent sent it: anything else is the first step, never an error in a push."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 100 else 0
