"""Deduplication across the whole dataset (a keyed shuffle), with a deterministic survivor."""

import functools
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam

from beam_etl.batches import FILE_COLUMN, LINE_COLUMN, dumps, json_safe
from beam_etl.deadletter import OUTPUT
from beam_etl.metrics import ROWS_DROPPED, step_counter
from beam_etl.transforms.rows import RowsToBatches, SchemaOf, ToKeyedRows

KEEP: Final = ("first", "last")


def _order(order_by: str | None, row: dict[str, Any]) -> tuple:
    """Sort key: the order column (nulls last), then origin file and line, then the row."""
    value = row.get(order_by) if order_by else None
    return (
        value is None,
        json_safe(value) if value is not None else "",
        row.get(FILE_COLUMN) or "",
        row.get(LINE_COLUMN) if row.get(LINE_COLUMN) is not None else -1,
        dumps({k: json_safe(v) for k, v in sorted(row.items())}),
    )


class _SurvivorFn(beam.DoFn):
    def __init__(self, step: str, keep: str, order_by: str | None) -> None:
        self._step = step
        self._keep = keep
        self._order_by = order_by

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, keyed: tuple[str, Any]) -> Iterator[dict]:
        _, rows = keyed
        ordered = sorted(rows, key=functools.partial(_order, self._order_by))
        if len(ordered) > 1:
            self._dropped.inc(len(ordered) - 1)
        yield ordered[0] if self._keep == "first" else ordered[-1]


class DropDuplicates(beam.PTransform):
    """Keep one row per key across the whole input (all batches, files and workers).

    Rows are equal when `columns` are equal (all visible columns when not given). The
    survivor is deterministic, the same on one worker, several or a cluster: the first (or
    last) by `order_by` (nulls last), ties broken by origin file and line, then by content.
    Removed duplicates are counted as dropped. Output order is not kept (a shuffle).
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(
        self,
        columns: list[str] | None = None,
        *,
        keep: str = "first",
        order_by: str | None = None,
        batch_rows: int = 10_000,
    ) -> None:
        """Args:
        columns: key columns; all visible columns when not given.
        keep: `first` or `last` by `order_by`, then by file and line.
        order_by: column deciding which duplicate survives.
        batch_rows: rows per output batch.
        """
        super().__init__()
        if keep not in KEEP:
            raise ValueError(f"`keep` must be one of {', '.join(KEEP)}, not `{keep}`")
        if columns is not None and (not columns or not all(isinstance(c, str) for c in columns)):
            raise ValueError("`columns` must list at least one column name")
        self.columns = list(columns) if columns else None
        self.keep = keep
        self.order_by = order_by
        self.batch_rows = batch_rows

    def infer_schema(self, schema):
        from beam_etl.transforms.cleaning import check_columns

        check_columns(schema, [*(self.columns or []), *([self.order_by] if self.order_by else [])])
        return schema

    def expand(self, batches):
        schema = batches | "Schema" >> SchemaOf()
        return (
            batches
            | "Key" >> ToKeyedRows(self.columns)
            | "Group" >> beam.GroupByKey()
            | "Survivor" >> beam.ParDo(_SurvivorFn(self.label, self.keep, self.order_by))
            | "Rebatch" >> RowsToBatches(schema, self.batch_rows)
        )
