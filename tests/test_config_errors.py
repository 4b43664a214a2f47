"""A broken config names file, line and field, and says what is wrong."""

from __future__ import annotations

import os
import time
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


# --- hostile input: an error naming file, line and field, never a traceback ------------------------


def test_number_with_hundreds_of_digits(write):
    text = "interval: " + "9" * 400 + "\nchecks:\n  - name: t\n    kind: tcp\n    port: " + "9" * 5000 + "\n"
    path = write("c.yaml", text)
    assert problems(path) == [
        f"{path}:1: interval: number too long (400 characters)",
        f"{path}:5: checks[0](t).port: number too long (5000 characters)",
    ]


def test_duration_written_as_a_huge_string(write):
    path = write("c.yaml", f"timeout: '{'9' * 400}s'\nchecks: [{{name: t, kind: tcp, port: 1, interval: 3651d}}]\n")
    assert problems(path) == [
        f"{path}:1: timeout: duration '999999999999999999999999999999999999... is too long (at most 3650d)",
        f"{path}:2: checks[0](t).interval: duration '3651d' is too long (at most 3650d)",
    ]


def test_lists_nested_hundreds_deep(write):
    check = "checks:\n  - name: h\n    kind: http\n    url: http://127.0.0.1:1/\n"
    path = write("c.yaml", check + "    expect_json: {a: " + "[" * 300 + "]" * 300 + "}\n")
    assert problems(path) == [
        f"{path}:5: checks[0](h).expect_json.a[0][0][0][0][0][0][0][0]...: nested more than 64 levels deep"
    ]


