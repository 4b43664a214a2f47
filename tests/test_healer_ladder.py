"""Per-entity restarts, ladders of restart steps, and credit only where the evidence shows it: the healer on a
real ledger (SQLite and PostgreSQL), with the action and the evidence of which instance serves injected."""

from __future__ import annotations

import asyncio
from typing import Any

from clusterwatch.config.schema import CheckBase, Config, RestartPolicy
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.state import Rules, StateMachine
from clusterwatch.heal.actions import Outcome
from clusterwatch.heal.evidence import NOTHING_RUNS, Instance
from clusterwatch.heal.healer import Healer, credited, short_name, verify_for
from clusterwatch.model import Observation, Status
from clusterwatch.store.healing import BudgetRow, HealLedger

WORKERS = ("w1", "w2", "w3", "w10")


class Cluster:
    """A Dask-like check with one entity per worker; the test says which are up and what a restart does."""

    def __init__(self, db: str, restart: Any, **healing: Any) -> None:
        self.db, self.now = db, 1_000_000.0
        self.up = dict.fromkeys(WORKERS, True)
        self.scheduler_up = True
        self.node_known = True
        self.config = Config.model_validate(
            {"checks": [{"name": "dask", "kind": "dask", "node": "gpu-1", "restart": restart}],
             "nodes": [{"name": "gpu-1", "host": "127.0.0.1"}], "healing": healing}
        )
        self.states = StateMachine(lambda _name: Rules(fall=1, rise=1))
        self.events: list[Event] = []
        self.performed: list[RestartPolicy] = []
        self.heals: set[str] = set()  # the programs whose restart brings their worker back
        self.instance: dict[str, Instance | None] = {}  # what `serving` says, by target
        self.healer = Healer(
            self.config, self.states, HealLedger(db), reprobe=self.reprobe, emit=self.events.append,
            clock=lambda: self.now,
        )
        self.healer.perform = self.perform
        self.healer.serving = self.serving

    def observe(self) -> list[Observation]:
        seen = [Observation("dask", "dask", "s", Status.OK if self.scheduler_up else Status.CRITICAL, "scheduler",
                            check="dask", down=not self.scheduler_up)]
        for name, up in self.up.items():
            seen.append(Observation(f"dask/{name}", "dask", "s", Status.OK if up else Status.CRITICAL,
                                    "worker" if up else "worker missing", check="dask", node="gpu-1", down=not up,
                                    details={"node_known": self.node_known}))
        for obs in seen:
            self.events += self.states.process(obs, self.now)
        return seen

    async def reprobe(self, _check: object) -> list[Observation]:
        return self.observe()

    async def perform(self, policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
        self.performed.append(policy)
        program = policy.supervisor or " ".join(policy.command or [])
        for name in WORKERS:
            if program in self.heals and program.endswith(f"-{name}"):
                self.up[name] = True
        return Outcome(True, f"ran {program}")

    async def serving(self, policy: RestartPolicy, check: CheckBase, config: Config, entity: str,
                      last: Observation | None) -> Instance | None:
        return self.instance.get(policy.target)

    def outcomes(self) -> list[tuple[str, str, str]]:
        ledger = HealLedger(self.db)
        ledger.open()
        try:
            return [(r["entity"], r["target"], r["outcome"]) for r in ledger._rows("SELECT * FROM actions ORDER BY id")]
        finally:
            ledger.close()

    async def settle(self) -> None:
        self.observe()
        await self.healer.reconcile()
        await self.healer.drain(20)


def fast(**more: Any) -> dict[str, Any]:
    return {"max_attempts": 1, "backoff": "10ms", "verify_timeout": "50ms", **more}


def test_a_per_entity_restart_acts_on_the_one_worker_that_failed_with_a_budget_of_its_own(store_location: str):
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}", max_attempts=2))
    c.heals = {"dask-worker-w2"}

    async def scenario() -> None:
        await c.healer.start()
        c.up["w2"] = False
        await c.settle()
        assert [p.supervisor for p in c.performed] == ["dask-worker-w2"], "only w2's program, exactly"
        c.up["w3"] = False  # w3's own program never helps: its budget runs out, w2's is untouched
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert [p.supervisor for p in c.performed] == ["dask-worker-w2", "dask-worker-w3", "dask-worker-w3"]
    assert c.outcomes() == [
        ("dask/w2", "supervisor:dask-worker-w2", "succeeded"),
        ("dask/w3", "supervisor:dask-worker-w3", "failed"),
        ("dask/w3", "supervisor:dask-worker-w3", "failed"),
    ]
    exhausted = [e for e in c.events if e.kind is EventKind.REMEDIATION_EXHAUSTED]
    assert [e.entity for e in exhausted] == ["dask/w3"]
    assert c.healer.budgets["supervisor:dask-worker-w2"].exhausted is None


