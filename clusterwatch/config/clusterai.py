"""Cluster AI's own files, read as its users have them: cluster.yaml, nodes_list.conf, .env.

They are often saved in Latin-1 (Portuguese comments and user names), so each is read as UTF-8
with a fallback to Latin-1; whatever bytes they hold, the outcome is nodes and values or a problem
naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterwatch.config.files import FileProblem, read_text
from clusterwatch.config.yamlpos import Position, read_yaml

# Greedy, stripped afterwards: a lazy `(.*?)\s*$` is quadratic on a long run of spaces.
_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")
_INLINE_COMMENT = re.compile(r"\s#")
_PORT = re.compile(r"[0-9]{1,5}")


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
        for number, line in enumerate(_lines(path), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _ENV_LINE.match(line)
            if not match:
                raise FileProblem(str(path), number, "expected NAME=VALUE")
            name, value = match.group(1), _unquote(match.group(2).strip())
            merged.values[name] = value
            merged.positions[name] = (str(path), number)
    return merged


def _lines(path: str | Path) -> list[str]:
    """Lines as the shell and an editor count them: split at newlines only, not at \\x85 or \\x0c."""
    return [line.removesuffix("\r") for line in read_text(path, latin1_fallback=True).split("\n")]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    # An unquoted value ends at an inline comment, as in shell.
    comment = _INLINE_COMMENT.search(value)
    return value[: comment.start()].rstrip() if comment else value


def read_cluster_yaml(path: str | Path) -> list[ImportedNode]:
    """`workers:` become nodes: `host` falling back to `ip`; inactive or disabled are skipped."""
    data, positions = read_yaml(path, latin1_fallback=True)
    file = str(path)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise FileProblem(file, 1, "expected a mapping with a `workers:` section")
    workers = data.get("workers") or {}
    if isinstance(workers, list):  # some versions write a list of {name: ...}
        workers = _listed_workers(workers, positions, file)
    if not isinstance(workers, dict):
        raise FileProblem(file, positions.get(("workers",), (file, 0))[1], "workers: expected a mapping")
    nodes: list[ImportedNode] = []
    for name, spec in workers.items():
        where = positions.get(("workers", name), (file, 0))
        if not isinstance(spec, dict):
            raise FileProblem(file, where[1], f"workers.{name}: expected a mapping")
        if str(spec.get("status", "active")).lower() == "inactive" or spec.get("enabled") is False:
            continue
        host = spec.get("host") or spec.get("ip")
        if not host:
            raise FileProblem(file, where[1], f"workers.{name}: needs host: (or ip:)")
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
    nodes: list[ImportedNode] = []
    for number, raw in enumerate(_lines(path), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 5:
            raise FileProblem(file, number, "expected `hostname alias ip user port [status]`")
        hostname, alias, ip, user, port = parts[:5]
        if len(parts) > 5 and parts[5].lower() in ("inactive", "disabled", "offline"):
            continue
        if not _PORT.fullmatch(port):  # not str.isdigit(): int() refuses some of what it accepts ("²")
            raise FileProblem(file, number, f"port {port[:20]!r} is not a port number")
        node = {"name": alias or hostname, "host": ip, "ssh": {"user": user, "port": int(port)}}
        nodes.append(ImportedNode(node, (file, number)))
    return nodes


def _listed_workers(workers: list[Any], positions: dict[Any, Position], file: str) -> dict[str, Any]:
    """`workers: [{name: gpu-box, host: ...}]`, as some versions write them, keyed by name."""
    found: dict[str, Any] = {}
    for index, worker in enumerate(workers):
        if not isinstance(worker, dict):
            continue
        name = worker.get("name", f"worker-{index}")
        if not isinstance(name, str | int):
            line = positions.get(("workers", index, "name"), (file, 0))[1]
            raise FileProblem(file, line, f"workers[{index}].name: expected a name")
        found[str(name)] = worker
        positions[("workers", str(name))] = positions.get(("workers", index), (file, 0))
    return found
