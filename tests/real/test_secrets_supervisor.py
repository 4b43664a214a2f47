"""A supervisord with a password, and a restart URL with the wrong one: the password shows nowhere.

What was seen: xmlrpc's ProtocolError names the URL as `admin:PASSWORD@host:port/RPC2` (no scheme),
and that text went into the action's detail, the log and the API.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterwatch import logs, redact
from clusterwatch.config.schema import RestartPolicy
from clusterwatch.heal import actions
from clusterwatch.redact import Redactor
from tests.helpers import Proc, closed_port, free_port, port_open, wait_until
from tests.real.daemon import Daemon

TYPED = "Typed-Wrong-Pw-7f3a"  # what the operator put in supervisor_url: still a password


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[int]:
    """A real supervisord whose XML-RPC needs a login, running one program."""
    port = free_port()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""\
[supervisord]
nodaemon=true
logfile={tmp_path / "supervisord.log"}
pidfile={tmp_path / "supervisord.pid"}
childlogdir={tmp_path}

[inet_http_server]
port=127.0.0.1:{port}
username=admin
password=Right-Pw-91c2

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:svc]
command=/bin/sleep 3600
autostart=true
autorestart=false
""")
    proc = Proc([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], tmp_path / "sv.out")
    try:
        wait_until(lambda: port_open(port), what="supervisord")
        yield port
    finally:
        proc.stop(timeout=15)


def test_protocol_error_from_a_real_supervisord_is_masked(supervisord: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(redact, "_current", Redactor())
    policy = RestartPolicy(supervisor="svc", supervisor_url=f"http://admin:{TYPED}@127.0.0.1:{supervisord}/RPC2")
    outcome = asyncio.run(actions.perform(policy, None, None))  # type: ignore[arg-type]
    assert not outcome.ok
    assert TYPED in outcome.detail  # the leak, as the action reports it
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter(timestamps=False))
    logger = logging.getLogger("clusterwatch.test.supervisor")
    logger.handlers, logger.propagate = [handler], False
    logger.warning("restart failed: %s", outcome.detail)
    try:
        raise RuntimeError(outcome.detail)
    except RuntimeError:
        logger.exception("and as a traceback")
    assert TYPED not in stream.getvalue()
    assert f"admin:***@127.0.0.1:{supervisord}" in stream.getvalue()


def test_monitor_keeps_the_password_out_of_log_store_and_api(tmp_path: Path, supervisord: int):
    d = Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "fall": 1,
            "checks": [
                {
                    "name": "svc",
                    "kind": "tcp",
                    "port": closed_port(),
                    "restart": {
                        "supervisor": "svc",
                        "supervisor_url": f"http://admin:{TYPED}@127.0.0.1:{supervisord}/RPC2",
                        "max_attempts": 1,
                        "verify_timeout": "2s",
                    },
                }
            ],
        },
    )
    d.start()
    try:
        wait_until(
            lambda: [a for a in d.actions("svc") if a["outcome"] != "running"],
            timeout=60,
            what=f"the restart attempt's outcome\n{d.log()[-3000:]}",
        )
        wait_until(lambda: "401" in d.log(), timeout=30, what="the refusal in the log")
        with urllib.request.urlopen(f"{d.url}/api/v1/actions", timeout=10) as answer:
            api = answer.read().decode()
    finally:
        d.stop()
    [action] = d.actions("svc")
    assert action["outcome"] != "succeeded" and "401" in action["detail"]
    stored = json.dumps([dict(r) for r in d.query("SELECT * FROM actions")] + [dict(r) for r in d.events()])
    written = d.log() + "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log*"))
    for where, text in (("the stored actions and events", stored), ("the logs", written), ("the API", api)):
        assert TYPED not in text, where
