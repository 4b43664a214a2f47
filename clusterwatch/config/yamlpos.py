"""YAML with the line of every key, so errors can name file, line and field.

The data is built straight from the parser's events (libyaml's when present), without PyYAML's
node graph: that is less than half the time and memory, and it is where hostile input is bounded:
how many values a file holds, how deep they nest, what aliases may expand to (a "billion laughs"
file is a few lines), aliases to themselves, and numbers too long to mean anything. Each becomes a
problem naming the field, never a traceback, a hang or gigabytes of memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from clusterwatch.config.files import FileProblem, read_text

Path_ = tuple[Any, ...]
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present
Position = tuple[str, int]  # file, line (1-based)

# A 10,000-check config holds about 150,000 values (with a restart policy on every tenth check).
MAX_VALUES = 500_000
MAX_DEPTH = 64  # mappings and lists inside each other; the schema itself needs fewer than ten
MAX_ALIAS_VALUES = 100_000  # what aliases may add, or as much as the file itself holds if that is more
MAX_NUMBER_CHARS = 50  # a longer number is a mistake, and Python refuses ints over 4,300 digits
MAX_PROBLEMS = 20

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_SCALARS = {f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp", "binary")}


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
    """The document's data (None when there is none) and the line of every key and list item."""
    loader = _Loader(text)
    try:
        loader.get_event()  # the stream's start
        if loader.check_event(StreamEndEvent):
            return None, {}
        loader.get_event()  # the document's start
        builder = _Builder(loader, file)
        data = builder.value((), 0)
        loader.get_event()  # the document's end
        if not loader.check_event(StreamEndEvent):
            line = loader.peek_event().start_mark.line + 1
            raise FileProblem(file, line, "invalid YAML: a second document (`---`): one config is one document")
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
    """Builds values from events, recording lines, counting values, bounding depth and aliases.

    An alias shares the value of its anchor (nothing is copied), and adds that value's size to
    what aliases have expanded to: that sum, not the file's size, is what later walks over the data
    cost. An alias met while its anchor is still being built refers to itself.
    """

    def __init__(self, loader: Any, file: str) -> None:
        self.loader, self.file = loader, file
        self.positions: dict[Path_, Position] = {}
        self.problems: list[FileProblem] = []
        self.anchors: dict[str, tuple[Any, int, int] | None] = {}  # value, size, line; None while being built
        self.values = 0  # values written in the file
        self.alias_values = 0  # values added by aliases
        self.alias_bomb = False
        self.tags: dict[tuple[str, Any], str] = {}  # implicit tags of short plain scalars, resolved once

    def problem(self, line: int, path: Path_, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(FileProblem(self.file, self.positions.get(path, (self.file, line))[1], message, path))

    def value(self, path: Path_, depth: int) -> Any:
        event = self.loader.get_event()
        line = event.start_mark.line + 1
        self.positions.setdefault(path, (self.file, line))
        self.values += 1
        if self.values > MAX_VALUES:
            raise FileProblem(self.file, line, f"more than {MAX_VALUES:,} values: too large a config")
        if type(event) is AliasEvent:
            return self.alias(event.anchor, line, path)
        anchor, before = event.anchor, 0
        if anchor is not None:
            if anchor in self.anchors:
                first = self.anchors[anchor]
                where = f" (first at line {first[2]})" if first else ""
                raise FileProblem(self.file, line, f"invalid YAML: anchor &{anchor} defined twice{where}")
            self.anchors[anchor] = None
            before = self.values + self.alias_values
        if type(event) is ScalarEvent:
            result = self.scalar(event, line, path)
        elif depth >= MAX_DEPTH:
            self.problem(line, path, f"nested more than {MAX_DEPTH} levels deep")
            self.skip()
            result = None
        elif type(event) is SequenceStartEvent:
            result = self.sequence(path, depth)
        else:
            result = self.mapping(path, depth)
        if anchor is not None:
            self.anchors[anchor] = (result, self.values + self.alias_values - before, line)
        return result

    def alias(self, anchor: str, line: int, path: Path_) -> Any:
        if anchor not in self.anchors:
            raise FileProblem(self.file, line, f"invalid YAML: alias *{anchor} before its anchor &{anchor}")
        found = self.anchors[anchor]
        if found is None:
            self.problem(line, path, "an alias refers to the value that contains it (a recursive structure)")
            return None
        value, size, _ = found
        if self.alias_bomb:
            return None
        self.alias_values += size
        if self.alias_values > max(MAX_ALIAS_VALUES, self.values):
            self.alias_bomb = True
            self.problem(line, path, f"aliases expand to more than {MAX_ALIAS_VALUES:,} values (an alias bomb?)")
            return None
        return value

    def sequence(self, path: Path_, depth: int) -> list[Any]:
        result: list[Any] = []
        check = self.loader.check_event
        while not check(SequenceEndEvent):
            result.append(self.value((*path, len(result)), depth + 1))
        self.loader.get_event()
        return result

    def mapping(self, path: Path_, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merged: list[Any] = []
        lines: dict[Any, int] = {}
        loader = self.loader
        while not loader.check_event(MappingEndEvent):
            event = loader.get_event()
            line = event.start_mark.line + 1
            if type(event) is ScalarEvent:
                tag = self.tag(event)
                if tag == _MERGE:
                    merged.append((self.value((*path, "<<"), depth + 1), line))
                    continue
                before = len(self.problems)
                key = event.value if tag == _STR else self.scalar(event, line, path, tag)
                if len(self.problems) > before:
                    self.value((*path, "?"), depth + 1)  # the value of a key that could not be read
                    continue
            elif type(event) is AliasEvent and isinstance(found := self.anchors.get(event.anchor), tuple):
                key = found[0]  # `*name: value`, a key written once and used again
            else:
                raise FileProblem(self.file, line, "a key must be a plain value")
            if isinstance(key, list | dict):
                raise FileProblem(self.file, line, "a key must be a plain value")
            if key in lines:
                raise FileProblem(self.file, line, f"duplicate key {_short(key)} (first at line {lines[key]})")
            lines[key] = line
            child = (*path, key)
            self.positions[child] = (self.file, line)
            result[key] = self.value(child, depth + 1)
        loader.get_event()
        return self.merge(merged, result, path) if merged else result

    def merge(self, merged: list[tuple[Any, int]], result: dict[Any, Any], path: Path_) -> dict[Any, Any]:
        """YAML's merge keys: `<<: *defaults`, or a list of them where the first one wins; own keys win."""
        combined: dict[Any, Any] = {}
        for value, line in reversed(merged):
            sources = value if isinstance(value, list) else [value]
            for source in reversed(sources):
                if isinstance(source, dict):
                    combined.update(source)
                elif source is not None or not self.problems:  # None: a problem already named
                    self.problem(line, (*path, "<<"), "`<<:` merges a mapping or a list of mappings only")
        combined.update(result)
        return combined

    def tag(self, event: ScalarEvent) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            if len(event.value) > 32:
                return self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            key = (event.value, event.implicit)
            tag = self.tags.get(key)
            if tag is None:
                tag = self.tags[key] = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        return tag

    def scalar(self, event: ScalarEvent, line: int, path: Path_, tag: str | None = None) -> Any:
        tag = tag or self.tag(event)
        value = event.value
        if tag == _STR:
            return value
        if tag in _NUMBERS and len(value) > MAX_NUMBER_CHARS:
            self.problem(line, path, f"number too long ({len(value)} characters)")
            return None
        if tag not in _SCALARS:
            self.problem(line, path, f"cannot read {_short(value)}: unknown tag {_short(tag)}")
            return None
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as exc:  # `!!timestamp soon`
            why = f": {exc}" if type(exc) is ValueError else ""  # "month must be in 1..12", not Python's internals
            self.problem(line, path, f"cannot read {_short(value)} as {tag.rsplit(':', 1)[-1]}{why}")
            return None

    def skip(self) -> None:
        """The rest of a mapping or list nested too deep, read and dropped (its anchors stay known)."""
        depth = 1
        while depth:
            event = self.loader.get_event()
            if type(event) in (SequenceStartEvent, MappingStartEvent):
                depth += 1
            elif type(event) in (SequenceEndEvent, MappingEndEvent):
                depth -= 1
            self.values += 1
            if self.values > MAX_VALUES:
                raise FileProblem(self.file, event.start_mark.line + 1, f"more than {MAX_VALUES:,} values")
            if getattr(event, "anchor", None) is not None and type(event) is not AliasEvent:
                self.anchors[event.anchor] = (None, 1, event.start_mark.line + 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
