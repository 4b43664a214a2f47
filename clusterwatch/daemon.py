"""`clusterwatch run`: the scheduler feeding probes into the state machine, and its events into the
store and the healer; reloads, signals and systemd's notify protocol around it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from typing import Any

import psutil

from clusterwatch.alerting.alerter import Alerter
from clusterwatch.alerting.outbox import Outbox
from clusterwatch.config.loader import BUILTIN, ConfigError, LoadedConfig, load_config
from clusterwatch.config.schema import CheckBase, Config, Node
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.once import run_probe
from clusterwatch.engine.scheduler import Job, Scheduler
from clusterwatch.engine.state import EntityState, Rules, StateMachine
from clusterwatch.heal.healer import Healer
from clusterwatch.model import Observation, Status
from clusterwatch.probes.base import ProbeContext, new_http_session
from clusterwatch.sdnotify import Notifier
from clusterwatch.store.sqlite import Store

log = logging.getLogger("clusterwatch.engine")
events_log = logging.getLogger("clusterwatch.events")
Item = CheckBase | Node
WATCH_EVERY = 2.0
SPARK_POINTS = 40
STATS_EVERY = float(os.environ.get("CLUSTERWATCH_STATS_EVERY", "30"))
LAG_ALERT = 2.0  # seconds of scheduling lag (p99 over a stats window) that count as falling behind
STOP_BUDGET = 4.5  # SIGTERM to exit, seconds


# How loud each kind of event is in the log; state changes depend on where they go.
LEVELS = {
    EventKind.INCIDENT_OPENED: logging.ERROR,
    EventKind.REMEDIATION_EXHAUSTED: logging.ERROR,
    EventKind.REMEDIATION_FAILED: logging.WARNING,
    EventKind.REMEDIATION_STARTED: logging.WARNING,
    EventKind.FLAPPING_STARTED: logging.WARNING,
    EventKind.MONITOR_LAGGING: logging.WARNING,
}


class Monitor:
    def __init__(self, loaded: LoadedConfig, config_arg: str | None, *, notifier: Notifier | None = None) -> None:
        self.loaded = loaded
        self.config_arg = config_arg
        self.config: Config = loaded.config
        self.notifier = notifier or Notifier()
        self.states = StateMachine(self._rules, flap_high=self.config.flapping.high, flap_low=self.config.flapping.low)
        self.store = Store(self.config.store)
        self.stop_event = asyncio.Event()
        self.items: dict[str, Item] = {}
        self.specs: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}
        self._ctx: ProbeContext | None = None
        self._file_stamp = self._stamp()
        self.healer = Healer(self.config, self.states, reprobe=self.reprobe, emit=self.emit, record=self._record_action)
        self.scheduler = Scheduler(self._run_job, self.config.concurrency)
        self.outbox: Outbox | None = None
        self.alerter: Alerter | None = None
        self.once_mode = False
        # For the live view: a change counter, each entity's last change, recent latencies.
        self.version = 0
        self.versions: dict[str, int] = {}
        self.latencies: dict[str, deque[float | None]] = {}
        self.started_at = time.time()
        self.web: Any = None

    # --- configuration -------------------------------------------------------------------------

    def _index(self, config: Config) -> tuple[dict[str, Item], dict[str, Any]]:
        items: dict[str, Item] = {c.name: c for c in config.checks}
        items.update({n.name: n for n in config.nodes})
        specs = {name: self._spec(item, config) for name, item in items.items()}
        return items, specs

    @staticmethod
    def _spec(item: Item, config: Config) -> Any:
        """Everything that decides how a check runs: a change restarts it, anything else keeps its state."""
        spec = item.model_dump(mode="json")
        spec["_effective"] = [config.interval, config.timeout, config.fall, config.rise]
        if isinstance(item, Node):
            spec["_node"] = [config.ssh.model_dump(mode="json"), config.node_thresholds.model_dump(mode="json")]
        elif getattr(item, "kind", "") == "node":
            spec["_node"] = config.thresholds.model_dump(mode="json")
        return spec

    def _rules(self, name: str) -> Rules:
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

    def retry_interval(self, item: Item) -> float:
        """How soon to look again after a soft failure, so `fall` is reached in seconds, not intervals."""
        if item.retry_interval is not None:
            return min(item.retry_interval, self.interval(item))
        if self.config.retry_interval is not None:
            return min(self.config.retry_interval, self.interval(item))
        return min(self.interval(item), max(0.25, self.interval(item) / 4))

    def _stamp(self) -> tuple[float, int] | None:
        if self.loaded.source == BUILTIN:
            return None
        try:
            st = os.stat(self.loaded.source)
        except OSError:
            return None
        return st.st_mtime, st.st_size

    def reload(self, why: str) -> bool:
        """A broken new config is rejected with its error logged; the old one keeps running."""
        try:
            loaded = load_config(self.config_arg)
        except ConfigError as exc:
            log.error("config reload (%s) rejected, still running the previous config:\n%s", why, exc)
            return False
        self._file_stamp = self._stamp()
        items, specs = self._index(loaded.config)
        removed = [name for name in self.items if name not in items]
        changed = [name for name in items if name in self.specs and specs[name] != self.specs[name]]
        added = [name for name in items if name not in self.items]
        self.loaded, self.config = loaded, loaded.config
        self.items, self.specs = items, specs
        if self._ctx is not None:
            self._ctx.config = self.config
        self.healer.update_config(self.config)
        if self.alerter is not None:
            self.alerter.configure(self.config.alerts, loaded.alert_channels())
        self.states.flap_high, self.states.flap_low = self.config.flapping.high, self.config.flapping.low
        for name in removed + changed:
            self.scheduler.remove(name)
            gone = [e.name for e in self.states.entities_of(name)]
            self.states.forget_check(name)
            self.store.forget(gone)
        for name in changed + added:
            self.scheduler.add(name, items[name], self.interval(items[name]))
        log.info(
            "config reloaded (%s): %d changed, %d added, %d removed, %d unchanged",
            why,
            len(changed),
            len(added),
            len(removed),
            len(items) - len(changed) - len(added),
        )
        return True

    # --- the pipeline ----------------------------------------------------------------------------

    async def probe(self, item: Item) -> list[Observation]:
        assert self._ctx is not None
        observations = await run_probe(item, self._ctx)
        redactor = self.loaded.redactor
        for obs in observations:
            obs.message = redactor.text(obs.message)
            obs.target = redactor.text(obs.target)
            if obs.details:
                obs.details = redactor.data(obs.details)
        return observations

    def handle(self, item: Item, observations: list[Observation]) -> None:
        now = time.time()
        seen = set()
        for obs in observations:
            seen.add(obs.name)
            events = self.states.process(obs, now)
            state = self.states.entities[obs.name]
            self.kinds[obs.name] = obs.kind
            self.version += 1
            self.versions[obs.name] = self.version
            self.latencies.setdefault(obs.name, deque(maxlen=SPARK_POINTS)).append(obs.latency_ms)
            self.store.observation(obs, now)
            self.store.entity(state, obs.kind)
            for event in events:
                self.emit(event)
        self._vanished(item.name, seen, now)

    def _vanished(self, check: str, seen: set[str], now: float) -> None:
        """Entities a check no longer reports (a worker scaled away) leave; an open incident closes."""
        for state in self.states.entities_of(check):
            if state.name in seen:
                continue
            if state.incident is not None:
                self.emit(
                    Event(
                        EventKind.INCIDENT_CLOSED,
                        state.name,
                        check,
                        now,
                        f"{state.name} is no longer reported by {check}",
                        node=state.node,
                        new=Status.OK,
                        incident=state.incident,
                        details={"duration_s": round(now - (state.incident_started or now), 3), "vanished": True},
                    )
                )
            self.states.forget(state.name)
            self.store.forget([state.name])
            self.latencies.pop(state.name, None)
            self.version += 1
            self.versions[state.name] = self.version

    def _record_action(self, row: dict[str, Any]) -> None:
        """Actions name their argv and output: a `${TOKEN}` in a command must not reach the store."""
        self.store.action(self.loaded.redactor.data(row))

    def emit(self, event: Event) -> None:
        event.message = self.loaded.redactor.text(event.message)
        event.details = self.loaded.redactor.data(event.details)
        level = LEVELS.get(event.kind, logging.INFO)
        if event.kind is EventKind.STATE_CHANGE:
            level = logging.INFO if event.new is Status.OK else logging.WARNING
            if event.affected_by:
                level = logging.INFO
        suffix = f" (affected: {event.affected_by} is down)" if event.affected_by else ""
        change = (
            f" {event.old.value if event.old else 'pending'} -> {event.new.value}"
            if event.kind is EventKind.STATE_CHANGE and event.new
            else ""
        )
        events_log.log(level, "%s %s%s: %s%s", event.kind.value, event.entity, change, event.message, suffix)
        self.store.event(event)
        self.healer.on_event(event)
        if self.alerter is not None:
            self.alerter.on_event(event)

    async def reprobe(self, check: CheckBase) -> list[Observation]:
        observations = await self.probe(check)
        self.handle(check, observations)
        return observations

    async def _run_job(self, job: Job) -> None:
        item = self.items.get(job.key)
        if item is None:
            return
        observations = await self.probe(item)
        if self.items.get(job.key) is not item:
            return  # reloaded away meanwhile
        self.handle(item, observations)
        if any(s.fail_streak and not s.down for s in self.states.entities_of(item.name)):
            self.scheduler.run_soon(item.name, self.retry_interval(item))

    # --- life cycle ------------------------------------------------------------------------------

    def _restore(self) -> int:
        restored = 0
        for row in self.store.load_entities():
            if row["check_name"] not in self.items:
                continue
            hard = Status(row["hard"]) if row["hard"] else None
            state = EntityState(
                name=row["name"],
                check=row["check_name"],
                node=row["node"],
                hard=hard,
                since=row["since"] or time.time(),
                incident=row["incident"],
                incident_started=row["incident_started"],
                flapping=bool(row["flapping"]),
                affected_by=row["affected_by"],
                fail_streak=row["fail_streak"],
                ok_streak=row["ok_streak"],
                last_at=row["updated"] or 0.0,
            )
            for letter in (row["history"] or "").split(","):
                if letter:
                    state.history.append(Status(letter))
            state.last = Observation(
                row["name"],
                row["kind"],
                "",
                Status(row["status"]),
                row["message"] or "",
                row["latency_ms"],
                check=row["check_name"],
                node=row["node"],
                down=bool(row["down"]),
            )
            self.states.restore(state)
            self.kinds[row["name"]] = row["kind"]
            restored += 1
        return restored

    async def start(self) -> None:
        self.store.open()
        self.items, self.specs = self._index(self.config)
        restored = self._restore()
        open_incidents = sum(1 for e in self.states.entities.values() if e.incident)
        self._session = new_http_session(limit=self.config.concurrency)
        self._ctx = ProbeContext(config=self.config, http=self._session)
        self.outbox = Outbox(self.store.path)
        self.alerter = Alerter(
            self.config.alerts,
            self.outbox,
            self.loaded.redactor,
            env_channels=self.loaded.alert_channels(),
            kind_of=lambda e: self.kinds.get(e, ""),
            root_down=lambda check, entity: self.states.root_failing(check, entity, Status.CRITICAL),
        )
        self.alerter.resume(
            [
                (
                    e.incident,
                    e.name,
                    e.check,
                    e.node,
                    self.kinds.get(e.name, ""),
                    e.hard,
                    e.incident_started or time.time(),
                    e.last.message if e.last else "",
                )
                for e in self.states.entities.values()
                if e.incident
            ]
        )
        self.alerter.start(self._session)
        log.info(
            "clusterwatch started: %d checks, %d nodes, config %s, store %s; resumed %d entities, %d open incidents",
            len(self.config.checks),
            len(self.config.nodes),
            self.loaded.source,
            self.store.path,
            restored,
            open_incidents,
        )

    async def close(self) -> None:
        self.notifier.stopping()
        if self.web is not None:
            await self.web.stop()
        await self.scheduler.cancel_running(timeout=1.0)
        await self.healer.stop()
        if self.alerter is not None:
            await self.alerter.stop(drain=self.once_mode)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._session.close(), 1.0)
        if self.outbox is not None:
            self.outbox.close()
        await asyncio.to_thread(self.store.close, 2.0)

    async def run(self) -> int:
        await self.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.reload("SIGHUP"))
        for name, item in self.items.items():
            self.scheduler.add(name, item, self.interval(item))
        log.info(
            "monitoring %d checks; ready %.2fs after the process started",
            len(self.items),
            time.time() - psutil.Process().create_time(),
        )
        background = [
            asyncio.create_task(self.scheduler.run_forever(self.stop_event)),
            asyncio.create_task(self._watch()),
        ]
        from clusterwatch.web.server import start_web

        self.web = await start_web(self)
        self.notifier.ready(f"monitoring {len(self.items)} checks")
        try:
            await self.stop_event.wait()
        finally:
            log.info("stopping")
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.close()
        return 0

    async def _watch(self) -> None:
        """Config file changes, a person's commands, systemd's watchdog, and our own lag."""
        last_watchdog = 0.0
        self._stats_at, self._stats_started = time.monotonic(), 0
        while not self.stop_event.is_set():
            await asyncio.sleep(min(WATCH_EVERY, self.notifier.watchdog_interval or WATCH_EVERY))
            now = time.monotonic()
            if self.notifier.watchdog_interval and now - last_watchdog >= self.notifier.watchdog_interval * 0.9:
                self.notifier.watchdog()
                last_watchdog = now
            if now - self._stats_at >= STATS_EVERY:
                self._stats(now)
            stamp = self._stamp()
            if stamp is not None and stamp != self._file_stamp:
                self._file_stamp = stamp
                self.reload("config file changed")
            try:
                commands = await asyncio.to_thread(self.store.pending_commands)
            except Exception:
                log.exception("reading commands failed")
                commands = []
            for command in commands:
                if command["kind"] == "heal_reset":
                    found = self.healer.reset(command["target"])
                    log.info("heal reset %s: %s", command["target"], "done" if found else "no such restart budget")

    def _stats(self, now: float) -> None:
        """A line for operators (and the benchmarks); and an event when the loop falls behind."""
        p50, p99 = self.scheduler.lag_percentiles()
        self.scheduler.lags.clear()
        probes = self.scheduler.started - self._stats_started
        rate = probes / (now - self._stats_at)
        self._stats_at, self._stats_started = now, self.scheduler.started
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
                "store_written": self.store.written,
            },
        )
        if p99 > LAG_ALERT:
            self.emit(
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
        await self.start()
        try:
            semaphore = asyncio.Semaphore(self.config.concurrency)

            async def one(item: Item) -> None:
                async with semaphore:
                    self.handle(item, await self.probe(item))

            await asyncio.gather(*(one(item) for item in self.items.values()))
            longest = max(
                (c.restart.verify_timeout + c.restart.timeout for c in self.config.checks if c.restart), default=0.0
            )
            await self.healer.drain(longest * 4 + 5)
            worst = Status.worst([e.last.status for e in self.states.entities.values() if e.last])
        finally:
            await self.close()
        return worst
