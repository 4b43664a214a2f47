"""Secrets stay secret: in text, in log lines and their tracebacks, in Apprise's own lines, across a reload."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import xmlrpc.client
from pathlib import Path

import pytest

from clusterwatch import logs, redact
from clusterwatch.alerting import channels
from clusterwatch.redact import MASK, Redactor, is_secret_parameter
from tests.helpers import ROOT, closed_port, run_cli

SECRET = "hunter2-Secret-Value"


@pytest.fixture
def fresh_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty current redactor and leaves the process's one as it was."""
    monkeypatch.setattr(redact, "_current", Redactor())


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own whose lines go through one of logs.py's formatters into a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"clusterwatch.test.{id(stream)}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    return logger, stream


# --- text -----------------------------------------------------------------------------------------


def test_password_in_url_with_and_without_scheme():
    r = Redactor()
    assert r.text("https://admin:pa55word@127.0.0.1:1/x") == f"https://admin:{MASK}@127.0.0.1:1/x"
    # xmlrpc's ProtocolError names the URL without its scheme.
    error = xmlrpc.client.ProtocolError("admin:pa55word@127.0.0.1:9001/RPC2", 401, "Unauthorized", {})
    assert "pa55word" in repr(error)
    assert "pa55word" not in r.text(repr(error))
    assert f"admin:{MASK}@127.0.0.1:9001/RPC2" in r.text(repr(error))
    assert "pa55word" not in r.text(str(error))
    # An '@' in a password, as people type it: everything up to the last '@' before the host.
    masked = r.text("mailtos://user:p@ss@smtp.example.org:587?to=oncall@example.org")
    assert masked == f"mailtos://user:{MASK}@smtp.example.org:587?to=oncall@example.org"
    assert r.text("for user:p@ss@[::1]:9001/RPC2") == f"for user:{MASK}@[::1]:9001/RPC2"


def test_no_false_userinfo():
    r = Redactor()
    for text in (
        "mail mailto:alice@example.org now",
        "image busybox:latest@sha256:12abcdef",
        "ollama/llama3.2:latest on gpu-box",
        "tcp://127.0.0.1:8786 and user@example.org",
        "Apprise shows mailtos://user:****@smtp.example.org/",
    ):
        assert r.text(text) == text


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "refresh_token",
        "auth",
        "key",
        "api_key",
        "apikey",
        "apiKey",
        "password",
        "pass",
        "passwd",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "X-Amz-Signature",
        "%2BAuthorization",
    ],
)
def test_query_parameters_named_like_secrets_are_masked(name: str):
    assert is_secret_parameter(name)
    url = f"http://127.0.0.1:1/api?services=web&{name}=s3cr3tvalue&page=2"
    assert Redactor().text(url) == f"http://127.0.0.1:1/api?services=web&{name}={MASK}&page=2"


@pytest.mark.parametrize(
    "name", ["services", "monkey", "keys", "keyboard", "passage", "author", "tokenizer", "signatures_page", "q"]
)
def test_ordinary_parameters_are_not(name: str):
    assert not is_secret_parameter(name)
    url = f"http://127.0.0.1:1/api?{name}=visible-value&x=1"
    assert Redactor().text(url) == url


def test_known_secrets_and_their_url_encoding():
    r = Redactor(["p@ss/w0rd!", "abc"])  # "abc": too short to be a secret, it would mask words
    assert r.text("login p@ss/w0rd! then p%40ss%2Fw0rd%21") == f"login {MASK} then {MASK}"
    assert r.text("abc") == "abc"
    assert r.text("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x") == f"Authorization: Bearer {MASK}"


def test_data_masks_by_key_and_by_value():
    r = Redactor([SECRET])
    data = {"headers": {"Authorization": "Basic xyz"}, "argv": ["curl", f"-u{SECRET}"], "pair": ("a", SECRET)}
    assert r.data(data) == {"headers": {"Authorization": MASK}, "argv": ["curl", f"-u{MASK}"], "pair": ("a", MASK)}


# --- the current redactor, and a reload ------------------------------------------------------------


