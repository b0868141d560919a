"""Processors driven by expressions written in the spec: filters and derived columns.

Expressions use the safe language of `beam_etl.core.expr` (never `eval`). They are
parsed when the transform is built, type-checked against the input schema when the spec is
validated (where the schema is known), and compiled once per input schema on the workers.
A row on which an expression fails (division by zero, overflow, a bad cast) leaves through
`error` (`expression_failed`), naming the expression, the operator and its operands; the other
rows of its batch go on.
"""

import functools
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.deadletter import DeadLetter, rejects_from_mask
from beam_etl.core.expr import (
    Compiled,
    RowFailure,
    compile_checked,
    compile_expression,
    referenced_columns,
    result_type,
)
from beam_etl.transforms._base import BatchResult, BatchStep

EXPRESSION_FAILED: Final = "expression_failed"


@functools.lru_cache(maxsize=64)
def _compiled(text: str, schema: pa.Schema) -> pc.Expression:
    return compile_expression(text, schema)


@functools.lru_cache(maxsize=64)
def _checked(text: str, schema: pa.Schema) -> Compiled:
    return compile_checked(text, schema)


def reject_rows(
    batch: pa.RecordBatch, failures: list[RowFailure], *, step: str
) -> tuple[np.ndarray, list[DeadLetter]]:
    """Return the mask of the failed rows of `batch` and their dead letters.

    `failures` lists `(row, message)` in row order, each row once; the reason is
    `expression_failed`.
    """
    failed = np.zeros(batch.num_rows, dtype=bool)
    failed[[row for row, _ in failures]] = True
    messages = [message for _, message in failures]
    letters = rejects_from_mask(
        batch, pa.array(failed), step=step, reason=EXPRESSION_FAILED, messages=messages
    )
    return failed, letters


def _filter(where: str, batch: pa.RecordBatch, step: str) -> BatchResult:
    mask, failures = _checked(where, batch.schema).evaluate(batch)
    if not failures:
        kept = batch.filter(mask)
        return kept, [], batch.num_rows - kept.num_rows
    failures = [(row, f"Filter `{where}` failed: {message}") for row, message in failures]
    failed, letters = reject_rows(batch, failures, step=step)
    kept = batch.filter(pc.and_kleene(mask, pa.array(~failed)))
    return kept, letters, batch.num_rows - kept.num_rows - len(letters)


class FilterRows(BatchStep):
    """Keep the rows where the expression `where` is true; others are dropped (and counted).

    Null counts as false. Order kept. A row on which the expression fails at run time
    (overflow, division by zero) leaves through `error` (`expression_failed`); the rest of its
    batch is filtered as usual.
    """

    def __init__(self, where: str) -> None:
        """Args:
        where: a boolean expression, e.g. `amount > 0 and status != 'cancelled'`.
        """
        super().__init__()
        if not isinstance(where, str) or not where.strip():
            raise ValueError("`where` must be a non-empty expression")
        referenced_columns(where)  # syntax errors surface now, with their position
        self.where = where

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Type-check `where` against the input schema; the output schema is the input's."""
        found = result_type(self.where, schema)
        if not pa.types.is_boolean(found) and not pa.types.is_null(found):
            raise ValueError(f"`where` must be a boolean expression, not {found}")
        return schema

    def batch_function(self):
        return functools.partial(_filter, self.where)


def _derive(columns: dict[str, str], batch: pa.RecordBatch, step: str) -> BatchResult:
    original = batch
    rows: np.ndarray | None = None  # the rows of `original` left in `batch`, once some failed
    failures: list[RowFailure] = []
    for name, text in columns.items():
        values, failed_here = _checked(text, batch.schema).evaluate(batch)
        if failed_here:
            rows = np.arange(original.num_rows) if rows is None else rows
            what = f"Expression `{text}` for column `{name}` failed"
            failures += [(int(rows[row]), f"{what}: {message}") for row, message in failed_here]
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[[row for row, _ in failed_here]] = False
            batch, values, rows = batch.filter(keep), values.filter(keep), rows[keep]
        names = batch.schema.names
        if name in names:
            batch = batch.set_column(names.index(name), name, values)
        else:
            batch = batch.append_column(name, values)
    if not failures:
        return batch, [], 0
    # The dead letter carries the row as it came in, not the columns derived before it failed.
    return batch, reject_rows(original, sorted(failures), step=step)[1], 0


class DeriveColumns(BatchStep):
    """Add or replace columns computed from expressions, in the order given.

    A later expression may use a column derived by an earlier one. Order of rows kept. A row
    on which an expression fails at run time leaves through `error` (`expression_failed`, with
    its input values); the rest of its batch goes on.
    """

    def __init__(self, columns: dict[str, str]) -> None:
        """Args:
        columns: expression by new column name, e.g. `{total: price * quantity}`.
        """
        super().__init__()
        if not isinstance(columns, dict) or not columns:
            raise ValueError("`columns` must map column names to expressions")
        for text in columns.values():
            referenced_columns(str(text))
        self.columns = {name: str(text) for name, text in columns.items()}

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Type-check every expression; return the schema with the derived columns."""
        for name, text in self.columns.items():
            field = pa.field(name, result_type(text, schema))
            index = schema.get_field_index(name)
            schema = schema.set(index, field) if index >= 0 else schema.append(field)
        return schema

    def batch_function(self):
        return functools.partial(_derive, self.columns)
