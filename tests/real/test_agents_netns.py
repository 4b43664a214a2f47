"""Three node agents, each in a network namespace of its own with a real Dask worker, pushing to a real
monitor over a bridge: the whole agent story end to end, with nothing simulated.

The host has a bridge with 10.213.0.1 (the Dask scheduler and the monitor's web listen there); each
namespace agent-N has 10.213.0.1N on its one veth link, a Dask worker whose dashboard (/health) is on the
namespace's own 127.0.0.1, and `clusterwatch agent run` probing that worker. The scenario runs once (a
module fixture that records what happened, with times); each test judges one claim:

- all three nodes and their workers are ok in /api/v1/status, and stay fresh (within two intervals);
- an agent killed -9: its node critical ("agent silent for ...") within agent_timeout + one interval,
  its worker check affected by the node, one incident and one alert for the node;
- another namespace's link down for CUT seconds and its worker killed -9 meanwhile: the agent, cut off,
  restarts the worker itself (it answers inside the namespace while the link is still down); when the
  link is back the monitor has, in this order, the node's silence incident, the agent's remediation
  (events "[agent agent-2] ..." and a row in `actions` by "agent:agent-2"), agent_back and the
  recovery; and no alert about the worker's failure in the gap, neither in the outbox nor at the
  receiver.

Everything started is stopped by PID; whatever is left in a namespace (a worker an agent restarted,
detached) is killed by PID from `ip netns pids`; the namespaces and the bridge are removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Proc, free_port, run_cli, wait_until
from tests.real.daemon import Daemon
from tests.real.dask_cluster import BIN
from tests.real.netns import Net, NetnsUnavailable, probe_netns
from tests.real.receivers import Hit, WebhookReceiver

INTERVAL = 1.0  # every check's and node's interval (seconds)
AGENT_TIMEOUT = 4.0  # silent this long: the node is critical
SLACK = 3.0  # a busy 2-core machine: the scheduler's tick, the agent's push batching (1 s), the web's answer
STARTUP = 120.0  # three workers, three agents and a monitor starting at once on two cores
CUT = 60.0  # how long agent-2's link stays down (as the issue says; >> AGENT_TIMEOUT): the restart happens within it
# The scheduler drops a worker it has not heard from for this long (Dask's default is 5 minutes). A worker
# killed while its link is down cannot say goodbye: the scheduler keeps it, and refuses any worker with its
# name ("Worker tried to connect with a duplicate name"), so the restarted worker would exit as soon as
# the link is back. A cluster whose links drop needs a short worker-ttl; so does this one.
WORKER_TTL = 10.0
SUBNET = "10.213.0"
HOST_IP = f"{SUBNET}.1"
NODES = ("agent-1", "agent-2", "agent-3")
KILLED, CUT_OFF, STEADY = NODES  # agent-1 is killed -9; agent-2's link goes down; agent-3 runs throughout


def worker_check(node: str) -> str:
    return f"worker-{node}"


# --- reading the monitor ------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, timeout: float = 5.0) -> bytes:
    with _OPENER.open(url, timeout=timeout) as resp:
        return resp.read()


def titles(hits: list[Hit]) -> list[tuple[float, str]]:
    """Each notification's title as people read it, with when it arrived; a grouped one as each part."""
    out: list[tuple[float, str]] = []
    for hit in hits:
        body = hit.body if isinstance(hit.body, dict) else {}
        title, message = str(body.get("title", "")), str(body.get("message", ""))
        parts = [line[3:] for line in message.splitlines() if line.startswith("== ")]
        grouped = (" problems: " in title or " recovered: " in title) and parts
        out.extend((hit.at, t) for t in (parts if grouped else [title]))
    return out


def firings(hits: list[Hit], entity: str, since: float = 0.0) -> list[str]:
    """The problem notifications (not a recovery) about `entity` that arrived after `since`."""
    pattern = re.compile(rf"^\[(CRITICAL|WARNING)\]( \(still\))? {re.escape(entity)} on ")
    return [t for at, t in titles(hits) if at >= since and pattern.match(t)]


@dataclass
class Scene:
    """What the scenario saw, for the tests to judge; `story` explains a failure."""

    seen: dict[str, Any] = field(default_factory=dict)
    times: dict[str, float | None] = field(default_factory=dict)
    story: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.seen.get(key)


