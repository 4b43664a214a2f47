"""A broken config names file, line and field, and says what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clusterwatch.config.loader import ConfigError, load_config
from tests.helpers import run_cli


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env=env or {}, cwd=path.parent)
    return [str(p) for p in info.value.problems]


def test_unknown_key_suggests_the_right_one(write):
    path = write("c.yaml", "checks:\n  - name: ollama\n    kind: ollama\n    expect_modls: [llama3.2]\n")
    assert problems(path) == [
        f"{path}:4: checks[0](ollama).expect_modls: unknown key 'expect_modls' (did you mean 'expect_models'?)"
    ]


def test_unknown_top_level_key(write):
    path = write("c.yaml", "interval: 30s\nthreshold:\n  cpu: {warning: 1}\n")
    assert problems(path) == [f"{path}:2: threshold: unknown key 'threshold' (did you mean 'thresholds'?)"]


def test_wrong_type(write):
    path = write("c.yaml", "checks:\n  - name: d\n    kind: dask\n    min_workers: two\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: checks[0](d).min_workers: input should be a valid integer")
    assert "'two'" in problem


def test_bad_duration(write):
    path = write("c.yaml", "interval: 30s\ntimeout: 5x\n")
    assert problems(path) == [f"{path}:2: timeout: invalid duration '5x' (use e.g. 500ms, 30s, 10m, 1h)"]


def test_duplicate_check_name(write):
    path = write("c.yaml", "checks:\n  - {name: api, kind: tcp, port: 1}\n  - {name: api, kind: tcp, port: 2}\n")
    assert problems(path) == [f"{path}:3: checks[1](api).name: duplicate name 'api': checks[0] already has it"]


def test_unknown_kind_suggests(write):
    path = write("c.yaml", "checks:\n  - name: o\n    kind: olama\n")
    assert problems(path) == [f"{path}:3: checks[0](o).kind: unknown check kind 'olama' (did you mean 'ollama'?)"]


def test_unreadable_key_file(write, tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("secret")
    key.chmod(0)
    path = write("c.yaml", f"nodes:\n  - name: gpu-box\n    host: 127.0.0.1\n    ssh: {{key: {key}}}\n")
    if os.geteuid() == 0:  # root reads anything: use a missing file instead
        key.unlink()
        expected = f"file '{key}' does not exist"
    else:
        expected = f"file '{key}' is not readable by this user"
    assert problems(path) == [f"{path}:4: nodes[0](gpu-box).ssh.key: {expected}"]


def test_missing_environment_variable(write):
    path = write(
        "c.yaml",
        "checks:\n  - name: api\n    kind: http\n    url: http://127.0.0.1:1/\n"
        "    headers: {Authorization: 'Bearer ${API_TOKEN}'}\n",
    )
    assert problems(path) == [
        f"{path}:5: checks[0](api).headers.Authorization: environment variable API_TOKEN is not set"
    ]


def test_yaml_syntax_error_names_the_line(write):
    path = write("c.yaml", "checks:\n  - name: a\n    kind: [tcp\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: invalid YAML")


def test_duplicate_yaml_key(write):
    path = write("c.yaml", "interval: 30s\ninterval: 10s\n")
    assert problems(path) == [f"{path}:2: duplicate key 'interval' (first at line 1)"]


def test_bad_url_and_missing_required_field(write):
    path = write("c.yaml", "checks:\n  - name: api\n    kind: http\n    url: ftp://x\n  - name: t\n    kind: tcp\n")
    assert problems(path) == [
        f"{path}:4: checks[0](api).url: URL scheme 'ftp' not supported here (use http or https)",
        f"{path}:5: checks[1](t).port: required key is missing",
    ]


def test_thresholds_out_of_order(write):
    path = write("c.yaml", "thresholds:\n  cpu: {warning: 95, critical: 90}\n")
    assert problems(path) == [f"{path}:2: thresholds.cpu: warning (95.0) is above critical (90.0)"]


def test_check_on_unknown_node(write):
    path = write("c.yaml", "checks:\n  - {name: api, kind: tcp, port: 80, node: gpu-bx}\n")
    assert problems(path) == [f"{path}:2: checks[0](api).node: unknown node 'gpu-bx' (nodes: none configured)"]


def test_validate_command_exit_codes(write):
    good = write("good.yaml", "checks:\n  - {name: api, kind: tcp, port: 80}\n")
    bad = write("bad.yaml", "checks:\n  - {name: api, kind: tcp, prot: 80}\n")
    ok = run_cli("config", "validate", "-c", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 checks, 0 nodes)" in ok.stdout
    broken = run_cli("config", "validate", "-c", str(bad))
    assert broken.returncode == 3
    assert f"{bad}:2: checks[0](api).prot: unknown key 'prot' (did you mean 'port'?)" in broken.stderr


def test_check_with_broken_config_still_prints_valid_json(write):
    import json

    bad = write("bad.yaml", "interval: soon\n")
    result = run_cli("check", "--json", "-c", str(bad))
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["status"] == "unknown" and data["checks"] == []
    assert data["problems"] == [f"{bad}:1: interval: invalid duration 'soon' (use e.g. 500ms, 30s, 10m, 1h)"]


def test_missing_config_file_is_an_error(tmp_path):
    result = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 3
    assert f"{tmp_path / 'nope.yaml'}: no such file" in result.stderr
