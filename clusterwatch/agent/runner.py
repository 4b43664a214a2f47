"""`clusterwatch agent run`: a node watches and heals itself, and reports home.

The agent gets its part of the config from the monitor (and keeps the last one, to start without
it), probes with the monitor's own code (scheduler, pipeline, state machine, probes), and queues
every round in a local SQLite file that a push loop empties in order. A long poll brings the
monitor's commands: a restart the monitor decided, a probe now. While it cannot reach the monitor
for longer than `agent_timeout` it is cut off: its own healer acts, within what is left of each
restart budget, and what it did is queued as events the monitor files when the link is back.

The token is read once from its file and sent only in the Authorization header: it is never
logged, printed, or put in an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import ssl
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from clusterwatch import redact
from clusterwatch.agent import protocol
from clusterwatch.agent.local import Broken, Built, ConfigProblem, build_config, local_policy, probe_node
from clusterwatch.agent.queue import AgentQueue, Batch
from clusterwatch.config.schema import NAME_PATTERN, CheckBase, Config, Node
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.pipeline import Pipeline
from clusterwatch.engine.plan import Plan
from clusterwatch.engine.scheduler import Job, Scheduler
from clusterwatch.engine.state import StateMachine
from clusterwatch.heal.actions import Outcome, perform
from clusterwatch.heal.evidence import serving
from clusterwatch.heal.healer import Healer, used
from clusterwatch.install import loopback_url
from clusterwatch.model import Group, Observation, Status, one_line
from clusterwatch.probes.base import ProbeContext, new_http_session
from clusterwatch.store.healing import BudgetRow, HealLedger

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("clusterwatch.agent")
T = TypeVar("T")

REQUEST_TIMEOUT = 15.0  # config and push: connect, send, answer
REFUSED_RETRY = 30.0  # a refused token: try again this often, never faster
FORBIDDEN_RETRY = 5.0  # a push refused for its checks (403): the config is fetched again meanwhile
CONFIG_BACKOFF = (1.0, 30.0)
LINK_BACKOFF = (1.0, 10.0)
PUSH_EVERY = 1.0  # rounds queued within a second go in one push
STEADY_PUSH_EVERY = 5.0  # rounds that change nothing wait for company this long (at most agent_timeout/4)
WATCH_EVERY = 1.0
MAX_ANSWER = 8 * 1024 * 1024
SAME_ATTEMPT = 3.0  # seconds: an attempt the monitor reports back is this agent's own one within this
REMEDIATION = {
    EventKind.REMEDIATION_STARTED: "started",
    EventKind.REMEDIATION_SUCCEEDED: "succeeded",
    EventKind.REMEDIATION_FAILED: "failed",
    EventKind.REMEDIATION_EXHAUSTED: "exhausted",
}


class Refused(Exception):
    """The monitor answered 401/403: this agent's token (or its node) is not accepted."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class Rejected(Exception):
    """The monitor cannot take this body (400, 413, 422): sending it again will not help."""


class LinkDown(Exception):
    """No usable answer: the monitor is unreachable, slow, or answered 5xx; `str()` says why."""

    timed_out = False


class TimedOut(LinkDown):
    """No answer in time: on a slow link a smaller push may get through where a big one does not."""

    timed_out = True


def default_state_dir() -> str:
    """`$XDG_STATE_HOME/clusterwatch-agent`, or `~/.local/state/clusterwatch-agent` (Termux has $HOME)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "clusterwatch-agent")


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class _Sink:
    """The pipeline's store on a node: history is the monitor's, so nothing is kept here, except what
    the healer does while the agent is cut off, which is queued for the monitor."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self._on_event = on_event

    def observation(self, obs: Observation, at: float, expected_every: float | None = None) -> None:
        pass

    def entity(self, state: Any, kind: str) -> None:
        pass

    def forget(self, names: Any) -> None:
        pass

    def recording(self) -> bool:
        return True

    def event(self, event: Event) -> None:
        self._on_event(event)


