"""`clusterwatch check` as people and machines run it: table, JSON, --only, exit codes, --timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.doubles.hostile import HostileService
from tests.doubles.ollama import OllamaDouble
from tests.helpers import ROOT, ServerThread, closed_port, run_cli


def test_json_lists_every_entity_and_exit_code_is_the_worst(tmp_path: Path, write):
    double = OllamaDouble()
    with ServerThread(double.app()) as server:
        config = write(
            "c.yaml",
            f"""
checks:
  - {{name: ollama, kind: ollama, url: "{server.url}", expect_models: [llama3.2, qwen2.5]}}
  - {{name: api, kind: tcp, port: {closed_port()}}}
  - {{name: system, kind: node, gpus: false, cpu_sample: 100ms, thresholds: {{cpu: {{warning: null, critical: null}},
      memory: {{warning: null, critical: null}}, disk: {{warning: null, critical: null}}}}}}
""",
        )
        result = run_cli("check", "--json", "-c", str(config))
    data = json.loads(result.stdout)
    assert result.returncode == 2
    assert data["status"] == "critical"
    names = [c["name"] for c in data["checks"]]
    assert {"ollama", "ollama/llama3.2", "ollama/qwen2.5", "api", "system", "system/disk:/"} <= set(names)
    assert names[:2] == ["api", "ollama/qwen2.5"]  # worst first
    for item in data["checks"]:
        assert set(item) >= {"name", "kind", "target", "status", "message", "latency_ms", "metrics", "details"}
    assert data["summary"]["critical"] == 2


def test_only_models(tmp_path: Path, write):
    double = OllamaDouble()
    with ServerThread(double.app()) as server:
        config = write(
            "c.yaml",
            f"checks:\n  - {{name: ollama, kind: ollama, url: '{server.url}', "
            f"expect_models: [llama3.2]}}\n  - {{name: api, kind: tcp, port: {closed_port()}}}\n",
        )
        result = run_cli("check", "--json", "--only", "models", "-c", str(config))
    data = json.loads(result.stdout)
    assert [c["name"] for c in data["checks"]] == ["ollama/llama3.2"]
    assert result.returncode == 0


def test_only_rejects_unknown_group(tmp_path: Path, write):
    config = write("c.yaml", "checks: []\n")
    result = run_cli("check", "--only", "everything", "-c", str(config))
    assert result.returncode == 3 and "choose from services, workers, nodes, models, system" in result.stderr


def test_whole_run_bounded_by_timeout(tmp_path: Path, write):
    double = OllamaDouble()
    double.mode = "hang"
    with ServerThread(double.app()) as server:
        config = write("c.yaml", f"checks:\n  - {{name: ollama, kind: ollama, url: '{server.url}', timeout: 60s}}\n")
        started = time.monotonic()
        result = run_cli("check", "--json", "--timeout", "1.5", "-c", str(config))
        elapsed = time.monotonic() - started
    data = json.loads(result.stdout)
    assert elapsed < 10
    assert data["checks"][0]["status"] == "unknown"
    assert data["checks"][0]["message"] == "not finished within --timeout 1.5s"
    assert result.returncode == 3


def test_table_for_people(tmp_path: Path, write):
    config = write("c.yaml", f"checks:\n  - {{name: api, kind: tcp, port: {closed_port()}}}\n")
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 2
    assert "Services" in result.stdout and "CRITICAL" in result.stdout and "connection refused" in result.stdout
    assert "CRITICAL: 1 checked (1 critical)" in result.stdout


def test_ok_exit_code(tmp_path: Path, write):
    double = OllamaDouble()
    with ServerThread(double.app()) as server:
        config = write("c.yaml", f"checks:\n  - {{name: ollama, kind: ollama, url: '{server.url}'}}\n")
        result = run_cli("check", "-c", str(config))
    assert result.returncode == 0, result.stdout


def test_warning_exit_code(tmp_path: Path, write):
    double = OllamaDouble()
    double.mode = "503"
    with ServerThread(double.app()) as server:
        config = write("c.yaml", f"checks:\n  - {{name: ollama, kind: ollama, url: '{server.url}'}}\n")
        result = run_cli("check", "-c", str(config))
    assert result.returncode == 1, result.stdout


def test_default_config_where_nothing_runs_is_fast(tmp_path: Path):
    """A refused connection must not wait for a timeout (the bench measures it; this bounds it loosely)."""
    started = time.monotonic()
    result = run_cli("check", "--json", cwd=tmp_path, env={"HOME": str(tmp_path)})
    elapsed = time.monotonic() - started
    data = json.loads(result.stdout)
    assert data["config"] == "built-in defaults"
    assert {c["name"] for c in data["checks"]} >= {"docker", "dask", "ollama", "webui", "system"}
    assert elapsed < 10


def test_json_stays_valid_when_services_answer_nan(tmp_path: Path, write):
    """A NaN in Dask's /metrics and identity.json and in Ollama's sizes: before, no JSON at all and exit 1."""
    with (
        ServerThread(HostileService("dask", "nan").app()) as dask,
        ServerThread(HostileService("ollama", "nan").app()) as ollama,
    ):
        config = write(
            "c.yaml",
            f"""
checks:
  - {{name: dask, kind: dask, scheduler: "tcp://127.0.0.1:{dask.port}", dashboard: "{dask.url}", min_workers: 0}}
  - {{name: ollama, kind: ollama, url: "{ollama.url}", expect_models: [llama3.2]}}
""",
        )
        result = run_cli("check", "--json", "-c", str(config))
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in check --json"))
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert statuses == {
        "dask": "ok",
        "dask/nan-worker": "ok",
        "dask/inf-worker": "critical",  # 1e308 bytes used of a 1e308 limit: 100 %
        "ollama": "ok",
        "ollama/llama3.2": "ok",
    }
    assert data["status"] == "critical" and result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_table_shows_probe_text_as_text(tmp_path: Path, write):
    """Rich markup in a service's answer: `[/app/hc.sh]` made the table raise, `[error]` vanished."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "[error] [/app/hc.sh] exited 1 [bold]x[/bold]"})

    app = web.Application()
    app.router.add_get("/health", health)
    with ServerThread(app) as server:
        config = write("c.yaml", f"checks:\n  - {{name: webui, kind: openwebui, url: '{server.url}'}}\n")
        result = run_cli("check", "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert "[error] [/app/hc.sh] exited 1 [bold]x[/bold]" in result.stdout
    assert "Traceback" not in result.stderr


BUGGY_PROBE = """
import sys
import clusterwatch.probes.tcp as tcp

async def probe(check, ctx):
    raise KeyError("workers")

tcp.probe = probe
from clusterwatch.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_probe_bug_is_unknown_with_one_log_line(tmp_path: Path, write, verbose: bool):
    """The real CLI with a probe that raises: `unknown`, exit 3, one warning line; the traceback only at -vv."""
    config = write("c.yaml", f"checks:\n  - {{name: api, kind: tcp, port: {closed_port()}}}\n")
    args = ["check", "--json", "-c", str(config), *(["-vv"] if verbose else [])]
    env = {k: v for k, v in os.environ.items() if k != "CLUSTERWATCH_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-c", BUGGY_PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    data = json.loads(result.stdout)
    [entry] = data["checks"]
    assert entry["status"] == "unknown" and entry["message"] == "probe bug: KeyError: 'workers'"
    assert result.returncode == 3
    bug_lines = [line for line in result.stderr.splitlines() if "probe bug" in line]
    assert len(bug_lines) == 1 and "api (tcp)" in bug_lines[0]
    assert ("Traceback" in result.stderr) is verbose, result.stderr
