"""The healer: a reconciler that restarts what is hard critical, safely, within a budget.

Level-triggered, as Kubernetes controllers are: at start and on a steady tick it compares each
target with what it should be and acts while a target is hard critical (seen so in this run),
its budget allows, nothing is in flight on it, and it is neither flapping nor held down by a
failing root. Events only make it look sooner. Attempts and budgets live in the store (written
before an action runs), so a monitor that was killed, restarted or took over carries on: an
attempt cut short is recorded once, and the target is looked at before anything runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from clusterwatch.config.schema import CheckBase, Config, RestartPolicy
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState, StateMachine
from clusterwatch.heal.actions import Outcome, perform
from clusterwatch.model import Observation, Status, one_line
from clusterwatch.redact import Redactor
from clusterwatch.store.db import Fenced
from clusterwatch.store.db import errors as db_errors
from clusterwatch.store.healing import INTERRUPTED, Attempt, BudgetRow, HealLedger

log = logging.getLogger("clusterwatch.healer")
T = TypeVar("T")
VERIFY_EVERY = 1.0
ROOT_GRACE = 1.0
RECONCILE_EVERY = 1.0
LOOK_AFTER_CRASH = 10.0  # at least this long to look at a target whose restart a crash cut short


def used(budget: BudgetRow, window: float, now: float) -> int:
    """Attempts within the window; one stamped in the future (the clock was set back) still counts."""
    return sum(1 for started in budget.attempts if now - started <= window)


class Healer:
    def __init__(
        self,
        config: Config,
        states: StateMachine,
        ledger: HealLedger,
        *,
        reprobe: Callable[[CheckBase], Awaitable[list[Observation]]],
        emit: Callable[[Event], None],
        redactor: Callable[[], Redactor] = Redactor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.states = states
        self.ledger = ledger
        self._reprobe, self._emit, self._redactor, self._clock = reprobe, emit, redactor, clock
        self.budgets: dict[str, BudgetRow] = {}  # by stored target (see _key)
        self.busy: dict[str, asyncio.Task[None]] = {}
        self.paused: dict[str, str] = {}  # stored target -> why a person stopped it on purpose
        self._told_paused: set[str] = set()
        self._dry_run_done: set[str] = set()  # stored targets a dry run has spoken for, until they recover
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-heal-ledger")
        # A group of monitors: only the one that holds the leader lease acts (the ledger is fenced too).
        self.acting: Callable[[], bool] = lambda: True
        # How an action runs: here, over SSH, or (a check on an agent's node) by that node's agent.
        self.perform: Callable[[RestartPolicy, CheckBase, Config], Awaitable[Outcome]] = perform

    def update_config(self, config: Config) -> None:
        self.config = config

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The ledger's SQLite calls, off the event loop in a thread of their own."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def key(self, target: str) -> str:
        return self._key(target)

    def _key(self, target: str) -> str:
        """A target as the store knows it: a secret in a command's argv never reaches the disk."""
        return self._redactor().text(target)

    def _policies(self) -> list[tuple[CheckBase, RestartPolicy]]:
        return [(c, c.restart) for c in self.config.checks if c.restart is not None]

    def _check(self, name: str) -> CheckBase | None:
        return next((c for c in self.config.checks if c.name == name), None)

    # --- start: carry on where the last monitor stopped -------------------------------------------------

    async def start(self) -> None:
        """Budgets from the store; attempts a crash cut short are looked at before anything else runs."""
        await self._db(self.ledger.open)
        cut = await self._db(self.ledger.take_interrupted, self._clock())
        windows = {self._key(policy.target): policy.window for _, policy in self._policies()}
        self.budgets = await self._db(self.ledger.budgets, windows, self._clock())
        self.paused = await self._db(self.ledger.paused, self._clock())
        for attempt in cut:
            check = self._check(attempt.check)
            if check is None or check.restart is None or check.restart.target in self.busy:
                continue
            log.warning(
                "restart of %s (attempt %d) was cut short when the monitor stopped: looking at %s before acting again",
                attempt.target,
                attempt.attempt,
                attempt.entity,
            )
            self._spawn(check.restart.target, self._after_crash(check, check.restart, attempt))

    async def _after_crash(self, check: CheckBase, policy: RestartPolicy, attempt: Attempt) -> None:
        """The cut attempt may still be taking effect: give it the time it would have had, probing."""
        longest = policy.timeout + policy.verify_timeout
        left = attempt.started + longest - self._clock()  # a clock set back makes this huge: bounded
        look = min(max(left, min(policy.verify_timeout, LOOK_AFTER_CRASH)), longest)
        if await self._verify(check, attempt.entity, look):
            budget = self.budgets.get(self._key(policy.target))
            if budget is not None:
                budget.failed_streak = 0
            await self._db(
                self.ledger.finish,
                attempt.id,
                finished=self._clock(),
                outcome="succeeded",
                detail="cut short when the monitor stopped; healthy again after the monitor's restart",
            )
            state = self.states.entities.get(attempt.entity)
            self._emit(
                Event(
                    EventKind.REMEDIATION_SUCCEEDED,
                    attempt.entity,
                    check.name,
                    self._clock(),
                    f"{attempt.target} healthy again after the restart (attempt {attempt.attempt}) that was cut "
                    "short when the monitor stopped",
                    node=check.node,
                    incident=state.incident if state else None,
                    new=Status.OK,
                    details={"target": attempt.target, "attempt": attempt.attempt, "interrupted": True},
                )
            )

    # --- the reconciler -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reconcile()
            except db_errors() as exc:  # a busy or full disk: look again, the state is still in the store
                log.error("healer: the store did not answer (%s); looking again in %gs", exc, RECONCILE_EVERY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONCILE_EVERY)

    async def reconcile(self, only: str | None = None) -> None:
        """Compare every target (or one check's) with what it should be; act where it differs."""
        if not self.acting():
            return
        now = self._clock()
        if only is None:
            self.paused = await self._db(self.ledger.paused, now)
            self._told_paused &= set(self.paused)
        by_target: dict[str, list[tuple[CheckBase, RestartPolicy]]] = {}
        for check, policy in self._policies():
            by_target.setdefault(self._key(policy.target), []).append((check, policy))
        for key, users in by_target.items():
            if only is not None and all(check.name != only for check, _ in users):
                continue
            budget = self.budgets.get(key)
            if budget is not None:  # one target, one budget: its recovery is judged over every check using it
                states = [s for check, _ in users for s in self.states.entities_of(check.name)]
                await self._recovery(users[0][1], budget, states, now)
            for check, policy in users:
                state = next(
                    (
                        e
                        for e in self.states.entities_of(check.name)
                        if self._wants_action(e) and self._can_help(check, policy, e.name)
                    ),
                    None,
                )
                if state is not None:
                    self.consider(check, state, state.last.message if state.last else "critical")
                    break

    async def _recovery(self, policy: RestartPolicy, budget: BudgetRow, states: list[EntityState], now: float) -> None:
        """A target healthy for `stable_for` gets its budget back (and may be restarted again after it
        gave up); a blip is no recovery."""
        down = any(s.down for s in states)
        key = budget.target
        changed = False
        if not down and states and budget.recovered_at is None and (budget.attempts or budget.exhausted):
            budget.recovered_at, budget.failed_streak, changed = now, 0, True
            self._dry_run_done.discard(key)
        elif budget.recovered_at is not None and (down or now - budget.recovered_at >= policy.stable_for):
            if now - budget.recovered_at >= policy.stable_for:
                if budget.attempts or budget.exhausted:
                    log.info("restart budget of %s back: healthy for %gs", policy.target, policy.stable_for)
                budget.counts_from, budget.attempts, budget.exhausted = now, [], None
            budget.recovered_at, changed = None, True
        if changed:
            await self._db(self.ledger.save_budget, budget)

    def on_event(self, event: Event) -> None:
        """Events only make the reconciler look sooner: at the check, and at what depends on it."""
        if event.kind not in (
            EventKind.STATE_CHANGE,
            EventKind.INCIDENT_OPENED,
            EventKind.INCIDENT_CLOSED,
            EventKind.FLAPPING_STOPPED,
        ):
            return
        names = {event.check}
        if event.kind is EventKind.STATE_CHANGE and event.new is Status.OK:
            names |= {c.name for c, _ in self._policies() if event.entity in self.states.rules(c.name).roots}
        for name in names:
            if self._check(name) is not None:
                self._spawn(f"reconcile:{name}", self.reconcile(only=name))

    def consider(self, check: CheckBase, state: EntityState, reason: str) -> None:
        policy = check.restart
        if policy is None or policy.target in self.busy:
            return  # never two actions at once on one target
        if not self._may_act(check, policy, state):
            return
        key = self._key(policy.target)
        budget = self.budgets.setdefault(key, BudgetRow(key))
        if budget.exhausted is not None or key in self._dry_run_done:
            return
        self._spawn(policy.target, self._remediate(check, policy, state.name, reason))

    def _may_act(self, check: CheckBase, policy: RestartPolicy, state: EntityState | None) -> bool:
        """Everything that must hold for an action, asked again right before each one runs."""
        if state is None or not self.config.healing.enabled or self._check(check.name) is None or not self.acting():
            return False
        if not self._wants_action(state) or not self._can_help(check, policy, state.name):
            return False
        key = self._key(policy.target)
        if key in self.paused:
            if key not in self._told_paused:
                self._told_paused.add(key)
                log.info("not restarting %s for %s: %s", policy.target, state.name, self.paused[key])
            return False
        return True

    @staticmethod
    def _can_help(check: CheckBase, policy: RestartPolicy, entity: str) -> bool:
        """A container is restarted through the Docker daemon: when the daemon itself does not answer
        (the check's own entity), restarting a container cannot help."""
        return not (policy.action == "docker" and entity == check.name)

    @staticmethod
    def _wants_action(state: EntityState) -> bool:
        """Hard critical, seen so by this process (not only restored from the store), its own failure."""
        return state.hard is Status.CRITICAL and state.seen and not state.flapping and not state.affected_by

    def _spawn(self, key: str, work: Awaitable[None]) -> None:
        if key in self.busy:
            close = getattr(work, "close", None)
            if close is not None:
                close()
            return
        task = asyncio.ensure_future(self._guarded(key, work))
        self.busy[key] = task
        task.add_done_callback(lambda _t, key=key: self.busy.pop(key, None))

    async def _guarded(self, key: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Fenced as exc:  # the lease went to another monitor meanwhile: it acts now, not this one
            log.warning("healer: not acting on %s: %s", key, exc)
        except db_errors() as exc:  # the store is away: nothing was done; the next look starts over
            log.error("healer: %s: the store did not answer (%s)", key, exc)
        except Exception:  # the healer's own bug: logged, and the target is free for the next look
            log.exception("healer: %s failed unexpectedly", key)

    async def reset(self, name: str) -> bool:
        """A person's reset: by target (`supervisor:dask-worker`) or by check name."""
        check = self._check(name)
        target = check.restart.target if check and check.restart else name
        budget = self.budgets.get(self._key(target))
        if budget is None:
            return False
        log.info("restart budget of %s reset by a person", target)
        budget.counts_from, budget.attempts, budget.exhausted, budget.recovered_at = self._clock(), [], None, None
        budget.failed_streak = 0
        await self._db(self.ledger.save_budget, budget)
        check = check or next((c for c, p in self._policies() if p.target == target), None)
        if check is not None:
            await self.reconcile(only=check.name)
        return True

    def record_elsewhere(
        self,
        check: CheckBase,
        entity: str,
        *,
        started: float,
        finished: float,
        succeeded: bool,
        attempt: int,
        detail: str,
        by: str,
    ) -> None:
        """A restart done without this monitor (a node's agent while it was cut off): in the ledger and
        in the budget, so what is left of the budget is what both did not use."""
        policy = check.restart
        assert policy is not None
        key = self._key(policy.target)
        budget = self.budgets.setdefault(key, BudgetRow(key))
        budget.attempts = sorted([*budget.attempts, started])
        budget.failed_streak = 0 if succeeded else budget.failed_streak + 1
        budget.last_finished = max(finished, budget.last_finished or finished)
        row = self._redactor().data(
            {
                "started": started,
                "finished": finished,
                "check": check.name,
                "entity": entity,
                "target": policy.target,
                "action": policy.action,
                "reason": f"done by {by} while it was cut off from the monitor",
                "attempt": attempt,
                "outcome": "succeeded" if succeeded else "failed",
                "detail": one_line(detail),
                "monitor": by,
            }
        )
        self._spawn(f"record:{by}:{started}", self._db(self.ledger.record, row))

    # --- one remediation episode ----------------------------------------------------------------------------

    async def _remediate(self, check: CheckBase, policy: RestartPolicy, entity: str, reason: str) -> None:
        target = policy.target
        key = self._key(target)
        budget = self.budgets.setdefault(key, BudgetRow(key))
        # A dependant may notice a failure a moment before its root does: give the root that moment.
        grace = max(policy.grace, ROOT_GRACE if self.states.rules(check.name).roots else 0.0)
        while True:
            if not self._may_act(check, policy, self.states.entities.get(entity)):
                return
            now = self._clock()
            if used(budget, policy.window, now) >= policy.max_attempts:
                await self._exhausted(check, policy, budget, entity, now)
                return
            delay = max(grace, self._backoff(policy, budget, now))
            if delay > 0:
                await asyncio.sleep(delay)
                # Anything may have changed while waiting: a person's pause, a reload, a recovery, the root.
                if not self._may_act(check, policy, self.states.entities.get(entity)):
                    return
                root = self.states.root_failing(check.name, entity, Status.CRITICAL)
                if root is not None:
                    log.info("not restarting %s for %s: its root %s is down (heal it first)", target, entity, root)
                    return
            grace = 0.0
            attempt = used(budget, policy.window, self._clock()) + 1
            if await self._attempt(check, policy, budget, entity, attempt, reason):
                return

    @staticmethod
    def _backoff(policy: RestartPolicy, budget: BudgetRow, now: float) -> float:
        """Seconds still to wait after attempts that did not help (from the store: it survives a restart)."""
        if not budget.failed_streak or budget.last_finished is None:
            return 0.0
        wait = policy.backoff * 2 ** (budget.failed_streak - 1)
        return min(max(0.0, budget.last_finished + wait - now), wait)  # a clock set back never stretches it

    async def _exhausted(
        self, check: CheckBase, policy: RestartPolicy, budget: BudgetRow, entity: str, now: float
    ) -> None:
        if budget.exhausted is not None:
            return  # said once: not again until the budget is back
        budget.exhausted = now
        await self._db(self.ledger.save_budget, budget)
        state = self.states.entities.get(entity)
        self._emit(
            Event(
                EventKind.REMEDIATION_EXHAUSTED,
                entity,
                check.name,
                now,
                f"gave up on {policy.target} after {policy.max_attempts} restart(s) within "
                f"{policy.window:g}s: {entity} is still critical — needs a person "
                f"(`clusterwatch heal reset {check.name}` once fixed)",
                node=check.node,
                new=Status.CRITICAL,
                incident=state.incident if state else None,
                details={"target": policy.target, "attempts": policy.max_attempts},
            )
        )

    async def _attempt(
        self, check: CheckBase, policy: RestartPolicy, budget: BudgetRow, entity: str, attempt: int, reason: str
    ) -> bool:
        target = policy.target
        dry_run = policy.dry_run or self.config.healing.dry_run
        state = self.states.entities.get(entity)
        incident = state.incident if state else None
        started = self._clock()
        row = {
            "started": started,
            "check": check.name,
            "entity": entity,
            "target": target,
            "action": policy.action,
            "reason": reason,
            "attempt": attempt,
            "dry_run": 1 if dry_run else 0,
        }
        row = self._redactor().data(row)
        attempt_id = await self._db(self.ledger.begin, row)  # committed before anything runs
        if not self.acting():  # the lease went while the attempt was written (a pause, a cut): not run
            await self._db(
                self.ledger.finish,
                attempt_id,
                finished=self._clock(),
                outcome=INTERRUPTED,
                detail="not run: this monitor no longer held the leader lease",
            )
            return False
        if not dry_run:
            budget.attempts.append(started)
        self._emit(
            Event(
                EventKind.REMEDIATION_STARTED,
                entity,
                check.name,
                started,
                f"{'would restart' if dry_run else 'restarting'} {target} (attempt {attempt} of "
                f"{policy.max_attempts}) because {entity}: {reason}",
                node=check.node,
                incident=incident,
                details={"target": target, "attempt": attempt},
            )
        )
        outcome, healthy = Outcome(False, "the healer failed while running it (logged)"), False
        try:
            if dry_run:
                outcome = Outcome(True, f"dry run: would run {policy.action} on {target}")
            else:
                outcome = await self.perform(policy, check, self.config)
                healthy = outcome.ok and await self._verify(check, entity, policy.verify_timeout)
        except asyncio.CancelledError:
            raise  # left `running`: the next monitor records it as interrupted and looks before acting
        except Exception:
            log.exception("healer: restarting %s failed unexpectedly", target)
        finished = self._clock()
        result = "dry_run" if dry_run else "succeeded" if healthy else "failed"
        if not dry_run:
            budget.failed_streak = 0 if healthy else budget.failed_streak + 1
            budget.last_finished = finished
        detail = outcome.detail if outcome.ok else f"action failed: {outcome.detail}"
        if outcome.ok and not healthy and not dry_run:
            detail += f"; still not healthy after {policy.verify_timeout:g}s"
        detail = one_line(self._redactor().text(detail))
        for wait in (1.0, 2.0, 0.0):
            try:
                await self._db(self.ledger.finish, attempt_id, finished=finished, outcome=result, detail=detail)
                break
            except db_errors() as exc:  # the outcome still reaches the events, the log and the alerts
                log.error("healer: could not record the outcome of attempt %d on %s: %s", attempt, target, exc)
                await asyncio.sleep(wait)
        if dry_run:
            log.warning("dry run: would restart %s for %s", target, entity)
            self._dry_run_done.add(self._key(target))  # a dry run acts once per episode: quiet until it recovers
            return True
        message = (
            f"{target} restarted by {policy.action}; {entity} healthy again after {finished - started:.1f}s"
            if healthy
            else f"restart of {target} (attempt {attempt}) did not help: {detail}"
        )
        self._emit(
            Event(
                EventKind.REMEDIATION_SUCCEEDED if healthy else EventKind.REMEDIATION_FAILED,
                entity,
                check.name,
                finished,
                message,
                node=check.node,
                incident=incident,
                new=Status.OK if healthy else Status.CRITICAL,
                details={"target": target, "attempt": attempt, "duration_s": round(finished - started, 3)},
            )
        )
        return healthy

    async def _verify(self, check: CheckBase, entity: str, timeout: float) -> bool:
        """Re-probe with the check's own probe until the entity is hard ok again, or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            await self._reprobe(check)
            state = self.states.entities.get(entity)
            if state is not None and state.hard is Status.OK:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(VERIFY_EVERY, left))

    # --- life cycle ----------------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Until nothing is in flight (a look may start an attempt), or time runs out."""
        deadline = time.monotonic() + timeout
        while self.busy and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self.busy.values(), return_exceptions=True), left)

    async def stop(self) -> None:
        for task in list(self.busy.values()):
            task.cancel()
        await self.drain(1.0)
        with contextlib.suppress(Exception):
            await self._db(self.ledger.close)
        self._executor.shutdown(wait=False)