def test_reload_installs_a_new_redactor_everything_uses(fresh_current: None):
    logger, stream = capture(logs.TextFormatter(timestamps=False))
    old = redact.install(Redactor(["old-password-1"]))
    logger.warning("sending with old-password-1 and new-password-2")
    # What was seen: the log kept the redactor it was set up with, so a reloaded config's secret showed.
    new = Redactor(["new-password-2"])
    assert redact.install(new) is new and redact.current() is new
    logger.warning("sending with old-password-1 and new-password-2")
    first, second = stream.getvalue().splitlines()
    assert "old-password-1" not in first and "new-password-2" in first  # not known yet: shown
    assert "old-password-1" not in second and "new-password-2" not in second
    assert second == f"WARNING test.{second.split('test.')[1].split(':')[0]}: sending with {MASK} and {MASK}"
    assert old.text("old-password-1") == MASK  # the old one still works for whoever holds it
    # The rest of the process asks the same object.
    assert redact.text("new-password-2") == MASK


def test_install_is_idempotent(fresh_current: None):
    r = Redactor(["abcd-secret"])
    redact.install(r)
    redact.install(r)
    assert redact.current() is r and r.text("abcd-secret") == MASK


# --- log lines: message, fields, traceback, stack ------------------------------------------------


def _raise_with_secret() -> None:
    raise RuntimeError(f"login to https://admin:{SECRET}@127.0.0.1:9001 refused for token {SECRET}")


@pytest.mark.parametrize(
    "formatter", [logs.TextFormatter(timestamps=True), logs.JSONFormatter(), logs.ClusterAIFormatter()]
)
def test_traceback_and_stack_are_redacted(fresh_current: None, formatter: logging.Formatter):
    redact.install(Redactor([SECRET]))
    logger, stream = capture(formatter)
    try:
        _raise_with_secret()
    except RuntimeError:
        logger.exception("it failed: %s", SECRET, extra={"url": f"http://u:{SECRET}@h/", "access_token": "zzzzzz"})
    logger.warning("here", stack_info=True)
    out = stream.getvalue()
    assert SECRET not in out and "zzzzzz" not in out
    assert "Traceback (most recent call last)" in out and "_raise_with_secret" in out
    assert "RuntimeError: login to https://admin:***@127.0.0.1:9001 refused for token ***" in out.replace("\\n", "\n")
    assert "Stack (most recent call last)" in out
    if isinstance(formatter, logs.JSONFormatter):
        first = json.loads(out.splitlines()[0])
        assert first["message"] == f"it failed: {MASK}" and "Traceback" in first["exception"]


def test_traceback_text_cached_by_another_formatter_is_redacted_too(fresh_current: None):
    """logging caches a traceback's text on the record (`exc_text`); that copy is masked as well."""
    redact.install(Redactor([SECRET]))
    record = logging.LogRecord("clusterwatch.x", logging.ERROR, __file__, 1, "failed", (), None)
    record.exc_text = f"Traceback (most recent call last):\nRuntimeError: {SECRET}"
    assert SECRET not in logs.TextFormatter(timestamps=False).format(record)


SCRIPT = """
import logging, sys, threading
from clusterwatch import logs
from clusterwatch.redact import Redactor
logs.setup(level="debug", log_dir=sys.argv[1], redactor=Redactor([{secret!r}]))
log = logging.getLogger("clusterwatch.test")
try:
    raise ConnectionError("connect to admin:{secret}@127.0.0.1:9001/RPC2 failed")
except ConnectionError:
    log.exception("supervisor unreachable")
def dies():
    raise ValueError("token {secret} rejected")
t = threading.Thread(target=dies, name="worker")
t.start(); t.join()
log.info("bad call %s %s", {secret!r})
log.warning("still here")
"""


def test_setup_redacts_everything_a_process_writes(tmp_path: Path):
    """logs.setup in a real process: log lines, a traceback, a dying thread, a broken log call, the log file."""
    script = SCRIPT.format(secret=SECRET)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    written = result.stdout + result.stderr + (tmp_path / "clusterwatch.log").read_text()
    assert SECRET not in written
    assert "supervisor unreachable" in result.stderr and "ConnectionError: connect to admin:***@" in result.stderr
    assert "thread worker died: ValueError" in result.stderr and "ValueError: token *** rejected" in result.stderr
    assert "logging error in" in result.stderr and "still here" in result.stderr
    assert "[ERROR] [TEST] supervisor unreachable" in (tmp_path / "clusterwatch.log").read_text()


# --- Apprise ----------------------------------------------------------------------------------------