def test_a_per_entity_restart_does_not_act_on_the_checks_own_entity(store_location: str):
    """The scheduler itself down: `{entity}` names no worker, so a worker's restart cannot be what helps."""
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}"))

    async def scenario() -> None:
        await c.healer.start()
        c.scheduler_up = False
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert c.performed == []


def test_node_placeholder_is_the_failing_entitys_node(store_location: str):
    c = Cluster(store_location, fast(command=["reboot-node", "{node}", "{entity}"]))

    async def scenario() -> None:
        await c.healer.start()
        c.up["w10"] = False
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert [p.command for p in c.performed] == [["reboot-node", "gpu-1", "w10"]]


def test_a_ladder_climbs_one_step_at_a_time_and_the_last_one_pages(store_location: str):
    c = Cluster(
        store_location,
        [
            fast(supervisor="dask-worker-{entity}", max_attempts=2),
            fast(command=["recreate", "{entity}"]),
            fast(command=["reboot-node", "{node}"]),
        ],
    )

    async def scenario() -> None:
        await c.healer.start()
        c.up["w1"] = False
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert [p.target for p in c.performed] == [
        "supervisor:dask-worker-w1",
        "supervisor:dask-worker-w1",
        "command:recreate w1",
        "command:reboot-node gpu-1",
    ]
    started = [e.message for e in c.events if e.kind is EventKind.REMEDIATION_STARTED]
    assert "step 2 of 3" in started[2] and "step 3 of 3" in started[3]
    exhausted = [e for e in c.events if e.kind is EventKind.REMEDIATION_EXHAUSTED]
    assert len(exhausted) == 1 and "the last of 3 steps" in exhausted[0].message


def test_a_ladder_stops_at_the_step_that_helped(store_location: str):
    c = Cluster(store_location, [fast(supervisor="dask-worker-{entity}"), fast(command=["recreate", "dask-worker-w1"])])
    c.heals = {"recreate dask-worker-w1"}

    async def scenario() -> None:
        await c.healer.start()
        c.up["w1"] = False
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert [o[2] for o in c.outcomes()] == ["failed", "succeeded"]
    assert not [e for e in c.events if e.kind is EventKind.REMEDIATION_EXHAUSTED]


def test_an_attempt_is_credited_only_when_the_instance_serving_is_its_own(store_location: str):
    """Healthy again with the same instance as before the restart (a SIGSTOP'd process resumed): recorded as
    recovered, not by this action; with a new instance: succeeded."""
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}", max_attempts=3))
    c.heals = {"dask-worker-w1", "dask-worker-w2"}
    old = Instance("pid:100", "pid 100", started=c.now - 3600)
    c.instance["supervisor:dask-worker-w1"] = old  # the restart "helps" but the old instance is what serves

    async def scenario() -> None:
        await c.healer.start()
        c.up["w1"] = False
        await c.settle()
        c.instance["supervisor:dask-worker-w2"] = None  # no evidence at all: credited, and said so
        c.up["w2"] = False
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert c.outcomes() == [
        ("dask/w1", "supervisor:dask-worker-w1", "recovered"),
        ("dask/w2", "supervisor:dask-worker-w2", "succeeded"),
    ]
    done = [e for e in c.events if e.kind is EventKind.REMEDIATION_SUCCEEDED]
    assert "not by the restart of supervisor:dask-worker-w1" in done[0].message and done[0].details["credited"] is False
    assert done[1].details["credited"] is True


def test_credit_rules():
    t0 = 1000.0
    old, new = Instance("pid:1", "pid 1", started=t0 - 50), Instance("pid:2", "pid 2", started=t0 + 3)
    assert credited(old, new, None, t0) is True
    assert credited(old, old, None, t0) is False, "the instance from before serves again"
    assert credited(None, old, None, t0) is False, "an instance older than the attempt was not started by it"
    assert credited(old, new, Instance("pid:3", "pid 3", started=t0 + 1), t0) is False, "not the one it started"
    assert credited(old, None, None, t0) is None
    assert credited(old, NOTHING_RUNS, new, t0) is False, "its own instance is gone: something else serves"
    assert credited(None, NOTHING_RUNS, None, t0) is False


def test_verify_window_is_learnt_from_the_targets_own_start_times():
    policy = RestartPolicy.model_validate({"command": ["x"]})
    assert verify_for(policy, None) == 60
    assert verify_for(policy, BudgetRow("t", start_times=[20.0, 45.0, 25.0])) == 90
    assert verify_for(policy, BudgetRow("t", start_times=[5.0])) == 60
    set_by_hand = RestartPolicy.model_validate({"command": ["x"], "verify_timeout": "5s"})
    assert verify_for(set_by_hand, BudgetRow("t", start_times=[100.0])) == 5


