"""Alerts against real receivers: SMTP with login, Slack-shaped and JSON webhooks; no loss, no noise."""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Proc, free_port, run_cli, wait_until
from tests.real.daemon import Daemon, helper, kill_pidfile
from tests.real.receivers import SMTPReceiver, WebhookReceiver

HOST = socket.gethostname()


@pytest.fixture
def smtp():
    receiver = SMTPReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def hook():
    receiver = WebhookReceiver()
    server = receiver.serve()
    receiver.url = server.url  # type: ignore[attr-defined]
    receiver.json = f"json://127.0.0.1:{server.port}/alerts"  # type: ignore[attr-defined]
    yield receiver
    server.stop()


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


class Service:
    """A real HTTP server on a loopback port, stopped and started by the test."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.tmp = tmp
        self.proc: Proc | None = None

    def up(self) -> Service:
        self.proc = Proc(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            self.tmp / f"svc-{self.port}.log",
        )
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), 0.2).close() or True, what="svc")
        return self

    def down(self) -> None:
        if self.proc:
            self.proc.stop()


def test_email_firing_and_resolved_with_login(tmp_path: Path, smtp: SMTPReceiver, daemons):
    svc = Service(tmp_path).up()
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": {"oncall-mail": smtp.url()}, "group_wait": "0s"},
            "checks": [{"name": "api", "kind": "tcp", "port": svc.port}],
        },
    )
    daemons.append(d)
    try:
        d.start()
        wait_until(lambda: (e := d.entity("api")) is not None and e["hard"] == "ok", what="healthy start")
        svc.down()
        wait_until(lambda: smtp.mails, timeout=20, what=f"the firing mail\n{d.log()[-2000:]}")
        svc.up()
        wait_until(lambda: len(smtp.mails) >= 2, timeout=20, what="the resolved mail")
    finally:
        svc.down()
    firing, resolved = smtp.mails[:2]
    assert firing.subject.startswith(f"[CRITICAL] api on {HOST}: connection refused at 127.0.0.1:{svc.port}")
    assert firing.to == ["oncall@example.org"] and firing.sender == "clusterwatch@example.org"
    assert "Next step: is the service running?" in firing.body and "since" in firing.body
    assert resolved.subject.startswith(f"[RESOLVED] api on {HOST}: healthy again after ")
    assert "AUTH" not in "".join(smtp.logins) or all(x.endswith(":ok") for x in smtp.logins)
    assert smtp.logins and all(x.endswith(":ok") for x in smtp.logins)
    assert smtp.password not in d.log()


def test_slack_shaped_and_json_webhooks(tmp_path: Path, hook: WebhookReceiver, daemons):
    port = free_port()
    channels = {"hook": hook.json, "chat": f"mmost://127.0.0.1:{hook.url.rsplit(':', 1)[1]}/slacklikewebhooktoken42"}
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": channels, "group_wait": "0s"},
            "checks": [{"name": "api", "kind": "tcp", "port": port}],
        },
    )
    daemons.append(d)
    d.start()
    wait_until(lambda: len(hook.hits) >= 2, timeout=20, what="both webhooks")
    by_path = {h.path: h.body for h in hook.hits}
    json_body = by_path["/alerts"]
    assert json_body["title"].startswith(f"[CRITICAL] api on {HOST}: connection refused")
    assert json_body["type"] == "failure" and "What was tried" in json_body["message"]
    slack = by_path["/hooks/slacklikewebhooktoken42"]
    assert set(slack) >= {"text", "username"} and "connection refused" in slack["text"]
    assert "slacklikewebhooktoken42" not in d.log()


def test_receiver_down_for_a_while_every_alert_arrives_in_order_once(tmp_path: Path, hook: WebhookReceiver, daemons):
    hook.failing_until = time.time() + 20  # a receiver that answers 500 for 20 s (four tries each), then recovers
    ports = [free_port() for _ in range(3)]
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "0s"},
            "checks": [
                {"name": f"svc{i}", "kind": "tcp", "port": p, "interval": f"{200 + 700 * i}ms"}
                for i, p in enumerate(ports)
            ],
        },
    )
    daemons.append(d)
    d.start()
    wait_until(lambda: hook.refused >= 3, timeout=20, what="refused deliveries")

    def told() -> list[str]:
        """Which services people heard of: two that failed in the same instant arrive as one message."""
        parts = []
        for hit in list(hook.hits):
            title, message = str(hit.body.get("title", "")), str(hit.body.get("message", ""))
            grouped = [line[3:] for line in message.splitlines() if line.startswith("== ")]
            parts += grouped if " problems: " in title else [title]
        return sorted(m.group(1) for p in parts if (m := re.match(r"\[CRITICAL\] (svc\d) on ", p)))

    wait_until(lambda: len(told()) >= 3, timeout=120, what=f"every alert after recovery\n{d.log()[-1500:]}")
    time.sleep(2)
    assert told() == ["svc0", "svc1", "svc2"]  # each once
    titles = hook.titles()
    assert len(titles) == len(set(titles)), titles  # no message twice
    queued = [r["title"] for r in d.query("SELECT title FROM outbox ORDER BY id")]
    assert titles == queued  # in the order they were raised
    rows = d.query("SELECT * FROM outbox")
    assert all(r["delivered"] is not None for r in rows) and max(r["attempts"] for r in rows) >= 2
    status = run_cli("alerts", "status", "-c", str(d.config_path))
    assert f"hook: 0 waiting, {len(rows)} delivered, 0 given up" in status.stdout


def test_kill_9_with_alerts_in_the_outbox(tmp_path: Path, hook: WebhookReceiver, daemons):
    hook.failing_until = time.time() + 3600
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "0s"},
            "checks": [{"name": "api", "kind": "tcp", "port": free_port()}],
        },
    )
    daemons.append(d)
    d.start()
    wait_until(lambda: d.query("SELECT * FROM outbox"), timeout=20, what="an alert in the outbox")
    d.proc.signal(signal.SIGKILL)
    d.proc.popen.wait(5)
    assert hook.hits == []
    hook.failing_until = 0
    d.start()
    wait_until(lambda: hook.hits, timeout=20, what="the alert after the restart")
    assert hook.titles()[0].startswith(f"[CRITICAL] api on {HOST}")
    time.sleep(1)
    assert len(hook.hits) == 1  # the open incident resumed: not announced a second time


def test_five_failures_together_make_one_message(tmp_path: Path, hook: WebhookReceiver, daemons):
    pids = tmp_path / "pids"
    ports = [free_port() for _ in range(5)]
    for port in ports:
        Proc(helper("--serve", str(port), "--pidfile", str(tmp_path / f"pid{port}")), tmp_path / "s.log").popen.wait()
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "3s"},
            "checks": [{"name": f"svc{i}", "kind": "tcp", "port": p} for i, p in enumerate(ports)],
        },
    )
    daemons.append(d)
    try:
        d.start()
        wait_until(lambda: all((e := d.entity(f"svc{i}")) and e["hard"] == "ok" for i in range(5)), what="up")
        for port in ports:
            kill_pidfile(tmp_path / f"pid{port}")
        wait_until(lambda: hook.hits, timeout=20, what="the grouped alert")
        time.sleep(4)
    finally:
        for port in ports:
            kill_pidfile(tmp_path / f"pid{port}")
        kill_pidfile(pids)
    assert len(hook.hits) == 1, hook.titles()
    body = hook.hits[0].body
    assert body["title"].startswith("[CRITICAL] 5 problems: ")
    assert all(f"svc{i}" in body["message"] for i in range(5))


def test_node_down_sends_no_per_service_alerts(tmp_path: Path, hook: WebhookReceiver, daemons):
    node = {
        "name": "box",
        "host": "127.0.0.1",
        "expect_dask_worker": False,
        "ssh": {"port": free_port(), "connect_timeout": "1s"},
    }
    d = Daemon(
        tmp_path,
        {
            "interval": "300ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "2s"},
            "nodes": [node],
            "checks": [{"name": f"svc{i}", "kind": "tcp", "port": free_port(), "node": "box"} for i in range(3)],
        },
    )
    daemons.append(d)
    d.start()
    wait_until(lambda: hook.hits, timeout=20, what="the node alert")
    time.sleep(4)
    assert [t.split(":")[0] for t in hook.titles()] == ["[CRITICAL] box on box"]
    assert len(d.events("state_change")) >= 4  # the services' failures are still recorded
    assert [r["entity"] for r in d.query("SELECT entity FROM incidents")] == ["box"]


def test_silence_holds_back_then_releases(tmp_path: Path, hook: WebhookReceiver, daemons):
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "0s"},
            "checks": [{"name": "api", "kind": "tcp", "port": free_port()}],
        },
    )
    daemons.append(d)
    added = run_cli(
        "silence", "add", "--match", "check=api", "--for", "1h", "--reason", "planned work", "-c", str(d.config_path)
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[1]
    listed = run_cli("silence", "list", "-c", str(d.config_path)).stdout
    assert silence_id in listed and "check=api" in listed and "planned work" in listed
    d.start()
    d.wait_event("incident_opened", "api", timeout=20)
    time.sleep(3)
    assert hook.hits == []  # silenced: recorded, not sent
    assert run_cli("silence", "rm", silence_id, "-c", str(d.config_path)).returncode == 0
    wait_until(lambda: hook.hits, timeout=20, what="the alert once the silence ended")
    assert hook.titles()[0].startswith("[CRITICAL] api")


def test_repeat_interval(tmp_path: Path, hook: WebhookReceiver, daemons):
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "0s", "repeat_interval": "2s"},
            "checks": [{"name": "api", "kind": "tcp", "port": free_port()}],
        },
    )
    daemons.append(d)
    d.start()
    wait_until(lambda: len(hook.hits) >= 3, timeout=20, what="repeats")
    titles = hook.titles()
    assert titles[0].startswith("[CRITICAL] api") and titles[1].startswith("[CRITICAL] (still) api")
    gaps = [b.at - a.at for a, b in zip(hook.hits, hook.hits[1:], strict=False)]
    assert all(1.5 < g < 4 for g in gaps), gaps


def test_restart_that_worked_is_reported_once(tmp_path: Path, hook: WebhookReceiver, daemons):
    port, pids = free_port(), tmp_path / "pids"
    serve = helper("--serve", str(port), "--pidfile", str(pids))
    Proc(serve, tmp_path / "first.log").popen.wait(10)
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "alerts": {"channels": {"hook": hook.json}, "group_wait": "5s"},
            "checks": [{"name": "api", "kind": "tcp", "port": port, "restart": {"command": serve}}],
        },
    )
    daemons.append(d)
    try:
        d.start()
        wait_until(lambda: (e := d.entity("api")) is not None and e["hard"] == "ok", what="healthy")
        kill_pidfile(pids)
        wait_until(lambda: hook.hits, timeout=20, what="the single notice")
        time.sleep(6)
    finally:
        kill_pidfile(pids)
    [title] = hook.titles()
    assert title.startswith(f"[RESOLVED] api on {HOST} was down ") and "; restarted by command; healthy again" in title


def test_alerts_test_command_reports_each_channel(tmp_path: Path, hook: WebhookReceiver, smtp: SMTPReceiver):
    d = Daemon(
        tmp_path,
        {"alerts": {"channels": {"hook": hook.json, "mail": smtp.url(), "dead": f"json://127.0.0.1:{free_port()}/x"}}},
    )
    result = run_cli("alerts", "test", "-c", str(d.config_path))
    assert result.returncode == 1
    lines = {line.split(" (", 1)[0]: line for line in result.stdout.splitlines()}
    assert lines["hook"].endswith("delivered") and lines["mail"].endswith("delivered")
    assert "FAILED" in lines["dead"]
    assert smtp.password not in result.stdout + result.stderr
    assert hook.titles() == ["[TEST] clusterwatch alert test"]
    assert smtp.mails[0].subject == "[TEST] clusterwatch alert test"
    only = run_cli("alerts", "test", "--channel", "hook", "-c", str(d.config_path))
    assert only.returncode == 0 and only.stdout.startswith("hook (")


def test_cluster_ai_variables_become_channels(tmp_path: Path, smtp: SMTPReceiver, hook: WebhookReceiver):
    (tmp_path / ".env").write_text(
        f"SMTP_SERVER=127.0.0.1\nSMTP_PORT={smtp.port}\nSMTP_USERNAME={smtp.user}\n"
        f"SMTP_PASSWORD={smtp.password}\nFROM_EMAIL=cluster@example.org\n"
        "ALERT_EMAIL=admin@example.org\n"
    )
    d = Daemon(tmp_path, {"cluster_ai": {"env_files": [".env"]}})
    result = run_cli("alerts", "test", "-c", str(d.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("email (mailto://alerts:****@127.0.0.1")
    assert smtp.mails[0].to == ["admin@example.org"] and smtp.mails[0].sender == "cluster@example.org"
    shown = run_cli("config", "show", "-c", str(d.config_path)).stdout
    assert smtp.password not in shown and smtp.password not in result.stdout


def test_heartbeat_pings_while_alive(tmp_path: Path, hook: WebhookReceiver, daemons):
    d = Daemon(tmp_path, {"alerts": {"heartbeat": {"url": f"{hook.url}/ping/abc-123", "every": "500ms"}}, "checks": []})
    daemons.append(d)
    d.start()
    wait_until(lambda: len(hook.pings) >= 3, timeout=15, what="heartbeat pings")
    d.stop()
    count = len(hook.pings)
    time.sleep(1.5)
    assert len(hook.pings) == count  # a dead monitor stops pinging: that is the alarm
