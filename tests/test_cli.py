"""The command line as operators and Nagios use it: options anywhere, exit 3 for every error, no tracebacks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clusterwatch.cli import parse_args
from tests.doubles.ollama import OllamaDouble
from tests.helpers import ROOT, ServerThread, closed_port, run_cli, wait_until

SECRET = "hunter2-Secret-Value"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config whose one check (`api`, refused: critical) is not among the built-in defaults."""
    path = tmp_path / "own.yaml"
    path.write_text(f"checks:\n  - {{name: api, kind: tcp, port: {closed_port()}}}\n")
    return path


@pytest.mark.parametrize(
    "order",
    [
        ["-c", "{c}", "check", "--json"],  # what was seen: this checked the built-in defaults
        ["check", "--json", "-c", "{c}"],
        ["check", "-c", "{c}", "--json"],
        ["-v", "--config", "{c}", "check", "--json", "-v"],
        ["--config={c}", "check", "--json"],
    ],
)
def test_global_options_before_or_after_the_command(tmp_path: Path, config_file: Path, order: list[str]):
    result = run_cli(*[a.replace("{c}", str(config_file)) for a in order], cwd=tmp_path)
    data = json.loads(result.stdout)
    assert data["config"] == str(config_file), result.stderr
    assert [c["name"] for c in data["checks"]] == ["api"]
    assert result.returncode == 2


@pytest.mark.parametrize(
    "order",
    [
        ["-c", "{c}", "config", "validate"],
        ["config", "-c", "{c}", "validate"],
        ["config", "validate", "-c", "{c}"],
    ],
)
def test_global_options_at_every_level_of_a_nested_command(tmp_path: Path, config_file: Path, order: list[str]):
    result = run_cli(*[a.replace("{c}", str(config_file)) for a in order], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config_file}: ok (1 checks")


def test_last_config_wins_and_verbosity_adds_up():
    args = parse_args(["-c", "first.yaml", "-v", "config", "-v", "show", "-c", "last.yaml", "-v"])
    assert (args.command, args.config_command, args.config, args.verbose) == ("config", "show", "last.yaml", 3)
    args = parse_args(["check"])
    assert (args.config, args.verbose) == (None, 0)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuchcommand"],
        ["check", "--no-such-option"],
        ["check", "--timeout", "soon"],
        ["config"],
        ["install", "launchd"],
        ["-c"],
    ],
)
def test_usage_errors_exit_3(argv: list[str]):
    result = run_cli(*argv)
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert "usage: clusterwatch" in result.stderr and "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_version_exit_0():
    assert run_cli("check", "--help").returncode == 0
    assert run_cli("--version").stdout.startswith("clusterwatch ")


BOOM = f"""
import sys
import clusterwatch.cli as cli
def boom(args):
    raise RuntimeError("store at https://admin:{SECRET}@127.0.0.1:5432/db said\\nno")
cli.COMMANDS["check"] = boom
raise SystemExit(cli.main(sys.argv[1:]))
"""


def run_boom(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a process of its own, with a command that has a bug."""
    return subprocess.run([sys.executable, "-c", BOOM, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_internal_error_is_exit_3_with_one_line_that_says_what_to_do(config_file: Path):
    result = run_boom("check", "-c", str(config_file))
    assert result.returncode == 3  # was 1: WARNING to Nagios
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clusterwatch: internal error in `check`: RuntimeError: store at https://admin:***@")
    assert "run the same command with -v to see the traceback" in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_internal_error_with_v_shows_the_traceback_redacted(config_file: Path):
    result = run_boom("check", "-v", "-c", str(config_file))
    assert result.returncode == 3
    assert "Traceback (most recent call last)" in result.stderr and "in boom" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    last = result.stderr.splitlines()[-1]
    assert last.startswith("clusterwatch: internal error in `check`: RuntimeError:") and "traceback is above" in last


def test_ctrl_c_is_a_line_not_a_traceback(config_file: Path, tmp_path: Path):
    double = OllamaDouble()
    double.mode = "hang"
    with ServerThread(double.app()) as server:
        config = tmp_path / "hang.yaml"
        config.write_text(f"checks:\n  - {{name: ollama, kind: ollama, url: '{server.url}', timeout: 60s}}\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterwatch", "check", "-c", str(config), "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            wait_until(lambda: double.requests, timeout=60, what="the check to reach the hanging server")
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130
    assert stderr.strip() == "clusterwatch: interrupted"


def test_a_store_in_the_way_is_the_operators_to_fix_not_a_bug(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"store: {{path: {blocker}/state.db}}\n"
        "checks:\n  - {name: a, kind: tcp, port: 1, restart: {command: [/bin/true]}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "clusterwatch", "heal", "pause", "a", "-c", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 3
    assert "could not go on" in done.stderr and "bug" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_agent_refuses_plain_http_to_another_machine(tmp_path: Path):
    """The token and the commands a node runs never travel in clear unless the operator says so."""
    token = tmp_path / "token"
    token.write_text("a-token\n")
    argv = ["agent", "run", "--server", "http://192.0.2.1:9877", "--name", "n1", "--token-file", str(token)]
    done = subprocess.run(
        [sys.executable, "-m", "clusterwatch", *argv, "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "plain HTTP to another machine" in done.stderr and "--insecure-http" in done.stderr
    assert "a-token" not in done.stderr + done.stdout


def test_agent_enroll_refuses_a_node_without_an_agent_and_says_when_a_token_is_replaced(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'state.db'}}}\nnodes:\n  - {{name: phone-1, agent: true}}\n"
        "  - {name: srv, host: 127.0.0.1}\n"
    )
    token = tmp_path / "token"

    def enroll(name: str) -> subprocess.CompletedProcess[str]:
        argv = ["agent", "enroll", name, "-c", str(config), "--token-file", str(token)]
        return subprocess.run([sys.executable, "-m", "clusterwatch", *argv], capture_output=True, text=True, timeout=60)

    for name in ("srv", "nosuch"):
        refused = enroll(name)
        assert refused.returncode == 1 and "is not a node with `agent: true`" in refused.stderr, refused.stderr
    assert not token.exists()
    first = enroll("phone-1")
    assert first.returncode == 0 and "stops working" not in first.stdout
    old = token.read_text().strip()
    again = enroll("phone-1")
    assert again.returncode == 0 and "phone-1 had a token: it stops working now" in again.stdout
    assert token.read_text().strip() != old and old not in again.stdout + again.stderr
