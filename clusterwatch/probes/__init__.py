"""One module per kind of service; a new kind is one file plus one line here."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from clusterwatch.model import Group, Observation

ProbeFn = Callable[[Any, Any], Awaitable[list[Observation]]]

_MODULES = {
    "http": "clusterwatch.probes.http",
    "tcp": "clusterwatch.probes.tcp",
    "dask": "clusterwatch.probes.dask",
    "docker": "clusterwatch.probes.docker",
    "ollama": "clusterwatch.probes.ollama",
    "openwebui": "clusterwatch.probes.openwebui",
    "node": "clusterwatch.probes.node",
}

# Which `check --only` groups a kind can produce, so a filtered run skips the rest.
GROUPS: dict[str, set[Group]] = {
    "http": {Group.SERVICES},
    "tcp": {Group.SERVICES},
    "dask": {Group.SERVICES, Group.WORKERS},
    "docker": {Group.SERVICES},
    "ollama": {Group.SERVICES, Group.MODELS},
    "openwebui": {Group.SERVICES},
    "node": {Group.SYSTEM},
    "ssh": {Group.NODES},
}


def probe_for(kind: str) -> ProbeFn:
    return importlib.import_module(_MODULES[kind]).probe  # type: ignore[no-any-return]
