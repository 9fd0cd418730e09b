"""What every format reader shares: the read context, field accessors with clear reasons."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from ropo_jax.data.errors import ProblemLog
from ropo_jax.data.example import PreferenceExample, check_pair
from ropo_jax.data.sources import iter_rows


@dataclasses.dataclass
class ReadContext:
    """Problems (bad rows) and counters of rows left out by design (e.g. tied scores)."""

    log: ProblemLog
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    rows: int = 0


RowConverter = Callable[[dict, str, int, ReadContext], Iterator[PreferenceExample]]


def read_with(
    convert: RowConverter, path: str, ctx: ReadContext
) -> Iterator[tuple[str, int, PreferenceExample]]:
    """Runs ``convert`` over the rows of ``path``, yielding ``(path, line, example)``; a
    ValueError becomes the problem ``PATH:LINE: reason``."""
    for line, row in iter_rows(path, ctx.log):
        ctx.rows += 1
        if not isinstance(row, dict):
            ctx.log.add(path, line, f"expected a JSON object, got {type(row).__name__}")
            continue
        try:
            examples = list(convert(row, path, line, ctx))
            for example in examples:
                check_pair(example)
        except ValueError as e:
            ctx.log.add(path, line, str(e))
            continue
        for example in examples:
            yield path, line, example


def field(row: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in row or row[name] is None:
        raise ValueError(f"missing field '{name}'")
    value = row[name]
    # bool is an int in Python; a score of `true` is a typing mistake, not a number.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise ValueError(f"field '{name}' must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def optional_field(row: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    if row.get(name) is None:
        return None
    return field(row, name, kind)


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
        bool: "a boolean",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _tuple(kind)))


NUMBER = (int, float)
