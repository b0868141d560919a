"""Pure, vectorized row-level check logic (no Beam): which rows of a batch fail which rule.

A check is configured by a dict, e.g. `{check: range, column: x, min: 0, max: 10}`. Each
check answers, for a whole batch at once, a boolean mask of the rows that FAIL it. Nulls (and
NaN) fail only `not_null`: every other check passes a null, because a missing value is a
completeness problem, not a range or pattern problem.

Checks (keys besides `check`, `name`, `severity`, `description`; a row fails when ...):

- `not_null` (`column`): the value is null or NaN.
- `range` (`column`, `min` and/or `max`, `inclusive`: true, false or [min, max]): the value
  is outside the bounds; numbers, dates and timestamps (bounds as ISO text), strings.
- `regex` (`column`, `pattern` in RE2 syntax, `full_match`: false finds it anywhere): the
  text does not match.
- `allowed_values` (`column`, `values`): the value is not one of `values`.
- `length` (`column`, `min` and/or `max`, inclusive): the length in characters (strings),
  bytes (binary) or items (lists) is out of bounds.
- `custom` (`function`: `module:function` or a callable; `column`, optional, for examples):
  the function's mask is False (null counts as passed).

`severity` is `reject` (the row leaves through the dead-letter output) or `warn` (the row goes
on; failures are counted). A custom function takes the batch (origin columns removed) and
returns a boolean array, one entry per row, True where the row passes.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import json_safe, visible
from beam_etl.core.errors import DataError

KINDS: Final = ("not_null", "range", "regex", "allowed_values", "length", "custom")
ROW_SEVERITIES: Final = ("reject", "warn")
_COMMON: Final = {"check", "name", "severity", "description"}
_KEYS: Final = {
    "not_null": {"column"},
    "range": {"column", "min", "max", "inclusive"},
    "regex": {"column", "pattern", "full_match"},
    "allowed_values": {"column", "values"},
    "length": {"column", "min", "max"},
    "custom": {"function", "column"},
}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class CheckResult(NamedTuple):
    """The outcome of one check over the whole dataset (one per check per run).

    `outcome` is `passed`, `warned` (failures under severity `warn`), `rejected` (failing rows
    left through the dead-letter output) or `failed` (the run fails). `examples` holds a few
    failing values as `{"value": ..., "origin": ...}` dicts.
    """

    step: str
    check: str
    kind: str
    column: str | None
    severity: str
    rows_evaluated: int
    rows_failed: int
    outcome: str
    examples: tuple = ()
    message: str = ""

    @property
    def ratio(self) -> float:
        """Return the share of evaluated rows that failed (0.0 when none was evaluated)."""
        return self.rows_failed / self.rows_evaluated if self.rows_evaluated else 0.0


@dataclass(frozen=True)
class RowCheck:
    """One configured row-level check (see the module table)."""

    name: str
    kind: str
    severity: str
    column: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    function: Callable | None = None

    def failed(self, batch: pa.RecordBatch) -> np.ndarray:
        """Return a boolean numpy mask of the rows of `batch` that fail this check.

        Raises:
            DataError: the column is missing or has a type the check cannot compare.
            Exception: whatever a custom function raises (the caller decides what to do).
        """
        if self.kind == "custom":
            return _custom(self, batch)
        if self.column not in batch.schema.names:
            raise DataError(f"Check `{self.name}` needs column `{self.column}`, not in the input")
        column = batch.column(self.column)
        nulls = pc.is_null(column, nan_is_null=pa.types.is_floating(column.type))
        if self.kind == "not_null":
            return _numpy(nulls)
        try:
            passes = _PASSES[self.kind](self, column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise DataError(
                f"Check `{self.name}` cannot evaluate column `{self.column}` of type "
                f"`{column.type}`: {exc}"
            ) from None
        return ~_numpy(pc.or_kleene(nulls, pc.fill_null(passes, True)))

    def explain(self, value: Any) -> str:
        """Return why `value` fails this check, naming the check, column and value."""
        tag = f"{self.name}" + (" (warn)" if self.severity == "warn" else "")
        shown = f"`{self.column}` = `{json_safe(value)}`"
        p = self.params
        if self.kind == "not_null":
            detail = f"`{self.column}` is null"
        elif self.kind == "range":
            low, high = _inclusive(p.get("inclusive", True))
            bounds = f"{'[' if low else '('}{p.get('min', '-inf')}, {p.get('max', 'inf')}" + (
                "]" if high else ")"
            )
            detail = f"{shown} is not in {bounds}"
        elif self.kind == "regex":
            detail = f"{shown} does not match `{p['pattern']}`"
        elif self.kind == "allowed_values":
            detail = f"{shown} is not one of {', '.join(map(str, p['values']))}"
        elif self.kind == "length":
            detail = f"length of {shown} is not in [{p.get('min', 0)}, {p.get('max', 'inf')}]"
        else:
            detail = self.description or "custom check failed"
        return f"{tag}: {detail}"


def _numpy(array: Any) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _inclusive(value: Any) -> tuple[bool, bool]:
    if isinstance(value, bool):
        return value, value
    low, high = value
    return bool(low), bool(high)


def _scalar(value: Any, data_type: pa.DataType) -> pa.Scalar:
    # Text bounds are dates, timestamps or decimals written as text: read them as the column's.
    scalar = pa.scalar(value)
    if pa.types.is_string(scalar.type) and not (
        pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
    ):
        return scalar.cast(data_type)
    return scalar


def _range(check: RowCheck, column: pa.Array) -> pa.Array:
    low, high = _inclusive(check.params.get("inclusive", True))
    result = pa.array(np.ones(len(column), dtype=bool))
    if check.params.get("min") is not None:
        bound = _scalar(check.params["min"], column.type)
        compare = pc.greater_equal if low else pc.greater
        result = pc.and_kleene(result, compare(column, bound))
    if check.params.get("max") is not None:
        bound = _scalar(check.params["max"], column.type)
        compare = pc.less_equal if high else pc.less
        result = pc.and_kleene(result, compare(column, bound))
    return result


def _regex(check: RowCheck, column: pa.Array) -> pa.Array:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise pa.ArrowTypeError("regex needs a string column")
    pattern = check.params["pattern"]
    if check.params.get("full_match"):
        pattern = f"^(?:{pattern})$"
    return pc.match_substring_regex(column, pattern)


def _allowed(check: RowCheck, column: pa.Array) -> pa.Array:
    values = pa.array(check.params["values"])
    if values.type != column.type:
        values = values.cast(column.type)
    return pc.is_in(column, value_set=values)


def _length(check: RowCheck, column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        lengths = pc.utf8_length(column)
    elif pa.types.is_list(column.type):
        lengths = pc.list_value_length(column)
    else:
        lengths = pc.binary_length(column)
    result = pa.array(np.ones(len(column), dtype=bool))
    if check.params.get("min") is not None:
        result = pc.and_kleene(result, pc.greater_equal(lengths, check.params["min"]))
    if check.params.get("max") is not None:
        result = pc.and_kleene(result, pc.less_equal(lengths, check.params["max"]))
    return result


_PASSES: Final[dict[str, Callable[[RowCheck, pa.Array], pa.Array]]] = {
    "range": _range,
    "regex": _regex,
    "allowed_values": _allowed,
    "length": _length,
}


def _custom(check: RowCheck, batch: pa.RecordBatch) -> np.ndarray:
    assert check.function is not None
    mask = check.function(visible(batch))
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        mask = pc.fill_null(mask, True).to_numpy(zero_copy_only=False)
    mask = np.asarray([True if m is None else m for m in mask] if isinstance(mask, list) else mask)
    if mask.shape != (batch.num_rows,) or mask.dtype != bool:
        raise TypeError(
            f"returned {mask.dtype} of shape {mask.shape}, not {batch.num_rows} booleans"
        )
    return ~mask


def parse_check(config: dict[str, Any], load: Callable[[str], Callable]) -> RowCheck:
    """Return the `RowCheck` a config dict describes; `load` resolves `module:function`.

    Raises:
        ValueError: unknown check or key, missing key, bad severity, name or pattern.
    """
    if not isinstance(config, dict) or config.get("check") not in KINDS:
        raise ValueError(f"Each check needs `check:` one of {', '.join(KINDS)}; got `{config}`")
    kind = config["check"]
    unknown = sorted(set(config) - _COMMON - _KEYS[kind])
    if unknown:
        raise ValueError(
            f"Unknown key(s) {', '.join(f'`{k}`' for k in unknown)} in `{kind}` check; "
            f"use {', '.join(sorted(_KEYS[kind] | _COMMON))}"
        )
    required = {"custom": ("function", "name")}.get(kind, ("column",)) + {
        "regex": ("pattern",),
        "allowed_values": ("values",),
    }.get(kind, ())
    for key in required:
        if config.get(key) in (None, ""):
            raise ValueError(f"`{kind}` check needs `{key}`")
    if kind in ("range", "length") and config.get("min") is None and config.get("max") is None:
        raise ValueError(f"`{kind}` check on `{config['column']}` needs `min` or `max`")
    name = config.get("name") or f"{kind}_{config['column']}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"Check name `{name}` may hold only letters, digits, `_`, `.`, `-`")
    severity = config.get("severity", "reject")
    if severity not in ROW_SEVERITIES:
        raise ValueError(f"`severity` must be reject or warn, not `{severity}` (check `{name}`)")
    if kind == "regex":
        try:
            pc.match_substring_regex(pa.array([""]), config["pattern"])
        except pa.ArrowInvalid as exc:
            raise ValueError(f"Invalid `pattern` of check `{name}`: {exc}") from None
    if kind == "range":
        _inclusive(config.get("inclusive", True))
    function = config.get("function")
    if isinstance(function, str):
        function = load(function)
    params = {k: v for k, v in config.items() if k in _KEYS[kind] - {"column", "function"}}
    return RowCheck(
        name, kind, severity, config.get("column"), params, config.get("description"), function
    )