def soft_wait(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """wait_until that says None instead of raising: the scenario goes on, the tests judge."""
    try:
        return wait_until(predicate, timeout=timeout, interval=interval)
    except AssertionError:
        return None


class Stack:
    """What the scenario started, stopped by PID in reverse order whatever happened (the monitor last
    but the scheduler: agents and workers stopped under a running monitor only make it say so)."""

    def __init__(self) -> None:
        self.things: list[Any] = []

    def add(self, thing: Any) -> Any:
        self.things.append(thing)
        return thing

    def close(self) -> None:
        things, self.things = self.things, []
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()


# --- the scenario -----------------------------------------------------------------------------------------


def monitor_config(tmp: Path, web_port: int, scheduler: str, hook: str, ports: dict[str, int]) -> dict[str, Any]:
    token = tmp / "web-token"
    token.write_text("netns-test-web-token-0123456789\n")
    token.chmod(0o600)
    # Resource limits off: this test is about the link, and three workers starting on two cores can
    # push the CPU over any limit. expect_dask_worker off: the namespaces share one PID namespace, so
    # "a dask worker runs on this machine" would see the other namespaces' workers.
    off = {"cpu": {}, "memory": {}, "disk": {}}
    nodes = [
        {
            "name": node,
            "agent": True,
            "agent_timeout": f"{AGENT_TIMEOUT:g}s",
            "interval": f"{INTERVAL:g}s",
            "expect_dask_worker": False,
            "thresholds": off,
        }
        for node in NODES
    ]
    checks = [
        {
            "name": worker_check(node),
            "kind": "http",
            "url": f"http://127.0.0.1:{ports[node]}/health",  # the namespace's own loopback, probed by its agent
            "node": node,
            "interval": f"{INTERVAL:g}s",
            "timeout": "2s",
            "restart": {
                "dask_worker": {"name": node, "command": worker_argv(tmp, node, scheduler, ports[node])},
                "max_attempts": 3,
                "window": "10m",
                "backoff": "2s",
                "timeout": "20s",
                "verify_timeout": "40s",
                "stable_for": "5s",
            },
        }
        for node in NODES
    ]
    return {
        "web": {"listen": f"{HOST_IP}:{web_port}", "token_file": str(token)},
        "interval": f"{INTERVAL:g}s",
        "alerts": {"channels": {"hook": hook}, "group_wait": "1s"},
        "nodes": nodes,
        "checks": checks,
    }


def worker_argv(tmp: Path, node: str, scheduler: str, port: int) -> list[str]:
    """A worker without a nanny (a nanny would restart a killed worker itself, before the agent could)."""
    n = node.rsplit("-", 1)[1]
    return [
        sys.executable,
        str(BIN / "dask"),
        "worker",
        scheduler,
        "--name",
        node,
        "--host",
        f"{SUBNET}.1{n}",
        "--dashboard-address",
        f"127.0.0.1:{port}",
        "--nthreads",
        "1",
        "--no-nanny",
        "--local-directory",
        str(tmp / f"dask-{node}"),
    ]


class Monitor:
    """The monitor's API and store, as the scenario reads them."""

    def __init__(self, daemon: Daemon, url: str) -> None:
        self.d, self.url = daemon, url

    def status(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in json.loads(get(f"{self.url}/api/v1/status"))["checks"]}

    def incidents(self, entity: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.d.query("SELECT * FROM incidents WHERE entity = ? ORDER BY opened", entity)]

    def events(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.d.query("SELECT * FROM events ORDER BY ts, id")]

    def actions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.d.query("SELECT * FROM actions ORDER BY started")]

    def outbox(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.d.query("SELECT id, created, kind, severity, title, delivered FROM outbox")]

    def event(self, kind: str, entity: str, since: float = 0.0, contains: str = "") -> dict[str, Any] | None:
        for e in self.events():
            if e["kind"] == kind and e["entity"] == entity and e["ts"] >= since and contains in e["message"]:
                return e
        return None


def all_ok(m: Monitor) -> dict[str, dict[str, Any]] | None:
    status = m.status()
    wanted = [*NODES, *(worker_check(n) for n in NODES)]
    if all(status.get(name, {}).get("status") == "ok" for name in wanted):
        return status
    return None


