"""An agent through a failover: two real monitors on one real PostgreSQL, a real agent given both.

The leader dies (kill -9); the agent moves to the monitor that takes over, which carries on from
what the store filed: the node never goes silent, nothing the agent sent is filed twice, and the
follower's 503 in between costs nothing but a retry.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Proc, free_port, run_cli
from tests.real.receivers import WebhookReceiver
from tests.real.test_ha import LEASE, TAKEOVER_SLACK, Shared, http_service, kill_9, leader, monitor, wait


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Monitors, the agent and the service this test started: stopped by PID, always."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        with contextlib.suppress(Exception):
            thing.stop()


def status(d: Any) -> dict[str, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{d.url}/api/v1/status", timeout=5) as resp:
            body = json.loads(resp.read())
    except OSError:
        return {}
    return {c["name"]: c for c in body["checks"]}


def test_an_agent_follows_the_group_through_a_kill_9_of_the_leader(tmp_path: Path, pg_url: str, started: list[Any]):
    hook = WebhookReceiver()
    server = hook.serve()
    hook.json = f"json://127.0.0.1:{server.port}/alerts"  # type: ignore[attr-defined]
    port = free_port()
    started.append(http_service(tmp_path, port))
    check = {"name": "svc-phone", "kind": "http", "url": f"http://127.0.0.1:{port}/", "node": "phone-1"}
    daemons = {n: monitor(tmp_path, n, pg_url, hook, [check]) for n in ("monitor-a", "monitor-b")}
    for d in daemons.values():
        config = yaml.safe_load(d.config_path.read_text())
        config["nodes"] = [
            {
                "name": "phone-1",
                "agent": True,
                "interval": "1s",
                "agent_timeout": "10s",
                "expect_dask_worker": False,
                # This machine's load is not what is tested: a busy CI machine must not make the node critical.
                "thresholds": {k: {"warning": None, "critical": None} for k in ("cpu", "memory", "disk")},
            }
        ]
        d.write(config)
    token = tmp_path / "token"
    config_a = str(daemons["monitor-a"].config_path)
    enrolled = run_cli("agent", "enroll", "phone-1", "-c", config_a, "--token-file", str(token))
    assert enrolled.returncode == 0, enrolled.stderr
    shared = Shared(pg_url)
    try:
        for d in daemons.values():
            d.start()
            started.append(d)
        name, _ = leader(shared, daemons)
        servers = ",".join(daemons[n].url for n in ("monitor-a", "monitor-b"))
        argv = ["agent", "run", "--server", servers, "--name", "phone-1", "--token-file", str(token)]
        agent = Proc(
            [sys.executable, "-m", "clusterwatch", *argv, "--state-dir", str(tmp_path / "agent")],
            tmp_path / "agent.log",
        )
        started.append(agent)

        def both_ok(d: Any) -> bool:
            seen = status(d)
            return all(seen.get(n, {}).get("status") == "ok" for n in ("phone-1", "svc-phone"))

        wait(lambda: both_ok(daemons[name]), "the agent's node and check ok at the leader", timeout=60, daemons=daemons)
        killed_at = time.time()
        kill_9(daemons[name])
        other = next(n for n in daemons if n != name)
        wait(
            lambda: (shared.lease() or {}).get("node") == other,
            "the other monitor takes over",
            timeout=LEASE * 3 + TAKEOVER_SLACK,
            daemons=daemons,
        )

        def fresh_at_new_leader() -> bool:
            seen = status(daemons[other])
            node = seen.get("phone-1", {})
            return both_ok(daemons[other]) and (node.get("checked_at") or 0) > killed_at

        wait(fresh_at_new_leader, "the agent pushing to the new leader", timeout=60, daemons=daemons)
        time.sleep(3)  # a few more rounds at the new leader, to look for duplicates among them
        silences = shared.rows("SELECT * FROM events WHERE entity = 'phone-1' AND message LIKE '%silent%'")
        assert not silences, "the node went silent"
        duplicates = shared.rows(
            "SELECT entity, ts, count(*) AS n FROM observations WHERE entity IN ('phone-1', 'svc-phone') "
            "GROUP BY entity, ts HAVING count(*) > 1"
        )
        assert not duplicates, duplicates
        [row] = shared.rows("SELECT acked, last_addr FROM agents WHERE name = 'phone-1'")
        assert row["acked"] > 0 and row["last_addr"] == "127.0.0.1"
        log = (tmp_path / "agent.log").read_text()
        assert token.read_text().strip() not in log
    finally:
        shared.stop()
        server.stop()
