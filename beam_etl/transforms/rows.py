"""From batches to rows and back, for keyed shuffles and user row functions (the slow path).

Rows are plain dicts (hidden origin columns included, so a row keeps its file and line).
Going back to batches uses the schema of the input batches, passed as a side input, so that
types survive the round trip (an all-null column stays typed, timestamps keep their zone).
"""

import functools
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_etl.core.batches import dumps, json_safe, key_of
from beam_etl.core.deadletter import FUNCTION_FAILED, reject_all, rejects_from_mask
from beam_etl.core.retries import RETRIES_EXHAUSTED, RetriesExhaustedError, with_retry
from beam_etl.transforms._base import BatchResult, BatchStep


def load_function(reference: str) -> Callable:
    """Return the callable named by `module:function` (`pkg.mod:obj.attr` works too).

    Raises:
        ValueError: the reference is malformed, or the module or attribute cannot be found.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"Function reference `{reference}` must look like `module:function`")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Cannot import module `{module_name}`: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"Module `{module_name}` has no attribute `{attribute}`")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"`{reference}` is not callable")
    return target


class _UnifySchemasFn(beam.CombineFn):
    def create_accumulator(self) -> pa.Schema | None:
        return None

    def add_input(self, accumulator: pa.Schema | None, schema: pa.Schema) -> pa.Schema:
        if accumulator is None or accumulator.equals(schema):
            return schema
        return pa.unify_schemas([accumulator, schema], promote_options="permissive")

    def merge_accumulators(self, accumulators):
        merged = None
        for schema in accumulators:
            if schema is not None:
                merged = self.add_input(merged, schema)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class SchemaOf(beam.PTransform):
    """The unified schema of a PCollection of batches, as a one-element PCollection."""

    def expand(self, batches):
        return (
            batches
            | "Schemas" >> beam.Map(lambda batch: batch.schema)
            | "Unify" >> beam.CombineGlobally(_UnifySchemasFn())
        )


def _keyed_rows(columns: Sequence[str] | None, batch: pa.RecordBatch) -> Iterator[tuple[str, dict]]:
    for row in batch.to_pylist():
        names = columns or [n for n in row if not n.startswith("__beam_etl_")]
        yield dumps([json_safe(v) for v in key_of(row, names)]), row


class ToKeyedRows(beam.PTransform):
    """Turn batches into `(key, row)` pairs keyed by `columns` (all visible columns if None).

    The key is a JSON string of the key values, deterministic across workers and runners.
    """

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        super().__init__()
        self._columns = list(columns) if columns else None

    def expand(self, batches):
        return batches | "ToRows" >> beam.FlatMap(functools.partial(_keyed_rows, self._columns))


class _RowsToBatchFn(beam.DoFn):
    def process(self, rows: list[dict], schema: pa.Schema | None):
        names = schema.names if schema is not None else None
        if names is not None and rows and set(rows[0]) - set(names):
            schema = None  # rows gained columns (a row function): infer their types
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


class RowsToBatches(beam.PTransform):
    """Gather rows (dicts) into batches of up to `max_rows`, typed by the `schema` side input."""

    def __init__(self, schema, max_rows: int = 10_000) -> None:
        super().__init__()
        self._schema = schema
        self._max_rows = max_rows

    def expand(self, rows):
        return (
            rows
            | "Gather"
            >> beam.BatchElements(min_batch_size=self._max_rows, max_batch_size=self._max_rows)
            | "ToBatch" >> beam.ParDo(_RowsToBatchFn(), beam.pvalue.AsSingleton(self._schema))
        )


def _apply_batch_function(function: Callable, batch: pa.RecordBatch, step: str) -> BatchResult:
    try:
        result = function(batch)
        if isinstance(result, pa.Table):
            result = result.combine_chunks().to_batches()[0] if result.num_rows else None
        if result is not None and not isinstance(result, pa.RecordBatch):
            raise TypeError(f"returned {type(result).__name__}, not a RecordBatch")
        removed = batch.num_rows - (result.num_rows if result is not None else 0)
        return result, [], max(removed, 0)
    except RetriesExhaustedError as exc:  # a retry policy gave up: its rows, not the run
        return None, reject_all(batch, step=step, reason=RETRIES_EXHAUSTED, message=str(exc)), 0
    except Exception as exc:  # a user function's failure rejects its batch, not the run
        message = f"{type(exc).__name__}: {exc}"
        return None, reject_all(batch, step=step, reason=FUNCTION_FAILED, message=message), 0


class _UserFunctionStep(BatchStep):
    """A step that applies a user function, named by reference or given, with a retry policy."""

    def __init__(self, function: str | Callable, retry: dict | None = None) -> None:
        """Args:
        function: `module:function`, or a callable when used from Python.
        retry: `{attempts: 3, backoff: 0.5, on: [ConnectionError, TimeoutError]}` to call
            the function again on those exceptions (see `beam_etl.checkpoints.recoverable`).
        """
        super().__init__()
        function = load_function(function) if isinstance(function, str) else function
        self.function = with_retry(function, retry)


class MapBatches(_UserFunctionStep):
    """Apply a user function `RecordBatch -> RecordBatch | Table | None` to every batch.

    The fast path for custom logic. If the function raises, that batch's rows leave through
    `error` (`function_failed`, with the exception message) and the run goes on. Rows the
    function removes are counted as dropped. A function that returns more rows than it got
    makes the step's counts not add up, which fails the run: split such logic into a
    transform of its own. With `retry`, the named exceptions are retried with exponential
    backoff; when attempts run out the batch's rows leave as `retries_exhausted`.
    """

    def batch_function(self):
        return functools.partial(_apply_batch_function, self.function)


def _apply_row_function(function: Callable, batch: pa.RecordBatch, step: str) -> BatchResult:
    hidden = {n: batch.column(n) for n in batch.schema.names if n.startswith("__beam_etl_")}
    out_rows: list[tuple[int, Any]] = []
    failed: dict[str, list[tuple[int, str]]] = {FUNCTION_FAILED: [], RETRIES_EXHAUSTED: []}
    for index, row in enumerate(batch.to_pylist()):
        try:
            result = function({k: v for k, v in row.items() if k not in hidden})
        except RetriesExhaustedError as exc:  # a retry policy gave up on this row
            failed[RETRIES_EXHAUSTED].append((index, str(exc)))
            continue
        except Exception as exc:  # one bad row must not fail the run
            failed[FUNCTION_FAILED].append((index, f"{type(exc).__name__}: {exc}"))
            continue
        if result is not None:
            out_rows.append((index, result))
    letters = []
    for reason, found in failed.items():
        if found:
            flags = np.zeros(batch.num_rows, dtype=bool)
            flags[[index for index, _ in found]] = True
            messages = [message for _, message in found]
            letters += rejects_from_mask(
                batch, pa.array(flags), step=step, reason=reason, messages=messages
            )
    failed_rows = sum(len(found) for found in failed.values())
    if not out_rows:
        return None, letters, batch.num_rows - failed_rows
    kept = pa.RecordBatch.from_pylist([row for _, row in out_rows])
    taken = pa.array([i for i, _ in out_rows], pa.int64())
    for name, column in hidden.items():
        kept = kept.append_column(name, column.take(taken))
    return kept, letters, batch.num_rows - failed_rows - len(out_rows)


class MapRows(_UserFunctionStep):
    """Apply a user function `dict -> dict | None` to every row: the SLOW path.

    Rows cost about 20x more than batches; prefer `MapBatches`. Returning None drops the row
    (counted as dropped); raising sends that row to `error` (`function_failed`). Output types
    are inferred from the returned values per batch. With `retry`, each row's call is
    retried on the named exceptions; a row whose attempts run out leaves as
    `retries_exhausted`.
    """

    def batch_function(self):
        return functools.partial(_apply_row_function, self.function)