def worker_pids(net: Net, node: str) -> list[int]:
    return net.processes(node, "dask", "worker", "--name", node)


def scheduler_workers(dashboard: str) -> set[str]:
    with contextlib.suppress(Exception):
        identity = json.loads(get(f"{dashboard}/json/identity.json"))
        return {str(w.get("name")) for w in identity["workers"].values()}
    return set()


def hang_up_a_poll(host: str, port: int, token: str, node: str, hold: float) -> float:
    """An agent's long poll, sent as the agent sends it, then the connection closed `hold` seconds later
    without reading the answer (what the kernel does for a process killed -9). Returns when it closed."""
    body = json.dumps({"node": node, "results": [], "wait": 20}).encode()
    head = (
        f"POST /api/v1/agent/poll HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(head + body)
        time.sleep(hold)
    return time.time()


def clock_before(hhmmss: str, at: float) -> float:
    """The Unix time of local clock time HH:MM:SS on `at`'s day (the day before if that is after `at` + 12 h)."""
    day = time.localtime(at)
    h, m, s = (int(x) for x in hhmmss.split(":"))
    found = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, h, m, s, 0, 0, -1))
    return found - 86400 if found > at + 43200 else found


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    try:
        probe_netns(f"cwagt-probe-{os.getpid()}")
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespaces are needed for the agents' machines: {exc}")
    tmp = tmp_path_factory.mktemp("agents-netns")
    net = Net("cwagtbr", HOST_IP)
    for node in NODES:
        n = node.rsplit("-", 1)[1]
        net.add(node, f"{SUBNET}.1{n}", f"cwagt{n}h", f"cwagt{n}n")
    scene = Scene()
    stack = Stack()
    t = scene.times
    try:
        net.up()
        # The scheduler on the host, on the bridge's address (its dashboard on loopback, for the test).
        sched_port, sched_dash = free_port(), free_port()
        scheduler = f"tcp://{HOST_IP}:{sched_port}"
        dashboard = f"http://127.0.0.1:{sched_dash}"
        stack.add(
            Proc(
                [
                    sys.executable,
                    str(BIN / "dask"),
                    "scheduler",
                    "--host",
                    HOST_IP,
                    "--port",
                    str(sched_port),
                    "--dashboard-address",
                    f"127.0.0.1:{sched_dash}",
                    "--no-show",
                ],
                tmp / "scheduler.log",
                env={"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": f"{WORKER_TTL:g}s"},
            )
        )
        wait_until(lambda: get(f"{dashboard}/json/identity.json"), timeout=60, what="the dask scheduler")

        receiver = WebhookReceiver()
        hook_server = stack.add(receiver.serve())
        ports = {node: free_port() for node in NODES}
        (tmp / "monitor").mkdir()
        daemon = Daemon(tmp / "monitor", {})
        web = f"http://{HOST_IP}:{daemon.web_port}"
        config = monitor_config(tmp, daemon.web_port, scheduler, f"json://127.0.0.1:{hook_server.port}/alerts", ports)
        daemon.write(
            {
                "store": {"path": str(daemon.db_path)},
                "logs": {"dir": str(daemon.tmp / "logs"), "level": "debug"},
                **config,
            }
        )
        tokens = {}
        for node in NODES:
            tokens[node] = tmp / f"token-{node}"
            res = run_cli("agent", "enroll", node, "-c", str(daemon.config_path), "--token-file", str(tokens[node]))
            assert res.returncode == 0, res.stdout + res.stderr

        # The workers first (they only need the scheduler), each in its namespace.
        workers: dict[str, Proc] = {}
        for node in NODES:
            (tmp / f"dask-{node}").mkdir()
            workers[node] = stack.add(
                Proc(worker_argv(tmp, node, scheduler, ports[node]), tmp / f"worker-{node}.log", netns=node)
            )
        wait_until(
            lambda: scheduler_workers(dashboard) >= set(NODES),
            timeout=STARTUP,
            what=f"three workers at the scheduler ({[w.tail(5) for w in workers.values()]})",
        )
        for node in NODES:
            wait_until(lambda n=node: net.http_get(n, f"http://127.0.0.1:{ports[n]}/health"), timeout=30)

        stack.add(daemon)
        daemon.start()
        m = Monitor(daemon, web)
        wait_until(
            lambda: m.status() is not None, timeout=60, what=f"the monitor's web at {web}\n{daemon.log()[-2000:]}"
        )

        agents: dict[str, Proc] = {}
        started = time.monotonic()
        for node in NODES:
            argv = [sys.executable, "-m", "clusterwatch", "agent", "run", "--server", web, "--name", node]
            argv += ["--token-file", str(tokens[node]), "--state-dir", str(tmp / f"state-{node}"), "-v"]
            argv += ["--insecure-http"]  # plain HTTP on the test's own bridge (TLS is tested in test_agent_api)
            agents[node] = stack.add(Proc(argv, tmp / f"agent-{node}.log", netns=node))

        def story_so_far() -> str:
            logs = "\n".join(f"--- agent {n}\n{p.tail(40)}" for n, p in agents.items())
            return f"\n{logs}\n--- monitor\n{daemon.log()[-6000:]}"

        # 1. All three nodes and their workers ok, and kept fresh.
        status = soft_wait(lambda: all_ok(m), timeout=STARTUP)
        t["all_ok_after_agents_started"] = time.monotonic() - started if status else None
        ages: list[float] = []
        if status:
            for _ in range(3):
                time.sleep(INTERVAL)
                now, status = time.time(), m.status()
                for name in [*NODES, *(worker_check(n) for n in NODES)]:
                    entry = status.get(name, {})
                    if entry.get("status") != "ok" or not entry.get("checked_at"):
                        ages.append(float("inf"))
                    else:
                        ages.append(now - float(entry["checked_at"]))
        scene.seen["fresh_ages"] = ages
        t["max_age_of_a_status"] = max(ages) if ages else None
        scene.seen["first_status"] = status
        with contextlib.suppress(Exception):
            scene.seen["dashboard"] = get(f"{web}/").decode(errors="replace")
        if not status:
            scene.story = story_so_far()
            raise AssertionError(f"the agents never came up, nothing more to see: {story_so_far()}")

        # 2. agent-1 killed -9.
        killed_at, killed_mono = time.time(), time.monotonic()
        os.kill(agents[KILLED].pid, signal.SIGKILL)
        agents[KILLED].popen.wait(10)
        scene.seen["killed_at"] = killed_at

        def silent(node: str) -> dict[str, Any] | None:
            entry = m.status().get(node, {})
            return (
                entry if entry.get("status") == "critical" and "agent silent for" in entry.get("message", "") else None
            )

        entry = soft_wait(lambda: silent(KILLED), timeout=AGENT_TIMEOUT + INTERVAL + SLACK + 30, interval=0.1)
        t["killed_node_critical_after"] = time.monotonic() - killed_mono if entry else None
        scene.seen["killed_node"] = entry
        affected = soft_wait(
            lambda: (e := m.status().get(worker_check(KILLED), {})).get("affected_by") == KILLED and e,
            timeout=AGENT_TIMEOUT + INTERVAL + SLACK + 30,
            interval=0.1,
        )
        t["killed_check_affected_after"] = time.monotonic() - killed_mono if affected else None
        scene.seen["killed_check"] = affected
        alert = soft_wait(lambda: firings(list(receiver.hits), KILLED, since=killed_at), timeout=30)
        t["killed_node_alert_after"] = time.monotonic() - killed_mono if alert else None

        # 3. agent-2's link down; once the monitor has called it silent (an incident), its worker killed -9.
        net.link(CUT_OFF, up=False)
        down_at, down_mono = time.time(), time.monotonic()
        scene.seen["down_at"] = down_at
        assert not net.link_is_up(CUT_OFF)
        incident = soft_wait(
            lambda: [i for i in m.incidents(CUT_OFF) if i["opened"] >= down_at],
            timeout=AGENT_TIMEOUT + INTERVAL + SLACK + 30,
        )
        t["cut_node_incident_after"] = time.monotonic() - down_mono if incident else None
        old_worker = workers[CUT_OFF]
        os.kill(old_worker.pid, signal.SIGKILL)
        old_worker.popen.wait(10)
        worker_killed_at, worker_killed_mono = time.time(), time.monotonic()
        scene.seen["worker_killed_at"] = worker_killed_at
        scene.seen["old_worker_pid"] = old_worker.pid

        def restarted() -> list[int] | None:
            pids = [p for p in worker_pids(net, CUT_OFF) if p != old_worker.pid]
            if pids and net.http_get(CUT_OFF, f"http://127.0.0.1:{ports[CUT_OFF]}/health"):
                return pids
            return None

        pids = soft_wait(restarted, timeout=max(CUT, 90.0), interval=0.5)
        t["worker_back_after_kill"] = time.monotonic() - worker_killed_mono if pids else None
        scene.seen["new_worker_pids"] = pids
        scene.seen["link_down_when_worker_back"] = not net.link_is_up(CUT_OFF)
        # The killed worker's ghost leaves the scheduler (worker-ttl) before the link is back, as it would
        # in a cluster configured for flaky links; otherwise the restarted worker is refused (see WORKER_TTL).
        gone = soft_wait(lambda: CUT_OFF not in scheduler_workers(dashboard), timeout=3 * WORKER_TTL)
        t["killed_worker_left_scheduler_after_kill"] = time.monotonic() - worker_killed_mono if gone else None
        # Keep the link down CUT seconds in all (a wait for the scenario's shape, not an assertion).
        time.sleep(max(0.0, CUT - (time.monotonic() - down_mono)))
        net.link(CUT_OFF, up=True)
        up_at, up_mono = time.time(), time.monotonic()
        scene.seen["up_at"] = up_at
        t["link_down_for"] = up_mono - down_mono

        back = soft_wait(lambda: m.event("agent_back", CUT_OFF, since=up_at - 1), timeout=60)
        t["agent_back_after_link_up"] = time.monotonic() - up_mono if back else None
        recovered = soft_wait(
            lambda: (
                m.event("incident_closed", CUT_OFF, since=down_at)
                and (e := m.status().get(worker_check(CUT_OFF), {})).get("status") == "ok"
                and e.get("hard") == "ok"
                and e
            ),
            timeout=60,
        )
        t["recovered_after_link_up"] = time.monotonic() - up_mono if recovered else None
        registered = soft_wait(lambda: CUT_OFF in scheduler_workers(dashboard), timeout=60)
        t["restarted_worker_at_scheduler_after_link_up"] = time.monotonic() - up_mono if registered else None
        soft_wait(lambda: m.event("remediation_succeeded", worker_check(CUT_OFF), contains="[agent "), timeout=30)
        # The node's recovery is told (its resolved notice): what the return brought has been sent by then.
        resolved = soft_wait(
            lambda: [
                x for at, x in titles(list(receiver.hits)) if at >= up_at and x.startswith(f"[RESOLVED] {CUT_OFF} ")
            ],
            timeout=30,
        )
        t["cut_node_resolved_notice_after_link_up"] = time.monotonic() - up_mono if resolved else None
        time.sleep(2.0)  # group_wait (1 s) and a delivery: anything the return queued reaches the receiver

        scene.seen.update(
            events=m.events(),
            actions=m.actions(),
            outbox=m.outbox(),
            incidents={n: m.incidents(n) for n in [*NODES, *(worker_check(n) for n in NODES)]},
            hits=list(receiver.hits),
            final_status=m.status(),
            worker_pids_at_end=[p for p in worker_pids(net, CUT_OFF) if p != old_worker.pid],
            ports=ports,
        )
        scene.story = (
            story_so_far()
            + "\n--- notifications\n"
            + "\n".join(f"  {at:.3f} {x}" for at, x in titles(list(receiver.hits)))
        )
        scene.story += "\n--- events\n" + "\n".join(
            f"  {e['ts']:.3f} {e['kind']} {e['entity']}: {e['message'][:160]}" for e in scene["events"]
        )
        # 4. An agent that dies while the monitor holds its long poll (as a killed agent's poll almost always
        # is): agent-1's token, a poll sent and its connection closed 0.5 s later, with nothing more said.
        # Whatever the monitor says it last heard must be no later than that close. Deterministic although
        # "last seen" is given to the second: the monitor holds this poll agent_timeout/2 = 2 s, so counting
        # its end as news states a time >= 1.5 s after the close (a whole second later at least), while
        # counting its arrival states one 0.5 s before it.
        before = m.status().get(KILLED, {}).get("message", "")
        poll_at = time.time()
        closed_at = hang_up_a_poll(HOST_IP, daemon.web_port, tokens[KILLED].read_text().strip(), KILLED, hold=0.5)
        closed_mono = time.monotonic()
        scene.seen["poll_closed_at"] = closed_at
        scene.seen["poll_back"] = soft_wait(lambda: m.event("agent_back", KILLED, since=poll_at - 1), timeout=10)
        again = soft_wait(
            lambda: (e := silent(KILLED)) and e["message"] != before and e["checked_at"] > closed_at and e,
            timeout=AGENT_TIMEOUT + INTERVAL + SLACK + 30,
            interval=0.1,
        )
        t["silent_again_after_poll_closed"] = time.monotonic() - closed_mono if again else None
        scene.seen["silent_again"] = again

        (tmp / "timings.json").write_text(json.dumps(t, indent=2))
        (tmp / "scene.json").write_text(
            json.dumps({**scene.seen, "hits": titles(scene["hits"])}, indent=1, default=str)
        )
        print(f"\nagents-netns timings (s): {json.dumps(t, indent=2)}")
        yield scene
    finally:
        stack.close()
        net.down()


