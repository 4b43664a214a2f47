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
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from clusterwatch.config.schema import DEFAULT_VERIFY, CheckBase, Config, RestartPolicy
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState, StateMachine
from clusterwatch.heal.actions import Outcome, perform
from clusterwatch.heal.evidence import NOTHING_RUNS, Instance
from clusterwatch.model import Observation, Status, one_line
from clusterwatch.redact import Redactor
from clusterwatch.store.db import Fenced
from clusterwatch.store.db import errors as db_errors
from clusterwatch.store.healing import INTERRUPTED, RECOVERED, Attempt, BudgetRow, HealLedger

log = logging.getLogger("clusterwatch.healer")
T = TypeVar("T")
VERIFY_EVERY = 1.0
ROOT_GRACE = 1.0
RECONCILE_EVERY = 1.0
LOOK_AFTER_CRASH = 10.0  # at least this long to look at a target whose restart a crash cut short
EVIDENCE_TIMEOUT = 5.0  # asking which instance serves never holds a restart up longer
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,99}")  # what `{entity}` may become
STARTED_SLACK = 1.0  # an instance started this close before the attempt may be its own (clocks, rounding)
LEARNT_MAX = 900.0  # a learnt verify window is never longer (an attempt cut short by a crash took hours)

Serving = Callable[[RestartPolicy, CheckBase, Config, str, Observation | None], Awaitable[Instance | None]]


async def no_evidence(
    policy: RestartPolicy, check: CheckBase, config: Config, entity: str, last: Observation | None
) -> Instance | None:
    return None


def verify_for(policy: RestartPolicy, budget: BudgetRow | None) -> float:
    """As configured; else learnt: the slowest recent start of this target times two, at least a minute
    (Open WebUI needs 20-25 s on a fast machine, far more on a small one or at its first start)."""
    if policy.verify_timeout is not None:
        return policy.verify_timeout
    slowest = max(budget.start_times, default=0.0) if budget is not None else 0.0
    return min(max(DEFAULT_VERIFY, 2 * slowest), LEARNT_MAX)


def short_name(check: str, entity: str) -> str | None:
    """The entity's own name within its check (`w2` for `dask/w2`); None for the check's own entity, and
    for a name a probed service made up that could pass for an option or a path in an action's argv
    (`--config=x`, `../x`): a restart is filled only with a plain name."""
    prefix = f"{check}/"
    short = entity[len(prefix) :] if entity.startswith(prefix) else None
    if short is None or not _PLAIN.fullmatch(short) or ".." in short:
        return None
    return short


