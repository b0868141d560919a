"""Row counters per step, read back after the run for the report.

Counters live in namespace `beam_etl.steps` and are named `<step>:<what>`, so they can be found
whatever composite path Beam gives the transform that increments them.
"""

from typing import Final

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_etl.core.tally import flush, report

NAMESPACE: Final = "beam_etl.steps"
ROWS_OUT: Final = "rows_out"
ROWS_REJECTED: Final = "rows_rejected"
ROWS_DROPPED: Final = "rows_dropped"
ROWS_READ: Final = "rows_read"
ROWS_WRITTEN: Final = "rows_written"
BYTES_READ: Final = "bytes_read"  # of a source's input, where the reader knows (progress)
ALREADY_PUBLISHED: Final = "already_published"  # 1 when a sink found its run id published
BATCHES: Final = "batches"
ACTIVE_MSECS: Final = "active_msecs"


def output_counter(output: str) -> str:
    """Return the counter name of a node's named output: `rows_out` for `output`,
    `rows_rejected` for `error`, `rows_out.<name>` for any other (a split's routes)."""
    if output == "output":
        return ROWS_OUT
    if output == "error":
        return ROWS_REJECTED
    return f"{ROWS_OUT}.{output}"


def step_counter(step: str, what: str) -> "_StepCounter":
    """Return the counter `what` of `step` (its increments also feed the run's progress)."""
    return _StepCounter(step, what)


class _StepCounter:
    """A Beam counter whose increments also go to the progress of the run being watched
    (`beam_etl.core.tally.report`: a dict update, one datagram at most every 0.25 s)."""

    __slots__ = ("_counter", "_step", "_what")

    def __init__(self, step: str, what: str) -> None:
        self._counter = Metrics.counter(NAMESPACE, f"{step}:{what}")
        self._step = step
        self._what = what

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        report(self._step, self._what, n)


def rows_in_element(element) -> int:
    """Return how many rows an element stands for: a batch's rows, or 1 for a row."""
    if isinstance(element, (pa.RecordBatch, pa.Table)):
        return element.num_rows
    return 1


class _CountFn(beam.DoFn):
    def __init__(self, step: str, what: str) -> None:
        self._step = step
        self._what = what

    def setup(self) -> None:
        self._counter = step_counter(self._step, self._what)

    def process(self, element):
        self._counter.inc(rows_in_element(element))
        return ()

    def finish_bundle(self) -> None:
        flush()  # the run's last progress then has every count of the bundle


class CountRows(beam.PTransform):
    """Count the rows of a PCollection of batches or rows into `<step>:<what>`; outputs nothing."""

    def __init__(self, step: str, what: str) -> None:
        super().__init__()
        self._step = step
        self._what = what

    def expand(self, pcoll):
        return pcoll | beam.ParDo(_CountFn(self._step, self._what))