# --- the claims -------------------------------------------------------------------------------------------


def test_all_nodes_and_workers_appear_ok_and_stay_fresh(story: Scene) -> None:
    assert story.times["all_ok_after_agents_started"] is not None, story.story
    assert story["fresh_ages"] and max(story["fresh_ages"]) <= 2 * INTERVAL + SLACK, (story["fresh_ages"], story.story)
    first = story["first_status"]
    for node in NODES:
        assert first[node]["kind"] == "agent" and first[node]["group"] == "nodes", first[node]
        assert first[worker_check(node)]["node"] == node
    page = story["dashboard"] or ""
    for name in [*NODES, *(worker_check(n) for n in NODES)]:
        assert name in page, f"{name} not on the dashboard"
    # The node nobody touched stays ok throughout, its worker too.
    for name in (STEADY, worker_check(STEADY)):
        assert story["final_status"][name]["status"] == "ok", story["final_status"][name]
        assert [i for i in story["incidents"][name] if i["opened"] >= story["killed_at"]] == [], story.story


def test_killed_agent_makes_its_node_critical_within_timeout_and_an_interval(story: Scene) -> None:
    took = story.times["killed_node_critical_after"]
    assert took is not None, story.story
    assert took <= AGENT_TIMEOUT + INTERVAL + SLACK, (took, story.story)
    assert re.match(
        rf"agent silent for \d+s \(last seen \d\d:\d\d:\d\d from {SUBNET}\.11\)", story["killed_node"]["message"]
    )