def test_apprise_rejected_url_is_not_logged_in_full(fresh_current: None):
    """A typo in the scheme: Apprise logs the URL with its webhook token; the user mistyped a real one."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter(timestamps=False))
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(handler)
    try:
        problem = channels.check_url("slck://T1JJ3T3L2/A1BRTD4JD/secrettoken123")
        problem_discord = channels.check_url("discord://98765432101/")
    finally:
        apprise_log.removeHandler(handler)
    out = stream.getvalue()
    assert problem is not None and problem_discord is not None
    assert "Unparseable URL" in out and "Could not load Discord URL" in out
    for secret in ("secrettoken123", "98765432101"):
        assert secret not in out and secret not in problem and secret not in problem_discord


def test_channel_secrets_reach_the_current_redactor(fresh_current: None):
    url = "https://hooks.slack.com/services/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"
    channels.Channels({"slack": url, "mail": "mailtos://user:Hunter2pass@smtp.example.org:587?to=a@b.org"})
    line = redact.text(f"POST {url} failed; login user:Hunter2pass; Slack token XyZxYzXyZxYzXyZxYzXyZxYz")
    assert "XyZxYz" not in line and "Hunter2pass" not in line and "T0AAA0000" not in line
    # Words in a channel URL are not secrets.
    assert redact.text("check services on hooks.slack.com") == "check services on hooks.slack.com"


def test_send_failure_reason_is_redacted(fresh_current: None):
    port = closed_port()
    sender = channels.Channels({"hook": f"json://user:Hunter2pass@127.0.0.1:{port}/alerts?token=tok-9f8e7d6c"})
    ok, reason = sender.send("hook", "title", "body", "critical")
    assert not ok
    assert reason == "A Connection error occurred sending JSON notification to 127.0.0.1."  # Apprise's, from its thread
    assert "Hunter2pass" not in reason and "tok-9f8e7d6c" not in reason


def test_privacy_url_is_apprises():
    url = "mailtos://user:Hunter2pass@smtp.example.org:587?to=a@b.org"
    shown = channels.privacy_url(url)
    assert shown.startswith("mailtos://user:****@smtp.example.org") and "Hunter2pass" not in shown
    assert channels.privacy_url("slck://T1JJ3T3L2/A1BRTD4JD/secrettoken123") == f"slck://{MASK}"
    slack = channels.privacy_url("https://hooks.slack.com/services/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")
    assert slack.startswith("slack://T...0/B...0/X...z")


def test_cli_error_output_is_one_redacted_story(tmp_path: Path):
    """`config validate` on a channel Apprise rejects: exit 3, the reason, and no token, at any verbosity."""
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent("""\
            checks:
              - {name: api, kind: tcp, port: 1}
            alerts:
              channels:
                slack: "slck://T1JJ3T3L2/A1BRTD4JD/secrettoken123"
        """)
    )
    for verbosity in ([], ["-v"], ["-vv"]):
        result = run_cli("config", "validate", "-c", str(config), *verbosity)
        assert result.returncode == 3, result.stderr
        assert "not a usable Apprise URL" in result.stderr
        assert "secrettoken123" not in result.stdout + result.stderr


def test_config_show_prints_channels_as_apprise_does(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent("""\
            checks:
              - {name: api, kind: http, url: "http://127.0.0.1:1/x?access_token=tok-abcdef12&services=web&monkey=1"}
            alerts:
              channels:
                slack: "https://hooks.slack.com/services/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"
                mail: "mailtos://oncall:${SMTP_PASSWORD}@smtp.example.org:587?to=a@example.org"
              heartbeat: {url: "https://hc-ping.com/5b2c1b8e-9f4a-4d2e-8c1a-0a1b2c3d4e5f"}
        """)
    )
    result = run_cli("config", "show", "-c", str(config), env={"SMTP_PASSWORD": "Mail-Pw-5512"})
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for secret in ("tok-abcdef12", "XyZxYzXyZxYz", "T0AAA0000", "B0BBB0000", "Mail-Pw-5512", "5b2c1b8e"):
        assert secret not in out, secret
    assert "slack: slack://T...0/B...0/X...z" in out
    assert "mail: mailtos://oncall:****@smtp.example.org" in out
    assert "access_token=***&services=web&monkey=1" in out
    assert "url: https://hc-ping.com/***" in out
