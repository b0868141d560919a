"""Dataset-level checks: uniqueness (a keyed shuffle), row counts, completeness, rejected share.

Each check computes one `CheckResult` per rule over the WHOLE input (all batches, files and
workers) and sets it as the transform's `results` attribute. Severity `warn` records the
outcome; severity `fail` makes the run fail with `QualityCheckError` once the result is known.

Publishing is gated: a check's main output (the rows, passed through) is released only after
its results are computed and enforced (`beam.transforms.util.WaitOn`), so a sink reading a
check's output publishes nothing when a `fail` check fails: its target stays as it was.
`CheckRejectedShare` has no row output; to gate sinks on it, apply
`WaitOn(share.results)` to the sinks' input (see the README section).
"""

import functools
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.util import WaitOn

from beam_etl.core.batches import column_list, dumps, json_safe
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter, rejects_from_mask
from beam_etl.core.errors import BeamEtlError
from beam_etl.core.metrics import ROWS_WRITTEN, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.core.publish import pending_folder
from beam_etl.keyed.buckets import decoded
from beam_etl.keyed.spill import NOTE, PART, ROW, SpillByKey, spill_folder, use_spill
from beam_etl.quality.checks import CheckResult
from beam_etl.transforms.cleaning import check_columns

DUPLICATE_KEY: Final = "duplicate_key"
SEVERITIES: Final = ("warn", "fail")


class QualityCheckError(BeamEtlError):
    """A dataset-level check with severity `fail` failed: the run fails, nothing is published."""


def _severity(severity: str) -> str:
    if severity not in SEVERITIES:
        raise ValueError(f"`severity` must be warn or fail, not `{severity}`")
    return severity


def _outcome(failed: bool, severity: str) -> str:
    return "passed" if not failed else ("failed" if severity == "fail" else "warned")


def enforce(result: CheckResult) -> CheckResult:
    """Return `result`, or raise `QualityCheckError` when its outcome is `failed`."""
    if result.outcome == "failed":
        examples = ", ".join(f"`{e['value']}` ({e['origin']})" for e in result.examples)
        raise QualityCheckError(
            f"Quality check `{result.check}` of step `{result.step}` failed: {result.message}"
            + (f"; e.g. {examples}" if examples else "")
        )
    return result


def _enforce_all(results: list[CheckResult]) -> None:
    for result in results:
        enforce(result)


def _deferred() -> bool:
    """Whether the launcher decides the verdict (see `io/_publish.py`): then a failed check
    does not stop the pipeline; the sinks veto their publish and the run keeps its counts."""
    return pending_folder() is not None


class _Enforce(beam.PTransform):
    def expand(self, results):
        if _deferred():
            return results
        return results | "Enforce" >> beam.Map(enforce)


# ---------------------------------------------------------------- uniqueness
def _row_keys(columns: list[str], batch: pa.RecordBatch) -> list[str | None]:
    """Return each row's key as JSON text, or None when a key column is null (not compared)."""
    values = [batch.column(c).to_pylist() for c in columns]
    return [
        None if any(v is None for v in row) else dumps([json_safe(v) for v in row])
        for row in zip(*values)
    ]


def _keys_of(columns: list[str], batch: pa.RecordBatch) -> Iterator[tuple[str, int]]:
    for key in _row_keys(columns, batch):
        if key is not None:
            yield key, 1


class _MarkDuplicatesFn(beam.DoFn):
    def __init__(self, step: str, columns: list[str], reject: bool) -> None:
        self._step = step
        self._columns = columns
        self._reject = reject

    def process(self, batch: pa.RecordBatch, duplicates: dict[str, int]) -> Iterator[Any]:
        keys = _row_keys(self._columns, batch)
        flags = [key is not None and key in duplicates for key in keys]
        yield beam.pvalue.TaggedOutput("rows", batch.num_rows)
        if not self._reject or not any(flags):
            yield batch
            return
        mask = pa.array(flags)
        messages = [
            f"Key ({', '.join(self._columns)}) = {key} occurs {duplicates[key]} times"
            for key, flag in zip(keys, flags)
            if flag and key is not None
        ]
        for letter in rejects_from_mask(
            batch, mask, step=self._step, reason=DUPLICATE_KEY, messages=messages
        ):
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        if not all(flags):
            yield batch.filter(pc.invert(mask))