def test_killed_agent_checks_affected_one_incident_one_alert(story: Scene) -> None:
    check = story["killed_check"]
    assert check, story.story
    assert check["affected_by"] == KILLED and check["status"] == "unknown", check
    assert f"the agent of {KILLED} is silent" in check["message"]
    since = story["killed_at"]
    node_incidents = [i for i in story["incidents"][KILLED] if i["opened"] >= since]
    assert len(node_incidents) == 1, (node_incidents, story.story)
    assert not node_incidents[0]["closed"]
    assert [i for i in story["incidents"][worker_check(KILLED)] if i["opened"] >= since] == []
    told = firings(story["hits"], KILLED, since=since)
    assert len(told) == 1 and "agent silent for" in told[0], (told, story.story)
    assert firings(story["hits"], worker_check(KILLED), since=since) == [], story.story
    # Affected, not failed: nothing tries to restart a worker behind a silent agent.
    assert [a for a in story["actions"] if a["check_name"] == worker_check(KILLED)] == [], story["actions"]


def test_cut_off_agent_restarts_its_worker_by_itself(story: Scene) -> None:
    assert story["new_worker_pids"], f"the worker was not restarted in the namespace\n{story.story}"
    assert story["link_down_when_worker_back"], "the worker came back only after the link did"
    # The very worker the agent started while cut off is the one that serves, and joined the scheduler.
    assert story["worker_pids_at_end"] == story["new_worker_pids"], (story["worker_pids_at_end"], story.story)
    assert story.times["restarted_worker_at_scheduler_after_link_up"] is not None, story.story
    down, up = story["down_at"], story["up_at"]
    mine = [a for a in story["actions"] if a["check_name"] == worker_check(CUT_OFF)]
    shown = [(a["started"], a["monitor"], a["outcome"], a["reason"]) for a in mine]
    in_gap = [a for a in mine if down <= a["started"] <= up]
    assert in_gap, f"no action recorded for {worker_check(CUT_OFF)} in the gap: {shown}\n{story.story}"
    assert all(a["monitor"] == f"agent:{CUT_OFF}" and a["action"] == "dask_worker" for a in in_gap), shown
    assert any(a["outcome"] == "succeeded" for a in in_gap), shown
    # Nothing for the monitor to do once the link was back: the worker it had healed kept serving.
    assert all(a["monitor"] == f"agent:{CUT_OFF}" for a in mine), shown


