"""YAML with the line of every key, so errors can name file, line and field.

Hostile input is bounded here: nesting depth, what aliases may expand to (a "billion laughs" file
is a few lines), recursive aliases and numbers too long to mean anything. Each becomes a problem
naming the field, never a traceback, a hang or gigabytes of memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clusterwatch.config.files import FileProblem, read_text

Path_ = tuple[Any, ...]
# libyaml when present: 10,000 checks parse in a fraction of a second instead of seconds.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Position = tuple[str, int]  # file, line (1-based)

MAX_DEPTH = 64  # mappings and lists inside each other; the schema itself needs fewer than ten
# Aliases may add this many values, or as many as the file itself holds, whichever is more.
MAX_ALIAS_VALUES = 100_000
MAX_NUMBER_CHARS = 50  # a longer number is a mistake, and Python refuses ints over 4,300 digits
MAX_PROBLEMS = 20

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class YAMLProblems(FileProblem):
    """Values that could not be read; `data` is the document with them left out, to name fields by."""

    def __init__(self, problems: list[FileProblem], data: Any) -> None:
        first = problems[0]
        super().__init__(first.file, first.line, first.message, first.path)
        self.args = ("\n".join(str(p) for p in problems),)
        self.problems, self.data = problems, data


def read_yaml(path: str | Path, *, latin1_fallback: bool = False) -> tuple[Any, dict[Path_, Position]]:
    return parse_yaml(read_text(path, latin1_fallback=latin1_fallback), str(path))


def parse_yaml(text: str, file: str) -> tuple[Any, dict[Path_, Position]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _Builder(loader, file)
        data = builder.build(node, (), 0)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise FileProblem(file, line, f"invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.reader.ReaderError as exc:  # a control character
        if isinstance(exc.character, int):  # libyaml: a code point, and the offset in UTF-8 bytes
            code, line = exc.character, text.encode("utf-8", "replace")[: exc.position].count(b"\n") + 1
        else:
            code, line = ord(exc.character), text[: exc.position].count("\n") + 1
        raise FileProblem(file, line, f"invalid YAML: {exc.reason} (U+{code:04X})") from None
    except yaml.YAMLError as exc:
        raise FileProblem(file, 0, f"invalid YAML: {' '.join(str(exc).split())}") from exc
    finally:
        loader.dispose()
    if builder.problems:
        raise YAMLProblems(builder.problems, data)
    return data, builder.positions


class _Builder:
    """The document's data and every key's line, in one walk over the node tree.

    Aliases make the node tree a graph: a mapping or list met again is an alias being expanded
    (what that adds is counted), and one met while it is still being built refers to itself.
    """

    def __init__(self, loader: Any, file: str) -> None:
        self.loader, self.file = loader, file
        self.positions: dict[Path_, Position] = {}
        self.problems: list[FileProblem] = []
        self.containers: dict[int, bool] = {}  # mappings and lists met: True while being built
        self.values = 0  # values built
        self.aliased = 0  # > 0 while an alias is being expanded
        self.alias_values = 0  # values built for aliases
        self.alias_bomb = False

    def problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            line = self.positions.get(path, (self.file, node.start_mark.line + 1))[1]
            self.problems.append(FileProblem(self.file, line, message, path))

    def build(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        self.positions.setdefault(path, (self.file, node.start_mark.line + 1))
        self.values += 1
        if self.aliased:
            self.alias_values += 1
            if self.alias_bomb or self.alias_values > max(MAX_ALIAS_VALUES, self.values - self.alias_values):
                if not self.alias_bomb:
                    self.alias_bomb = True
                    message = f"aliases expand to more than {MAX_ALIAS_VALUES:,} values (an alias bomb?)"
                    self.problem(node, path, message)
                return None
        if isinstance(node, yaml.ScalarNode):
            return node.value if node.tag == _STR else self.scalar(node, path)
        key = id(node)
        building = self.containers.get(key)
        if building:
            self.problem(node, path, "an alias refers to the value that contains it (a recursive structure)")
            return None
        if depth >= MAX_DEPTH:
            self.problem(node, path, f"nested more than {MAX_DEPTH} levels deep")
            return None
        alias = building is not None  # met before: this is an alias to it
        self.aliased += alias
        self.containers[key] = True
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
            return self.mapping(node, path, depth)
        finally:
            self.containers[key] = False
            self.aliased -= alias

    def mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[Any, Any]:
        merges = [value for key, value in node.value if key.tag == _MERGE]
        # `<<: *defaults` first, so the mapping's own keys win, and their lines are the ones named.
        result = self.merge(merges, path, depth) if merges else {}
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise FileProblem(self.file, line, "a key must be a plain value")
            if key_node.tag == _STR:
                key = key_node.value
            else:
                before = len(self.problems)
                key = self.scalar(key_node, path)
                if len(self.problems) > before:
                    continue
            if key in seen:
                raise FileProblem(self.file, line, f"duplicate key {_short(key)} (first at line {seen[key]})")
            seen[key] = line
            child = (*path, key)
            self.positions[child] = (self.file, line)
            result[key] = self.build(value_node, child, depth + 1)
        return result

    def merge(self, nodes: list[yaml.Node], path: Path_, depth: int) -> dict[Any, Any]:
        """YAML's merge keys: each a mapping, or a list of them where the first one wins."""
        sources = [s for n in nodes for s in (n.value if isinstance(n, yaml.SequenceNode) else [n])]
        merged: dict[Any, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self.problem(source, (*path, "<<"), "`<<:` merges a mapping or a list of mappings only")
                continue
            value = self.build(source, path, depth + 1)  # deeper: a chain of merges is nesting too
            if isinstance(value, dict):
                merged.update(value)
        return merged

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag in _NUMBERS and len(node.value) > MAX_NUMBER_CHARS:
            self.problem(node, path, f"number too long ({len(node.value)} characters)")
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # `!!timestamp soon`, `!!int x`
            why = f": {exc}" if type(exc) is ValueError else ""  # "month must be in 1..12", not Python's internals
            self.problem(node, path, f"cannot read {_short(node.value)} as {node.tag.rsplit(':', 1)[-1]}{why}")
            return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