def _unique_result(rows, step, columns, severity, limit, duplicates) -> CheckResult:
    failed = sum(count for _, count in duplicates)
    examples = tuple(
        {"value": key, "origin": f"{count} rows"} for key, count in sorted(duplicates)[:limit]
    )
    return CheckResult(
        step,
        f"unique_{'_'.join(columns)}",
        "unique",
        ", ".join(columns),
        severity,
        rows,
        failed,
        _outcome(bool(duplicates), severity),
        examples,
        f"{len(duplicates)} key(s) of ({', '.join(columns)}) occur more than once, in {failed} rows"
        if duplicates
        else "every key is unique",
    )


class CheckUnique(beam.PTransform):
    """Find every row whose key (`columns`) occurs more than once across the whole dataset.

    Only the keys cross the shuffle. On this machine (or with `spill_dir`, a folder every worker
    reaches) rows wait in Arrow spill files meanwhile and keep their batches and order; on
    another runner the keys are counted row by row (slower) and the repeated ones go to every
    worker as a side input. Every row of a
    duplicated key is affected (none of them is more right than another): with `reject`
    they leave through `error` (reason `duplicate_key`), otherwise they pass and are reported.
    Rows with a null in the key are not compared (completeness is `not_null`'s job).
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        columns: list[str],
        *,
        reject: bool = True,
        severity: str = "warn",
        examples: int = 5,
        spill_dir: str | None = None,
        spill: bool | None = None,
        buckets: int = 64,
    ) -> None:
        """Args:
        columns: the key column(s) that must be unique together.
        reject: send every row of a duplicated key to `error` (true) or only report them.
        severity: `warn` records the result; `fail` fails the run when a key repeats.
        examples: duplicated keys kept for the quality report.
        spill_dir: folder for spill files (see above); a temporary one on this machine.
        spill: force (True) or forbid (False) spill files; by default they are used when
            `spill_dir` is given or the pipeline runs on this machine.
        buckets: hash buckets the keys are spread over (the shuffle's parallelism).
        """
        super().__init__()
        self.columns = column_list(columns)
        self.reject = reject
        self.severity = _severity(severity)
        self.examples = examples
        self.spill_dir = spill_dir
        self.spill = spill
        self.buckets = buckets
        self.results = None

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.columns)
        return schema

    def expand(self, batches):
        if use_spill(batches, self.spill_dir, self.spill):
            return self._by_spill(batches)
        output, error, rows, duplicates = self._by_key_counts(batches)
        self.results = self._results(rows, duplicates)
        released = output | "Gate" >> WaitOn(self.results)
        return WithErrors(released, error)

    def _results(self, rows, duplicates, *, enforce: bool = True):
        results = (
            rows
            | "Rows" >> beam.CombineGlobally(sum)
            | "Result"
            >> beam.Map(
                _unique_result,
                self.label,
                self.columns,
                self.severity,
                self.examples,
                beam.pvalue.AsList(duplicates),
            )
        )
        return results | "Enforce" >> _Enforce() if enforce else results

    def _by_spill(self, batches):
        """Rows wait in spill files; they are read back once the result is known (its gate)."""

        # `staging`: the CLI removes it after a failed run (a successful one removes it).
        self.staging = spill_folder(self.spill_dir, self.label)
        spilled = batches | "BySpill" >> SpillByKey(
            self.label,
            self.columns,
            carry=[],
            buckets=self.buckets,
            folder=self.staging,
            select=functools.partial(repeated_keys, self.columns),
            action="reject" if self.reject else "keep",
            reason=DUPLICATE_KEY,
            gate=functools.partial(self._results, enforce=False),
            check=None if _deferred() else _enforce_all,
        )
        self.results = spilled.gate
        return WithErrors(spilled.output, spilled.error)

    def _by_key_counts(self, batches):
        duplicates = (
            batches
            | "Keys" >> beam.FlatMap(functools.partial(_keys_of, self.columns))
            | "Count" >> beam.CombinePerKey(sum)
            | "Repeated" >> beam.Filter(lambda keyed: keyed[1] > 1)
        )
        marked = batches | "Mark" >> beam.ParDo(
            _MarkDuplicatesFn(self.label, self.columns, self.reject),
            beam.pvalue.AsDict(duplicates),
        ).with_outputs(ERROR, "rows", main=OUTPUT)
        return marked[OUTPUT], marked[ERROR], marked["rows"], duplicates


def repeated_keys(columns: list[str], keys: pa.Table) -> tuple[pa.Table, list[tuple[str, int]]]:
    """Return the spilled rows of `keys` whose key occurs more than once (null keys are not
    compared), each with its dead-letter message, and `(key, count)` per repeated key."""

    index = "__beam_etl_index"
    present = functools.reduce(pc.and_, [pc.is_valid(keys.column(c)) for c in columns])
    compared = keys.filter(present)
    counted = pa.table({c: decoded(compared.column(c)) for c in columns}).append_column(
        index, pa.array(np.arange(compared.num_rows))
    )
    counts = counted.group_by(columns, use_threads=False).aggregate([(index, "count")])
    repeated = counts.filter(pc.greater(counts.column(f"{index}_count"), 1))
    if not repeated.num_rows:
        return pa.table({PART: pa.array([], pa.string()), ROW: pa.array([], pa.int64())}), []
    hits = counted.join(repeated, keys=columns, join_type="inner", use_threads=False)
    rows = compared.take(hits.column(index))
    texts = _key_texts(hits, columns)
    notes = [
        f"Key ({', '.join(columns)}) = {text} occurs {count} times"
        for text, count in zip(texts, hits.column(f"{index}_count").to_pylist())
    ]
    summary = list(
        zip(_key_texts(repeated, columns), repeated.column(f"{index}_count").to_pylist())
    )
    return pa.table({PART: rows.column(PART), ROW: rows.column(ROW), NOTE: notes}), summary


def _key_texts(table: pa.Table, columns: list[str]) -> list[str]:
    values = [table.column(c).to_pylist() for c in columns]
    return [dumps([json_safe(v) for v in row]) for row in zip(*values)]


# ---------------------------------------------------------------- counts
class _CountsFn(beam.CombineFn):
    """Accumulate (rows, non-null count per column) over batches."""

    def __init__(self, columns: list[str]) -> None:
        self._columns = columns

    def create_accumulator(self) -> tuple[int, dict[str, int]]:
        return 0, dict.fromkeys(self._columns, 0)

    def add_input(self, accumulator, batch: pa.RecordBatch):
        rows, present = accumulator
        for column in self._columns:
            array = batch.column(column)
            nulls = pc.sum(pc.is_null(array, nan_is_null=pa.types.is_floating(array.type)))
            present[column] += batch.num_rows - (nulls.as_py() or 0)
        return rows + batch.num_rows, present

    def merge_accumulators(self, accumulators):
        rows, present = self.create_accumulator()
        for more, seen in accumulators:
            rows += more
            for column, count in seen.items():
                present[column] += count
        return rows, present

    def extract_output(self, accumulator):
        return accumulator


def _row_count_results(step, minimum, maximum, severity, counts) -> Iterator[CheckResult]:
    rows, _ = counts
    bad = (minimum is not None and rows < minimum) or (maximum is not None and rows > maximum)
    bounds = (
        f"[{minimum if minimum is not None else 0}, {maximum if maximum is not None else 'inf'}]"
    )
    yield CheckResult(
        step,
        "row_count",
        "row_count",
        None,
        severity,
        rows,
        rows if bad else 0,
        _outcome(bad, severity),
        (),
        f"{rows} rows, {'outside' if bad else 'within'} {bounds}",
    )


def _completeness_results(step, columns, mostly, severity, counts) -> Iterator[CheckResult]:
    rows, present = counts
    for column in columns:
        ratio = present[column] / rows if rows else 1.0
        bad = ratio < mostly
        yield CheckResult(
            step,
            f"completeness_{column}",
            "completeness",
            column,
            severity,
            rows,
            rows - present[column],
            _outcome(bad, severity),
            (),
            f"{ratio:.2%} of `{column}` present; at least {mostly:.2%} required",
        )


class _CountingCheck(beam.PTransform):
    """Shared shape: count the rows (and non-nulls), judge, enforce, release the rows."""

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)
    columns: list[str] = []

    def judge_function(self):
        """Return a picklable `counts -> CheckResult`s function (subclasses implement it)."""
        raise NotImplementedError

    def expand(self, batches):
        self.results = (
            batches
            | "Count" >> beam.CombineGlobally(_CountsFn(self.columns))
            | "Judge" >> beam.FlatMap(self.judge_function())
            | "Enforce" >> _Enforce()
        )
        return batches | "Gate" >> WaitOn(self.results)


class CheckRowCount(_CountingCheck):
    """Require the whole dataset's row count to lie within [`min_rows`, `max_rows`]; rows pass."""

    def __init__(
        self, *, min_rows: int | None = None, max_rows: int | None = None, severity: str = "fail"
    ) -> None:
        """Args:
        min_rows: fewest rows allowed (inclusive).
        max_rows: most rows allowed (inclusive).
        severity: `fail` fails the run outside the bounds; `warn` records it.
        """
        super().__init__()
        if min_rows is None and max_rows is None:
            raise ValueError("`min_rows` or `max_rows` must be given")
        if min_rows is not None and max_rows is not None and min_rows > max_rows:
            raise ValueError(f"`min_rows` ({min_rows}) is above `max_rows` ({max_rows})")
        self.min_rows, self.max_rows = min_rows, max_rows
        self.severity = _severity(severity)
        self.columns = []
        self.results = None

    def judge_function(self):
        return functools.partial(
            _row_count_results, self.label, self.min_rows, self.max_rows, self.severity
        )


class CheckCompleteness(_CountingCheck):
    """Require at least `mostly` of the rows to hold a value (not null, not NaN) per column."""

    def __init__(self, columns: list[str], *, mostly: float = 1.0, severity: str = "fail") -> None:
        """Args:
        columns: the columns to measure.
        mostly: the least share of non-null values, e.g. 0.99.
        severity: `fail` fails the run below the share; `warn` records it.
        """
        super().__init__()
        self.columns = column_list(columns)
        if not isinstance(mostly, (int, float)) or not 0 <= mostly <= 1:
            raise ValueError(f"`mostly` must be between 0 and 1, not `{mostly}`")
        self.mostly = float(mostly)
        self.severity = _severity(severity)
        self.results = None

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        check_columns(schema, self.columns)
        return schema

    def judge_function(self):
        return functools.partial(
            _completeness_results, self.label, self.columns, self.mostly, self.severity
        )


# ---------------------------------------------------------------- rejected share
def _tally(step: str, element: Any) -> tuple[int, int]:
    if isinstance(element, DeadLetter):
        step_counter(step, ROWS_WRITTEN).inc(1)
        return 0, 1
    step_counter(step, ROWS_WRITTEN).inc(element.num_rows)
    return element.num_rows, 0


def _share_result(step, max_share, severity, totals) -> CheckResult:
    kept, rejected = totals
    total = kept + rejected
    share = rejected / total if total else 0.0
    bad = share > max_share
    return CheckResult(
        step,
        "rejected_share",
        "rejected_share",
        None,
        severity,
        total,
        rejected,
        _outcome(bad, severity),
        (),
        f"{share:.2%} of rows rejected; at most {max_share:.2%} allowed",
    )


def _sum_pairs(pairs) -> tuple[int, int]:
    kept = rejected = 0
    for a, b in pairs:
        kept, rejected = kept + a, rejected + b
    return kept, rejected


class CheckRejectedShare(beam.PTransform):
    """Bound the share of rejected rows: dead letters / (dead letters + rows of batches).

    Reads any number of inputs, outputs of batches and dead-letter outputs alike (in a spec:
    `inputs: [final_step, read.error, cast.error, ...]`). A terminal node: its output is the
    enforced `CheckResult`; every row read is counted as written, so the run's counts add up.
    """

    MULTI_INPUT: ClassVar[bool] = True

    def __init__(self, max_share: float, *, severity: str = "fail") -> None:
        """Args:
        max_share: the largest share of rejected rows allowed, e.g. 0.01.
        severity: `fail` fails the run above the share; `warn` records it.
        """
        super().__init__()
        if not isinstance(max_share, (int, float)) or not 0 <= max_share <= 1:
            raise ValueError(f"`max_share` must be between 0 and 1, not `{max_share}`")
        self.max_share = float(max_share)
        self.severity = _severity(severity)
        self.results = None

    def expand(self, inputs):
        pcolls = list(inputs.values()) if isinstance(inputs, dict) else inputs
        if not isinstance(pcolls, (list, tuple)):
            pcolls = [pcolls]
        self.results = (
            tuple(pcolls)
            | "Merge" >> beam.Flatten()
            | "Tally" >> beam.Map(functools.partial(_tally, self.label))
            | "Sum" >> beam.CombineGlobally(_sum_pairs)
            | "Judge"
            >> beam.Map(functools.partial(_share_result, self.label, self.max_share, self.severity))
            | "Enforce" >> _Enforce()
        )
        return self.results
