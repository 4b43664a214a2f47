"""Cluster AI's own files, read as its users have them: cluster.yaml, nodes_list.conf, .env."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterwatch.config.yamlpos import Position, YAMLProblem, read_yaml

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass
class ImportedNode:
    data: dict[str, Any]
    position: Position


@dataclass
class EnvFile:
    values: dict[str, str] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)


def read_env_files(paths: list[str | Path]) -> EnvFile:
    """NAME=VALUE lines; a later file overrides an earlier one (.env.local over .env)."""
    merged = EnvFile()
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise YAMLProblem(str(path), 0, f"cannot read: {exc.strerror or exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _ENV_LINE.match(line)
            if not match:
                raise YAMLProblem(str(path), number, "expected NAME=VALUE")
            name, value = match.group(1), _unquote(match.group(2))
            merged.values[name] = value
            merged.positions[name] = (str(path), number)
    return merged


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    # An unquoted value ends at an inline comment, as in shell.
    return re.split(r"\s+#", value, maxsplit=1)[0]


def read_cluster_yaml(path: str | Path) -> list[ImportedNode]:
    """`workers:` become nodes: `host` falling back to `ip`; inactive or disabled are skipped."""
    data, positions = read_yaml(path)
    file = str(path)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise YAMLProblem(file, 1, "expected a mapping with a `workers:` section")
    workers = data.get("workers") or {}
    if isinstance(workers, list):  # some versions write a list of {name: ...}
        workers = {w.get("name", f"worker-{i}"): w for i, w in enumerate(workers) if isinstance(w, dict)}
    if not isinstance(workers, dict):
        raise YAMLProblem(file, positions.get(("workers",), (file, 0))[1], "workers: expected a mapping")
    nodes: list[ImportedNode] = []
    for name, spec in workers.items():
        where = positions.get(("workers", name), (file, 0))
        if not isinstance(spec, dict):
            raise YAMLProblem(file, where[1], f"workers.{name}: expected a mapping")
        if str(spec.get("status", "active")).lower() == "inactive" or spec.get("enabled") is False:
            continue
        host = spec.get("host") or spec.get("ip")
        if not host:
            raise YAMLProblem(file, where[1], f"workers.{name}: needs host: (or ip:)")
        node: dict[str, Any] = {"name": str(name), "host": str(host), "ssh": {}}
        if spec.get("user"):
            node["ssh"]["user"] = str(spec["user"])
        if spec.get("port"):
            node["ssh"]["port"] = spec["port"]
        nodes.append(ImportedNode(node, where))
    return nodes


def read_nodes_list(path: str | Path) -> list[ImportedNode]:
    """`hostname alias ip user port [status]`, one node a line, `#` comments."""
    file = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise YAMLProblem(file, 0, f"cannot read: {exc.strerror or exc}") from exc
    nodes: list[ImportedNode] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 5:
            raise YAMLProblem(file, number, "expected `hostname alias ip user port [status]`")
        hostname, alias, ip, user, port = parts[:5]
        if len(parts) > 5 and parts[5].lower() in ("inactive", "disabled", "offline"):
            continue
        if not port.isdigit():
            raise YAMLProblem(file, number, f"port {port!r} is not a number")
        node = {"name": alias or hostname, "host": ip, "ssh": {"user": user, "port": int(port)}}
        nodes.append(ImportedNode(node, (file, number)))
    return nodes
