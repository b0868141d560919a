"""Reading a source outside a pipeline: the batches a pipeline would get, for previews and
schema inference (`infer-schema`), without starting a runner.

A source's own DoFns (planner, then reader) are run in this process, in order, stopping as
soon as enough rows have been read; dead letters are left out.
"""

from collections.abc import Generator, Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.batches import concat_batches, visible
from beam_etl.core.deadletter import ERROR, OUTPUT
from beam_etl.core.outputs import WithErrors
from beam_etl.io._files import new_files


def read_locally(
    stages: Sequence[beam.DoFn], elements: Iterable[Any], max_rows: int | None, schema: pa.Schema
) -> pa.Table:
    """Return the first `max_rows` rows (None: all) that `stages` make of `elements`.

    Raises:
        ValueError: `max_rows` is below 1.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"The sample must hold at least 1 row (or all), not `{max_rows}`")

    def run(level: int, items: Iterable[Any]) -> Generator[pa.RecordBatch, None, None]:
        for item in items:
            for out in stages[level].process(item) or ():
                if isinstance(out, beam.pvalue.TaggedOutput):
                    continue
                if level + 1 < len(stages):
                    yield from run(level + 1, [out])
                else:
                    yield out

    for stage in stages:
        stage.setup()
    batches: list[pa.RecordBatch] = []
    rows = 0
    produced = run(0, elements)
    try:
        for batch in produced:
            batch = visible(batch)
            batches.append(batch)
            rows += batch.num_rows
            if max_rows is not None and rows >= max_rows:
                break
    finally:
        produced.close()
        for stage in stages:
            stage.teardown()
    table = concat_batches(batches) if batches else schema.empty_table()
    return table.slice(0, max_rows) if max_rows is not None else table


class FileSource:
    """A file source's reading: in a pipeline (`_read_files`) and outside one (`sample()`),
    by the same DoFns (`_local_stages()` lists them for `sample`)."""

    _files: list[Any]
    schema: pa.Schema
    label: str
    incremental: bool | str

    def _local_stages(self) -> list[beam.DoFn]:
        raise NotImplementedError

    def _read_files(
        self,
        pbegin: beam.pvalue.PBegin,
        planners: Sequence[tuple[str, beam.DoFn]],
        reader: tuple[str, beam.DoFn],
        *,
        errors: bool = False,
    ) -> Any:
        """Apply the reading in a pipeline: list the files (with `incremental`, only those no
        earlier run loaded), apply each labelled planner, spread the work over the workers,
        then read. Returns the batches, or `WithErrors` with `errors` (the reader then tags
        dead letters `ERROR`)."""
        work = pbegin | "ListFiles" >> beam.Create(
            new_files(self.label, self._files, self.incremental)
        )
        for label, planner in planners:
            work = work | label >> beam.ParDo(planner)
        label, read = reader
        # Arrow IPC, not pickle, if the batches cross a stage
        batches = beam.ParDo(read).with_output_types(pa.RecordBatch)
        if not errors:
            return work | "Distribute" >> beam.Reshuffle() | label >> batches
        parsed = (
            work
            | "Distribute" >> beam.Reshuffle()
            | label >> batches.with_outputs(ERROR, main=OUTPUT)
        )
        return WithErrors(parsed[OUTPUT], parsed[ERROR])

    def sample(self, rows: int | None = 10_000) -> pa.Table:
        """Return the first `rows` rows (None: all) as this source reads them, outside a
        pipeline (for previews and `infer-schema`). Rejected rows are left out."""
        return read_locally(self._local_stages(), self._files, rows, self.schema)
