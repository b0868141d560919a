"""A Beam coder for Arrow record batches: the Arrow IPC stream format instead of pickle.

Wherever batches cross a shuffle (the bucketed GroupByKey of `DropDuplicates`, `FillForward`)
they are encoded and decoded by the runner. Pickle copies every buffer of a batch whole, so a
zero-copy slice would carry its parent's buffers; IPC writes only the sliced range, encodes
about 1.5x faster and decodes without copying. Pickle-free and portable: any runner that runs
the Python SDK harness uses it (the coder travels pickled in the pipeline proto).

Registered for `pyarrow.RecordBatch` on import: a transform gets it by declaring its output
type, e.g. `beam.FlatMap(f).with_output_types(tuple[int, pa.RecordBatch])`.
"""

from typing import Any

import apache_beam as beam
import pyarrow as pa


class RecordBatchCoder(beam.coders.Coder):
    """Encode a `pyarrow.RecordBatch` as one Arrow IPC stream (schema and batch)."""

    def encode(self, value: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_batch(value)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.RecordBatch:
        return pa.ipc.open_stream(pa.py_buffer(encoded)).read_next_batch()

    def estimate_size(self, value: pa.RecordBatch, nested: bool = False) -> int:
        """The batch's buffer bytes: Beam samples element sizes for its metrics, and the
        default would IPC-encode a whole batch for each sample (~2 ms for 16 MiB)."""
        return value.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> Any:
        return pa.RecordBatch

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)