class _Echo(logging.Filter):
    """While the monitor hears this agent, it is the one that alerts and acts: the agent's own log tells the
    same events at INFO, not as a second ERROR line. Cut off, the agent's judgement is the one that counts."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.agent.cut_off and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class Agent:
    def __init__(
        self,
        server: str,
        name: str,
        token: str,
        *,
        state_dir: str,
        stop: asyncio.Event,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Several monitors (a group sharing one PostgreSQL store): the agent talks to one at a time and
        # moves to the next when it cannot reach it or it is not the leader (503).
        self.servers = [s.strip().rstrip("/") for s in server.split(",") if s.strip()]
        self.server = self.servers[0]
        self.name = name
        self._auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self.state_dir = state_dir
        self.stop = stop
        self.queue = AgentQueue(os.path.join(state_dir, "queue.db"))
        self._io = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-agent-queue")
        self._session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        # What the monitor said, and what runs from it.
        self.agent_config: protocol.AgentConfig | None = None
        self.built: Built | None = None
        self.plan: Plan | None = None
        self.config: Config | None = None
        self.broken: dict[str, Broken] = {}
        self.offset = 0.0  # the monitor's clock minus this one (from AgentConfig.server_time)
        self.monitor_budgets: dict[str, list[float]] = {}
        self.states: StateMachine | None = None
        self.pipeline: Pipeline | None = None
        self.healer: Healer | None = None
        self.scheduler: Scheduler | None = None
        # The link.
        self.last_ok = time.monotonic()  # the last 2xx from the monitor (start counts: no healing at once)
        self.cut_off = False
        self.cut_since: float | None = None  # wall time of the last 2xx before the cut
        self._link: bool | None = None  # as last logged
        self._refused: int | None = None  # the refusal last logged
        self._refused_at = float("-inf")  # monotonic time of the last refusal
        self._backlog: int | None = None  # rounds queued when the link came back (for "back: sent N")
        self._sent_since_back = 0
        self._wake = asyncio.Event()  # something was queued
        self._last_status: dict[str, Status] = {}  # each entity's status in its last queued round
        self._news = False  # a queued round says something new: pushed within PUSH_EVERY
        self._push_now = asyncio.Event()  # a probe the monitor asked for: no batching wait
        self._config_wanted = asyncio.Event()
        self._results: list[protocol.CommandResult] = []
        self._quick_poll: asyncio.Task[None] | None = None
        self._batch_cap = protocol.MAX_ROUNDS
        self._local_targets: set[str] = set()  # targets whose restart the agent began while cut off
        self._merged: dict[str, list[float]] = {}  # budget key -> the monitor's attempts merged in (local clock)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = False
        logging.getLogger("clusterwatch.events").addFilter(_Echo(self))

    # --- plumbing -----------------------------------------------------------------------------------

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, partial(fn, *args))

    async def _sleep(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Until `seconds` pass, the agent stops, or `event` is set."""
        waiters = [asyncio.ensure_future(self.stop.wait())]
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _spawn(self, name: str, work: Coroutine[Any, Any, Any], *, vital: bool = False) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.error("agent: %s failed: %s: %s", name, type(exc).__name__, one_line(str(exc), 300), exc_info=exc)
                if vital:  # the service manager (systemd, termux-boot's loop) starts a fresh one
                    self.failed = True
                    self.stop.set()

        task.add_done_callback(done)
        return task

    # --- talking to the monitor -----------------------------------------------------------------------

    async def _exchange(self, method: str, path: str, body: BaseModel | None, answer: type[Any], timeout: float) -> Any:
        """One request, bounded in time and size. Raises Refused, Rejected or LinkDown; a 2xx is a success
        of the link whatever else happens."""
        assert self._session is not None
        data = body.model_dump_json(exclude_none=False) if body is not None else None
        for tried in range(len(self.servers)):  # each monitor of a group once, then the caller's backoff
            started, server = time.monotonic(), self.server
            try:
                return await self._request(method, server, path, data, answer, timeout, started)
            except LinkDown:
                self._next_server(server)
                if tried == len(self.servers) - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _next_server(self, failed: str) -> None:
        if len(self.servers) > 1 and failed == self.server:
            self.server = self.servers[(self.servers.index(failed) + 1) % len(self.servers)]
            log.debug("trying the next monitor: %s", self.server)

    def _backoff_max(self) -> float:
        """A link that comes back (or a new leader) hears this agent within a quarter of its timeout,
        long before it would call the agent silent."""
        timeout = self.agent_config.agent_timeout if self.agent_config is not None else 4 * LINK_BACKOFF[1]
        return min(LINK_BACKOFF[1], max(LINK_BACKOFF[0], timeout / 4))

    async def _request(
        self, method: str, server: str, path: str, data: str | None, answer: type[Any], timeout: float, started: float
    ) -> Any:
        assert self._session is not None
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(
                    method, server + path, data=data, headers=self._auth, ssl=self._ssl, allow_redirects=False
                ) as resp:
                    raw = await _read(resp)
                    status = resp.status
        except TimeoutError:
            raise TimedOut(f"no answer within {timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise LinkDown(f"its TLS certificate is not trusted ({exc.certificate_error}); see --ca-file") from None
        except aiohttp.ClientConnectorError as exc:
            raise LinkDown(f"cannot connect: {exc.os_error.strerror or exc.os_error}") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise LinkDown(one_line(f"{type(exc).__name__}: {exc}", 300)) from None
        if status in (401, 403):
            raise Refused(status, _error_text(raw))
        if status in (400, 413, 422):
            raise Rejected(f"HTTP {status}: {_error_text(raw)}")
        if not 200 <= status < 300:
            raise LinkDown(f"HTTP {status}: {_error_text(raw)}")
        self._link_ok(started)
        try:
            return answer.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise LinkDown(f"an answer this agent does not understand ({where}: {first.get('msg')})") from None

    def _link_ok(self, started: float) -> None:
        if started < self._refused_at:
            return  # a long poll sent before the token was refused: it says nothing of the token now
        self.last_ok = time.monotonic()
        self._refused = None
        if self._link is not True:
            self._link = True
            log.info("connected to %s as %s", self.server, self.name)
        if self.cut_off:
            self._back()

    def _link_down(self, why: str) -> None:
        if self._link is not False:
            self._link = False
            log.warning("cannot reach the monitor at %s (%s), %d queued", self.server, why, self.queue.rounds)

    def _link_refused(self, exc: Refused) -> None:
        self._refused_at = time.monotonic()
        if self._refused != exc.status:
            self._refused = exc.status
            self._link = False
            if exc.status == 401:
                log.error(
                    "the monitor refused this agent's token (401): enroll again with `clusterwatch agent enroll %s` "
                    "(trying again every %gs)",
                    self.name,
                    REFUSED_RETRY,
                )
            else:
                log.error(
                    "the monitor refused this agent (%d): %s (trying again every %gs)",
                    exc.status,
                    exc.reason,
                    REFUSED_RETRY,
                )

    async def _fetch_config(self) -> tuple[protocol.AgentConfig, float]:
        config = await self._exchange("GET", protocol.CONFIG_PATH, None, protocol.AgentConfig, REQUEST_TIMEOUT)
        return config, time.time()

    # --- configuration ---------------------------------------------------------------------------------

    async def _first_config(self) -> tuple[protocol.AgentConfig, float] | None:
        """From the monitor; if it cannot be reached, the cached one; with none, try again (1 s doubling to 30 s)."""
        cached = await self._blocking(self.queue.get, "config")
        delay = CONFIG_BACKOFF[0]
        told: str | None = None
        while not self.stop.is_set():
            try:
                return await self._fetch_config()
            except (LinkDown, Rejected, Refused) as exc:
                why = str(exc)
                if isinstance(exc, Refused):
                    self._link_refused(exc)
                found = _cached_config(cached)
                if found is not None:
                    log.warning(
                        "cannot get the config from %s (%s): running from the cached one (version %s, from %s)",
                        self.server,
                        why,
                        found[0].version,
                        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(found[1])),
                    )
                    self._link = False
                    self._config_wanted.set()
                    return found
                wait = REFUSED_RETRY if isinstance(exc, Refused) else delay
                if why != told:  # one line per reason, not one per try
                    told = why
                    log.warning(
                        "cannot get the config from %s (%s) and none is cached here: trying again (every %gs at most)",
                        self.server,
                        why,
                        REFUSED_RETRY if isinstance(exc, Refused) else CONFIG_BACKOFF[1],
                    )
                await self._sleep(wait)
                delay = min(delay * 2, CONFIG_BACKOFF[1])
        return None

    async def _config_loop(self) -> None:
        delay = CONFIG_BACKOFF[0]
        while not self.stop.is_set():
            await self._sleep(3600.0, self._config_wanted)
            if self.stop.is_set():
                return
            if not self._config_wanted.is_set():
                continue
            try:
                fetched, received = await self._fetch_config()
            except Refused as exc:
                self._link_refused(exc)
                await self._sleep(REFUSED_RETRY)
                continue
            except (LinkDown, Rejected) as exc:
                self._link_down(str(exc))
                await self._sleep(delay)
                delay = min(delay * 2, CONFIG_BACKOFF[1])
                continue
            delay = CONFIG_BACKOFF[0]
            self._config_wanted.clear()
            await self._apply(fetched, received)

    async def _apply(self, fetched: protocol.AgentConfig, received: float) -> bool:
        """Run this config from now on: changed checks start afresh, unchanged ones keep their states."""
        previous = self.agent_config
        self.offset = fetched.server_time - received
        self.monitor_budgets = dict(fetched.budgets)
        if previous is not None and previous.version == fetched.version and self.plan is not None:
            await self._blocking(self._cache, fetched, received)
            return True
        try:
            built = build_config(fetched, self.state_dir)
        except ConfigProblem as exc:
            log.error(
                "config version %s from the monitor cannot run here: %s; keeping the one running", fetched.version, exc
            )
            return False
        for name, broken in built.broken.items():
            old = self.broken.get(name)
            if old is None or old.error != broken.error:
                log.warning("check %s cannot run on this node: %s (reported as unknown)", name, broken.error)
        plan = Plan(built.config)
        if self.plan is None:
            self._build(built, plan)
        else:
            self._reschedule(built, plan)
        self.agent_config, self.built, self.config, self.plan = fetched, built, built.config, plan
        self.broken = built.broken
        known = set(plan.items) | set(built.broken)
        dropped = await self._blocking(self.queue.drop_checks, known)
        if dropped:
            log.info("dropped %d queued item(s) of checks this node no longer has", dropped)
        await self._blocking(self._cache, fetched, received)
        log.info(
            "running config version %s: %d check(s) on %s%s",
            fetched.version,
            len(built.config.checks),
            self.name,
            f", {len(built.broken)} that cannot run here" if built.broken else "",
        )
        return True

    def _cache(self, fetched: protocol.AgentConfig, received: float) -> None:
        self.queue.put("config", {"config": fetched.model_dump(mode="json"), "received": received})

    def _build(self, built: Built, plan: Plan) -> None:
        """The monitor's own engine, on the first config."""
        config = built.config
        self.plan, self.config = plan, config
        self.states = StateMachine(
            lambda name: self._plan().rules(name), flap_high=config.flapping.high, flap_low=config.flapping.low
        )
        self.pipeline = Pipeline(
            self.states,
            _Sink(self._healer_event),
            redactor=redact.current,
            expected_every=lambda name: self._plan().expected_every(name),
        )
        self._probe_session = new_http_session(limit=config.concurrency)
        self.pipeline.ctx = ProbeContext(config=config, http=self._probe_session)
        self.healer = Healer(
            config,
            self.states,
            HealLedger(config.store.path),
            reprobe=self._reprobe,
            emit=self.pipeline.emit,
            redactor=redact.current,
        )
        self.healer.acting = lambda: self.cut_off
        self.healer.serving = serving
        self.pipeline.listeners = [self.healer.on_event]
        self.scheduler = Scheduler(self._run_job, config.concurrency)
        for name, item in plan.items.items():
            self.scheduler.add(name, item, plan.interval(item))
        for name, broken in built.broken.items():
            self.scheduler.add(name, broken, broken.interval or config.interval)

    def _reschedule(self, built: Built, plan: Plan) -> None:
        assert self.plan is not None and self.scheduler is not None and self.pipeline is not None
        assert self.healer is not None and self.states is not None
        change = self.plan.diff(plan)
        config = built.config
        if self.pipeline.ctx is not None:
            self.pipeline.ctx.config = config
        self.healer.update_config(config)
        self.states.flap_high, self.states.flap_low = config.flapping.high, config.flapping.low
        for name in change.removed + change.changed:
            self.scheduler.remove(name)
            self.pipeline.forget_check(name)
        for name, old in self.broken.items():
            new = built.broken.get(name)
            if new is None or new != old:
                self.scheduler.remove(name)
                self.pipeline.forget_check(name)
        for name in change.changed + change.added:
            item = plan.items[name]
            self.scheduler.add(name, item, plan.interval(item))
        for name, new in built.broken.items():
            if self.broken.get(name) != new:
                self.scheduler.add(name, new, new.interval or config.interval)
        log.info(
            "config changed: %d changed, %d added, %d removed, %d unchanged",
            len(change.changed),
            len(change.added),
            len(change.removed),
            change.unchanged,
        )

    def _plan(self) -> Plan:
        assert self.plan is not None
        return self.plan

    # --- probing ------------------------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        await self._run(job.key)

    async def _run(self, key: str) -> list[Observation]:
        """One round of a check (or of the node itself), as the scheduler, a retry or a command runs it."""
        plan, pipeline, states = self._plan(), self.pipeline, self.states
        assert pipeline is not None and states is not None and self.config is not None
        item: Any = plan.items.get(key) or self.broken.get(key)
        if item is None:
            return []
        at = time.time()
        if isinstance(item, Broken):
            observations = [item.observation()]
        elif isinstance(item, Node):
            observations = await self._probe_node(item, self.config)
        else:
            observations = await pipeline.probe(item)
        if (self.plan.items.get(key) or self.broken.get(key)) is not item:
            return []  # the config changed meanwhile: this round is of a check that is no more
        pipeline.handle(item, observations)
        await self._queue_round(at, key, observations)
        if not isinstance(item, Broken) and any(s.fail_streak and not s.down for s in states.entities_of(key)):
            assert self.scheduler is not None
            self.scheduler.run_soon(key, plan.retry_interval(item))
        return observations

    async def _probe_node(self, node: Node, config: Config) -> list[Observation]:
        limit = (node.timeout or config.timeout) + 10.0
        try:
            async with asyncio.timeout(limit):
                return await probe_node(node, config)
        except TimeoutError:
            message = f"the node's own report took over {limit:g}s"
        except Exception as exc:  # a bug here must not stop the node's rounds
            log.warning("the node's own report failed: %s: %s", type(exc).__name__, exc)
            message = f"the node's own report failed: {type(exc).__name__}: {one_line(str(exc), 200)}"
        return [
            Observation(
                node.name, "ssh", "", Status.UNKNOWN, message, check=node.name, group=Group.NODES, node=node.name
            )
        ]

    async def _reprobe(self, check: CheckBase) -> list[Observation]:
        """The healer's verification: the same path as a scheduled round (so the monitor sees it too)."""
        if self.plan is None or check.name not in self.plan.items:
            return []
        return await self._run(check.name)

    async def _queue_round(self, at: float, check: str, observations: list[Observation]) -> None:
        wire = []
        for obs in observations:
            try:
                wire.append(protocol.WireObservation.of(obs).model_dump(mode="json"))
            except ValidationError as exc:
                log.warning("observation %s left out of the round: %s", obs.name, one_line(str(exc), 200))
        body = {"at": at, "check": check, "observations": wire}
        await self._blocking(self.queue.put_round, at, check, body)
        # News goes out within PUSH_EVERY: a status that is not ok, or that changed. Steady rounds wait for
        # company (a node of 20 checks is a push every few seconds, not every second); polls keep it heard.
        news = False
        for obs in observations:
            if obs.status is not Status.OK or self._last_status.get(obs.name) is not obs.status:
                news = True
            self._last_status[obs.name] = obs.status
        if news:
            self._news = True
        self._wake.set()

    def _batch_wait(self) -> float:
        if self._news:
            return PUSH_EVERY
        timeout = self.agent_config.agent_timeout if self.agent_config is not None else STEADY_PUSH_EVERY * 4
        return max(PUSH_EVERY, min(STEADY_PUSH_EVERY, timeout / 4))

    # --- pushing -------------------------------------------------------------------------------------------

    def _push_body(self, batch: Batch) -> protocol.Push:
        rounds, events = [], []
        for row in batch.rounds:
            try:
                rounds.append(protocol.Round(seq=row.seq, **row.body))
            except (ValidationError, TypeError) as exc:  # a row an older agent wrote: the ack drops it
                log.warning("queued round %d left out: %s", row.seq, one_line(str(exc), 200))
        for row in batch.events:
            try:
                events.append(protocol.AgentEvent(seq=row.seq, **row.body))
            except (ValidationError, TypeError) as exc:
                log.warning("queued event %d left out: %s", row.seq, one_line(str(exc), 200))
        version = self.agent_config.version if self.agent_config is not None else None
        return protocol.Push(node=self.name, sent_at=time.time(), rounds=rounds, events=events, config_version=version)

    async def _push_loop(self) -> None:
        delay = LINK_BACKOFF[0]
        last = float("-inf")
        while not self.stop.is_set():
            if not len(self.queue):
                self._wake.clear()
                await self._sleep(5.0, self._wake)
                continue
            # Batching: news at most a second late, steady rounds a few seconds (see _queue_round).
            while not (self._push_now.is_set() or self.stop.is_set()):
                left = last + self._batch_wait() - time.monotonic()
                if left <= 0:
                    break
                await self._sleep(min(left, PUSH_EVERY), self._push_now)  # news may come meanwhile
            self._push_now.clear()
            if self.stop.is_set():
                return
            batch = await self._blocking(
                partial(self.queue.batch, max_rounds=self._batch_cap, max_events=protocol.MAX_EVENTS)
            )
            if not batch:
                continue
            last, self._news = time.monotonic(), False
            try:
                answer: protocol.PushAnswer = await self._exchange(
                    "POST", protocol.PUSH_PATH, self._push_body(batch), protocol.PushAnswer, REQUEST_TIMEOUT
                )
            except Refused as exc:
                self._link_refused(exc)
                self._config_wanted.set()  # a 403 for a check: the config may have changed
                # A token refused (401) is a person's to fix; a 403 is usually a reload the fetch catches up with.
                await self._sleep(REFUSED_RETRY if exc.status == 401 else FORBIDDEN_RETRY)
                continue
            except Rejected as exc:
                await self._rejected(batch, str(exc))
                continue
            except LinkDown as exc:
                self._link_down(str(exc))
                if exc.timed_out:  # a slow link: half the rounds next time (the queue keeps the rest)
                    self._batch_cap = max(1, self._batch_cap // 2)
                await self._sleep(delay)
                delay = min(delay * 2, self._backoff_max())
                continue
            delay = LINK_BACKOFF[0]
            self._batch_cap = protocol.MAX_ROUNDS
            await self._accepted(answer)

    async def _accepted(self, answer: protocol.PushAnswer) -> None:
        issued = await self._blocking(self.queue.last_issued)
        if answer.accepted > issued:
            # The monitor filed seqs this queue never gave: its state dir is new (or was wiped). Acking
            # would drop rounds the monitor skipped as "already filed": they move past its mark instead.
            log.warning(
                "the monitor has filed up to item %d, past this queue's %d (a new state dir?): renumbering the queue",
                answer.accepted,
                issued,
            )
            await self._blocking(self.queue.renumber_after, answer.accepted)
            return
        sent = await self._blocking(self.queue.ack, answer.accepted)
        self.monitor_budgets = dict(answer.budgets)
        await self._blocking(self.queue.put, "budgets", {"budgets": answer.budgets, "offset": self.offset})
        if self.agent_config is None or answer.config_version != self.agent_config.version:
            self._config_wanted.set()
        if self._backlog is not None:
            self._sent_since_back += sent
            if not self.queue.rounds:
                log.info("back: sent %d queued rounds", self._sent_since_back)
                self._backlog = None

    async def _rejected(self, batch: Batch, why: str) -> None:
        """A body the monitor will never take: halve the batch until the one row that it refuses is alone,
        then drop that row (logged), so one bad round cannot stop every later one."""
        size = len(batch.rounds) + len(batch.events)
        if size > 1:
            self._batch_cap = max(1, min(self._batch_cap, len(batch.rounds)) // 2)
            log.warning("the monitor refused a push of %d item(s) (%s): sending fewer at a time", size, why)
            return
        await self._blocking(self.queue.ack, batch.last)
        log.error("the monitor refused queued item %d (%s): dropped", batch.last, why)

    # --- polling and commands ---------------------------------------------------------------------------

    def _take_results(self) -> list[protocol.CommandResult]:
        results, self._results = self._results[:100], self._results[100:]
        return results

    def _give_back(self, results: list[protocol.CommandResult]) -> None:
        self._results = results + self._results

    async def _poll_loop(self) -> None:
        delay = LINK_BACKOFF[0]
        while not self.stop.is_set():
            results = self._take_results()
            poll = protocol.Poll(node=self.name, results=results, wait=protocol.POLL_WAIT)
            try:
                answer: protocol.PollAnswer = await self._exchange(
                    "POST", protocol.POLL_PATH, poll, protocol.PollAnswer, protocol.POLL_WAIT + 10.0
                )
            except Refused as exc:
                self._give_back(results)
                self._link_refused(exc)
                await self._sleep(REFUSED_RETRY)
                continue
            except (LinkDown, Rejected) as exc:
                self._give_back(results)
                self._link_down(str(exc))
                await self._sleep(delay)
                delay = min(delay * 2, self._backoff_max())
                continue
            delay = LINK_BACKOFF[0]
            self._answered(answer)

    async def _send_results(self) -> None:
        """Results go back at once in a poll that does not wait (the long poll may be held for seconds)."""
        while self._results and not self.stop.is_set():
            results = self._take_results()
            try:
                answer = await self._exchange(
                    "POST",
                    protocol.POLL_PATH,
                    protocol.Poll(node=self.name, results=results, wait=0),
                    protocol.PollAnswer,
                    REQUEST_TIMEOUT,
                )
            except (Refused, LinkDown, Rejected):
                self._give_back(results)  # the long poll carries them when it can
                return
            self._answered(answer)

    def _result(self, command: protocol.Command, ok: bool, detail: str) -> None:
        self._results.append(protocol.CommandResult(id=command.id[:64], ok=ok, detail=one_line(detail, 20_000)))
        if self._quick_poll is None or self._quick_poll.done():
            self._quick_poll = self._spawn("sending a command's result", self._send_results())

    def _answered(self, answer: protocol.PollAnswer) -> None:
        for command in answer.commands:
            if command.kind == "restart":
                self._spawn(f"restart for {command.check}", self._restart(command))
            elif command.kind == "probe":
                self._spawn(f"probe of {command.check}", self._probe_now(command.check))
        if self.agent_config is None or answer.config_version != self.agent_config.version:
            self._config_wanted.set()

    async def _probe_now(self, check: str) -> None:
        await self._run(check)
        self._push_now.set()

    async def _restart(self, command: protocol.Command) -> None:
        """The monitor's restart: its policy, run here; one action per target, shared with the local healer."""
        healer = self.healer
        assert healer is not None and self.plan is not None and self.config is not None
        try:
            policy = local_policy(command.policy or {})
        except ValidationError as exc:
            self._result(command, False, f"the restart policy is not valid here: {one_line(str(exc), 300)}")
            return
        check = self.plan.items.get(command.check)
        if not isinstance(check, CheckBase):
            self._result(command, False, f"no check {command.check!r} runs on this agent")
            return
        target = policy.target
        deadline = time.monotonic() + policy.limit
        waited = False
        while (busy := healer.busy.get(target)) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._result(command, False, f"{target} is busy: another restart of it is running on {self.name}")
                return
            waited = True
            await asyncio.wait({busy}, timeout=left)
        if waited:  # the agent's own restart (or an earlier command's) just ran: one restart, not two
            detail = f"not run again: a restart of {target} had just run on {self.name}; the probe says if it helped"
            log.warning("restart of %s for %s, as the monitor asked: %s", target, check.name, detail)
            self._result(command, True, detail)
            return
        task: asyncio.Task[Outcome] = asyncio.ensure_future(perform(policy, check, self.config))
        healer.busy[target] = task  # type: ignore[assignment]  # the healer's own lock: it will not act meanwhile
        task.add_done_callback(lambda t: healer.busy.pop(target, None) if healer.busy.get(target) is t else None)
        try:
            outcome = await task
        except Exception as exc:
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        log.warning("restart of %s for %s, as the monitor asked: %s", target, check.name, outcome.detail)
        self._result(command, outcome.ok, outcome.detail)

    # --- connected, cut off --------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while not self.stop.is_set():
            await self._sleep(WATCH_EVERY)
            config = self.agent_config
            if config is not None and not self.cut_off and time.monotonic() - self.last_ok > config.agent_timeout:
                self._cut()
            dropped = self.queue.take_dropped()
            if dropped:
                log.warning(
                    "the queue is full or old: dropped its %d oldest round(s)%s, from %s to %s (a gap in the history)",
                    dropped.rounds,
                    f" and {dropped.events} event(s)" if dropped.events else "",
                    _clock(dropped.oldest or 0.0),
                    _clock(dropped.newest or 0.0),
                )

    def _cut(self) -> None:
        assert self.agent_config is not None
        silent = time.monotonic() - self.last_ok
        since = time.time() - silent
        self._merge_budgets()
        self.cut_off, self.cut_since = True, since
        self._backlog, self._sent_since_back = None, 0
        log.warning("cut off for %.0fs: healing on its own", silent)
        self._queue_event(
            time.time(),
            "healing_taken",
            None,
            self.name,
            f"{self.name}'s agent has not reached the monitor since {_clock(since)}: it heals its own checks now, "
            "within what is left of their restart budgets",
            {"since": since, "budgets": self._shares()},
        )

    def _back(self) -> None:
        now = time.time()
        since = self.cut_since or now
        self.cut_off = False
        log.info(
            "back after %.0fs cut off: healing is the monitor's again, %d round(s) to send",
            now - since,
            self.queue.rounds,
        )
        self._backlog, self._sent_since_back = self.queue.rounds, 0
        self._queue_event(
            now,
            "healing_returned",
            None,
            self.name,
            f"{self.name}'s agent reaches the monitor again (cut off from {_clock(since)} to {_clock(now)}): "
            "healing is the monitor's again",
            {"from": since, "to": now},
        )

    def _shares(self) -> dict[str, int]:
        """What is left of each restart budget, for the log and the monitor."""
        healer, config = self.healer, self.config
        if healer is None or config is None:
            return {}
        now = time.time()
        left = {}
        for check in config.checks:
            for step in check.restart or []:
                budget = healer.budgets.get(healer.key(step.target))
                count = used(budget, step.window, now) if budget is not None else 0
                left[step.target] = max(0, step.max_attempts - count)
        return left

    def _merge_budgets(self) -> None:
        """The monitor's last word on each budget (its clock, converted) joins the agent's own attempts."""
        healer, config, built = self.healer, self.config, self.built
        if healer is None or config is None or built is None:
            return
        policies = {healer.key(step.target): step for c in config.checks for step in c.restart or []}
        now = time.time()
        for monitor_target, attempts in self.monitor_budgets.items():
            key = healer.key(built.targets.get(monitor_target, monitor_target))
            policy = policies.get(key)
            if policy is None:
                continue
            budget = healer.budgets.setdefault(key, BudgetRow(key))
            earlier = set(self._merged.get(key, ()))
            own = [t for t in budget.attempts if t not in earlier]
            theirs = [
                t - self.offset
                for t in attempts
                if all(abs(t - self.offset - mine) > SAME_ATTEMPT for mine in own)  # its record of ours
            ]
            budget.attempts = sorted(own + theirs)
            self._merged[key] = theirs
            if budget.exhausted is not None and used(budget, policy.window, now) < policy.max_attempts:
                budget.exhausted = None  # the monitor's budget came back since: so does the share

    def _healer_event(self, event: Event) -> None:
        """The local healer's remediation events, while it acts (and to the end of what it began), are
        queued for the monitor; a commanded restart is the monitor's to record."""
        outcome = REMEDIATION.get(event.kind)
        if outcome is None:
            return
        target = str(event.details.get("target", ""))
        if not (self.cut_off or target in self._local_targets):
            return
        if event.kind is EventKind.REMEDIATION_STARTED:
            self._local_targets.add(target)
        else:
            self._local_targets.discard(target)
        details = {**event.details, "outcome": outcome}
        # said here too: a person reading the agent's log sees what it did alone, not only the monitor later
        log.warning("own restart of %s for %s: %s", target, event.check, outcome)
        self._queue_event(event.at, event.kind.value, event.check, event.entity, event.message, details)

    def _queue_event(
        self, at: float, kind: str, check: str | None, entity: str | None, message: str, details: dict[str, Any]
    ) -> None:
        try:
            event = protocol.AgentEvent(
                seq=1,
                at=at,
                kind=kind,
                check=check,
                entity=entity,
                message=message,
                details=details,  # type: ignore[arg-type]
            )
        except ValidationError as exc:
            log.error("event %s not queued: %s", kind, one_line(str(exc), 300))
            return
        body = event.model_dump(mode="json", exclude={"seq"})
        try:
            self.queue.put_event(at, check, body)  # rare and small: on the loop, in order with what follows
        except Exception as exc:
            log.error("event %s not queued: %s", kind, exc)
            return
        self._wake.set()

    # --- life cycle ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        await self._blocking(self.queue.open)
        budgets = await self._blocking(self.queue.get, "budgets")
        if isinstance(budgets, dict) and isinstance(budgets.get("budgets"), dict):
            self.monitor_budgets = budgets["budgets"]
        connector = aiohttp.TCPConnector(limit=4, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, headers={"User-Agent": "clusterwatch-agent"}
        )
        try:
            first = await self._first_config()
            if first is None:
                return 0
            if not await self._apply(*first):
                log.error("the monitor's config for %s cannot run here; stopping", self.name)
                return 1
            assert self.scheduler is not None and self.healer is not None
            await self.healer.start()
            self._spawn("the scheduler", self.scheduler.run_forever(self.stop), vital=True)
            self._spawn("the push loop", self._push_loop(), vital=True)
            self._spawn("the poll loop", self._poll_loop(), vital=True)
            self._spawn("the config loop", self._config_loop(), vital=True)
            self._spawn("the watch loop", self._watch_loop(), vital=True)
            self._spawn("the healer", self.healer.run(self.stop), vital=True)
            await self.stop.wait()
        finally:
            await self._close()
        return 1 if self.failed else 0

    async def _close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if self.scheduler is not None:
            await self.scheduler.cancel_running(timeout=1.0)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.healer is not None:
            with contextlib.suppress(Exception):
                await self.healer.stop()
        for session in (self._session, self._probe_session):
            if session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(session.close(), 1.0)
        with contextlib.suppress(Exception):
            await self._blocking(self.queue.close)
        self._io.shutdown(wait=False)


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        data += chunk
        if len(data) > MAX_ANSWER:
            raise ValueError(f"answer over {MAX_ANSWER} bytes")
    return bytes(data)


def _error_text(raw: bytes) -> str:
    """The monitor's reason (`{"error": ...}`), in one short line."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    text = (
        data.get("error")
        if isinstance(data, dict) and isinstance(data.get("error"), str)
        else raw[:200].decode("utf-8", "replace")
    )
    return one_line(text, 300) or "no reason given"


def _cached_config(cached: Any) -> tuple[protocol.AgentConfig, float] | None:
    if not isinstance(cached, dict) or not isinstance(cached.get("received"), int | float):
        return None
    try:
        return protocol.AgentConfig.model_validate(cached.get("config")), float(cached["received"])
    except ValidationError:
        return None


def read_token(path: str) -> str:
    """The token, stripped; an error names the file, never what is in it."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            raw = f.read(65536)
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"the token file {path} is not text") from None
    if not token:
        raise ValueError(f"the token file {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"the token file {path} holds more than one token (or a broken one)")
    return token


async def run_agent(
    server: str,
    name: str,
    token_file: str,
    ca_file: str | None = None,
    state_dir: str | None = None,
    stop: asyncio.Event | None = None,
    insecure_http: bool = False,
) -> int:
    """Run until `stop` is set (SIGTERM/SIGINT in `main`): 0 then, 1 on a failure of its own, 2 for bad arguments."""
    if not all(re.match(r"^https?://[^/\s]+", s.strip()) for s in server.split(",")):
        log.error("--server %r: expected http(s)://HOST:PORT of the monitor (several: comma-separated)", server)
        return 2
    plain = [s.strip() for s in server.split(",") if s.strip().startswith("http://") and not loopback_url(s.strip())]
    if plain and not insecure_http:
        # Over plain HTTP anyone on the path could read the token and send this node commands to run.
        log.error(
            "--server %s: plain HTTP to another machine; use https:// (web.tls on the monitor, --ca-file here), "
            "or --insecure-http on a network you trust (the token and commands would travel in clear)",
            ", ".join(plain),
        )
        return 2
    if plain:
        log.warning("plain HTTP to %s (--insecure-http): the token and commands travel in clear", ", ".join(plain))
    if not re.fullmatch(NAME_PATTERN.strip("^$"), name) or len(name) > 100:
        log.error("--name %r: not a node name (letters, digits, _ . : @ -)", name)
        return 2
    try:
        token = read_token(token_file)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    redactor = redact.Redactor([token])
    redactor.extend(redact.current())
    redact.install(redactor)  # should it show up anywhere (an error echoing a header), it is masked
    context = None
    if ca_file:
        try:
            context = ssl.create_default_context(cafile=os.path.expanduser(ca_file))
        except (OSError, ssl.SSLError) as exc:
            log.error("--ca-file %s: %s", ca_file, getattr(exc, "strerror", None) or exc)
            return 2
    where = os.path.expanduser(state_dir) if state_dir else default_state_dir()
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
    except OSError as exc:
        log.error("state dir %s: %s", where, exc.strerror or exc)
        return 2
    agent = Agent(server, name, token, state_dir=where, stop=stop or asyncio.Event(), ssl_context=context)
    log.info("agent %s starting: monitor %s, state in %s", name, agent.server, where)
    return await agent.run()


def main(args: argparse.Namespace) -> int:
    """`clusterwatch agent run --server URL --name NAME --token-file FILE [--ca-file F] [--state-dir D]`."""
    from clusterwatch import logs

    logs.setup(level="info")

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await run_agent(
            args.server,
            args.name,
            args.token_file,
            getattr(args, "ca_file", None),
            getattr(args, "state_dir", None),
            stop,
            insecure_http=bool(getattr(args, "insecure_http", False)),
        )

    code = asyncio.run(go())
    log.info("agent stopped")
    return code


__all__ = ["Agent", "default_state_dir", "main", "read_token", "run_agent"]
