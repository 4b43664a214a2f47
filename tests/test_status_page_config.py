"""`web.status_page` in the config, and the status page's own arithmetic: which maintenance windows
come up when (local time, over midnight, `24:00`), and a check of several parts as one service."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from clusterwatch.config.loader import ConfigError, load_config
from clusterwatch.config.schema import MaintenanceWindow, StatusPage, WebOptions
from clusterwatch.engine.state import EntityState
from clusterwatch.model import Status
from clusterwatch.web import status_page


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env=env or {}, cwd=path.parent)
    return [str(p) for p in info.value.problems]


def test_a_public_status_page_needs_a_token(write) -> None:
    path = write("c.yaml", "web:\n  status_page:\n    checks: [api]\n    public: true\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: web.status_page.public: ") and "token" in problem
    path = write("d.yaml", "web:\n  token: ${T}\n  status_page:\n    checks: [api]\n    public: true\n")
    options = load_config(str(path), env={"T": "a-token-123"}, cwd=path.parent).config.web
    assert options.read_needs_token and options.status_page is not None and options.status_page.title
    assert not WebOptions().read_needs_token
    assert not WebOptions(status_page=StatusPage(checks=["*"])).read_needs_token  # not public: as before


def test_a_status_page_names_its_checks(write) -> None:
    path = write("c.yaml", "web:\n  status_page:\n    checks: []\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:3: web.status_page.checks: ")
    path = write("d.yaml", "web:\n  status_page:\n    checks: [api]\n    hosts: [x]\n")
    assert "unknown key 'hosts'" in problems(path)[0]


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute).timestamp()  # 2026-03-02 is a Monday


def test_upcoming_windows_in_local_time() -> None:
    nightly = MaintenanceWindow(days=["mon"], start="22:00", end="02:00", reason="nightly")
    to_midnight = MaintenanceWindow(days=["tue"], start="23:00", end="24:00")
    empty = MaintenanceWindow(start="05:00", end="05:00")
    found = status_page.upcoming([nightly, to_midnight, empty], at(2, 12))
    assert [(b, e) for b, e, _ in found] == [(at(2, 22), at(3, 2)), (at(3, 23), at(4, 0))]
    # Monday's night still runs on Tuesday at 01:00: it shows, and as going on now.
    [(begin, end, window)] = status_page.upcoming([nightly], at(3, 1))[:1]
    assert (begin, end, window.reason) == (at(2, 22), at(3, 2), "nightly")
    # A week ahead at most.
    assert all(b < at(2, 12) + 7 * 86400 for b, _, _ in status_page.upcoming([nightly], at(2, 12)))


def state(name: str, check: str, hard: Status | None, since: float, incident: float | None = None) -> EntityState:
    return EntityState(
        name=name,
        check=check,
        node="gpu-node-7",
        hard=hard,
        since=since,
        incident="i" if incident else None,
        incident_started=incident,
    )


def test_a_check_of_several_parts_is_one_service() -> None:
    parts = {
        "dask": [
            state("dask", "dask", Status.OK, 100.0),
            state("dask/w1", "dask", Status.CRITICAL, 300.0, incident=290.0),
            state("dask/w2", "dask", Status.CRITICAL, 200.0, incident=190.0),
        ],
        "api": [state("api", "api", Status.OK, 50.0), state("api/b", "api", Status.OK, 70.0)],
        "new": [state("new", "new", None, 0.0)],
    }
    monitor = SimpleNamespace(
        items={"dask": object(), "api": object(), "new": object(), "hidden": object()},
        entities_of=lambda check: parts.get(check, []),
    )
    found = status_page.services(monitor, StatusPage(checks=["dask", "a*", "new"]))  # type: ignore[arg-type]
    assert [s.name for s in found] == ["dask", "api", "new"]
    dask, api, new = found
    assert (dask.status, dask.since, dask.incident_since, dask.parts) == ("critical", 200.0, 190.0, 3)
    assert (api.status, api.since) == ("ok", 70.0)  # up since its last part came back
    assert new.status == "unknown" and new.since is None
    # Its bars: the parts' seconds averaged, so three parts a minute each are one minute, a third down.
    seconds = {"dask": [(60.0, 60.0)] * 48, "dask/w1": [(0.0, 60.0)] * 48, "dask/w2": [(60.0, 60.0)] * 48}
    incidents = [
        {"entity": "dask/w1", "opened": 1900.0, "closed": 2000.0, "worst": "warning", "message": "10.0.0.5:8786"},
        {"entity": "dask/w2", "opened": 1950.0, "closed": None, "worst": "critical", "message": "tcp://10.0.0.6"},
        {"entity": "api", "opened": 0.0, "closed": None, "worst": "critical", "message": "another service"},
    ]
    slots = status_page.combined_slots(dask, seconds, 0.0, incidents)
    assert slots[0].known == pytest.approx(60.0) and slots[0].down_share == pytest.approx(1 / 3)
    assert slots[0].incident is None  # api's incident is not this service's
    assert slots[1].incident == "incident: not available (critical)"  # the worst, by its word: no message
    assert all(s.incident == slots[1].incident for s in slots[2:])  # the open one runs on
