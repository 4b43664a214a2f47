"""The healer as a reconciler, on a real ledger (SQLite and PostgreSQL) with an injected clock: it acts from stored
state, counts budgets across restarts of the monitor, and looks before acting after a crash."""

from __future__ import annotations

import asyncio

from clusterwatch.config.schema import Config
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import EntityState, Rules, StateMachine
from clusterwatch.heal.healer import Healer
from clusterwatch.model import Observation, Status
from clusterwatch.store.healing import HealLedger

DAY = 86400.0


class World:
    """One service (up or not), one check with a restart action, a clock the test moves."""

    def __init__(self, db: str, now: float = 1_000_000.0, **restart: object) -> None:
        self.db, self.now, self.up = db, now, False
        self.restarts = 0
        self.config = Config.model_validate(
            {
                "checks": [
                    {
                        "name": "api",
                        "kind": "tcp",
                        "port": 9,
                        "restart": {
                            "command": ["/bin/true"],
                            "max_attempts": 2,
                            "window": "10m",
                            "backoff": "10ms",
                            "verify_timeout": "100ms",
                            "stable_for": "30s",
                            **restart,
                        },
                    }
                ]
            }
        )
        self.states = StateMachine(lambda _name: Rules(fall=1, rise=1))
        self.events: list[Event] = []
        self.healer = self.new_healer()

    def new_healer(self) -> Healer:
        """A monitor (re)started: nothing in memory but what the store gives back."""
        return Healer(
            self.config,
            self.states,
            HealLedger(self.db),
            reprobe=self.reprobe,
            emit=self.events.append,
            clock=lambda: self.now,
        )

    def observe(self) -> list[Observation]:
        """"api" is up or down as the test says; any other check is up."""
        seen = []
        for check in self.config.checks:
            up = self.up if check.name == "api" else True
            obs = Observation(check.name, "tcp", "t", Status.OK if up else Status.CRITICAL, "seen", check=check.name,
                              down=not up)
            self.events += self.states.process(obs, self.now)
            seen.append(obs)
        return seen

    async def reprobe(self, _check: object) -> list[Observation]:
        return self.observe()

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events if e.kind.value.startswith("remediation")]

    def actions(self) -> list[tuple[int, str]]:
        ledger = HealLedger(self.db)
        ledger.open()
        try:
            return [(r["attempt"], r["outcome"]) for r in ledger._rows("SELECT * FROM actions ORDER BY id")]
        finally:
            ledger.close()


def run(coro):
    return asyncio.run(coro)


