"""Open WebUI beyond `/health`: `/ready` and its reason, `/health/db`, its webui.db on disk, the Ollama
it depends on, and hints from the check's own restart (not a guess at Docker)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from clusterwatch.config.schema import Config
from clusterwatch.model import Status
from tests.conftest import observe
from tests.doubles.openwebui_ready import OpenWebUIReadyDouble
from tests.helpers import ServerThread, closed_port


@pytest.fixture
def webui():
    double = OpenWebUIReadyDouble()
    with ServerThread(double.app()) as server:
        double.url = server.url  # type: ignore[attr-defined]
        yield double


def config(url: str, **extra) -> dict:
    return {"checks": [{"name": "webui", "kind": "openwebui", "url": url, "timeout": "2s", **extra}]}


def data_dir(tmp_path: Path) -> Path:
    """An Open WebUI data directory with a real (small) SQLite webui.db in it."""
    path = tmp_path / "data"
    path.mkdir(exist_ok=True)
    with sqlite3.connect(path / "webui.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS user (id TEXT PRIMARY KEY, email TEXT)")
        db.execute("INSERT OR REPLACE INTO user VALUES ('1', 'admin@example.org')")
    return path


def test_ready_and_healthy(tmp_path: Path, webui):
    obs = observe(tmp_path, config(webui.url))["webui"]
    assert obs.status is Status.OK and obs.message == "Open WebUI 0.12.4: healthy, ready, database ok"
    assert obs.details["ready"] == "ready" and obs.details["database"] == "ok"
    assert {"/health", "/ready", "/health/db", "/api/version"} <= set(webui.requests)


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("startup_complete", "not ready: Startup not complete (HTTP 503 on /ready)"),
        ("redis", "not ready: Redis not ready (HTTP 503 on /ready)"),
        (
            "database",
            "not ready: Database not ready (HTTP 503 on /ready); database check failed (HTTP 500 on /health/db)",
        ),
    ],
)
def test_not_ready_says_why(tmp_path: Path, webui, broken: str, expected: str):
    setattr(webui, broken, False)
    obs = observe(tmp_path, config(webui.url))["webui"]
    assert obs.status is Status.CRITICAL and obs.message == expected
    assert obs.down  # it says itself that it takes no traffic


def test_a_version_without_ready_is_judged_by_health_and_db(tmp_path: Path, webui):
    """Before /ready, Open WebUI's web app answered unknown paths with its page: that is no readiness."""
    webui.old, webui.version = True, "0.3.10"
    obs = observe(tmp_path, config(webui.url))["webui"]
    assert obs.status is Status.OK and obs.message == "Open WebUI 0.3.10: healthy", obs.message
    assert obs.details["ready"].startswith("no /ready (its web app answered")
    assert obs.details["database"] == "no /health/db (its web app answered)"


def test_webui_db_present(tmp_path: Path, webui):
    directory = data_dir(tmp_path)
    obs = observe(tmp_path, config(webui.url, data_dir=str(directory)))["webui"]
    size = (directory / "webui.db").stat().st_size
    assert obs.status is Status.OK, obs.message
    assert obs.message.startswith("Open WebUI 0.12.4: healthy, ready, database ok, webui.db ")
    assert obs.metrics["webui_db_bytes"] == size and obs.details["webui_db"] == "ok"


def test_webui_db_deleted_under_a_running_instance_is_critical(tmp_path: Path, webui):
    """Its /ready and /health/db still pass (they ping the connection it holds open): only the file says it."""
    directory = data_dir(tmp_path)
    (directory / "webui.db").unlink()
    obs = observe(tmp_path, config(webui.url, data_dir=str(directory)))["webui"]
    path = directory / "webui.db"
    assert obs.status is Status.CRITICAL
    assert obs.message == (
        f"{path} is missing — the next restart would start Open WebUI on a new, empty database;"
        " restore it from a backup first"
    )
    assert not obs.down  # it still serves, from the file it holds open
    assert obs.details["ready"] == "ready" and obs.details["database"] == "ok"


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes): no users, no chats"),
        (lambda p: p.write_bytes(b"<html>not a database</html>"), "is not a SQLite database"),
        (lambda p: p.mkdir(), "is not a file"),
    ],
)
def test_webui_db_unusable_is_critical(tmp_path: Path, webui, make, said: str):
    directory = tmp_path / "data"
    directory.mkdir()
    make(directory / "webui.db")
    obs = observe(tmp_path, config(webui.url, data_dir=str(directory)))["webui"]
    assert obs.status is Status.CRITICAL and obs.message == f"{directory / 'webui.db'} {said}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_webui_db_unreadable_is_critical(tmp_path: Path, webui):
    directory = data_dir(tmp_path)
    (directory / "webui.db").chmod(0)
    obs = observe(tmp_path, config(webui.url, data_dir=str(directory)))["webui"]
    assert obs.status is Status.CRITICAL
    assert obs.message == f"cannot read {directory / 'webui.db'}: Permission denied"


def test_data_dir_missing_altogether(tmp_path: Path, webui):
    obs = observe(tmp_path, config(webui.url, data_dir=str(tmp_path / "nowhere")))["webui"]
    assert obs.status is Status.CRITICAL
    assert obs.message.startswith(f"data_dir {tmp_path / 'nowhere'} does not exist — the next restart would")


def test_data_dir_on_a_node_reached_over_ssh_is_not_judged_from_here(tmp_path: Path, webui):
    cfg = config(webui.url, data_dir=str(tmp_path / "nowhere"), node="gpu-box")
    cfg["nodes"] = [{"name": "gpu-box", "host": "127.0.0.1", "ssh": {"port": closed_port(), "connect_timeout": "1s"}}]
    obs = observe(tmp_path, cfg)["webui"]
    assert obs.status is Status.OK, obs.message
    assert obs.details["webui_db"] == f"not checked: {tmp_path / 'nowhere'} is on gpu-box"


