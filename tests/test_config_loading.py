"""Where the config comes from, Cluster AI's files, secrets, and `config show`."""

from __future__ import annotations

from pathlib import Path

from clusterwatch.config.loader import BUILTIN, load_config
from clusterwatch.config.schema import DaskCheck, DockerCheck, HttpCheck, OllamaCheck
from tests.helpers import run_cli

CLUSTER_YAML = """\
workers:
  gpu-box:
    host: 127.0.0.1
    user: ubuntu
    port: 22
  old-box:
    ip: 127.0.0.2          # older files write ip:
    user: admin
  phone-1:
    ip: 127.0.0.3
    user: u0_a123
    port: 8022
    status: active
    enabled: true
  retired:
    host: 127.0.0.4
    status: inactive
  disabled:
    host: 127.0.0.5
    enabled: false
"""


def test_search_order(tmp_path: Path, write):
    explicit = write("explicit.yaml", "checks: [{name: a, kind: tcp, port: 1}]\n")
    from_env = write("env.yaml", "checks: [{name: b, kind: tcp, port: 1}]\n")
    write("clusterwatch.yaml", "checks: [{name: c, kind: tcp, port: 1}]\n")
    env = {"CLUSTERWATCH_CONFIG": str(from_env)}
    assert load_config(str(explicit), env=env, cwd=tmp_path).config.checks[0].name == "a"
    assert load_config(None, env=env, cwd=tmp_path).config.checks[0].name == "b"
    assert load_config(None, env={}, cwd=tmp_path).config.checks[0].name == "c"