def test_the_return_shows_gap_action_back_and_recovery_in_order(story: Scene) -> None:
    events = story["events"] or []
    down, check = story["down_at"], worker_check(CUT_OFF)
    assert events, story.story

    def first(kind: str, entity: str, contains: str = "") -> dict[str, Any]:
        found = [e for e in events if e["kind"] == kind and e["entity"] == entity and e["ts"] >= down]
        found = [e for e in found if contains in e["message"]]
        assert found, f"no {kind} event for {entity}{f' with {contains!r}' if contains else ''}\n{story.story}"
        return found[0]

    gap = first("incident_opened", CUT_OFF)
    assert "agent silent for" in gap["message"]
    started = first("remediation_started", check, f"[agent {CUT_OFF}]")
    succeeded = first("remediation_succeeded", check, f"[agent {CUT_OFF}]")
    back = first("agent_back", CUT_OFF)
    recovery = first("incident_closed", CUT_OFF)
    worker_ok = [e for e in events if e["entity"] == check and e["kind"] == "state_change" and e["new"] == "ok"]
    worker_ok = [e for e in worker_ok if e["ts"] >= down]
    assert worker_ok, f"the worker check never came back to ok\n{story.story}"
    order = [gap, started, succeeded, back, recovery]
    stamps = [e["ts"] for e in order]
    assert stamps == sorted(stamps), ([(e["kind"], e["entity"], e["ts"]) for e in order], story.story)
    assert worker_ok[0]["ts"] >= back["ts"], (worker_ok[0], back)
    taken = first("agent_healing_taken", CUT_OFF, f"[agent {CUT_OFF}]")
    assert taken["ts"] <= started["ts"], (taken, started)
    assert "unreachable from" in back["message"]