def credited(before: Instance | None, after: Instance | None, made: Instance | None, started: float) -> bool | None:
    """Is what serves now this attempt's result? None: it cannot be told (no evidence for this target)."""
    if after is None:
        return None
    if after.key == NOTHING_RUNS.key:
        return False  # healthy while none of the target runs: something else serves
    if made is not None:
        return after.key == made.key
    if before is not None and after.key == before.key:
        return False  # the instance from before the attempt serves again (resumed, recovered by itself)
    return not (after.started is not None and after.started < started - STARTED_SLACK)


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
        self._started_at: float | None = None  # when start() ran: healing.start_delay counts from there
        self._told_delay = False
        self._told_no_node: set[tuple[str, str]] = set()
        self._told_exhausted: set[tuple[str, str]] = set()  # (entity, stored target) gave-up events said
        self._acting: set[str] = set()  # stored targets of steps running now: a step shared by ladders runs once
        self._dry_run_done: set[str] = set()  # stored targets a dry run has spoken for, until they recover
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clusterwatch-heal-ledger")
        # A group of monitors: only the one that holds the leader lease acts (the ledger is fenced too).
        self.acting: Callable[[], bool] = lambda: True
        # How an action runs: here, over SSH, or (a check on an agent's node) by that node's agent.
        self.perform: Callable[[RestartPolicy, CheckBase, Config], Awaitable[Outcome]] = perform
        # Which instance of a target serves (evidence for crediting an attempt); none where it cannot be told.
        self.serving: Serving = no_evidence

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

    def _check(self, name: str) -> CheckBase | None:
        return next((c for c in self.config.checks if c.name == name), None)

    def _healed(self) -> list[CheckBase]:
        return [c for c in self.config.checks if c.restart]

    def chain(self, check: CheckBase, entity: str) -> list[RestartPolicy] | None:
        """The restart ladder for one entity of a check: `{entity}`/`{node}` filled; None when it cannot
        act on this entity (a per-entity action and the check's own entity, or a node not known)."""
        state = self.states.entities.get(entity)
        last = state.last if state is not None else None
        # The entity's own node; a probe says when it could not tell (a Dask worker on an unconfigured host)
        # rather than let the check's node stand in: `{node}` must never reboot the scheduler's machine.
        node = last.node if last is not None and last.details.get("node_known", True) is not False else None
        if last is None:
            node = check.node
        short = short_name(check.name, entity)
        steps = []
        for step in check.restart or []:
            if step.templated:
                if step.uses("{entity}") and short is None:
                    return None  # a per-entity ladder does not act on the check's own entity
                if step.uses("{node}") and node is None:
                    if (entity, step.target) not in self._told_no_node:
                        self._told_no_node.add((entity, step.target))
                        log.warning("%s: step %s left out: the node %s runs on is not known", check.name,
                                    step.target, entity)
                    continue
                step = step.for_entity(short or "", node or "")
            steps.append(step)
        return steps or None

    def _pattern(self, step: RestartPolicy) -> re.Pattern[str]:
        """The stored targets a per-entity step acts on, one per entity."""
        text = re.escape(self._key(step.target))
        return re.compile(text.replace(re.escape("{entity}"), ".+").replace(re.escape("{node}"), ".+"))

    def _window_of(self) -> Callable[[str], float | None]:
        """A stored target's window: a plain step's own, or a per-entity step's whose pattern it matches."""
        exact: dict[str, float] = {}
        patterns: list[tuple[re.Pattern[str], float]] = []
        for check in self._healed():
            for step in check.restart or []:
                key = self._key(step.target)
                if step.templated:
                    patterns.append((self._pattern(step), step.window))
                else:
                    exact[key] = max(step.window, exact.get(key, 0.0))

        def window(target: str) -> float | None:
            if target in exact:
                return exact[target]
            return next((w for pattern, w in patterns if pattern.fullmatch(target)), None)

        return window

    # --- start: carry on where the last monitor stopped -------------------------------------------------

    async def start(self) -> None:
        """Budgets from the store; attempts a crash cut short are looked at before anything else runs."""
        self._started_at = self._clock()
        await self._db(self.ledger.open)
        cut = await self._db(self.ledger.take_interrupted, self._clock())
        self.budgets = await self._db(self.ledger.budgets, self._window_of(), self._clock())
        self.paused = await self._db(self.ledger.paused, self._clock())
        for attempt in cut:
            check = self._check(attempt.check)
            chain = self.chain(check, attempt.entity) if check is not None else None
            if check is None or chain is None or chain[0].target in self.busy:
                continue
            policy = next((step for step in chain if self._key(step.target) == attempt.target), chain[0])
            log.warning(
                "restart of %s (attempt %d) was cut short when the monitor stopped: looking at %s before acting again",
                attempt.target,
                attempt.attempt,
                attempt.entity,
            )
            self._spawn(chain[0].target, self._after_crash(check, policy, attempt))

    async def _after_crash(self, check: CheckBase, policy: RestartPolicy, attempt: Attempt) -> None:
        """The cut attempt may still be taking effect: give it the time it would have had, probing."""
        budget = self.budgets.get(self._key(policy.target))
        verify = verify_for(policy, budget)
        longest = policy.timeout + verify
        left = attempt.started + longest - self._clock()  # a clock set back makes this huge: bounded
        look = min(max(left, min(verify, LOOK_AFTER_CRASH)), longest)
        if await self._verify(check, attempt.entity, look):
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
        # One ladder, one lock: entities (of one check or several) whose restart is the same are judged together;
        # each step's budget over every entity whose ladder holds it (a node's reboot shared by its workers).
        ladders: dict[str, list[tuple[CheckBase, EntityState, list[RestartPolicy]]]] = {}
        steps: dict[str, tuple[RestartPolicy, list[EntityState], set[str]]] = {}
        for check in self._healed():
            for state in self.states.entities_of(check.name):
                chain = self.chain(check, state.name)
                if chain is None:
                    continue
                ladders.setdefault(self._key(chain[0].target), []).append((check, state, chain))
                for step in chain:
                    _, users, checks = steps.setdefault(self._key(step.target), (step, [], set()))
                    users.append(state)
                    checks.add(check.name)
        for key, (step, users, checks) in steps.items():
            if only is not None and only not in checks:
                continue
            if not any(s.down for s in users):
                self._dry_run_done.discard(key)  # a dry run speaks again in the next episode
            budget = self.budgets.get(key)
            if budget is not None:
                await self._recovery(step, budget, users, now)
        for members in ladders.values():
            if only is not None and all(check.name != only for check, _, _ in members):
                continue
            for check, state, chain in members:
                if self._wants_action(state) and self._can_help(check, chain[0], state.name):
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
                self._told_exhausted = {t for t in self._told_exhausted if t[1] != key}
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
            names |= {c.name for c in self._healed() if event.entity in self.states.rules(c.name).roots}
        for name in names:
            if self._check(name) is not None:
                self._spawn(f"reconcile:{name}", self.reconcile(only=name))

    def consider(self, check: CheckBase, state: EntityState, reason: str) -> None:
        chain = self.chain(check, state.name)
        if chain is None or chain[0].target in self.busy:
            return  # never two actions at once on one target
        if not self._may_act(check, chain, state):
            return
        if self._key(chain[0].target) in self._dry_run_done:
            return
        if not any(self._left(step) for step in chain) and self._said(state.name, chain):
            return  # every step spent and the healer said it gave up: quiet until a budget comes back
        self._spawn(chain[0].target, self._remediate(check, chain, state.name, reason))

    def _said(self, entity: str, chain: list[RestartPolicy]) -> bool:
        """Was this entity told its ladder gave up? Its last step's budget exhausted says so for the entity
        that used it up (also before a restart of the monitor); another entity sharing that step is told too."""
        budget = self.budgets.get(self._key(chain[-1].target))
        if budget is None or budget.exhausted is None:
            return False
        told = {e for e, target in self._told_exhausted if target == budget.target}
        return entity in told or not told

    def _left(self, step: RestartPolicy) -> bool:
        budget = self.budgets.get(self._key(step.target))
        if budget is None:
            return True
        return budget.exhausted is None and used(budget, step.window, self._clock()) < step.max_attempts

    def _may_act(self, check: CheckBase, chain: list[RestartPolicy], state: EntityState | None) -> bool:
        """Everything that must hold for an action, asked again right before each one runs."""
        if state is None or not self.config.healing.enabled or self._check(check.name) is None or not self.acting():
            return False
        if not self._wants_action(state) or not self._can_help(check, chain[0], state.name):
            return False
        if self._starting_up():
            return False
        # A pause names a step's target (as configured, or for this entity): it holds the whole ladder.
        keys = [self._key(step.target) for step in (*chain, *(check.restart or []))]
        key = next((k for k in keys if k in self.paused), None)
        if key is not None:
            if key not in self._told_paused:
                self._told_paused.add(key)
                log.info("not restarting %s for %s: %s", chain[0].target, state.name, self.paused[key])
            return False
        return True

    def _starting_up(self) -> bool:
        """Within healing.start_delay of the monitor's start: what started with it may still be coming up."""
        delay = self.config.healing.start_delay
        if not delay or self._started_at is None or self._clock() - self._started_at >= delay:
            return False
        if not self._told_delay:
            self._told_delay = True
            log.info("not restarting anything for %gs after the start (healing.start_delay)", delay)
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

        def done(_: asyncio.Future[None]) -> None:
            self.busy.pop(key, None)
            if inspect.iscoroutine(work) and inspect.getcoroutinestate(work) == inspect.CORO_CREATED:
                work.close()  # cancelled before it began (a stop right after it was spawned): never to be awaited

        task.add_done_callback(done)

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
        """A person's reset: by target (`supervisor:dask-worker`) or by check name (every step's budget, for
        every entity). True when there was a budget to give back."""
        check = self._check(name)
        if check is not None:
            keys = {self._key(step.target) for step in check.restart or []}
            # every entity's own budget, those of entities no longer seen (a worker taken out of the config) too
            patterns = [self._pattern(step) for step in check.restart or [] if step.templated]
            keys |= {k for k in self.budgets if any(p.fullmatch(k) for p in patterns)}
            for state in self.states.entities_of(check.name):
                keys |= {self._key(step.target) for step in self.chain(check, state.name) or []}
        else:
            keys = {self._key(name)}
        found = [self.budgets[k] for k in sorted(keys) if k in self.budgets]
        for budget in found:
            log.info("restart budget of %s reset by a person", budget.target)
            budget.counts_from, budget.attempts, budget.exhausted, budget.recovered_at = self._clock(), [], None, None
            budget.failed_streak = 0
            await self._db(self.ledger.save_budget, budget)
            self._dry_run_done.discard(budget.target)
        users = [check] if check is not None else [c for c in self._healed() if self._uses_target(c, keys)]
        for user in users:
            await self.reconcile(only=user.name)
        return bool(found)

    def _uses_target(self, check: CheckBase, keys: set[str]) -> bool:
        return any(
            self._key(step.target) in keys
            for state in self.states.entities_of(check.name)
            for step in self.chain(check, state.name) or []
        )

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
        step: int = 0,
    ) -> None:
        """A restart done without this monitor (a node's agent while it was cut off): in the ledger and
        in the budget, so what is left of the budget is what both did not use."""
        chain = self.chain(check, entity)
        if chain is None:  # the config changed since: the agent's own record and its event still tell
            log.warning("restart by %s of %s for %s not counted: no restart of it is configured now", by, check.name,
                        entity)
            return
        policy = chain[min(max(step, 0), len(chain) - 1)]
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

    async def _remediate(self, check: CheckBase, chain: list[RestartPolicy], entity: str, reason: str) -> None:
        # A dependant may notice a failure a moment before its root does: give the root that moment.
        grace = max(chain[0].grace, ROOT_GRACE if self.states.rules(check.name).roots else 0.0)
        while True:
            if not self._may_act(check, chain, self.states.entities.get(entity)):
                return
            now = self._clock()
            picked = await self._step(check, chain, entity, now)
            if picked is None:
                return
            index, policy, budget = picked
            key = self._key(policy.target)
            if key in self._acting:  # another ladder runs this very step (a shared reboot): its attempt counts here
                await asyncio.sleep(RECONCILE_EVERY)
                continue
            self._acting.add(key)
            try:
                delay = max(grace, self._backoff(policy, budget, now))
                if delay > 0:
                    await asyncio.sleep(delay)
                    # Anything may have changed while waiting: a person's pause, a reload, a recovery, the root.
                    if not self._may_act(check, chain, self.states.entities.get(entity)):
                        return
                    root = self.states.root_failing(check.name, entity, Status.CRITICAL)
                    if root is not None:
                        log.info("not restarting %s for %s: its root %s is down", policy.target, entity, root)
                        return
                grace = 0.0
                attempt = used(budget, policy.window, self._clock()) + 1
                if await self._attempt(check, chain, index, budget, entity, attempt, reason):
                    return
            finally:
                self._acting.discard(key)

    async def _step(
        self, check: CheckBase, chain: list[RestartPolicy], entity: str, now: float
    ) -> tuple[int, RestartPolicy, BudgetRow] | None:
        """The ladder's first step with attempts left; a step that used them all without help is passed
        (said once); after the last, the healer gives up and pages."""
        for index, policy in enumerate(chain):
            key = self._key(policy.target)
            budget = self.budgets.setdefault(key, BudgetRow(key))
            if budget.exhausted is None and used(budget, policy.window, now) < policy.max_attempts:
                return index, policy, budget
            if index == len(chain) - 1:
                await self._exhausted(check, chain, budget, entity, now)
            elif budget.exhausted is None:
                budget.exhausted = now
                await self._db(self.ledger.save_budget, budget)
                log.warning(
                    "%s did not help %s after %d attempt(s): escalating to step %d of %d, %s",
                    policy.target,
                    entity,
                    policy.max_attempts,
                    index + 2,
                    len(chain),
                    chain[index + 1].target,
                )
        return None

    @staticmethod
    def _backoff(policy: RestartPolicy, budget: BudgetRow, now: float) -> float:
        """Seconds still to wait after attempts that did not help (from the store: it survives a restart)."""
        if not budget.failed_streak or budget.last_finished is None:
            return 0.0
        wait = policy.backoff * 2 ** (budget.failed_streak - 1)
        return min(max(0.0, budget.last_finished + wait - now), wait)  # a clock set back never stretches it

    async def _exhausted(
        self, check: CheckBase, chain: list[RestartPolicy], budget: BudgetRow, entity: str, now: float
    ) -> None:
        if self._said(entity, chain):
            return  # said once (per entity: a step shared by ladders): not again until the budget is back
        self._told_exhausted.add((entity, budget.target))
        if budget.exhausted is None:
            budget.exhausted = now
            await self._db(self.ledger.save_budget, budget)
        policy = chain[-1]
        state = self.states.entities.get(entity)
        ladder = f" (the last of {len(chain)} steps)" if len(chain) > 1 else ""
        self._emit(
            Event(
                EventKind.REMEDIATION_EXHAUSTED,
                entity,
                check.name,
                now,
                f"gave up on {policy.target}{ladder} after {policy.max_attempts} restart(s) within "
                f"{policy.window:g}s: {entity} is still critical — needs a person "
                f"(`clusterwatch heal reset {check.name}` once fixed)",
                node=check.node,
                new=Status.CRITICAL,
                incident=state.incident if state else None,
                details={"target": policy.target, "attempts": policy.max_attempts, "steps": len(chain)},
            )
        )

    async def _instance(self, policy: RestartPolicy, check: CheckBase, entity: str) -> Instance | None:
        """Which instance serves, for crediting: never holds a restart up, never fails it."""
        state = self.states.entities.get(entity)
        try:
            async with asyncio.timeout(EVIDENCE_TIMEOUT):
                return await self.serving(policy, check, self.config, entity, state.last if state else None)
        except Exception as exc:  # the evidence is optional; the restart is not
            log.debug("healer: which instance of %s serves could not be told: %s", policy.target, exc)
            return None

    async def _attempt(
        self,
        check: CheckBase,
        chain: list[RestartPolicy],
        index: int,
        budget: BudgetRow,
        entity: str,
        attempt: int,
        reason: str,
    ) -> bool:
        policy = chain[index]
        target = policy.target
        dry_run = policy.dry_run or self.config.healing.dry_run
        state = self.states.entities.get(entity)
        incident = state.incident if state else None
        verify = verify_for(policy, budget)
        step = f", step {index + 1} of {len(chain)}" if len(chain) > 1 else ""
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
                f"{policy.max_attempts}{step}) because {entity}: {reason}",
                node=check.node,
                incident=incident,
                details={"target": target, "attempt": attempt, "step": index},
            )
        )
        outcome, healthy, credit = Outcome(False, "the healer failed while running it (logged)"), False, None
        after: Instance | None = None
        try:
            if dry_run:
                outcome = Outcome(True, f"dry run: would run {policy.action} on {target}")
            else:
                before = await self._instance(policy, check, entity)
                outcome = await self.perform(policy, check, self.config)
                healthy = outcome.ok and await self._verify(check, entity, verify)
                if outcome.ok and not healthy:
                    # Its own new instance may still be coming up: the next attempt never starts on top of it.
                    late = await self._instance(policy, check, entity)
                    if late is not None and late.alive and credited(before, late, outcome.instance, started):
                        log.info("%s: %s still coming up after %gs: waiting as long again", target, late.what, verify)
                        healthy = await self._verify(check, entity, verify)
                if healthy:
                    after = await self._instance(policy, check, entity)
                    credit = credited(before, after, outcome.instance, started)
        except asyncio.CancelledError:
            raise  # left `running`: the next monitor records it as interrupted and looks before acting
        except Exception:
            log.exception("healer: restarting %s failed unexpectedly", target)
        finished = self._clock()
        result = "failed" if not healthy else RECOVERED if credit is False else "succeeded"
        result = "dry_run" if dry_run else result
        if not dry_run:
            budget.failed_streak = 0 if healthy else budget.failed_streak + 1
            budget.last_finished = finished
            if result == "succeeded":  # as the ledger learns at the next start: credited, or not to be told
                budget.start_times = [*budget.start_times, finished - started][-5:]
        detail = outcome.detail if outcome.ok else f"action failed: {outcome.detail}"
        if outcome.ok and not healthy and not dry_run:
            detail += f"; still not healthy after {verify:g}s"
        if result == RECOVERED and after is not None:
            detail += f"; healthy again, but not by this action: {after.what} serves"
        elif healthy and credit is None:
            detail += "; which instance serves could not be told"
        elif healthy and after is not None:
            detail += f"; {after.what} serves"
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
            self._dry_run_done.add(self._key(chain[0].target))  # once per episode: quiet until it recovers
            return True
        took = finished - started
        if result == RECOVERED:
            message = f"{entity} healthy again after {took:.1f}s, but not by the restart of {target}: {detail}"
        elif healthy:
            message = f"{target} restarted by {policy.action}; {entity} healthy again after {took:.1f}s"
        else:
            message = f"restart of {target} (attempt {attempt}{step}) did not help: {detail}"
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
                details={
                    "target": target,
                    "attempt": attempt,
                    "step": index,
                    "duration_s": round(took, 3),
                    "credited": credit is not False,
                },
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
