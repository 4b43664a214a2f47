"""`clusterwatch report` on a store filled by a real run with failures, restarts and flapping."""

from __future__ import annotations

import json
import time
from pathlib import Path

from aiohttp import web

from tests.helpers import Proc, ServerThread, free_port, port_open, run_cli, wait_until
from tests.real.daemon import Daemon, helper, kill_pidfile


def test_report_from_a_real_run(tmp_path: Path):
    port, pids = free_port(), tmp_path / "pids"
    serve = helper("--serve", str(port), "--pidfile", str(pids))
    Proc(serve, tmp_path / "first.log").popen.wait(10)
    wait_until(lambda: port_open(port), what="the service")
    flips = {"n": 0}

    async def health(request: web.Request) -> web.Response:
        flips["n"] += 1
        return web.Response(status=200 if flips["n"] % 2 else 503)

    app = web.Application()
    app.router.add_get("/", health)
    with ServerThread(app) as flappy:
        d = Daemon(
            tmp_path,
            {
                "interval": "250ms",
                "checks": [
                    {
                        "name": "web",
                        "kind": "tcp",
                        "port": port,
                        "restart": {"command": serve, "verify_timeout": "5s", "stable_for": "1s"},
                    },
                    {
                        "name": "dead",
                        "kind": "tcp",
                        "port": free_port(),
                        "restart": {
                            "command": ["/bin/true"],
                            "max_attempts": 2,
                            "backoff": "100ms",
                            "verify_timeout": "300ms",
                        },
                    },
                    {"name": "flappy", "kind": "http", "url": flappy.url + "/", "fall": 1, "rise": 1},
                ],
            },
        )
        try:
            d.start()
            wait_until(lambda: (e := d.entity("web")) is not None and e["hard"] == "ok", what="web up")
            for _ in range(2):  # the same service fails again and again; the healer brings it back
                kill_pidfile(pids)
                count = len(d.events("remediation_succeeded", "web"))
                d.wait_event("remediation_succeeded", "web", timeout=30, count=count + 1)
                time.sleep(1.5)
            d.wait_event("remediation_exhausted", "dead", timeout=30)
            d.wait_event("flapping_started", "flappy", timeout=30)
        finally:
            d.stop()
            kill_pidfile(pids)

    result = run_cli("report", "--since", "1h", "--json", "-c", str(d.config_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    services = {s["entity"]: s for s in data["services"]}
    assert services["dead"]["uptime_percent"] == 0 and services["dead"]["open"] == 1
    assert services["web"]["incidents"] >= 2 and services["web"]["mttr_s"] > 0
    assert 0 < services["web"]["uptime_percent"] < 100
    assert services["dead"]["known_s"] > 0 and services["web"]["known_s"] > services["dead"]["known_s"] / 2
    # Each incident keeps how bad it was, closed ones too (not 'ok').
    assert data["incidents"] and all(i["worst"] in ("critical", "unknown", "warning") for i in data["incidents"])
    assert all(i["status"] != "ok" for i in data["incidents"])
    restarts = {r["check"]: r for r in data["restarts"]}
    assert restarts["web"]["succeeded"] >= 2 and restarts["web"]["success_rate"] == 100.0
    assert (
        restarts["dead"]["failed"] == 2 and restarts["dead"]["success_rate"] == 0 and restarts["dead"]["gave_up"] == 1
    )
    assert data["summary"]["mttr_s"] is not None and data["summary"]["restarts"] >= 4
    assert [f["entity"] for f in data["flapping"]] == ["flappy"]
    assert data["slowest"] and all(s["p95_ms"] is not None for s in data["slowest"])

    page = tmp_path / "report.html"
    html = run_cli("report", "--since", "1h", "--html", str(page), "-c", str(d.config_path))
    assert html.returncode == 0 and page.exists()
    text = page.read_text()
    assert "<h2>Uptime</h2>" in text and "dead" in text and "flappy" in text
    table = run_cli("report", "--since", "1h", "-c", str(d.config_path))
    assert "Uptime" in table.stdout and "Restarts" in table.stdout and "Flapping" in table.stdout
