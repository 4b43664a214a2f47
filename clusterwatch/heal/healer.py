"""The healer: restarts what is hard critical, safely, within a budget, and verifies the result.

Knows events, not probes: it is handed a way to re-probe a check and to read an entity's
state. Never two actions at once on one target; never while flapping; never on a dependant
whose root is down; at most `max_attempts` within `window`, with growing delays; then
`remediation_exhausted`, and the target is left alone until it recovers or a person resets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clusterwatch.config.schema import CheckBase, Config, RestartPolicy
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState, StateMachine
from clusterwatch.heal.actions import Outcome, perform
from clusterwatch.model import Observation, Status

log = logging.getLogger("clusterwatch.healer")
VERIFY_EVERY = 1.0
ROOT_GRACE = 1.0


@dataclass
class Budget:
    attempts: deque[float] = field(default_factory=deque)  # when each attempt started
    exhausted: bool = False
    recovered_at: float | None = None  # healthy since; the budget comes back after `stable_for`

    def used(self, window: float, now: float) -> int:
        while self.attempts and now - self.attempts[0] > window:
            self.attempts.popleft()
        return len(self.attempts)


class Healer:
    def __init__(
        self,
        config: Config,
        states: StateMachine,
        *,
        reprobe: Callable[[CheckBase], Awaitable[list[Observation]]],
        emit: Callable[[Event], None],
        record: Callable[[dict[str, object]], None],
    ) -> None:
        self.config = config
        self.states = states
        self._reprobe, self._emit, self._record = reprobe, emit, record
        self.budgets: dict[str, Budget] = {}
        self.busy: dict[str, asyncio.Task[None]] = {}

    def update_config(self, config: Config) -> None:
        self.config = config

    def _check(self, name: str) -> CheckBase | None:
        return next((c for c in self.config.checks if c.name == name), None)

    # --- events in ----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.STATE_CHANGE and event.new is Status.OK:
            self._root_recovered(event.entity)
        check = self._check(event.check)
        if check is None or check.restart is None:
            return
        target = check.restart.target
        recovered = event.kind is EventKind.STATE_CHANGE and event.new is Status.OK
        if recovered or event.kind is EventKind.INCIDENT_CLOSED:
            budget = self.budgets.get(target)
            if budget is not None and not any(e.down for e in self.states.entities_of(check.name)):
                budget.recovered_at = event.at
                budget.exhausted = False  # it recovered: the healer may act again
            return
        if event.kind in (EventKind.STATE_CHANGE, EventKind.INCIDENT_OPENED) and event.new is Status.CRITICAL:
            self.consider(check, event.entity, event.message)
        elif event.kind is EventKind.FLAPPING_STOPPED:
            state = self._entity(event.entity)
            if state is not None and state.hard is Status.CRITICAL:  # settled, but down: now heal it
                self.consider(check, event.entity, event.message)

    def _root_recovered(self, root: str) -> None:
        """Dependants held back while their root was down get their turn once it is up again."""
        for check in self.config.checks:
            if check.restart is None or root not in self.states.rules(check.name).roots:
                continue
            for state in self.states.entities_of(check.name):
                if state.hard is Status.CRITICAL and not state.flapping:
                    self.consider(check, state.name, f"still down after {root} recovered")

    def _entity(self, name: str) -> EntityState | None:
        return self.states.entities.get(name)

    def consider(self, check: CheckBase, entity: str, reason: str) -> None:
        policy = check.restart
        if policy is None or not self.config.healing.enabled:
            return
        target = policy.target
        state = self._entity(entity)
        if state is not None and (state.flapping or state.affected_by):
            why = "flapping" if state.flapping else f"its root {state.affected_by} is down (heal the root first)"
            log.info("not restarting %s for %s: %s", target, entity, why)
            return
        if target in self.busy:
            return  # never two actions at once on one target
        budget = self.budgets.setdefault(target, Budget())
        if budget.recovered_at is not None:
            if time.time() - budget.recovered_at >= policy.stable_for:
                self._reset_budget(target, f"healthy for {policy.stable_for:g}s")
                budget = self.budgets[target]
            budget.recovered_at = None
        if budget.exhausted:
            return
        task = asyncio.create_task(self._guarded(check, policy, entity, reason))
        self.busy[target] = task
        task.add_done_callback(lambda _t, target=target: self.busy.pop(target, None))

    def reset(self, name: str) -> bool:
        """A person's reset: by target (`supervisor:dask-worker`) or by check name."""
        check = self._check(name)
        target = check.restart.target if check and check.restart else name
        if target not in self.budgets:
            return False
        self._reset_budget(target, "reset by a person")
        check = check or next((c for c in self.config.checks if c.restart and c.restart.target == target), None)
        if check is not None:
            for state in self.states.entities_of(check.name):
                if state.hard is Status.CRITICAL:
                    self.consider(check, state.name, f"reset: {state.last.message if state.last else ''}")
                    break
        return True

    def _reset_budget(self, target: str, why: str) -> None:
        budget = self.budgets.get(target)
        if budget is not None and (budget.attempts or budget.exhausted):
            log.info("restart budget of %s reset: %s", target, why)
        self.budgets[target] = Budget()

    # --- one remediation episode ----------------------------------------------------------------

    async def _guarded(self, check: CheckBase, policy: RestartPolicy, entity: str, reason: str) -> None:
        try:
            await self._remediate(check, policy, entity, reason)
        except asyncio.CancelledError:
            raise
        except Exception:  # the healer's own bug: logged, and the target is free for the next try
            log.exception("remediation of %s for %s failed unexpectedly", policy.target, entity)

    async def _remediate(self, check: CheckBase, policy: RestartPolicy, entity: str, reason: str) -> None:
        target = policy.target
        budget = self.budgets.setdefault(target, Budget())
        # A dependant may notice a failure a moment before its root does: give the root that moment.
        delay = max(policy.grace, ROOT_GRACE if self.states.rules(check.name).roots else 0.0)
        while True:
            state = self._entity(entity)
            if state is None or state.hard is not Status.CRITICAL or state.flapping or state.affected_by:
                return
            now = time.time()
            if budget.used(policy.window, now) >= policy.max_attempts:
                budget.exhausted = True
                self._emit(
                    Event(
                        EventKind.REMEDIATION_EXHAUSTED,
                        entity,
                        check.name,
                        now,
                        f"gave up on {target} after {policy.max_attempts} restart(s) within "
                        f"{policy.window:g}s: {entity} is still critical — needs a person "
                        f"(`clusterwatch heal reset {check.name}` once fixed)",
                        node=check.node,
                        new=Status.CRITICAL,
                        incident=state.incident,
                        details={"target": target, "attempts": policy.max_attempts},
                    )
                )
                return
            if delay:
                await asyncio.sleep(delay)
                state = self._entity(entity)
                if state is None or state.hard is not Status.CRITICAL or state.flapping or state.affected_by:
                    return
                root = self.states.root_failing(check.name, entity, Status.CRITICAL)
                if root is not None:
                    log.info(
                        "not restarting %s for %s: its root %s is down (heal the root first)", target, entity, root
                    )
                    return
            budget.attempts.append(time.time())
            attempt = len(budget.attempts)
            if await self._attempt(check, policy, entity, state, attempt, reason):
                return
            delay = policy.backoff * 2 ** (attempt - 1)

    async def _attempt(
        self, check: CheckBase, policy: RestartPolicy, entity: str, state: EntityState, attempt: int, reason: str
    ) -> bool:
        target = policy.target
        dry_run = policy.dry_run or self.config.healing.dry_run
        started = time.time()
        self._emit(
            Event(
                EventKind.REMEDIATION_STARTED,
                entity,
                check.name,
                started,
                f"{'would restart' if dry_run else 'restarting'} {target} (attempt {attempt} of "
                f"{policy.max_attempts}) because {entity}: {reason}",
                node=check.node,
                incident=state.incident,
                details={"target": target, "attempt": attempt},
            )
        )
        if dry_run:
            outcome = Outcome(True, f"dry run: would run {policy.action} on {target}")
            healthy = False
        else:
            outcome = await perform(policy, check, self.config)
            healthy = outcome.ok and await self._verify(check, policy, entity)
        finished = time.time()
        result = "dry_run" if dry_run else "succeeded" if healthy else "failed"
        detail = outcome.detail if outcome.ok else f"action failed: {outcome.detail}"
        if outcome.ok and not healthy and not dry_run:
            detail += f"; still not healthy after {policy.verify_timeout:g}s"
        self._record(
            {
                "started": started,
                "finished": finished,
                "check": check.name,
                "entity": entity,
                "target": target,
                "action": policy.action,
                "reason": reason,
                "attempt": attempt,
                "outcome": result,
                "detail": detail,
                "duration": round(finished - started, 3),
                "dry_run": 1 if dry_run else 0,
            }
        )
        kind = EventKind.REMEDIATION_SUCCEEDED if healthy else EventKind.REMEDIATION_FAILED
        if dry_run:
            log.warning("dry run: would restart %s for %s", target, entity)
            return True  # a dry run acts once per episode
        message = (
            f"{target} restarted by {policy.action}; {entity} healthy again after {finished - started:.1f}s"
            if healthy
            else f"restart of {target} (attempt {attempt}) did not help: {detail}"
        )
        self._emit(
            Event(
                kind,
                entity,
                check.name,
                finished,
                message,
                node=check.node,
                incident=state.incident,
                new=Status.OK if healthy else Status.CRITICAL,
                details={"target": target, "attempt": attempt, "duration_s": round(finished - started, 3)},
            )
        )
        return healthy

    async def _verify(self, check: CheckBase, policy: RestartPolicy, entity: str) -> bool:
        """Re-probe with the check's own probe until the entity is hard ok again, or time runs out."""
        deadline = time.monotonic() + policy.verify_timeout
        while time.monotonic() < deadline:
            await self._reprobe(check)
            state = self._entity(entity)
            if state is not None and state.hard is Status.OK:
                return True
            await asyncio.sleep(min(VERIFY_EVERY, max(0.0, deadline - time.monotonic())))
        return False

    async def drain(self, timeout: float) -> None:
        if self.busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self.busy.values(), return_exceptions=True), timeout)

    async def stop(self) -> None:
        for task in list(self.busy.values()):
            task.cancel()
        await self.drain(1.0)
