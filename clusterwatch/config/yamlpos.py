"""YAML with the line of every key, so errors can name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[Any, ...]
Position = tuple[str, int]  # file, line (1-based)


class YAMLProblem(Exception):
    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line, self.message = file, line, message


def read_yaml(path: str | Path) -> tuple[Any, dict[Path_, Position]]:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YAMLProblem(file, 0, f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise YAMLProblem(file, 0, f"not UTF-8 text: {exc.reason}") from exc
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str) -> tuple[Any, dict[Path_, Position]]:
    loader = yaml.SafeLoader(text)
    positions: dict[Path_, Position] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, positions
        _walk(loader, node, (), positions, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise YAMLProblem(file, line, f"invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise YAMLProblem(file, 0, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, positions


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, positions: dict[Path_, Position], file: str) -> None:
    positions.setdefault(path, (file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, list | dict):
                raise YAMLProblem(file, line, "a key must be a plain value")
            if key in seen:
                raise YAMLProblem(file, line, f"duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = line
            positions[(*path, key)] = (file, line)
            _walk(loader, value_node, (*path, key), positions, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(loader, item, (*path, index), positions, file)