def test_no_stale_alert_for_the_worker_in_the_gap(story: Scene) -> None:
    check, down = worker_check(CUT_OFF), story["down_at"]
    assert story["hits"] is not None, story.story
    assert [i for i in story["incidents"][check] if i["opened"] >= down] == [], story.story
    assert firings(story["hits"], check, since=down) == [], story.story
    assert not [o for o in story["outbox"] if check in o["title"]], (story["outbox"], story.story)
    # The node's gap itself is news, told once (and its end).
    assert len(firings(story["hits"], CUT_OFF, since=down)) == 1, story.story


def test_a_dead_agents_held_poll_is_not_hearing_from_it(story: Scene) -> None:
    """A long poll the monitor holds is no news from the agent: an agent killed -9 meanwhile is silent from
    its last request, not from when the monitor's hold ends (else silence takes up to agent_timeout/2 more)."""
    assert story["poll_back"], f"the poll with agent-1's token was not heard\n{story.story}"
    again = story["silent_again"]
    assert again, f"agent-1 was not called silent again after its poll's connection closed\n{story.story}"
    last_seen = re.search(r"last seen (\d\d:\d\d:\d\d) ", again["message"])
    assert last_seen, again["message"]
    closed = story["poll_closed_at"]
    said = clock_before(last_seen.group(1), closed)
    assert said <= closed, (
        f"the monitor says it last heard {KILLED} at {last_seen.group(1)}, after its poll's connection closed at "
        f"{time.strftime('%H:%M:%S', time.localtime(closed))}.{int(closed % 1 * 1000):03d} ({again['message']})"
    )
    took = story.times["silent_again_after_poll_closed"]
    assert took is not None and took <= AGENT_TIMEOUT + INTERVAL + SLACK, took
