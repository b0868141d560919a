"""Deduplication across batches and the row adapters (the slow path)."""

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.batches import with_origin
from beam_etl.transforms.dedupe import DropDuplicates
from beam_etl.transforms.rows import MapBatches, MapRows, load_function

FIRST = with_origin(
    pa.record_batch({"k": [1, 2, 1], "v": ["a", "b", "c"], "t": [3, 1, 1]}), "a.csv", [2, 3, 4]
)
SECOND = with_origin(
    pa.record_batch({"k": [2, 3, 1], "v": ["b", "d", "e"], "t": [1, 5, 9]}), "b.csv", [2, 3, 4]
)


def test_exact_duplicates_across_batches_and_files(pipeline):
    out = pipeline | beam.Create([FIRST, SECOND]) | DropDuplicates()
    assert_that(
        out | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"k": 1, "v": "a", "t": 3},
                {"k": 2, "v": "b", "t": 1},
                {"k": 1, "v": "c", "t": 1},
                {"k": 3, "v": "d", "t": 5},
                {"k": 1, "v": "e", "t": 9},
            ]
        ),
    )
    pipeline.run().wait_until_finish()


def test_key_duplicates_keep_last_by_order_column_with_types_kept(pipeline):
    out = pipeline | beam.Create([FIRST, SECOND]) | DropDuplicates(["k"], keep="last", order_by="t")
    assert_that(
        out | "rows" >> beam.FlatMap(visible_rows),
        equal_to(
            [{"k": 1, "v": "e", "t": 9}, {"k": 2, "v": "b", "t": 1}, {"k": 3, "v": "d", "t": 5}]
        ),
        label="Rows",
    )
    assert_that(
        out | "types" >> beam.Map(lambda b: str(b.schema.field("t").type)) | beam.Distinct(),
        equal_to(["int64"]),
        label="Types",
    )
    pipeline.run().wait_until_finish()


def test_key_duplicates_keep_first_breaks_ties_by_file_and_line(pipeline):
    out = pipeline | beam.Create([SECOND, FIRST]) | DropDuplicates(["k"], order_by="t")
    # k=2 appears at a.csv:3 and b.csv:2 with the same t: a.csv comes first
    origins = out | beam.FlatMap(
        lambda b: zip(
            b.column("k").to_pylist(),
            b.column("__beam_etl_file").to_pylist(),
            b.column("__beam_etl_line").to_pylist(),
        )
    )
    assert_that(origins, equal_to([(1, "a.csv", 4), (2, "a.csv", 3), (3, "b.csv", 3)]))
    pipeline.run().wait_until_finish()


def double(batch):
    return batch.set_column(0, "k", pa.compute.multiply(batch.column("k"), 2))


def fragile(row):
    if row["k"] == 2:
        raise ValueError("no twos")
    return None if row["k"] == 3 else {**row, "seen": True}


def test_map_batches_and_map_rows(pipeline):
    batches = pipeline | beam.Create([FIRST, SECOND])
    doubled = batches | "double" >> MapBatches("test_dedupe_rows:double")
    rows = batches | "rows" >> MapRows(fragile)
    assert_that(
        doubled.output | "d" >> beam.FlatMap(lambda b: b.column("k").to_pylist()),
        equal_to([2, 4, 2, 4, 6, 2]),
        label="Doubled",
    )
    assert_that(
        rows.output | "r" >> beam.FlatMap(visible_rows),
        equal_to(
            [
                {"k": 1, "v": "a", "t": 3, "seen": True},
                {"k": 1, "v": "c", "t": 1, "seen": True},
                {"k": 1, "v": "e", "t": 9, "seen": True},
            ]
        ),
        label="RowsKept",
    )
    assert_that(
        rows.error | beam.Map(letter_summary),
        equal_to(
            [
                ("rows", "function_failed", 3, {"k": 2, "v": "b", "t": 1}),
                ("rows", "function_failed", 2, {"k": 2, "v": "b", "t": 1}),
            ]
        ),
        label="RowsRejected",
    )
    pipeline.run().wait_until_finish()


def test_load_function_errors_are_clear():
    import pytest

    with pytest.raises(ValueError, match="must look like `module:function`"):
        load_function("nocolon")
    with pytest.raises(ValueError, match="Cannot import module `no_such_mod`"):
        load_function("no_such_mod:f")
    with pytest.raises(ValueError, match="has no attribute `nope`"):
        load_function("json:nope")


def test_buckets_depend_on_values_only():
    import numpy as np

    from beam_etl.transforms._buckets import key_buckets

    big = pa.record_batch({"k": ["x", "yy", None, "", "x"], "n": [1, 2, 3, 4, 1]})
    again = big.slice(3, 2)  # the same values in another batch, at other offsets
    first = key_buckets(big, ["k", "n"], 64)
    assert first[0] == first[4]
    assert list(key_buckets(again, ["k", "n"], 64)) == list(first[3:5])
    spread = key_buckets(pa.record_batch({"k": [f"id{i}" for i in range(6400)]}), ["k"], 64)
    assert np.bincount(spread, minlength=64).min() > 50  # evenly spread


def test_survivor_does_not_depend_on_row_order():
    import random

    from beam_etl.transforms.dedupe import survivors

    rows = [{"k": i % 7, "t": i % 3, "v": f"v{i}"} for i in range(200)]
    expected = None
    for seed in range(5):
        random.Random(seed).shuffle(rows)
        table = pa.Table.from_pylist(rows)
        kept = survivors(table, ["k"], "last", "t").sort_by("k").to_pylist()
        expected = expected or kept
        assert kept == expected
    assert [row["t"] for row in expected] == [2] * 7
