"""`clusterwatch check` as people and machines run it: table, JSON, --only, exit codes, --timeout."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.doubles.ollama import OllamaDouble
from tests.helpers import ServerThread, closed_port, run_cli


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
