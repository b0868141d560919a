"""The Arrow IPC coder that carries record batches across shuffles."""

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.core.coders import RecordBatchCoder


def _batch(n: int) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([f"name-{i}" if i % 3 else None for i in range(n)]),
            "tags": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int32())),
            "origin": pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), ["a.csv"]),
        }
    )


def test_round_trip_keeps_schema_values_and_nulls():
    coder = RecordBatchCoder()
    batch = _batch(100)
    decoded = coder.decode(coder.encode(batch))
    assert decoded.schema == batch.schema
    assert decoded.equals(batch)


def test_a_slice_is_encoded_without_its_parents_buffers():
    coder = RecordBatchCoder()
    batch = _batch(100_000)
    part = batch.slice(50_000, 10)
    assert coder.decode(coder.encode(part)).to_pylist() == part.to_pylist()
    assert len(coder.encode(part)) < len(coder.encode(batch)) / 100


def test_registered_for_record_batches():
    assert isinstance(beam.coders.registry.get_coder(pa.RecordBatch), RecordBatchCoder)


def test_batches_cross_a_group_by_key_with_the_coder():
    with TestPipeline() as p:
        grouped = (
            p
            | beam.Create([(i % 2, _batch(5).slice(i, 2)) for i in range(4)]).with_output_types(
                tuple[int, pa.RecordBatch]
            )
            | beam.GroupByKey()
            | beam.MapTuple(
                lambda key, parts: (key, sorted(r["id"] for b in parts for r in b.to_pylist()))
            )
        )
        assert_that(grouped, equal_to([(0, [0, 1, 2, 3]), (1, [1, 2, 3, 4])]), label="grouped ids")


def test_size_estimates_do_not_encode_and_follow_the_slice():
    coder = RecordBatchCoder()
    batch = _batch(100_000)
    whole, part = coder.estimate_size(batch), coder.estimate_size(batch.slice(0, 1_000))
    assert whole >= len(coder.encode(batch)) / 2  # the same order as what crosses a shuffle
    assert part < whole / 50
