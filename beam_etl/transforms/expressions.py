"""Processors driven by expressions written in the spec: filters and derived columns.

Expressions use the safe language of `beam_etl.transforms.expr` (never `eval`). They are
parsed when the transform is built, type-checked against the input schema when the spec is
validated (where the schema is known), and compiled once per input schema on the workers.
"""

import functools

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.deadletter import reject_all
from beam_etl.transforms._base import BatchResult, BatchStep
from beam_etl.transforms.expr import compile_expression, evaluate, referenced_columns, result_type

EXPRESSION_FAILED = "expression_failed"


@functools.lru_cache(maxsize=64)
def _compiled(text: str, schema: pa.Schema) -> pc.Expression:
    return compile_expression(text, schema)


def _reject_all(batch: pa.RecordBatch, step: str, exc: Exception) -> BatchResult:
    message = f"Expression failed: {exc}"
    return None, reject_all(batch, step=step, reason=EXPRESSION_FAILED, message=message), 0


def _filter(where: str, batch: pa.RecordBatch, step: str) -> BatchResult:
    try:
        mask = evaluate(_compiled(where, batch.schema), batch)
    except (pa.ArrowInvalid, ArithmeticError) as exc:  # overflow, division by zero, bad cast
        return _reject_all(batch, step, exc)
    kept = batch.filter(mask)
    return kept, [], batch.num_rows - kept.num_rows


class FilterRows(BatchStep):
    """Keep the rows where the expression `where` is true; others are dropped (and counted).

    Null counts as false. Order kept. A batch on which the expression fails at run time
    (overflow, division by zero) leaves through `error` (`expression_failed`).
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
    try:
        for name, text in columns.items():
            values = evaluate(_compiled(text, batch.schema), batch)
            names = batch.schema.names
            if name in names:
                batch = batch.set_column(names.index(name), name, values)
            else:
                batch = batch.append_column(name, values)
    except (pa.ArrowInvalid, ArithmeticError) as exc:
        return _reject_all(batch, step, exc)
    return batch, [], 0


class DeriveColumns(BatchStep):
    """Add or replace columns computed from expressions, in the order given.

    A later expression may use a column derived by an earlier one. Order of rows kept. A batch
    on which an expression fails at run time leaves through `error` (`expression_failed`).
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
