"""History across `kill -9` of the real monitor: after three kills, with an outage in between, the
rollups agree with the raw observations in every minute but each entity's open one (held in memory
when the monitor died); once the monitor comes back and carries on, in every minute, and so does
`clusterwatch report`, to the probe and to the second; uptime is measured in time, and the incident
keeps its severity after it closes."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from tests.helpers import ServerThread, closed_port, run_cli, wait_until
from tests.real.daemon import Daemon
from tests.test_store_rollups import assert_rollups_match_raw, expected_minutes

INTERVAL = 0.25  # the checks' interval
EXPECTED_EVERY = INTERVAL * 1.5  # what the monitor passes as each observation's expected_every (room for jitter)


def observations(d: Daemon, entity: str) -> int:
    rows = d.query("SELECT COUNT(*) AS n FROM observations WHERE entity = ?", entity)
    return rows[0]["n"] if rows else 0


def kill_9(d: Daemon) -> None:
    assert d.proc is not None
    d.proc.signal(signal.SIGKILL)
    d.proc.popen.wait(10)


def test_rollups_and_report_after_kill_9_match_raw(tmp_path: Path):
    healthy = {"yes": True}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["yes"] else 503, text="ok" if healthy["yes"] else "down")

    app = web.Application()
    app.router.add_get("/", health)
    with ServerThread(app) as service:
        d = Daemon(
            tmp_path,
            {
                "interval": f"{int(INTERVAL * 1000)}ms",
                "checks": [
                    {"name": "api", "kind": "http", "url": service.url + "/", "fall": 2, "rise": 2},
                    {"name": "gone", "kind": "tcp", "port": closed_port()},
                ],
            },
        )
        try:
            # Three runs, each killed with -9 in the middle of its writes; the service fails in the
            # second and comes back in the third.
            for run, (up, more) in enumerate([(True, 20), (False, 25), (True, 25)]):
                healthy["yes"] = up
                before = observations(d, "api")
                d.start()
                wait_until(
                    lambda before=before, more=more: observations(d, "api") >= before + more,
                    timeout=60,
                    interval=0.05,
                    what=f"run {run}: {more} more observations of api\n{d.log()[-2000:]}",
                )
                if run == 1:
                    d.wait_event("incident_opened", "api", timeout=30)
                if run == 2:
                    d.wait_event("incident_closed", "api", timeout=30)
                kill_9(d)
                assert_rollups_match_raw(d.db_path, EXPECTED_EVERY, but_open=True)
            # It comes back (each entity's open minute rebuilt from raw), carries on, and stops.
            before = {e: observations(d, e) for e in ("api", "gone")}
            d.start()
            wait_until(
                lambda: all(observations(d, e) >= before[e] + 8 for e in before),
                timeout=60,
                interval=0.05,
                what=f"more observations after the last kill\n{d.log()[-2000:]}",
            )
            d.stop()
        finally:
            d.stop()

    total = assert_rollups_match_raw(d.db_path, EXPECTED_EVERY)
    assert total >= observations(d, "api") >= 70

    raw = [dict(r) for r in d.query("SELECT * FROM observations")]
    minutes = expected_minutes(raw, EXPECTED_EVERY)
    result = run_cli("report", "--since", "1h", "--json", "-c", str(d.config_path))
    assert result.returncode == 0, result.stderr
    services = {s["entity"]: s for s in json.loads(result.stdout)["services"]}
    for entity in ("api", "gone"):
        ok = sum(m["seconds_ok"] for (e, _), m in minutes.items() if e == entity)
        known = sum(m["seconds_known"] for (e, _), m in minutes.items() if e == entity)
        assert services[entity]["probes"] == sum(1 for o in raw if o["entity"] == entity)
        assert services[entity]["known_s"] == pytest.approx(known, abs=0.1)
        assert services[entity]["uptime_percent"] == pytest.approx(100 * ok / known, abs=0.01)
    assert 0 < services["api"]["uptime_percent"] < 100
    assert services["gone"]["uptime_percent"] == 0

    (incident,) = d.query("SELECT * FROM incidents WHERE entity = 'api'")
    assert incident["closed"] is not None
    assert (incident["status"], incident["worst"]) == ("critical", "critical")  # not 'ok' after it closed


def test_metrics_and_health_show_the_store(tmp_path: Path):
    """/metrics carries the writer's queue, failures and drops."""
    d = Daemon(tmp_path, {"interval": "250ms", "checks": [{"name": "gone", "kind": "tcp", "port": closed_port()}]})
    try:
        d.start()
        wait_until(lambda: observations(d, "gone") >= 8, timeout=60, what="observations")

        def metrics() -> str:
            with urllib.request.urlopen(d.url + "/metrics", timeout=5) as response:
                return response.read().decode()

        def written() -> float:
            for line in metrics().splitlines():
                if line.startswith("clusterwatch_store_writes_total "):
                    return float(line.split()[1])
            return 0.0

        wait_until(lambda: written() > 0, timeout=60, what="writes counted in /metrics")
        text = metrics()
        for name in (
            "clusterwatch_store_queue_depth ",
            "clusterwatch_store_failures_total 0.0",
            'clusterwatch_store_dropped_total{reason="queue_full"} 0.0',
            'clusterwatch_store_dropped_total{reason="failed"} 0.0',
            "clusterwatch_store_last_commit_age_seconds ",
        ):
            assert name in text, name
    finally:
        d.stop()
