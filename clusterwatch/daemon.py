"""`clusterwatch run`: wires the pieces together and runs them for as long as the monitor lives.

The scheduler feeds the pipeline (observation -> state -> event); events go to the store, the
healer (a reconciler) and the alerter. Around them: reloads, signals, systemd's notify protocol,
and self-supervision (a dead background task stops the process; "healthy" means progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import psutil

from clusterwatch import memory, redact
from clusterwatch.agent.hub import AgentHub
from clusterwatch.alerting.alerter import Alerter, heartbeat_loop
from clusterwatch.config.loader import BUILTIN, ConfigError, LoadedConfig, load_config
from clusterwatch.config.schema import CheckBase, Config, Node, RestartPolicy
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.pipeline import Item, Pipeline
from clusterwatch.engine.plan import Plan
from clusterwatch.engine.scheduler import Job, Scheduler
from clusterwatch.engine.state import StateMachine
from clusterwatch.ha import Change, Lease
from clusterwatch.heal.actions import Outcome, perform
from clusterwatch.heal.evidence import Instance, serving
from clusterwatch.heal.healer import Healer
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext, new_http_session
from clusterwatch.sdnotify import Notifier
from clusterwatch.store.agents import AgentRegistry
from clusterwatch.store.db import errors as db_errors
from clusterwatch.store.healing import HealLedger
from clusterwatch.store.lease import LeaseStore
from clusterwatch.store.outbox import Outbox
from clusterwatch.store.writer import Store
from clusterwatch.supervise import EXIT_FAILURE, Health, Supervisor

log = logging.getLogger("clusterwatch.engine")
WATCH_EVERY = 2.0
STATS_EVERY = float(os.environ.get("CLUSTERWATCH_STATS_EVERY", "30"))
LAG_ALERT = 2.0  # seconds of scheduling lag (p99 over a stats window) that count as falling behind
# Before a send from the local outbox the shared store is asked on a new connection: unanswered this
# long, it is away (a cut link, a hung server); an ask that fails at once is asked again, ASKS at most.
ASK_FOR_S = 2.0
ASKS = 3


def _said(exc: BaseException) -> str:
    """An exception in one line, for a log line (psycopg's messages run over several)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _in_thread(fn: Any) -> asyncio.Future[Any]:
    """fn() in a thread of its own, never queued behind work that hangs: a wait for it measures fn alone."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return  # given up on meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed to the waiter, if any is left
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="clusterwatch-ask", daemon=True).start()
    return future


class Monitor:
    def __init__(self, loaded: LoadedConfig, config_arg: str | None, *, notifier: Notifier | None = None) -> None:
        self.loaded = loaded
        self.config_arg = config_arg
        self.config: Config = loaded.config
        self.notifier = notifier or Notifier()
        self.plan = Plan(self.config)
        self.stop_event = asyncio.Event()
        self.supervisor = Supervisor(self.stop_event)
        self.states = StateMachine(
            lambda name: self.plan.rules(name),
            flap_high=self.config.flapping.high,
            flap_low=self.config.flapping.low,
        )
        self.store = Store(self.config.store)
        self.pipeline = Pipeline(
            self.states,
            self.store,
            redactor=redact.current,
            expected_every=lambda name: self.plan.expected_every(name),
        )
        self.healer = Healer(
            self.config,
            self.states,
            HealLedger(self.store.location),
            reprobe=self._reprobe,
            emit=self.pipeline.emit,
            redactor=redact.current,
        )
        self.healer.perform = self._perform
        self.healer.serving = self._serving
        self.agents = AgentHub(self, AgentRegistry(self.store.location))
        self.scheduler = Scheduler(self._run_job, self.config.concurrency)
        self.health = Health(
            beat=lambda: self.scheduler.beat,
            has_work=lambda: bool(self.scheduler.jobs),
            lag_p99=lambda: self.scheduler.lag_percentiles()[1],
            store=self.store.health,
            supervisor=self.supervisor,
        )
        self.outbox: Outbox | None = None
        self.alerter: Alerter | None = None
        # A group of monitors (ha.enabled): every one probes; the lease holder records and acts.
        self.lease: Lease | None = None
        self.leading = False  # this monitor acts as the group's leader (resumed from the store, lease held)
        self.ha_log: list[dict[str, Any]] = []  # this monitor's own takeovers and stand-downs, newest last
        self._alert_tasks: list[asyncio.Task[Any]] = []
        self._renewal: asyncio.Future[Change] | None = None
        self._seen: asyncio.Future[None] | None = None
        # The lease's own threads: a store that hangs must not starve the default executor (DNS lookups).
        self._lease_io = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-lease")
        self._offline: Outbox | None = None  # the local outbox while the shared store is away
        self._handed: list[Any] | None = None  # what the local outbox told, not yet taken by the shared store
        self._away_since = 0.0  # monotonic time this monitor began alerting from its local outbox
        self._held_said = False  # logged that the store answers again while the local outbox held a notice
        self._led_epoch: int | None = None  # the epoch this monitor last announced it leads with
        if self.config.ha.enabled:
            self.lease = Lease(LeaseStore(self.store.location), self.config.ha.node_name, self.config.ha.lease)
            self.store.fence = self.healer.ledger.fence = self.lease
            self.store.recording = self.healer.acting = self.acting
        self.once_mode = False
        self.started_at = time.time()
        self.web: Any = None
        self._file_stamp = self._stamp()
        self._io = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-io")  # config loads, command reads
        redact.install(loaded.redactor)

    def acting(self) -> bool:
        """May this monitor record and act now? Alone: always. In a group: while it leads."""
        return self.lease is None or (self.leading and self.lease.leading)

    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, partial(fn, *args))

    # --- configuration -------------------------------------------------------------------------------

    def _stamp(self) -> tuple[float, int] | None:
        if self.loaded.source == BUILTIN:
            return None
        try:
            st = os.stat(self.loaded.source)
        except OSError:
            return None
        return st.st_mtime, st.st_size

    async def reload(self, why: str) -> bool:
        """A broken new config is rejected with its error logged; the old one keeps running."""
        try:
            loaded = await self.blocking(load_config, self.config_arg)
        except ConfigError as exc:
            log.error("config reload (%s) rejected, still running the previous config:\n%s", why, exc)
            return False
        self._file_stamp = self._stamp()
        plan = Plan(loaded.config)
        change = self.plan.diff(plan)
        self.loaded, self.config, self.plan = loaded, loaded.config, plan
        redact.install(loaded.redactor)  # it keeps the previous one's secrets (the web token among them)
        if self.pipeline.ctx is not None:
            self.pipeline.ctx.config = self.config
        self.healer.update_config(self.config)
        if self.alerter is not None:
            self.alerter.configure(self.config.alerts, loaded.alert_channels())
        self.states.flap_high, self.states.flap_low = self.config.flapping.high, self.config.flapping.low
        for name in change.removed + change.changed:
            self.scheduler.remove(name)
            self.pipeline.forget_check(name)
        restarted = set(change.changed + change.added)
        for name, item in plan.items.items():
            local = self.agent_of(item) is None  # a node that got (or lost) an agent moves its checks with it
            if local and (name in restarted or name not in self.scheduler.jobs):
                self.scheduler.add(name, item, plan.interval(item))
            elif not local and name in self.scheduler.jobs:
                self.scheduler.remove(name)
        memory.settle()
        log.info(
            "config reloaded (%s): %d changed, %d added, %d removed, %d unchanged",
            why,
            len(change.changed),
            len(change.added),
            len(change.removed),
            change.unchanged,
        )
        return True

    async def _reprobe(self, check: CheckBase) -> list[Observation]:
        """The healer's verification: a check reloaded away meanwhile is not probed back to life."""
        if check.name not in self.plan.items:
            return []
        node = self.agent_of(check)
        if node is not None:  # its agent probes it: ask for a round now
            await self.agents.probe_now(node, check)
            return []
        return await self.pipeline.reprobe(check)

    def agent_of(self, item: Item) -> Node | None:
        """The agent's node a check runs on (its agent probes and restarts it), or None."""
        name = getattr(item, "node", None) if isinstance(item, CheckBase) else None
        if not name:
            return None
        return next((n for n in self.config.nodes if n.name == name and n.agent), None)

    async def _perform(self, policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
        """A restart for a check on an agent's node runs there, by its agent; any other as configured."""
        node = self.agent_of(check)
        if node is not None and policy.node in (None, node.name):
            return await self.agents.restart(node, check, policy)
        return await perform(policy, check, config)

    async def _serving(
        self, policy: RestartPolicy, check: CheckBase, config: Config, entity: str, last: Observation | None
    ) -> Instance | None:
        """Which instance serves: told here; on an agent's node it cannot be (the agent's own healer tells)."""
        if self.agent_of(check) is not None and policy.node in (None, check.node):
            return None
        return await serving(policy, check, config, entity, last)

    # --- the scheduler's work ------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        item = self.plan.items.get(job.key)
        if item is None or self.agent_of(item) is not None:
            return  # a check moved onto an agent's node by a reload: its agent runs it now
        if isinstance(item, Node) and item.agent:
            for seen, observations in self.agents.watch(item):  # silence is a failure
                self.pipeline.handle(seen, observations)
            if any(s.fail_streak and not s.down for s in self.states.entities_of(item.name)):
                self.scheduler.run_soon(item.name, self.plan.retry_interval(item))
            return
        observations = await self.pipeline.probe(item)
        if self.plan.items.get(job.key) is not item:
            return  # reloaded away meanwhile
        self.pipeline.handle(item, observations)
        if any(s.fail_streak and not s.down for s in self.states.entities_of(item.name)):
            self.scheduler.run_soon(item.name, self.plan.retry_interval(item))

    # --- life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.blocking(self.store.open)
        await self.blocking(self.agents.open)
        self._session = new_http_session(limit=self.config.concurrency)
        self.pipeline.ctx = ProbeContext(config=self.config, http=self._session)
        member = self.lease.member if self.lease is not None else "local"
        self.outbox = await self.blocking(partial(Outbox, self.store.location, member=member))
        self.outbox.fence = self.lease
        if self.lease is None:
            await self._resume()
            return
        await self.blocking(self.lease.store.open)
        if os.path.exists(os.path.expanduser(self.config.store.path)):  # a run that ended while the store was away
            local = await self.blocking(Outbox, self.config.store.path)
            try:
                await self._hand_over(local)
            finally:
                await self.blocking(local.close)
        log.info(
            "clusterwatch started in a group of monitors as %s (lease %gs): %d checks, store %s",
            self.lease.member,
            self.lease.lease,
            len(self.config.checks),
            self.store.path,
        )
        await self._apply(await self._renew())

    def _open_incidents(self) -> list[tuple[str, str, str, str | None, str, Status | None, float, str]]:
        return [
            (
                e.incident,
                e.name,
                e.check,
                e.node,
                self.pipeline.kinds.get(e.name, ""),
                e.hard,
                e.incident_started or time.time(),
                e.last.message if e.last else "",
            )
            for e in self.pipeline.open_incidents()
            if e.incident
        ]

    def _seen_ok(self, entity: str) -> bool:
        """Healthy as this monitor's own probes say (not only as restored from the store)."""
        state = self.states.entities.get(entity)
        return (
            state is not None
            and state.seen
            and state.hard is Status.OK
            and state.last is not None
            and state.last.status is Status.OK
        )

    async def _resume(self) -> None:
        """Carry on from the store: after a restart, or when this monitor takes over a group."""
        self.states.clear()
        rows = await self.blocking(self.store.load_entities)
        restored = self.pipeline.restore(rows, known=lambda check: check in self.plan.items)
        # What the store says is open, taken before any await: in a group the scheduler keeps probing
        # meanwhile and may move the live states on (an incident closed in memory that the alerter must
        # still hear was told, or its resolved notice is lost).
        open_incidents = self._open_incidents()
        stray = await self.blocking(self.store.close_stray_incidents, {row[0] for row in open_incidents}, time.time())
        if stray:
            log.info("closed %d incident(s) whose recovery the last monitor did not get to record", len(stray))
        assert self.outbox is not None
        self.alerter = alerter = Alerter(
            self.config.alerts,
            self.outbox,
            env_channels=self.loaded.alert_channels(),
            kind_of=lambda e: self.pipeline.kinds.get(e, ""),
            root_down=lambda check, entity: self.states.root_failing(check, entity, Status.CRITICAL),
            healthy=self.health.alive,
            history_first=lambda: self.store.flush(10.0, checkpoint=False),
        )
        alerter.acting = lambda: alerter.offline or self.acting()  # offline: the local outbox, nobody else's
        alerter.entity_ok = self._seen_ok
        await self.alerter.resume(open_incidents)
        await self.healer.start()
        if self.lease is not None:
            # A takeover: the scheduler kept probing through the awaits above and moved the restored
            # states on while nobody listened or recorded (an incident opened then was never told, never
            # stored, and its recovery told nobody either). Restore once more and start listening and
            # recording in the same step, with no await between: the next probe (every check runs at once
            # after a takeover) drives those transitions again, heard by all.
            self.states.clear()
            self.pipeline.restore(rows, known=lambda check: check in self.plan.items)
            self.leading = True
        self.pipeline.listeners = [self.healer.on_event, self.alerter.on_event]
        log.info(
            "clusterwatch %s: %d checks, %d nodes, config %s, store %s; resumed %d entities, %d open incidents",
            "started" if self.lease is None else "took over",
            len(self.config.checks),
            len(self.config.nodes),
            self.loaded.source,
            self.store.path,
            restored,
            len(open_incidents),
        )

    async def close(self) -> None:
        self.notifier.stopping()
        await self.supervisor.stop()
        if self.web is not None:
            await self.web.stop()
        await self.scheduler.cancel_running(timeout=1.0)
        await self.healer.stop()
        if self.alerter is not None:
            try:
                await self.alerter.stop(drain=self.once_mode)
            except db_errors() as exc:  # the store away: what was told is in the outbox already
                log.error("the alerter's last writes failed: %s", exc)
        if self.lease is not None:
            # What this leader queued is written while it still holds the lease; then it hands it on.
            await asyncio.to_thread(self.store.flush, 2.0)
            self.leading = False
            await asyncio.to_thread(self.lease.release)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._session.close(), 1.0)
        if self.outbox is not None:
            await self.blocking(self.outbox.close)
        if self.lease is not None:
            await asyncio.to_thread(self.lease.store.close)
        await asyncio.to_thread(self.agents.registry.close)
        await asyncio.to_thread(self.store.close, 2.0)
        self._io.shutdown(wait=False)
        self._lease_io.shutdown(wait=False)

    async def run(self) -> int:
        """Until SIGTERM (exit 0) or until the monitor can no longer do its job (exit 3)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        try:
            await self.start()
            for name, item in self.plan.items.items():
                if self.agent_of(item) is None:  # a check on an agent's node is its agent's to run
                    self.scheduler.add(name, item, self.plan.interval(item))
            log.info(
                "monitoring %d checks; ready %.2fs after the process started",
                len(self.plan.items),
                time.time() - psutil.Process().create_time(),
            )
            self.supervisor.spawn("scheduler", self.scheduler.run_forever(self.stop_event))
            self.supervisor.spawn("healer", self.healer.run(self.stop_event))
            self.supervisor.spawn("watch", self._watch())
            if self.lease is None:
                assert self.alerter is not None
                for name, work in self.alerter.loops(self._session):
                    self.supervisor.spawn(name, work)
            else:
                self.supervisor.spawn("lease", self._lease_loop())
                if self.config.alerts.heartbeat is not None:  # every member pings: alive, whoever leads
                    self.supervisor.spawn(
                        "heartbeat", heartbeat_loop(lambda: self.config.alerts, self.health.alive, self._session)
                    )
            from clusterwatch.web.server import start_web
            from clusterwatch.web.view import MonitorView

            self.web = await start_web(MonitorView(self))
            memory.settle()
            memory.watch_pauses()
            self.notifier.ready(f"monitoring {len(self.plan.items)} checks")
            await self.stop_event.wait()
        finally:
            log.info("stopping")
            await self.close()
        if self.supervisor.failure:
            return EXIT_FAILURE
        return 0

    # --- a group of monitors --------------------------------------------------------------------------

    async def _renew(self) -> Change:
        """One renewal in a thread; a renewal still hanging (a cut network) is not started twice."""
        assert self.lease is not None
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.get_running_loop().run_in_executor(self._lease_io, self.lease.renew)
        try:
            return await asyncio.wait_for(asyncio.shield(self._renewal), self.lease.every)
        except TimeoutError:
            return self.lease.expired()

    async def _lease_loop(self) -> None:
        """Renew every lease/4; between renewals, a leader whose lease ran out locally stands down."""
        assert self.lease is not None
        while True:
            change = await self._renew()
            if await self._apply(change):
                continue  # the takeover resumed from the store meanwhile: renew now, before the clock judges it
            if self._seen is None or self._seen.done():  # one at a time: a store that hangs holds no more threads
                self._seen = asyncio.get_running_loop().run_in_executor(self._lease_io, self.lease.seen)
                self._seen.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: not logged
            deadline = time.monotonic() + self.lease.every
            if not self.lease.leading and self.lease.next_try is not None:  # try as the holder's lease runs out
                deadline = min(deadline, max(self.lease.next_try + 0.02, time.monotonic() + 0.05))
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 0.25))
                await self._apply(self.lease.expired())

    async def _apply(self, change: Change) -> bool:
        """Level-triggered: compare what this monitor does with what the lease says it may do. True
        when it took over (the caller renews at once: the takeover took a while)."""
        assert self.lease is not None
        if self.leading and not self.lease.leading:
            await self._stand_down(change.lost or "the lease is no longer this monitor's")
        if self.lease.answered is not None and self.lease.answered > self._away_since:
            if self._offline is not None:
                await self._back_online()
            elif self._handed is not None:
                await self._hand_over(None)
        # A renewal that took the lease but answered after `_renew` stopped waiting said so to nobody:
        # the state is asked, not only the change (holding the lease without acting stalls the group).
        epoch = change.became if change.became is not None else self.lease.epoch
        if epoch is None or not self.lease.leading or (self.leading and change.became is None):
            return False
        try:
            await self._take_over(epoch)
        except db_errors() as exc:  # the store failed mid-way: not leading; the next tick tries again
            self.leading = False
            await self._stop_alerting()
            log.error("taking over as the leader failed (%s); trying again", exc)
        return True

    async def _keep_lease(self) -> None:
        """Renewals go on while a takeover resumes from the store (it may take longer than lease/2)."""
        assert self.lease is not None
        while True:
            await asyncio.sleep(self.lease.every)
            await self._renew()

    async def _take_over(self, epoch: int) -> None:
        """Lead from the shared store's state, as after a restart: the healer continues the budgets and
        looks at attempts cut short; the alerter knows what was told; every check runs at once."""
        assert self.lease is not None
        keep = asyncio.create_task(self._keep_lease())
        try:
            await self._taking_over(epoch)
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep

    async def _taking_over(self, epoch: int) -> None:
        assert self.lease is not None
        await self._stand_down(None)
        # Recording starts once the store's view is restored (_resume sets `leading` in the same step as
        # it attaches the listeners): probes landing meanwhile must not write this monitor's own
        # (follower's) incidents over the ones the store holds.
        marks = await self.blocking(self.agents.read_marks)  # the last leader can no longer write them
        self.agents.resync(marks)  # before `_resume` lets this monitor accept pushes
        await self._resume()
        assert self.alerter is not None and self.outbox is not None
        released = await self.blocking(self.outbox.release_claims, epoch)
        if released:
            log.warning("%d notification(s) claimed by an earlier leader and not marked sent: sending them", released)
        for name, work in self.alerter.loops(self._session, heartbeat=False):
            self._alert_tasks.append(self.supervisor.spawn(name, work, oneshot=True))
        message = f"{self.lease.node} leads the group of monitors (epoch {epoch})"
        self.ha_log.append({"at": time.time(), "event": "leader", "epoch": epoch, "message": message})
        log.warning("%s", message)
        if epoch != self._led_epoch:  # the same epoch again: the store was away a moment, nobody else led
            self._led_epoch = epoch
            self.pipeline.emit(
                Event(
                    EventKind.LEADER_ELECTED,
                    "clusterwatch",
                    "clusterwatch",
                    time.time(),
                    message + "; it resumed from the shared store and looks at every check now",
                    node=self.lease.node,
                    details={
                        "epoch": epoch,
                        "member": self.lease.member,
                        "since": self.lease.held.acquired_at if self.lease.held else None,
                    },
                )
            )
        for name in list(self.scheduler.jobs):
            self.scheduler.run_soon(name, 0.0)

    async def _stand_down(self, why: str | None) -> None:
        """Stop recording, healing and alerting at once; probing goes on (a follower stays informed)."""
        was = self.leading
        self.leading = False
        if why is not None and not was:
            return  # already stood down: a renewal that failed after the clock had said so
        hung = self._renewal is not None and not self._renewal.done()  # a cut network: the renewal hangs
        store_away = self.lease is not None and (self.lease.last_error is not None or hung)
        if was and why is not None and store_away and self.alerter is not None:
            # Nobody can hold a lease while the shared store is away: this monitor, the last leader,
            # keeps telling people from a local outbox (remediation stays paused: nobody may act).
            await self._go_offline(self.alerter)
            message = (
                f"{self.config.ha.node_name} stood down as the leader: {why}; remediation paused, alerts go out "
                f"from the local outbox at {self.config.store.path} until the shared store is back"
            )
        else:
            await self._stop_alerting()
            message = f"{self.config.ha.node_name} stood down as the leader: {why}; remediation and alerts paused here"
        if was and why is not None:
            self.ha_log.append({"at": time.time(), "event": "stood_down", "message": message})
            log.warning("%s", message)

    async def _stop_alerting(self) -> None:
        self.pipeline.listeners = []
        tasks, self._alert_tasks = self._alert_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        alerter, self.alerter = self.alerter, None
        if alerter is not None:
            with contextlib.suppress(Exception):
                await alerter.stop()

    async def _go_offline(self, alerter: Alerter) -> None:
        """The alerter goes on, its outbox now a local SQLite file; what it tells is recorded there."""
        assert self.lease is not None
        self.pipeline.listeners = [alerter.on_event]  # at once: no event may fall between two outboxes
        self._away_since = time.monotonic()
        self._held_said = False
        # Not on the monitor's own executor: its threads may be waiting for the store that is away.
        self._offline = await asyncio.to_thread(partial(Outbox, self.config.store.path, member=self.lease.member))
        alerter.go_offline(self._offline, self.lease.member, self._store_away)
        alerter.adopt(self._open_incidents())

    async def _store_away(self) -> bool:
        """Asked before each send from the local outbox: a store that answers now means the leader
        (this monitor or another) tells, and this monitor's view from when it was cut off is stale.

        A considered judgement, not one ping: a request in flight when a cut network comes back fails at
        once ("server closed the connection unexpectedly": the link's return drops the connect that waited
        for it), and so did a pooled ping waiting on the pool's connect, or a ping queued behind renewals
        hanging in the cut; the stale notice then went out on the link that had just come back. So the
        store is asked on a connection opened for the question, in a thread of its own; an ask that
        fails at once proves nothing and is asked again. The store is away when an ask goes unanswered
        for ASK_FOR_S (a cut link, a hung server) or fails at once ASKS times (refused), and no renewal
        has been answered since this monitor went offline."""
        assert self.lease is not None
        failed: list[str] = []
        while len(failed) < ASKS:
            if self._answered_since_offline():
                return False  # the lease loop hands the local outbox over at its next tick
            try:
                await asyncio.wait_for(_in_thread(self.lease.store.ping), ASK_FOR_S)
            except TimeoutError:
                failed.append(f"no answer within {ASK_FOR_S:g}s")
                break
            except Exception as exc:  # at once: refused, or dropped as a link came back; ask again
                failed.append(_said(exc))
                continue
            if failed and not self._held_said:
                self._held_said = True
                log.info(
                    "the shared store answers again (asked on a new connection after: %s): the local outbox holds "
                    "its notices for the leader",
                    "; ".join(failed),
                )
            return False
        if self._answered_since_offline():
            return False
        log.debug("the shared store is away (%s): telling from the local outbox", "; ".join(failed))
        return True

    def _answered_since_offline(self) -> bool:
        """A renewal got the store's answer after this monitor began telling from its local outbox."""
        assert self.lease is not None
        return self.lease.answered is not None and self.lease.answered > self._away_since

    async def _back_online(self) -> None:
        """The shared store answers again: the local outbox's leftovers (what it told, what it has not
        delivered yet) go to the shared store, where the leader carries on without telling twice."""
        local = self._offline
        assert local is not None
        await self._stop_alerting()
        await self._hand_over(local)
        self._offline = None
        with contextlib.suppress(Exception):
            await self.blocking(local.close)

    async def _hand_over(self, local: Outbox | None) -> None:
        assert self.outbox is not None
        told = await self.blocking(local.hand_over) if local is not None else []
        told = (self._handed or []) + told
        try:
            await self.blocking(self.outbox.take_over, told)
        except db_errors() as exc:
            self._handed = told  # kept for the next renewal that reaches the store
            log.error("could not hand the local outbox to the shared store (%s); trying again", exc)
            return
        self._handed = None
        log.warning(
            "handed the local outbox to the shared store: %d notice(s) told while it was away; what it had not "
            "delivered is left to the leader",
            len(told),
        )

    def _sighup(self) -> None:
        self.supervisor.spawn("reload", self.reload("SIGHUP"), oneshot=True)

    async def _watch(self) -> None:
        """Config file changes, a person's commands, systemd's watchdog, our own lag and health."""
        last_watchdog = 0.0
        self._stats_at, self._stats_started = time.monotonic(), 0
        while not self.stop_event.is_set():
            await asyncio.sleep(min(WATCH_EVERY, self.notifier.watchdog_interval or WATCH_EVERY))
            now = time.monotonic()
            if stuck := self.health.stuck():
                self.supervisor.fail(f"the monitor is stuck ({stuck}); exiting so that the service manager restarts it")
            if (
                self.notifier.watchdog_interval
                and now - last_watchdog >= self.notifier.watchdog_interval * 0.9
                and self.health.alive()
            ):
                self.notifier.watchdog()  # systemd restarts a monitor that stops saying this
                last_watchdog = now
            if now - self._stats_at >= STATS_EVERY:
                self._stats(now)
            stamp = self._stamp()
            if stamp is not None and stamp != self._file_stamp:
                self._file_stamp = stamp
                await self.reload("config file changed")
            if not self.acting():
                continue  # a person's commands are for the leader
            try:
                commands = await self.blocking(self.store.pending_commands)
            except Exception as exc:
                log.error("reading commands failed: %s", exc)
                commands = []
            for command in commands:
                if command["kind"] == "heal_reset":
                    try:
                        found = await self.healer.reset(command["target"])
                    except db_errors() as exc:
                        log.error("heal reset %s failed (%s): run it again", command["target"], exc)
                        continue
                    log.info("heal reset %s: %s", command["target"], "done" if found else "no such restart budget")

    def _stats(self, now: float) -> None:
        """A line for operators (and the benchmarks); and an event when the loop falls behind."""
        p50, p99 = self.scheduler.lag_percentiles()
        self.scheduler.lags.clear()
        probes = self.scheduler.started - self._stats_started
        rate = probes / (now - self._stats_at)
        self._stats_at, self._stats_started = now, self.scheduler.started
        store = self.store.health()
        log.info(
            "stats: %.1f probes/s, scheduling lag p50 %.0f ms p99 %.0f ms, %d skipped",
            rate,
            p50 * 1000,
            p99 * 1000,
            self.scheduler.skipped,
            extra={
                "probes_per_s": round(rate, 2),
                "lag_p50_ms": round(p50 * 1000, 1),
                "lag_p99_ms": round(p99 * 1000, 1),
                "skipped": self.scheduler.skipped,
                "entities": len(self.states.entities),
                "store_written": store.get("written"),
                "store_dropped": store.get("dropped"),
                **memory.pauses.read(),
            },
        )
        if p99 > LAG_ALERT:
            self.pipeline.emit(
                Event(
                    EventKind.MONITOR_LAGGING,
                    "clusterwatch",
                    "clusterwatch",
                    time.time(),
                    f"the monitor is falling behind: checks start {p99:.1f}s late (p99); lower the "
                    "number of checks, raise intervals or concurrency",
                    new=Status.WARNING,
                    details={"lag_p99_s": round(p99, 3), "probes_per_s": round(rate, 2)},
                )
            )

    async def once(self) -> Status:
        """One round of everything (for cron); state persists in the store between rounds."""
        self.once_mode = True
        try:
            await self.start()
            semaphore = asyncio.Semaphore(self.config.concurrency)

            async def one(item: Item) -> None:
                async with semaphore:
                    self.pipeline.handle(item, await self.pipeline.probe(item))

            local = [i for i in self.plan.items.values() if not ((isinstance(i, Node) and i.agent) or self.agent_of(i))]
            await asyncio.gather(*(one(item) for item in local))
            await self.healer.reconcile()
            await self.healer.drain(self.plan.longest_heal() * 4 + 5)
            worst = Status.worst([e.last.status for e in self.states.entities.values() if e.last])
        finally:
            await self.close()
        return worst
