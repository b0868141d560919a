"""Shared plumbing for processors: applying a batch function with dead letters and counters."""

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.metrics import ROWS_DROPPED, step_counter
from beam_etl.core.outputs import WithErrors

# A batch function returns (kept batch or None, dead letters, rows dropped on purpose).
BatchResult = tuple[pa.RecordBatch | None, list[DeadLetter], int]


class _ApplyFn(beam.DoFn):
    def __init__(self, step: str, function: Callable[[pa.RecordBatch, str], BatchResult]) -> None:
        self._step = step
        self._function = function

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        kept, letters, dropped = self._function(batch, self._step)
        for letter in letters:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        if dropped:
            self._dropped.inc(dropped)
        if kept is not None and kept.num_rows:
            yield kept


class BatchStep(beam.PTransform):
    """A processor defined by one function over a batch, with `output` and `error` outputs.

    Subclasses implement `batch_function()`, returning a picklable callable
    `(batch, step) -> (kept, dead_letters, dropped)` (a module-level function bound with
    `functools.partial`), so that workers receive the configuration and not the transform.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)
    #: A subclass that rejects nothing declares `OUTPUTS = (OUTPUT,)`; its `error` output,
    #: always empty, stays in the Python shape `WithErrors(output, error)` (see the contract).
    HIDDEN_OUTPUTS: ClassVar[tuple[str, ...]] = (ERROR,)

    def batch_function(self) -> Callable[[pa.RecordBatch, str], BatchResult]:
        raise NotImplementedError

    def expand(self, batches):
        results = batches | "Apply" >> beam.ParDo(
            _ApplyFn(self.label, self.batch_function())
        ).with_outputs(ERROR, main=OUTPUT)
        return WithErrors(results[OUTPUT], results[ERROR])