def test_data_dir_must_be_absolute():
    with pytest.raises(ValueError, match="data_dir must be an absolute path"):
        Config.model_validate({"checks": [{"name": "webui", "kind": "openwebui", "data_dir": "data"}]})


# --- hints from the config ----------------------------------------------------------------------------


def test_down_without_restart_makes_no_guess_at_docker(tmp_path: Path):
    port = closed_port()
    obs = observe(tmp_path, config(f"http://127.0.0.1:{port}"))["webui"]
    assert obs.status is Status.CRITICAL
    assert obs.message == f"connection refused at 127.0.0.1:{port} — is Open WebUI running?"


def test_down_with_restart_names_it(tmp_path: Path):
    port = closed_port()
    restarts = {
        "supervisor": ({"supervisor": "open-webui"}, "`supervisorctl restart open-webui`"),
        "command": (
            {"command": ["systemctl", "--user", "start", "open-webui"], "stop": ["pkill", "-x", "open-webui"]},
            "`pkill -x open-webui`, then `systemctl --user start open-webui`",
        ),
    }
    for restart, said in restarts.values():
        obs = observe(tmp_path, config(f"http://127.0.0.1:{port}", restart=restart))["webui"]
        assert obs.message == f"connection refused at 127.0.0.1:{port} — is Open WebUI running? (restart: {said})"


@pytest.mark.parametrize(
    ("check", "target"),
    [
        ({"name": "api", "kind": "http", "url": "http://127.0.0.1:{port}/"}, "127.0.0.1:{port}"),
        ({"name": "api", "kind": "tcp", "port": "{port}"}, "127.0.0.1:{port}"),
    ],
)
def test_http_and_tcp_hints_come_from_the_restart(tmp_path: Path, check: dict, target: str):
    port = closed_port()
    check = {k: (v.format(port=port) if isinstance(v, str) else v) for k, v in check.items()}
    check["port"] = int(check["port"]) if "port" in check else None
    check = {k: v for k, v in check.items() if v is not None}
    plain = observe(tmp_path, {"checks": [check]})["api"]
    assert plain.message == f"connection refused at {target.format(port=port)} — is the service running?"
    fixed = observe(tmp_path, {"checks": [{**check, "restart": {"systemd": "api.service"}}]})["api"]
    assert fixed.message.endswith("— is the service running? (restart: `systemctl restart api.service`)")


def test_docker_container_hint_is_this_checks_restart():
    from clusterwatch.config.schema import DockerCheck
    from clusterwatch.probes.docker import _container

    stopped = {"Name": "/open-webui", "State": {"Status": "exited", "Running": False, "ExitCode": 137}}
    plain = DockerCheck(name="docker", kind="docker", containers=["open-webui"])
    assert (
        _container(plain, "open-webui", stopped, False).message == "exited, exit code 137 — `docker start open-webui`"
    )
    compose = DockerCheck(
        name="docker",
        kind="docker",
        containers=["open-webui"],
        restart={"compose": {"project": "ai", "service": "{entity}"}},
    )
    assert (
        _container(compose, "open-webui", stopped, False).message
        == "exited, exit code 137 — `docker compose -p ai up -d open-webui`"
    )


# --- Open WebUI depends on its Ollama ------------------------------------------------------------------


def checks(*items: dict, nodes: list[dict] | None = None) -> dict[str, list[str]]:
    loaded = Config.model_validate({"checks": list(items), "nodes": nodes or []})
    return {c.name: list(c.depends_on) for c in loaded.checks}


OLLAMA = {"name": "ollama", "kind": "ollama"}
WEBUI = {"name": "webui", "kind": "openwebui"}
NODES = [{"name": "gpu-box", "host": "10.0.0.5", "agent": True}, {"name": "web", "host": "10.0.0.6", "agent": True}]


def test_webui_depends_on_the_ollama_on_its_own_machine():
    assert checks(OLLAMA, WEBUI)["webui"] == ["ollama"]
    assert checks({**OLLAMA, "url": "http://localhost:11434/"}, WEBUI)["webui"] == ["ollama"]
    assert checks({**OLLAMA, "url": "http://127.0.0.1:11435"}, WEBUI)["webui"] == []  # another Ollama


def test_loopback_is_one_machine_only():
    on_other = checks({**OLLAMA, "node": "gpu-box"}, {**WEBUI, "node": "web"}, nodes=NODES)
    assert on_other["webui"] == []
    on_same = checks({**OLLAMA, "node": "gpu-box"}, {**WEBUI, "node": "gpu-box"}, nodes=NODES)
    assert on_same["webui"] == ["ollama"]


def test_ollama_url_names_a_remote_ollama():
    remote = {**OLLAMA, "url": "http://10.0.0.5:11434", "node": "gpu-box"}
    found = checks(remote, {**WEBUI, "ollama_url": "http://10.0.0.5:11434", "node": "web"}, nodes=NODES)
    assert found["webui"] == ["ollama"]
    assert checks(remote, {**WEBUI, "ollama_url": "http://10.0.0.7:11434"}, nodes=NODES)["webui"] == []


def test_explicit_depends_on_is_left_alone():
    assert checks(OLLAMA, {**WEBUI, "depends_on": []})["webui"] == []
    assert checks(OLLAMA, {"name": "db", "kind": "tcp", "port": 5432}, {**WEBUI, "depends_on": ["db"]})["webui"] == [
        "db"
    ]


def test_no_dependency_that_would_make_a_cycle():
    assert checks({**OLLAMA, "depends_on": ["webui"]}, WEBUI)["webui"] == []
