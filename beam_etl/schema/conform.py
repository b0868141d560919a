"""`ConformToSchema`: cast each batch to a declared schema, with a contract for other columns.

Per batch: the declared columns are cast to their types (`casting.cast_batch`: vectorized,
failing values isolated), missing and extra columns are handled by the contract `mode`, and
rows that do not fit leave through `error`, one dead letter per row listing every problem:

- reason `cast_failed`: every problem of the row is a value that does not convert
  (message: "Value `x` in column `c` is not a valid int64");
- reason `schema_mismatch`: anything else (a null in a non-nullable column, a missing
  non-nullable column without a default, data in an undeclared column under `discard_rows`).

Contract modes, for columns not in the schema / declared columns missing from the input:

- `evolve`: extra columns are kept, unchanged, after the declared ones / a missing column is
  filled with its default, else null; a non-nullable one without a default rejects the rows.
- `freeze`: any extra or missing column fails the run (`SchemaContractError` listing every
  difference; also raised by `infer_schema` when the spec is checked).
- `discard_columns`: extra columns are dropped / missing ones as under `evolve`.
- `discard_rows`: extra columns are dropped, and a row holding a non-null value in one of them
  is rejected (`schema_mismatch`) / missing ones as under `evolve`.

Field constraints are enforced on the cast values, as row-level checks (nulls pass them, as
in `ValidateRecords`): `min` / `max` (inclusive bounds), `pattern` (the whole value must
match, RE2 syntax), `allowed_values`, `min_length` / `max_length`; a failing row is a
`schema_mismatch` naming the constraint, column and value. `unique` needs the whole dataset:
it is enforced by a `CheckUnique` step on those columns, not here.

Output: declared columns in schema order with the declared types and nullability (then, under
`evolve`, the extra columns), then the origin columns. Row order kept.
"""

import functools
from typing import ClassVar, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import HIDDEN_PREFIX, json_safe
from beam_etl.core.casting import cast_batch
from beam_etl.core.deadletter import CAST_FAILED, rejects_from_mask
from beam_etl.core.errors import DataError
from beam_etl.quality.checks import RowCheck, parse_check
from beam_etl.schema.model import Schema, SchemaError, load_schema
from beam_etl.transforms._base import BatchResult, BatchStep

MODES: Final = ("evolve", "freeze", "discard_columns", "discard_rows")
SCHEMA_MISMATCH: Final = "schema_mismatch"


class SchemaContractError(SchemaError):
    """The input's columns differ from a frozen schema: the run fails."""


def differences(schema: Schema, names: list[str]) -> tuple[list[str], list[str]]:
    """Return (columns not in `schema`, declared columns not in `names`); origin columns ignored."""
    extra = [n for n in names if n not in schema.names and not n.startswith(HIDDEN_PREFIX)]
    missing = [n for n in schema.names if n not in names]
    return extra, missing


def _contract_message(extra: list[str], missing: list[str]) -> str:
    parts = []
    if extra:
        parts.append("columns not in the schema: " + ", ".join(f"`{c}`" for c in extra))
    if missing:
        parts.append("columns missing: " + ", ".join(f"`{c}`" for c in missing))
    return "Input does not match the frozen schema: " + "; ".join(parts)


def _add_problem(problems: dict[int, list[tuple[bool, str]]], rows, cast: bool, text) -> None:
    for row in rows:
        problems.setdefault(int(row), []).append((cast, text(row) if callable(text) else text))


def _columns(
    schema: Schema, batch: pa.RecordBatch, problems: dict[int, list[tuple[bool, str]]]
) -> dict[str, pa.Array]:
    """Return the declared columns of `batch`, cast, filled or null, noting problems per row."""
    n, names = batch.num_rows, batch.schema.names
    present = {f.name: f.type for f in schema.fields if f.name in names}
    typed, failures = cast_batch(batch.select(list(present)), present)
    for failure in failures:
        _add_problem(problems, [failure.row], True, failure.message)
    failed_rows = {failure.row for failure in failures}
    arrays = {}
    for item in schema.fields:
        if item.name in present:
            array = typed.column(item.name)
            if not item.nullable and array.null_count:
                nulls = [r for r in np.flatnonzero(_nulls(array)) if r not in failed_rows]
                _add_problem(problems, nulls, False, f"Null in non-nullable column `{item.name}`")
        elif item.default is not None:
            array = pc.fill_null(pa.nulls(n, item.type), item.default_scalar())
        else:
            array = pa.nulls(n, item.type)
            if not item.nullable:
                message = f"Column `{item.name}` ({item.type}) is missing and not nullable"
                _add_problem(problems, range(n), False, message)
        arrays[item.name] = array
    return arrays


def _nulls(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False), dtype=bool)


def constraint_checks(schema: Schema) -> list[RowCheck]:
    """Return the row-level checks that the fields' constraints ask for (see the module doc).

    Raises:
        ValueError: a constraint's value is not valid (a bad pattern, bounds of no use).
    """
    checks = []
    for item in schema.fields:
        c = item.constraints
        configs = []
        if c.get("min") is not None or c.get("max") is not None:
            bounds = {k: c[k] for k in ("min", "max") if c.get(k) is not None}
            configs.append(("range", {"check": "range", **bounds}))
        if c.get("pattern") is not None:
            regex = {"check": "regex", "pattern": c["pattern"], "full_match": True}
            configs.append(("pattern", regex))
        if c.get("allowed_values") is not None:
            allowed = {"check": "allowed_values", "values": list(c["allowed_values"])}
            configs.append(("allowed_values", allowed))
        if c.get("min_length") is not None or c.get("max_length") is not None:
            lengths = {
                k: c[f"{k}_length"] for k in ("min", "max") if c.get(f"{k}_length") is not None
            }
            configs.append(("length", {"check": "length", **lengths}))
        empty = pa.RecordBatch.from_pylist([], schema=pa.schema([pa.field(item.name, item.type)]))
        for key, config in configs:
            config.update(column=item.name, name=f"constraint.{key}.{item.name}")
            try:
                check = parse_check(config, _no_functions)
                check.failed(empty)  # a bound or kind that does not fit the type fails here
            except (ValueError, DataError) as exc:
                raise ValueError(f"Constraint on `{item.name}`: {exc}") from None
            checks.append(check)
    return checks