def test_nesting_beyond_what_libyaml_parses(write):
    path = write("c.yaml", "x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert problems(path) == [f"{path}:1: invalid YAML: exceeded maximum nesting depth"]


def test_alias_bomb_is_refused_quickly(write):
    """A "billion laughs" file: ten lines that would expand to 10^9 values, minutes of CPU and gigabytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = write("c.yaml", "\n".join(lines) + "\n")
    started = time.monotonic()
    assert problems(path) == [
        f"{path}:5: a4[7]: aliases expand to more than 100,000 values (an alias bomb?)"
    ]
    assert time.monotonic() - started < 20  # about a second on a busy 2-core machine; minutes before


def test_alias_bomb_through_merge_keys(write):
    lines = ["a0: &a0 {" + ", ".join(f"k{j}: x" for j in range(10)) + "}"]
    lines += [f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(10)) + "}" for i in range(1, 9)]
    lines.append("checks: [{<<: *a8, name: t, kind: tcp, port: 1}]")
    path = write("c.yaml", "\n".join(lines) + "\n")
    [problem] = problems(path)
    assert problem.endswith(": aliases expand to more than 100,000 values (an alias bomb?)")


def test_recursive_alias(write):
    path = write("c.yaml", "checks: &a [*a]\nnodes: &b {<<: *b}\n")
    assert problems(path) == [
        f"{path}:1: checks[0]: an alias refers to the value that contains it (a recursive structure)",
        f"{path}:2: nodes.<<: an alias refers to the value that contains it (a recursive structure)",
    ]


def test_long_dependency_cycle_is_named_by_its_ends(write):
    n = 3000
    lines = [f"  - {{name: c{i}, kind: tcp, port: 1, depends_on: [c{(i + 1) % n}]}}" for i in range(n)]
    path = write("c.yaml", "checks:\n" + "\n".join(lines) + "\n")
    assert problems(path) == [
        f"{path}:{n + 1}: checks[{n - 1}](c{n - 1}).depends_on: dependency cycle: "
        f"c0 -> c1 -> c2 -> c3 -> ... {n - 7} more ... -> c{n - 3} -> c{n - 2} -> c{n - 1} -> c0"
    ]


def test_short_dependency_cycle(write):
    path = write(
        "c.yaml",
        "checks:\n  - {name: a, kind: tcp, port: 1, depends_on: [b]}\n  - {name: b, kind: tcp, port: 1, node: n}\n"
        "nodes:\n  - {name: n, host: 127.0.0.1, depends_on: [a]}\n",
    )
    assert problems(path) == [f"{path}:5: nodes[0](n).depends_on: dependency cycle: a -> b -> n -> a"]


def test_nan_and_infinite_durations_and_thresholds(write):
    path = write(
        "c.yaml",
        "interval: .inf\ntimeout: .nan\nthresholds: {cpu: {warning: .nan, critical: -.inf}}\n"
        "flapping: {high: .inf}\nchecks:\n  - {name: d, kind: dask, memory_warning: .nan, heartbeat_warning: -.inf}\n",
    )
    assert problems(path) == [
        f"{path}:1: interval: duration inf is too long (at most 3650d)",
        f"{path}:2: timeout: invalid duration nan: not a number (use e.g. 500ms, 30s, 10m, 1h)",
        f"{path}:4: flapping.high: input should be a finite number (got inf)",
        f"{path}:3: thresholds.cpu.warning: input should be a finite number (got nan)",
        f"{path}:3: thresholds.cpu.critical: input should be a finite number (got -inf)",
        f"{path}:6: checks[0](d).heartbeat_warning: invalid duration -inf: must not be negative",
        f"{path}:6: checks[0](d).memory_warning: input should be a finite number (got nan)",
    ]


def test_zero_interval_and_other_zero_durations(write):
    """`interval: 0` passed and then killed the scheduler with a division by zero."""
    path = write(
        "c.yaml",
        "interval: 0\nalerts: {heartbeat: {url: 'http://127.0.0.1:1/', every: 0s}, repeat_interval: 0}\n"
        "checks:\n  - name: t\n    kind: tcp\n    port: 1\n    timeout: 0ms\n    retry_interval: 0.0001\n"
        "    restart: {command: [/bin/true], backoff: 0, window: 0s}\n",
    )
    assert problems(path) == [
        f"{path}:1: interval: duration 0 must be more than zero (at least 1ms)",
        f"{path}:2: alerts.repeat_interval: duration 0 must be more than zero (at least 1ms)",
        f"{path}:2: alerts.heartbeat.every: duration '0s' must be more than zero (at least 1ms)",
        f"{path}:8: checks[0](t).retry_interval: duration 0.0001 must be more than zero (at least 1ms)",
        f"{path}:7: checks[0](t).timeout: duration '0ms' must be more than zero (at least 1ms)",
        f"{path}:9: checks[0](t).restart.window: duration '0s' must be more than zero (at least 1ms)",
        f"{path}:9: checks[0](t).restart.backoff: duration 0 must be more than zero (at least 1ms)",
    ]


def test_a_wait_may_be_zero(write):
    path = write(
        "c.yaml", "alerts: {group_wait: 0s}\nchecks: [{name: t, kind: tcp, port: 1, restart: {systemd: x, grace: 0}}]\n"
    )
    loaded = load_config(str(path), env={}, cwd=path.parent)
    assert loaded.config.alerts.group_wait == 0 and loaded.config.checks[0].restart[0].grace == 0  # type: ignore[union-attr]


def test_numbers_out_of_range(write):
    path = write(
        "c.yaml",
        "thresholds: {disk: {warning: 80, critical: 101}}\nstore: {raw_per_check: 10000000000}\n"
        "checks:\n  - {name: h, kind: http, url: 'http://127.0.0.1:99999/', expect_status: [200, 1000],"
        " max_body: 2048GiB}\n",
    )
    assert problems(path) == [
        f"{path}:2: store.raw_per_check: input should be less than or equal to 1000000 (got 10000000000)",
        f"{path}:1: thresholds.disk.critical: 101 is above 100 (percent)",
        f"{path}:4: checks[0](h).url: invalid URL 'http://127.0.0.1:99999/': Port out of range 0-65535",
        f"{path}:4: checks[0](h).expect_status[1]: input should be less than or equal to 599 (got 1000)",
        f"{path}:4: checks[0](h).max_body: size '2048GiB' is too large (at most 1TiB)",
    ]


def test_empty_config_is_no_checks(write):
    for text in ("", "\n\n", "# clusterwatch\n# (everything below was lost)\n", "---\n", "{}\n"):
        path = write("c.yaml", text)
        assert problems(path) == [f"{path}:1: no checks: the file is empty or only comments (truncated?)"], text


def test_empty_config_exits_3(write):
    path = write("c.yaml", "# nothing here\n")
    result = run_cli("config", "validate", "-c", str(path))
    assert result.returncode == 3
    assert f"{path}:1: no checks: the file is empty or only comments (truncated?)" in result.stderr


def test_config_too_large(write, tmp_path):
    path = tmp_path / "c.yaml"
    with path.open("w") as f:
        f.write("checks:\n")
        line = "  - {name: t, kind: tcp, port: 1}  # " + "x" * 60 + "\n"
        f.write(line * (17 * 1024 * 1024 // len(line)))
    assert problems(path) == [f"{path}: file too large (more than 16 MiB)"]


def test_config_not_utf8_names_the_line(write, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("# ok\nchecks: [{name: t, kind: tcp, port: 1}]\n# configuração\n".encode("latin-1"))
    assert problems(path) == [f"{path}:3: not UTF-8 text: invalid continuation byte (byte 0xe7)"]


def test_included_file_that_is_not_a_file(write):
    path = write("c.yaml", "cluster_ai: {nodes_list: /dev/zero, cluster_yaml: \"a\\0b\"}\n")
    assert problems(path) == [f"{path}:1: cluster_ai.cluster_yaml: a file name cannot hold a NUL character"]
    path = write("c.yaml", "cluster_ai: {nodes_list: /dev/zero}\n")
    assert problems(path) == ["/dev/zero: cannot read: not a regular file"]


def test_bad_values_in_cluster_ai_files(tmp_path, write):
    nodes = write("nodes_list.conf", "w1 w1 127.0.0.1 ubuntu ²\n")
    config = write("c.yaml", "cluster_ai: {nodes_list: nodes_list.conf}\n")
    assert problems(config) == [f"{nodes}:1: port '²' is not a port number"]
    env = write(".env", "DISK_CRIT_THRESHOLD=nan\nDASHBOARD_HEALTH_URL=http://127.0.0.1:5000/\nDASHBOARD_HEALTH_TIMEOUT=0\n")
    config = write("c.yaml", "cluster_ai: {env_files: [.env]}\n")
    assert problems(config) == [
        f"{env}:1: thresholds.disk.critical: input should be a finite number (got 'nan')",
        f"{env}:3: checks[0](dashboard).timeout: duration '0' must be more than zero (at least 1ms)",
    ]


def test_odd_yaml_values(write):
    path = write("c.yaml", "checks:\n  - {name: !!timestamp 2020-13-01, kind: tcp, port: !!int x}\n  - <<: [1]\n")
    assert problems(path) == [
        f"{path}:2: checks[0].name: cannot read '2020-13-01' as timestamp: month must be in 1..12",
        f"{path}:2: checks[0].port: cannot read 'x' as int: invalid literal for int() with base 10: 'x'",
        f"{path}:3: checks[1].<<: `<<:` merges a mapping or a list of mappings only",
    ]


def test_token_file_that_is_not_text(write, tmp_path):
    (tmp_path / "token").write_bytes(b"\xff\xfe")
    path = write("c.yaml", f"web: {{token_file: {tmp_path / 'token'}}}\nchecks: [{{name: t, kind: tcp, port: 1}}]\n")
    assert problems(path) == [
        f"{path}:1: web.token_file: token file '{tmp_path / 'token'}': not UTF-8 text: invalid start byte (byte 0xff)"
    ]


def test_control_character_names_its_line(write):
    path = write("c.yaml", "# ação\nchecks: [{name: t, kind: tcp, port: 1}]\nnote: é\x01\n")
    assert problems(path) == [f"{path}:3: invalid YAML: control characters are not allowed (U+0001)"]


def test_too_many_values(write):
    """1.2 MB of `a,` would be 600,000 values: refused while reading, before the memory is spent."""
    path = write("c.yaml", "checks: [" + "a," * 600_000 + "]\n")
    assert problems(path) == [f"{path}:1: more than 500,000 values: too large a config"]


def test_anchors_and_documents(write):
    for text, expected in (
        ("a: &x 1\nb: &x 2\n", "2: invalid YAML: anchor &x defined twice (first at line 1)"),
        ("interval: *x\n", "1: invalid YAML: alias *x before its anchor &x"),
        ("checks: []\n---\ninterval: 1s\n", "2: invalid YAML: a second document (`---`): one config is one document"),
        ("checks:\n  - !foo {name: t}\n  - !foo x\n", "3: checks[1]: cannot read 'x': unknown tag '!foo'"),
    ):
        path = write("c.yaml", text)
        assert problems(path) == [f"{path}:{expected}"], text


def test_many_problems_are_summed_up(write):
    path = write("c.yaml", "checks:\n" + "".join(f"  - {{name: c{i}, kind: tcp}}\n" for i in range(500)))
    found = problems(path)
    assert len(found) == 101 and found[0] == f"{path}:2: checks[0](c0).port: required key is missing"
    assert found[-1] == f"{path}: 400 more problems not shown"


def test_a_node_needs_a_host_or_an_agent(write):
    path = write("c.yaml", "nodes:\n  - {name: phone-1, agent: true}\n  - {name: srv}\n")
    assert problems(path) == [
        f"{path}:3: nodes[1](srv).host: a node needs a host (for SSH), or `agent: true` (its agent pushes)"
    ]


def test_a_restart_on_an_agents_node_is_for_a_check_on_that_node(write):
    path = write(
        "c.yaml",
        "nodes:\n  - {name: phone-1, agent: true}\nchecks:\n"
        "  - {name: w, kind: tcp, port: 80, restart: {command: [x], node: phone-1}}\n",
    )
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: checks[0](w).restart.node: phone-1 has an agent")


def test_web_tls_files_must_exist(write, tmp_path):
    path = write("c.yaml", f"web:\n  tls: {{cert: {tmp_path}/no.pem, key: {tmp_path}/no.key}}\n")
    found = problems(path)
    assert any(p.startswith(f"{path}:2: web.tls.cert: file") and "does not exist" in p for p in found), found
