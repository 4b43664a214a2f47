from __future__ import annotations

import pytest

from tests.real.docker_engine import DockerEngine


@pytest.fixture(scope="session")
def docker_engine():
    engine = DockerEngine()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def docker(docker_engine: DockerEngine):
    yield docker_engine
    docker_engine.remove_all()
