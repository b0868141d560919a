"""`ValidateRecords`: row-level checks on batches, a rejected row carrying every rule it failed."""

import functools
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_etl.core.batches import json_safe, origins
from beam_etl.core.deadletter import ERROR, OUTPUT, rejects_from_mask
from beam_etl.core.metrics import step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.quality.checks import CheckResult, RowCheck, parse_check
from beam_etl.transforms.cleaning import check_columns
from beam_etl.transforms.rows import load_function

CHECK_FAILED: Final = "check_failed"
RESULTS: Final = "results"
# Partial per check: (rows evaluated, rows failed, examples [(origin, value)], error or "").
Partial = tuple[int, int, list[tuple[str, Any]], str]


def example_values(batch: pa.RecordBatch, failed: np.ndarray, column: str | None, limit: int):
    """Return up to `limit` (origin, value) pairs of failing rows of `batch`, in row order."""
    rows = np.flatnonzero(failed)[:limit]
    if not len(rows):
        return []
    taken = batch.take(pa.array(rows, pa.int64()))
    files, lines = origins(taken)
    values = (
        taken.column(column).to_pylist()
        if column in taken.schema.names
        else [None] * taken.num_rows
    )
    return [
        (f"{file or '?'}:{line if line is not None else '?'}", json_safe(value))
        for file, line, value in zip(files, lines, values)
    ]


def evaluate_checks(
    checks: list[RowCheck], batch: pa.RecordBatch, limit: int
) -> tuple[dict[str, np.ndarray], dict[str, Partial]]:
    """Return the failing-row mask and partial result of every check over `batch`.

    A custom function that raises fails every row of the batch for its check (the error is
    kept in the partial and the messages); other errors are configuration errors and raise.
    """
    masks, partials = {}, {}
    for check in checks:
        error = ""
        try:
            failed = check.failed(batch)
        except Exception as exc:
            if check.kind != "custom":
                raise
            error = f"{type(exc).__name__}: {exc}"
            failed = np.ones(batch.num_rows, dtype=bool)
        masks[check.name] = failed
        examples = example_values(batch, failed, check.column, limit)
        partials[check.name] = (batch.num_rows, int(failed.sum()), examples, error)
    return masks, partials


def row_messages(
    checks: list[RowCheck], batch: pa.RecordBatch, masks: dict[str, np.ndarray], rows: np.ndarray
) -> list[str]:
    """Return, for each row index in `rows`, every rule it failed (severity `warn` ones too)."""
    values = {
        c.column: batch.column(c.column).take(pa.array(rows, pa.int64())).to_pylist()
        for c in checks
        if c.column in batch.schema.names
    }
    messages = []
    for position, row in enumerate(rows):
        failed = [c for c in checks if masks[c.name][row]]
        messages.append(
            "; ".join(
                c.explain(values[c.column][position] if c.column in values else None)
                for c in failed
            )
        )
    return messages


class _ValidateFn(beam.DoFn):
    def __init__(self, step: str, checks: list[RowCheck], examples: int) -> None:
        self._step = step
        self._checks = checks
        self._examples = examples

    def setup(self) -> None:
        self._counters = {
            c.name: (
                step_counter(self._step, f"{c.name}.rows_evaluated"),
                step_counter(self._step, f"{c.name}.rows_failed"),
            )
            for c in self._checks
        }

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        masks, partials = evaluate_checks(self._checks, batch, self._examples)
        for name, partial in partials.items():
            evaluated, failed = self._counters[name]
            evaluated.inc(partial[0])
            failed.inc(partial[1])
        yield beam.pvalue.TaggedOutput(RESULTS, partials)
        rejecting = [masks[c.name] for c in self._checks if c.severity == "reject"]
        rejected = np.logical_or.reduce(rejecting) if rejecting else np.zeros(batch.num_rows, bool)
        if not rejected.any():
            yield batch
            return
        messages = row_messages(self._checks, batch, masks, np.flatnonzero(rejected))
        letters = rejects_from_mask(
            batch, pa.array(rejected), step=self._step, reason=CHECK_FAILED, messages=messages
        )
        for letter in letters:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        if not rejected.all():
            yield batch.filter(pa.array(~rejected))


class _MergePartialsFn(beam.CombineFn):
    """Merge per-batch partials into one per check, keeping the first examples by origin."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    def create_accumulator(self) -> dict[str, Partial]:
        return {}

    def add_input(self, accumulator, partials):
        for name, (evaluated, failed, examples, error) in partials.items():
            total = accumulator.get(name, (0, 0, [], ""))
            merged = sorted([*total[2], *examples], key=lambda e: (e[0], repr(e[1])))
            accumulator[name] = (
                total[0] + evaluated,
                total[1] + failed,
                merged[: self._limit],
                min(filter(None, [total[3], error]), default=""),
            )
        return accumulator

    def merge_accumulators(self, accumulators):
        merged: dict[str, Partial] = {}
        for accumulator in accumulators:
            merged = self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _results(step: str, checks: list[RowCheck], partials: dict[str, Partial]):
    for check in checks:
        evaluated, failed, examples, error = partials.get(check.name, (0, 0, [], ""))
        outcome = "passed"
        if failed:
            outcome = "rejected" if check.severity == "reject" else "warned"
        yield CheckResult(
            step,
            check.name,
            check.kind,
            check.column,
            check.severity,
            evaluated,
            failed,
            outcome,
            tuple({"origin": origin, "value": value} for origin, value in examples),
            error or (check.description or ""),
        )


class ValidateRecords(beam.PTransform):
    """Apply row-level checks to every batch; rows failing a `reject` check become dead letters.

    Vectorized: each check is evaluated on whole batches with `pyarrow.compute`. A rejected row
    leaves through `error` once (reason `check_failed`), its message listing EVERY rule it
    failed (`warn` ones too). Nulls fail only `not_null`. Rows failing only `warn` checks go
    on. Per check, counters `<step>:<check>.rows_evaluated` / `.rows_failed` are kept, and
    after `expand` the attribute `results` is a PCollection of one `CheckResult` per check
    (counts, outcome, a few failing values) for the quality report. Order of rows kept.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(self, checks: list[dict[str, Any]], *, examples: int = 5) -> None:
        """Args:
        checks: list of checks, e.g. `{check: range, column: x, min: 0, max: 10,
            severity: warn}`; kinds not_null, range, regex, allowed_values, length, custom.
        examples: failing values kept per check for the quality report.
        """
        super().__init__()
        if not isinstance(checks, list) or not checks:
            raise ValueError("`checks` must list at least one check")
        self.checks = [parse_check(c, load_function) for c in checks]
        names = [c.name for c in self.checks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"Check name(s) {', '.join(twice)} used twice; give each a `name`")
        self.examples = examples
        self.results = None

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Return `schema` unchanged after checking that every checked column exists."""

        check_columns(schema, [c.column for c in self.checks if c.column])
        return schema

    def expand(self, batches):
        outputs = batches | "Check" >> beam.ParDo(
            _ValidateFn(self.label, self.checks, self.examples)
        ).with_outputs(ERROR, RESULTS, main=OUTPUT)
        self.results = (
            outputs[RESULTS]
            | "Merge" >> beam.CombineGlobally(_MergePartialsFn(self.examples))
            | "Results" >> beam.FlatMap(functools.partial(_results, self.label, self.checks))
        )
        return WithErrors(outputs[OUTPUT], outputs[ERROR])
