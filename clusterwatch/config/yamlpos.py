"""YAML with the line of every key, so errors can name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[Any, ...]
# libyaml when present: 10,000 checks parse in a fraction of a second instead of seconds.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
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
    loader = _Loader(text)
    positions: dict[Path_, Position] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, positions
        data = _build(loader, node, (), positions, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise YAMLProblem(file, line, f"invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise YAMLProblem(file, 0, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, positions


_STR = "tag:yaml.org,2002:str"


def _build(loader: Any, node: yaml.Node, path: Path_, positions: dict[Path_, Position], file: str) -> Any:
    """The document's data and every key's line, in one walk over the node tree."""
    positions.setdefault(path, (file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        if any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value):
            return loader.construct_object(node, deep=True)  # `<<:` merge keys: rare, let PyYAML do it
        result: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR:
                key = key_node.value
            else:
                key = loader.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise YAMLProblem(file, line, "a key must be a plain value")
            if key in seen:
                raise YAMLProblem(file, line, f"duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = line
            positions[(*path, key)] = (file, line)
            result[key] = _build(loader, value_node, (*path, key), positions, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), positions, file) for i, item in enumerate(node.value)]
    if node.tag == _STR:
        return node.value
    return loader.construct_object(node, deep=True)
