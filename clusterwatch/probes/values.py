"""Reading what a service answered when it may answer anything: finite numbers, usable JSON, text as text.

One decision for every probe: JSON's non-standard `NaN`, `Infinity` and `-Infinity` (Python's
json reads them, and Python services such as Dask's dashboard write them) and numbers too large
for a float are read as `null`, "no value". So a probe only ever sees finite numbers, and a figure
a service could not give is simply absent, as if it had not been reported. JSON nested deeper
than the decoder can go is "not usable JSON", an answer like any garbled one, never a RecursionError.
"""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any

from clusterwatch.model import finite_number, one_line

_INT_DIGITS = 18  # longer integers are read as floats (and dropped when out of range)
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 3, 60, 60, 6, 6


def finite(value: object) -> float | None:
    """`value` as a finite float, or None for anything else (NaN, ±Infinity, text, a list, a bool)."""
    number = finite_number(value)
    if number is None:
        return None
    try:
        as_float = float(number)
    except OverflowError:
        return None
    return as_float if math.isfinite(as_float) else None


def _float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _int(text: str) -> int | float | None:
    return int(text) if len(text.lstrip("-")) <= _INT_DIGITS else _float(text)


def loads(body: bytes | str) -> Any:
    """The answer as JSON with only finite numbers; ValueError (with a reason) for anything unusable."""
    try:
        return json.loads(body, parse_constant=lambda _: None, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at character {exc.pos}") from None


def label(value: object, limit: int = 120) -> str:
    """A name, version or state a service reported, as one short printable line."""
    return one_line(value if isinstance(value, str) else _repr.repr(value), limit)


def short(value: object, limit: int = 80) -> str:
    """A bounded repr for messages: a huge or deeply nested answer is shown in a few dozen characters."""
    try:
        text = _repr.repr(value)
    except RecursionError:
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)