def test_builtin_defaults_check_the_standard_local_ports(tmp_path: Path):
    loaded = load_config(None, env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert loaded.source == BUILTIN
    kinds = {c.kind: c for c in loaded.config.checks}
    assert set(kinds) == {"docker", "dask", "ollama", "openwebui", "node"}
    assert isinstance(kinds["dask"], DaskCheck) and kinds["dask"].scheduler == "tcp://127.0.0.1:8786"
    assert kinds["dask"].dashboard_url == "http://127.0.0.1:8787"
    assert isinstance(kinds["ollama"], OllamaCheck) and kinds["ollama"].url == "http://127.0.0.1:11434"
    assert kinds["openwebui"].url == "http://127.0.0.1:3000"  # type: ignore[union-attr]
    assert isinstance(kinds["docker"], DockerCheck) and kinds["docker"].socket == "/var/run/docker.sock"


def test_cluster_yaml_workers_become_nodes(tmp_path: Path, write):
    write("cluster.yaml", CLUSTER_YAML)
    config = write("c.yaml", "cluster_ai: {cluster_yaml: cluster.yaml}\nchecks: [{name: dask, kind: dask}]\n")
    loaded = load_config(str(config), env={}, cwd=tmp_path)
    nodes = {n.name: n for n in loaded.config.nodes}
    assert set(nodes) == {"gpu-box", "old-box", "phone-1"}  # inactive and disabled skipped
    assert nodes["gpu-box"].host == "127.0.0.1" and nodes["gpu-box"].ssh.user == "ubuntu"
    assert nodes["old-box"].host == "127.0.0.2" and nodes["old-box"].ssh.port == 22
    assert nodes["phone-1"].ssh.port == 8022 and nodes["phone-1"].is_termux
    assert not nodes["gpu-box"].is_termux
    dask = loaded.config.checks[0]
    assert isinstance(dask, DaskCheck)
    assert [(e.name, e.host) for e in dask.expect_workers] == [
        ("gpu-box", "127.0.0.1"),
        ("old-box", "127.0.0.2"),
        ("phone-1", "127.0.0.3"),
    ]


def test_cluster_yaml_error_names_its_own_file(tmp_path: Path, write):
    import pytest

    from clusterwatch.config.loader import ConfigError

    bad = write("cluster.yaml", "workers:\n  gpu-box:\n    user: ubuntu\n")
    config = write("c.yaml", "cluster_ai: {cluster_yaml: cluster.yaml}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(config), env={}, cwd=tmp_path)
    assert str(info.value) == f"{bad}:2: workers.gpu-box: needs host: (or ip:)"


def test_nodes_list_conf(tmp_path: Path, write):
    write(
        ".cluster_config/nodes_list.conf",
        "# hostname alias ip user port [status]\nworker1 w1 127.0.0.1 ubuntu 22 active\n"
        "phone p1 127.0.0.3 u0_a77 8022\nold o1 127.0.0.9 x 22 inactive\n",
    )
    loaded = load_config(None, env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert [(n.name, n.host, n.ssh.port) for n in loaded.config.nodes] == [
        ("w1", "127.0.0.1", 22),
        ("p1", "127.0.0.3", 8022),
    ]


def test_env_files_without_any_config(tmp_path: Path, write):
    write(
        ".env",
        "DOCKER_SERVICES=frontend backend\nDISK_WARN_THRESHOLD=1\nDISK_CRIT_THRESHOLD=99\n"
        "MEM_CRIT_THRESHOLD=97\nOLLAMA_BASE_URL=http://127.0.0.1:21434\n"
        "DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:18786\nDASHBOARD_HEALTH_URL=http://127.0.0.1:5000/health\n"
        "DASHBOARD_HEALTH_TIMEOUT=3\nCPU_CRIT_THRESHOLD=70\nSMTP_PASSWORD=hunter2-secret\n",
    )
    write(".env.local", "DISK_WARN_THRESHOLD=2  # .env.local wins\n")
    loaded = load_config(None, env={"HOME": str(tmp_path)}, cwd=tmp_path)
    config = loaded.config
    checks = {c.name: c for c in config.checks}
    assert config.thresholds.disk.warning == 2 and config.thresholds.disk.critical == 99
    assert config.thresholds.memory.critical == 97 and config.thresholds.memory.warning == 85
    assert config.node_thresholds.cpu.critical == 70 and config.node_thresholds.cpu.warning == 70
    assert checks["docker"].containers == ["frontend", "backend"]  # type: ignore[union-attr]
    assert checks["ollama"].url == "http://127.0.0.1:21434"  # type: ignore[union-attr]
    assert checks["dask"].dashboard_url == "http://127.0.0.1:8787"  # type: ignore[union-attr]
    assert checks["dask"].scheduler == "tcp://127.0.0.1:18786"  # type: ignore[union-attr]
    dashboard = checks["dashboard"]
    assert isinstance(dashboard, HttpCheck) and dashboard.timeout == 3
    assert loaded.redactor.text("password is hunter2-secret") == "password is ***"


def test_env_thresholds_take_effect_on_the_node_probe(tmp_path: Path, write):
    """DISK_CRIT_THRESHOLD=1 makes any real disk critical; the probe must follow the .env."""
    write(".env", "DISK_WARN_THRESHOLD=0\nDISK_CRIT_THRESHOLD=1\n")
    config = write("c.yaml", "cluster_ai: {env_files: [.env]}\nchecks: [{name: system, kind: node, gpus: false}]\n")
    result = run_cli("check", "--json", "--only", "system", "-c", str(config), cwd=tmp_path)
    import json

    data = json.loads(result.stdout)
    disks = [c for c in data["checks"] if c["name"].startswith("system/disk:")]
    assert disks and all(d["status"] == "critical" for d in disks), disks
    assert result.returncode == 2


def test_config_wins_over_env(tmp_path: Path, write):
    write(".env", "DISK_CRIT_THRESHOLD=99\nOLLAMA_BASE_URL=http://127.0.0.1:1\n")
    config = write(
        "c.yaml",
        "cluster_ai: {env_files: [.env]}\nthresholds: {disk: {warning: 50, critical: 60}}\n"
        "checks: [{name: o, kind: ollama, url: 'http://127.0.0.1:2'}]\n",
    )
    loaded = load_config(str(config), env={}, cwd=tmp_path)
    assert loaded.config.thresholds.disk.critical == 60
    assert loaded.config.checks[0].url == "http://127.0.0.1:2"  # type: ignore[union-attr]


def test_skip_workers(tmp_path: Path, write):
    write("cluster.yaml", CLUSTER_YAML)
    write(".env", "SKIP_WORKERS=true\n")
    loaded = load_config(None, env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert loaded.config.nodes == []


def test_bad_env_value_names_the_env_file(tmp_path: Path, write):
    import pytest

    from clusterwatch.config.loader import ConfigError

    env = write(".env", "# thresholds\nDISK_CRIT_THRESHOLD=lots\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert str(info.value).startswith(f"{env}:2: thresholds.disk.critical: input should be a valid number")


def test_config_show_redacts_secrets(tmp_path: Path, write):
    config = write(
        "c.yaml",
        "checks:\n  - name: api\n    kind: http\n    url: 'https://user:pa55word@127.0.0.1:1/x'\n"
        "    headers: {Authorization: 'Bearer ${API_TOKEN}', X-Trace: '${TRACE_ID}'}\n",
    )
    result = run_cli("config", "show", "-c", str(config), env={"API_TOKEN": "tok-123456", "TRACE_ID": "trace-98765"})
    assert result.returncode == 0, result.stderr
    assert "tok-123456" not in result.stdout and "pa55word" not in result.stdout
    assert "trace-98765" not in result.stdout  # anything from ${ENV} is treated as a secret
    assert (
        "Authorization: '***'" in result.stdout
        or 'Authorization: "***"' in result.stdout
        or "Authorization: ***" in result.stdout
    )
    assert "https://user:***@127.0.0.1:1/x" in result.stdout


def test_example_config_validates():
    from tests.helpers import ROOT

    result = run_cli("config", "validate", "-c", str(ROOT / "examples" / "clusterwatch.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ok (6 checks, 2 nodes)" in result.stdout


def test_cluster_ai_files_saved_in_latin1(tmp_path: Path):
    """Portuguese-speaking users' files are often Latin-1: read them, don't crash on them."""
    files = {
        ".env": "# configuração do cluster\nDOCKER_SERVICES=frontend backend  # serviços\n",
        "nodes_list.conf": "# nós\nestação est 127.0.0.1 joão 22\n",
        "cluster.yaml": "workers:\n  gpu-box:  # máquina\n    host: 127.0.0.2\n    user: josé\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
    (tmp_path / "c.yaml").write_text(
        "cluster_ai: {env_files: [.env], nodes_list: nodes_list.conf, cluster_yaml: cluster.yaml}\n"
    )
    loaded = load_config(str(tmp_path / "c.yaml"), env={}, cwd=tmp_path)
    assert loaded.cluster_env["DOCKER_SERVICES"] == "frontend backend"
    assert [(n.name, n.ssh.user) for n in loaded.config.nodes] == [("gpu-box", "josé"), ("est", "joão")]
    assert [c.name for c in loaded.config.checks] == ["docker"]  # from DOCKER_SERVICES: not an empty config


def test_cluster_ai_files_with_a_utf8_bom(tmp_path: Path):
    (tmp_path / ".env").write_bytes("\ufeffDOCKER_SERVICES=frontend\nSMTP_PASSWORD=sénha\n".encode())
    (tmp_path / "nodes_list.conf").write_bytes("\ufeffw1 w1 127.0.0.1 joão 22\n".encode())
    (tmp_path / "c.yaml").write_bytes("\ufeffcluster_ai: {env_files: [.env], nodes_list: nodes_list.conf}\n".encode())
    loaded = load_config(str(tmp_path / "c.yaml"), env={}, cwd=tmp_path)
    assert loaded.cluster_env == {"DOCKER_SERVICES": "frontend", "SMTP_PASSWORD": "sénha"}
    assert [(n.name, n.ssh.user) for n in loaded.config.nodes] == [("w1", "joão")]


def test_nodes_without_checks_is_not_an_empty_config(write, tmp_path: Path):
    config = write("c.yaml", "nodes:\n  - {name: gpu-box, host: 127.0.0.1}\n")
    loaded = load_config(str(config), env={}, cwd=tmp_path)
    assert loaded.config.checks == [] and [n.name for n in loaded.config.nodes] == ["gpu-box"]


def test_long_depends_on_chain(write, tmp_path: Path):
    n = 3000
    lines = [f"  - {{name: c{i}, kind: tcp, port: 1, depends_on: [c{i + 1}]}}" for i in range(n - 1)]
    config = write("c.yaml", "checks:\n" + "\n".join(lines) + f"\n  - {{name: c{n - 1}, kind: tcp, port: 1}}\n")
    loaded = load_config(str(config), env={}, cwd=tmp_path)
    assert len(loaded.config.checks) == n and loaded.config.checks[0].depends_on == ["c1"]


def test_merge_keys(write, tmp_path: Path):
    import pytest

    from clusterwatch.config.loader import ConfigError

    config = write(
        "c.yaml",
        "checks:\n  - &base {name: a, kind: tcp, port: 1, interval: 5s}\n  - {<<: *base, name: b, port: 2}\n"
        "  - <<: [{timeout: 1s}, *base]\n    name: c\n",
    )
    checks = load_config(str(config), env={}, cwd=tmp_path).config.checks
    assert [(c.name, c.port, c.interval, c.timeout) for c in checks] == [  # type: ignore[union-attr]
        ("a", 1, 5.0, None),
        ("b", 2, 5.0, None),
        ("c", 1, 5.0, 1.0),
    ]
    base = "checks:\n  - &base {name: a, kind: tcp, port: 1, interval: 0}\n"
    config = write("c.yaml", base + "  - {<<: *base, name: b}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(config), env={}, cwd=tmp_path)
    assert [str(p) for p in info.value.problems] == [  # each check's own line
        f"{config}:2: checks[0](a).interval: duration 0 must be more than zero (at least 1ms)",
        f"{config}:3: checks[1](b).interval: duration 0 must be more than zero (at least 1ms)",
    ]