async def until(predicate, timeout: float = 20.0) -> None:
    """A condition, waited for with a generous bound (never a fixed sleep that a busy machine outruns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_restored_critical_is_acted_on_only_after_a_fresh_look(store_location: str):
    w = World(store_location)

    async def scenario() -> None:
        w.states.restore(EntityState("api", "api", hard=Status.CRITICAL, last_at=w.now - 100))
        await w.healer.start()
        await w.healer.reconcile()
        await w.healer.drain(5)
        assert w.actions() == [], "acted on a state restored from the store, without looking first"
        w.now += 1
        w.observe()  # still down, seen so in this run
        await w.healer.reconcile()
        await w.healer.drain(5)
        await w.healer.stop()

    run(scenario())
    assert w.actions() == [(1, "failed"), (2, "failed")]
    assert w.kinds()[-1] == "remediation_exhausted"


def test_budget_counts_stored_attempts_across_a_restart_and_a_clock_set_back(store_location: str):
    w = World(store_location)

    async def first_life() -> None:
        await w.healer.start()
        w.observe()
        await w.healer.reconcile()
        await w.healer.drain(5)
        await w.healer.stop()

    run(first_life())
    assert w.actions() == [(1, "failed"), (2, "failed")]
    # A new monitor, the clock set back a day (a board without RTC at boot): the attempts still count.
    w.now -= DAY
    w.events.clear()
    w.healer = w.new_healer()

    async def second_life() -> None:
        await w.healer.start()
        w.observe()
        await w.healer.reconcile()
        await w.healer.drain(5)
        await w.healer.stop()

    run(second_life())
    assert len(w.actions()) == 2, "a restart of the monitor gave the target its attempts back"
    assert w.kinds() == []  # exhausted was stored: not announced again


def test_window_ends_and_a_stable_recovery_give_the_budget_back_and_it_is_stored(store_location: str):
    w = World(store_location, max_attempts=1)

    async def scenario() -> None:
        await w.healer.start()
        w.observe()
        await w.healer.reconcile()
        await w.healer.drain(5)
        assert w.actions() == [(1, "failed")]
        w.up = True
        w.now += 1
        w.observe()
        await w.healer.reconcile()  # healthy: recovered_at is stamped, exhausted cleared
        w.now += 10
        w.up = False
        w.observe()  # down again after 10 s: a blip, the budget stays used
        await w.healer.reconcile()
        await w.healer.drain(5)
        assert len(w.actions()) == 1 and w.kinds()[-1] == "remediation_exhausted"
        w.up = True
        w.now += 1
        w.observe()
        await w.healer.reconcile()
        w.now += 31  # healthy for longer than stable_for
        await w.healer.reconcile()
        await w.healer.stop()

    run(scenario())
    w.healer = w.new_healer()
    w.up = False

    async def after_restart() -> None:
        await w.healer.start()
        w.now += 1
        w.observe()
        await w.healer.reconcile()
        await w.healer.drain(5)
        await w.healer.stop()

    run(after_restart())
    assert w.actions() == [(1, "failed"), (1, "failed")]


def test_an_attempt_cut_short_is_recorded_once_and_looked_at_before_acting(store_location: str):
    w = World(store_location)
    ledger = HealLedger(w.db)
    ledger.open()
    ledger.begin(
        {"started": w.now - 2, "check": "api", "entity": "api", "target": "command:/bin/true", "action": "command",
         "reason": "down", "attempt": 1, "dry_run": 0}
    )
    ledger.close()
    w.states.restore(EntityState("api", "api", hard=Status.CRITICAL, last_at=w.now - 3))
    w.up = True  # the cut restart worked after all

    async def scenario() -> None:
        await w.healer.start()
        await w.healer.drain(10)
        await w.healer.reconcile()
        await w.healer.drain(5)
        await w.healer.stop()

    run(scenario())
    assert w.actions() == [(1, "succeeded")], "one row for the cut attempt, with the verdict looked at after"
    [event] = [e for e in w.events if e.kind is EventKind.REMEDIATION_SUCCEEDED]
    assert event.details["interrupted"] is True and "cut short" in event.message


def test_a_target_a_person_paused_is_left_alone_until_resumed(store_location: str):
    w = World(store_location)
    ledger = HealLedger(w.db)
    ledger.open()
    ledger.pause("command:/bin/true", until=w.now + 3600, reason="maintenance")

    async def scenario() -> None:
        await w.healer.start()
        w.observe()
        await w.healer.reconcile()
        await w.healer.drain(5)
        assert w.actions() == [], "restarted what a person stopped on purpose"
        ledger.pause("command:/bin/true", until=None)  # resumed, from another process
        await w.healer.reconcile()
        await w.healer.drain(5)
        await w.healer.stop()

    try:
        run(scenario())
    finally:
        ledger.close()
    assert w.actions()[0] == (1, "failed")


def test_backoff_after_failed_attempts_survives_a_restart(store_location: str):
    w = World(store_location, max_attempts=3, backoff="10s")

    async def first_life() -> None:
        await w.healer.start()
        w.observe()
        await w.healer.reconcile()
        # Attempt 1 fails; the healer now waits 10 s before attempt 2 — and the monitor dies meanwhile.
        await until(lambda: "remediation_failed" in w.kinds())
        await w.healer.stop()

    run(first_life())
    assert w.actions() == [(1, "failed")]
    w.now += 4
    w.healer = w.new_healer()

    async def second_life() -> float:
        await w.healer.start()
        [budget] = w.healer.budgets.values()
        assert budget.failed_streak == 1 and budget.last_finished == w.now - 4
        policy = w.config.checks[0].restart[0]
        assert policy is not None
        wait = w.healer._backoff(policy, budget, w.now)
        w.observe()
        await w.healer.reconcile()
        await asyncio.sleep(0.3)
        assert w.actions() == [(1, "failed")], "the restart skipped the backoff"
        await w.healer.stop()
        return wait

    assert run(second_life()) == 6.0


def test_a_pause_that_comes_during_the_backoff_holds_the_next_attempt(store_location: str):
    w = World(store_location, max_attempts=3, backoff="1s")
    ledger = HealLedger(w.db)
    ledger.open()

    async def scenario() -> None:
        await w.healer.start()
        w.observe()
        await w.healer.reconcile()
        await until(lambda: "remediation_failed" in w.kinds())  # attempt 1 did not help: 1 s backoff now
        ledger.pause("command:/bin/true", until=w.now + 3600, reason="maintenance")
        await w.healer.reconcile()  # the tick reads the pause
        await w.healer.drain(10)  # the backoff ends, and the healer asks again before acting
        await w.healer.stop()

    try:
        run(scenario())
    finally:
        ledger.close()
    assert w.actions() == [(1, "failed")], "a person's pause was overrun by a backoff already under way"


def test_two_checks_on_one_target_share_one_budget_and_one_escalation(store_location: str):
    w = World(store_location, max_attempts=1)
    restart = w.config.checks[0].restart[0]
    assert restart is not None
    w.config = Config.model_validate(
        {
            "checks": [
                {"name": "api", "kind": "tcp", "port": 9, "restart": restart.model_dump(exclude_none=True)},
                {"name": "port", "kind": "tcp", "port": 10, "restart": restart.model_dump(exclude_none=True)},
            ]
        }
    )
    w.healer = w.new_healer()

    async def scenario() -> None:
        await w.healer.start()
        for _ in range(6):  # one check of the target stays up, the other down: six looks
            w.now += 1
            w.observe()
            await w.healer.reconcile()
            await w.healer.drain(5)
        await w.healer.stop()

    run(scenario())
    assert w.kinds().count("remediation_exhausted") == 1, w.kinds()
    assert len(w.actions()) == 1
