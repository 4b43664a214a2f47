from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterwatch.config.loader import load_config
from clusterwatch.engine.once import run_once
from clusterwatch.model import Observation

pytest_plugins = ["tests.pg"]  # postgres_server, pg_url: a real PostgreSQL, started only when a test asks


def observe(
    tmp_path: Path, config: dict[str, Any] | str, *, timeout: float = 30.0, env: dict[str, str] | None = None
) -> dict[str, Observation]:
    """Load a config the way a user's file is loaded, run one round, index it by name."""
    path = tmp_path / "clusterwatch.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(str(path), env=env or {}, cwd=tmp_path)
    result = asyncio.run(run_once(loaded.config, timeout=timeout, redactor=loaded.redactor))
    return {o.name: o for o in result.observations}


@pytest.fixture
def write(tmp_path: Path):
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, once per engine: a SQLite file, or a fresh PostgreSQL database.
    A test about SQLite's own mechanics narrows it: `@pytest.mark.parametrize("store_location",
    ["sqlite"], indirect=True)`."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return request.getfixturevalue("pg_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/real is marked `real`: `make test` runs those one at a time."""
    for item in items:
        if "real" in item.path.relative_to(Path(__file__).parent).parts[:-1]:
            item.add_marker(pytest.mark.real)