def test_start_times_come_back_from_the_ledger_after_a_restart_of_the_monitor(store_location: str):
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}", verify_timeout=None))
    c.heals = {"dask-worker-w2"}

    async def scenario() -> None:
        await c.healer.start()
        c.up["w2"] = False
        await c.settle()
        await c.healer.stop()
        again = Healer(c.config, c.states, HealLedger(c.db), reprobe=c.reprobe, emit=c.events.append,
                       clock=lambda: c.now)
        await again.start()
        budget = again.budgets["supervisor:dask-worker-w2"]
        assert len(budget.start_times) == 1 and budget.start_times[0] >= 0
        assert len(budget.attempts) == 1, "the per-entity target's window was found from its pattern"
        await again.stop()

    asyncio.run(scenario())


def test_start_delay_gives_what_started_with_the_monitor_time_before_any_restart(store_location: str):
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}"), start_delay="30s")
    c.heals = {"dask-worker-w1"}

    async def scenario() -> None:
        await c.healer.start()
        c.up["w1"] = False
        c.now += 29
        await c.settle()
        assert c.performed == [], "restarted within start_delay of the monitor's start"
        c.now += 1
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert [p.supervisor for p in c.performed] == ["dask-worker-w1"], "acted once the delay was over"


def test_entity_names_a_service_made_up_never_reach_an_action():
    """`{entity}` becomes an argv element, a program name or a unit: only a plain name may."""
    assert short_name("dask", "dask/w2") == "w2"
    assert short_name("docker", "docker/open-webui") == "open-webui"
    assert short_name("ollama", "ollama/llama3.2:1b") == "llama3.2:1b"
    hostile_names = ("dask/--config=/x", "dask/-rf", "dask/../../etc", "dask/a b", "dask/w1;reboot", "dask/", "dask")
    for hostile in hostile_names:
        assert short_name("dask", hostile) is None, hostile


def test_a_step_shared_by_two_ladders_runs_once_and_each_entity_is_told(store_location: str):
    """w1 and w2 on one node both down: each worker's own step, then the node's reboot — once, not twice at once."""
    c = Cluster(store_location, [fast(supervisor="dask-worker-{entity}"), fast(command=["reboot-node", "{node}"])])

    async def scenario() -> None:
        await c.healer.start()
        c.up["w1"] = c.up["w2"] = False
        c.observe()
        for name in ("dask/w1", "dask/w2"):  # both ladders at once, as the reconciler would start them
            c.healer.consider(c.config.checks[0], c.states.entities[name], "down")
        await c.healer.drain(20)
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    targets = [p.target for p in c.performed]
    assert sorted(targets) == ["command:reboot-node gpu-1", "supervisor:dask-worker-w1", "supervisor:dask-worker-w2"]
    exhausted = sorted(e.entity for e in c.events if e.kind is EventKind.REMEDIATION_EXHAUSTED)
    assert exhausted == ["dask/w1", "dask/w2"], "each worker's ladder ends in a word to a person"


def test_an_unknown_node_leaves_out_only_the_steps_that_need_it(store_location: str):
    """A worker on a host no configured node has: never the check's own node's reboot, but its own restart still."""
    c = Cluster(store_location, [fast(command=["reboot-node", "{node}"]), fast(supervisor="dask-worker-{entity}")])
    c.node_known = False

    async def scenario() -> None:
        await c.healer.start()
        c.up["w3"] = False
        await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    assert [p.target for p in c.performed] == ["supervisor:dask-worker-w3"]


def test_a_dry_run_speaks_again_in_the_next_episode(store_location: str):
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}", dry_run=True))

    async def scenario() -> None:
        await c.healer.start()
        for _ in range(2):
            c.up["w1"] = False
            await c.settle()
            await c.settle()  # still down: the dry run said it once this episode
            c.up["w1"] = True
            await c.settle()
        await c.healer.stop()

    asyncio.run(scenario())
    started = [e for e in c.events if e.kind is EventKind.REMEDIATION_STARTED]
    assert len(started) == 2 and all("would restart" in e.message for e in started)


def test_reset_by_check_gives_back_every_entitys_budget(store_location: str):
    c = Cluster(store_location, fast(supervisor="dask-worker-{entity}"))

    async def scenario() -> None:
        await c.healer.start()
        c.up["w2"] = False
        await c.settle()
        assert c.healer.budgets["supervisor:dask-worker-w2"].exhausted is not None
        c.states.entities.pop("dask/w2")  # taken out of the config since
        assert await c.healer.reset("dask")
        assert c.healer.budgets["supervisor:dask-worker-w2"].exhausted is None
        await c.healer.stop()

    asyncio.run(scenario())