def _no_functions(reference: str):
    raise ValueError(f"Constraints cannot call functions (`{reference}`)")


def _check_constraints(
    checks: list[RowCheck],
    arrays: dict[str, pa.Array],
    problems: dict[int, list[tuple[bool, str]]],
) -> None:
    """Note every constraint each row fails (values that did not convert are nulls: passed)."""
    if not checks:
        return
    declared = pa.RecordBatch.from_pydict(arrays)
    for check in checks:
        rows = np.flatnonzero(check.failed(declared))
        if len(rows):
            values = declared.column(check.column).take(pa.array(rows, pa.int64())).to_pylist()
            explained = dict(zip(rows.tolist(), values))
            _add_problem(problems, rows, False, lambda r, c=check, v=explained: c.explain(v[r]))


def conform_batch(
    schema: Schema,
    mode: str,
    checks: tuple[RowCheck, ...],
    batch: pa.RecordBatch,
    step: str,
) -> BatchResult:
    """Return `batch` conformed to `schema` under `mode`, and dead letters of rows that do not fit.

    Raises:
        SchemaContractError: `mode` is `freeze` and the columns differ.
    """
    extra, missing = differences(schema, batch.schema.names)
    if mode == "freeze" and (extra or missing):
        raise SchemaContractError(f"{_contract_message(extra, missing)} (step `{step}`)")
    problems: dict[int, list[tuple[bool, str]]] = {}
    arrays = _columns(schema, batch, problems)
    _check_constraints(list(checks), arrays, problems)
    if mode == "discard_rows":
        for column in extra:
            values = batch.column(column)
            rows = np.flatnonzero(~_nulls(values))
            _add_problem(
                problems,
                rows,
                False,
                lambda r, c=column, v=values: (
                    f"Column `{c}` is not in the schema (value `{json_safe(v[r].as_py())}`)"
                ),
            )
    fields = [pa.field(f.name, f.type, f.nullable) for f in schema.fields]
    columns = [arrays[f.name] for f in schema.fields]
    kept_extra = extra if mode == "evolve" else []
    hidden = [n for n in batch.schema.names if n.startswith(HIDDEN_PREFIX)]
    for name in [*kept_extra, *hidden]:
        fields.append(batch.schema.field(name))
        columns.append(batch.column(name))
    rejected = np.zeros(batch.num_rows, dtype=bool)
    rejected[list(problems)] = True
    if not problems:
        return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields)), [], 0
    bad_rows = sorted(problems)
    messages = ["; ".join(text for _, text in problems[r]) for r in bad_rows]
    reasons = [
        CAST_FAILED if all(cast for cast, _ in problems[r]) else SCHEMA_MISMATCH for r in bad_rows
    ]
    letters = [
        letter._replace(reason=reason)
        for letter, reason in zip(
            rejects_from_mask(
                batch, pa.array(rejected), step=step, reason=SCHEMA_MISMATCH, messages=messages
            ),
            reasons,
        )
    ]
    keep = pa.array(~rejected)
    kept = [pc.filter(column, keep) for column in columns]
    out = pa.RecordBatch.from_arrays(kept, schema=pa.schema(fields)) if (~rejected).any() else None
    return out, letters, 0


class ConformToSchema(BatchStep):
    """Cast every batch to a declared schema; rows that do not fit become dead letters.

    Values that do not convert leave through `error` as `cast_failed` (naming column, value and
    expected type); nulls in non-nullable columns, missing required columns and (under
    `discard_rows`) data in undeclared columns as `schema_mismatch`. One dead letter per row,
    listing every problem. `mode` decides about extra and missing columns (see the module
    table); `freeze` fails the run listing every difference. Order of rows kept.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = BatchStep.OUTPUTS

    def __init__(self, schema: dict | str | Schema, *, mode: str = "evolve") -> None:
        """Args:
        schema: the schema in the versioned JSON format, or the path of such a JSON file.
        mode: `evolve`, `freeze`, `discard_columns` or `discard_rows` (extra/missing columns).
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {', '.join(MODES)}, not `{mode}`")
        try:
            self.schema = load_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"Invalid `schema`: {exc}") from None
        self.mode = mode
        self.checks = tuple(constraint_checks(self.schema))

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Return the output schema for an input `schema`; a frozen contract is checked here."""
        extra, missing = differences(self.schema, schema.names)
        if self.mode == "freeze" and (extra or missing):
            raise ValueError(_contract_message(extra, missing))
        fields = [pa.field(f.name, f.type, f.nullable) for f in self.schema.fields]
        if self.mode == "evolve":
            fields += [schema.field(name) for name in extra]
        return pa.schema(fields)

    def batch_function(self):
        return functools.partial(conform_batch, self.schema, self.mode, self.checks)
