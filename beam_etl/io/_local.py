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


class LocalSample:
    """Gives a file source `sample()`: its own DoFns (`_local_stages()`) run over its files."""

    _files: list[Any]
    schema: pa.Schema

    def _local_stages(self) -> list[beam.DoFn]:
        raise NotImplementedError

    def sample(self, rows: int | None = 10_000) -> pa.Table:
        """Return the first `rows` rows (None: all) as this source reads them, outside a
        pipeline (for previews and `infer-schema`). Rejected rows are left out."""
        return read_locally(self._local_stages(), self._files, rows, self.schema)
