"""Alert routing, maintenance windows, Cluster AI's variables as channels, and outbox expiry (on both
store engines)."""

from __future__ import annotations

import time
from datetime import datetime

from clusterwatch.alerting.channels import channels_from_env
from clusterwatch.alerting.routing import Silence, channels_for, held_by, in_window
from clusterwatch.config.schema import AlertOptions, MaintenanceWindow
from clusterwatch.store.outbox import Message, Outbox, retry_delay

HOOK = "json://127.0.0.1:9/a"


def options(**extra) -> AlertOptions:
    return AlertOptions.model_validate({"channels": {"slack": HOOK, "mail": HOOK, "hook": HOOK}, **extra})


def labels(**extra: str) -> dict[str, str]:
    return {"check": "ollama", "entity": "ollama", "kind": "ollama", "node": "", "severity": "critical", **extra}


def test_first_matching_route_wins_and_default_is_critical_to_all():
    routed = options(
        routes=[
            {"match": {"node": "gpu-*"}, "channels": ["slack"], "min_severity": "warning"},
            {"channels": ["mail", "hook"], "min_severity": "critical"},
        ]
    )
    assert channels_for(routed, labels(node="gpu-box", severity="warning"), "warning") == ["slack"]
    assert channels_for(routed, labels(node="gpu-box"), "critical") == ["slack"]
    assert channels_for(routed, labels(node="cpu-1", severity="warning"), "warning") == []
    assert channels_for(routed, labels(node="cpu-1"), "critical") == ["mail", "hook"]
    default = options()
    assert channels_for(default, labels(), "critical") == ["slack", "mail", "hook"]
    assert channels_for(default, labels(severity="warning"), "warning") == []


def test_continue_goes_on_to_the_next_route():
    routed = options(
        routes=[{"match": {"check": "oll*"}, "channels": ["slack"], "continue": True}, {"channels": ["mail"]}]
    )
    assert channels_for(routed, labels(), "critical") == ["slack", "mail"]


def test_maintenance_window_weekly_and_over_midnight():
    window = MaintenanceWindow(match={"node": "phone-*"}, days=["sat"], start="23:00", end="02:00")
    assert in_window(window, datetime(2026, 11, 28, 23, 30))  # Saturday night
    assert in_window(window, datetime(2026, 11, 29, 1, 59))  # Sunday early: still Saturday's window
    assert not in_window(window, datetime(2026, 11, 29, 2, 0))
    assert not in_window(window, datetime(2026, 11, 27, 23, 30))  # Friday
    at = datetime(2026, 11, 28, 23, 30).timestamp()
    assert held_by([], [window], labels(node="phone-1"), at) == "maintenance window (maintenance window)"
    assert held_by([], [window], labels(node="gpu-box"), at) is None


def test_silence_matches_globs_and_expires():
    silence = Silence.new({"node": "gpu-*", "severity": "critical"}, 60, "kernel update")
    now = time.time()
    assert held_by([silence], [], labels(node="gpu-box"), now).startswith(f"silence {silence.id}")
    assert held_by([silence], [], labels(node="cpu-1"), now) is None
    assert held_by([silence], [], labels(node="gpu-box"), now + 61) is None


def test_cluster_ai_variables_become_channels():
    env = {
        "SMTP_SERVER": "smtp.example.org",
        "SMTP_PORT": "587",
        "SMTP_USERNAME": "alerts",
        "SMTP_PASSWORD": "p@ss/word",
        "FROM_EMAIL": "cw@example.org",
        "ALERT_EMAIL": "oncall@example.org",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XYZ",
    }
    channels = channels_from_env(env)
    assert channels["email"] == (
        "mailtos://alerts:p%40ss%2Fword@smtp.example.org:587?to=oncall%40example.org"
        "&from=cw%40example.org&mode=starttls"
    )
    assert channels["slack"] == "https://hooks.slack.com/services/T0/B0/XYZ"
    assert channels_from_env({**env, "SMTP_PORT": "465"})["email"].startswith("mailtos://")
    assert "mode=ssl" in channels_from_env({**env, "SMTP_PORT": "465"})["email"]
    assert channels_from_env({**env, "SMTP_PORT": "25"})["email"].startswith("mailto://")
    assert channels_from_env({}) == {}


def test_outbox_retries_grow_and_old_messages_expire(store_location: str):
    outbox = Outbox(store_location)
    try:
        [first, second] = outbox.add(
            [
                Message("hook", "firing", "critical", "a", "b", ["i1"]),
                Message("hook", "resolved", "resolved", "c", "d", ["i1"]),
            ]
        )
        assert [r["id"] for r in outbox.pending()] == [first, second]
        assert outbox.failed(first, 0, "HTTP 500") == retry_delay(1) == 2.0
        assert retry_delay(3) == 8.0 and retry_delay(20) == 300.0
        outbox.delivered(second)
        assert [r["id"] for r in outbox.pending()] == [first]
        assert outbox.expire(3600) == []
        expired = outbox.expire(0)
        assert [r["id"] for r in expired] == [first]
        [status] = outbox.status()
        assert (status["pending"], status["delivered"], status["expired"]) == (0, 1, 1)
        assert status["last_error"] == "HTTP 500"
    finally:
        outbox.close()


def test_a_failed_outbox_write_loses_no_notification(store_location: str, monkeypatch):
    import asyncio
    import sqlite3

    from clusterwatch.alerting.alerter import Alerter
    from clusterwatch.engine.events import Event, EventKind
    from clusterwatch.model import Status

    outbox = Outbox(store_location)
    real_add = outbox.add

    def full_disk(messages, **_):
        raise sqlite3.OperationalError("database or disk is full")

    async def scenario():
        alerter = Alerter(options(group_wait=0), outbox)
        alerter.on_event(Event(EventKind.INCIDENT_OPENED, "api", "api", time.time(), "connection refused",
                               new=Status.CRITICAL, incident="inc1"))
        monkeypatch.setattr(outbox, "add", full_disk)
        try:
            await alerter.flush()
        except sqlite3.OperationalError:
            pass
        else:
            raise AssertionError("the failed write must surface")
        assert alerter.incidents["inc1"].notified is None  # nobody was told
        monkeypatch.setattr(outbox, "add", real_add)
        assert await alerter.flush() == 3  # the same notification, to each of the 3 channels
        assert alerter.incidents["inc1"].notified is not None
        return [r["title"] for r in outbox.pending()]

    try:
        titles = asyncio.run(scenario())
        states = outbox.alert_states()
    finally:
        outbox.close()
    assert len(titles) == 3 and all(t.startswith("[CRITICAL] api") for t in titles)
    assert [s["incident"] for s in states] == ["inc1"]
