"""Deduplication across batches and the row adapters (the slow path)."""

import logging
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.io.parquetio import WriteToParquet
from beam_etl.runner import LocalRunner
from beam_etl.transforms.dedupe import Deduplicated, DropDuplicates
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


STRATEGIES = pytest.mark.parametrize("spill", [True, False], ids=["spill", "shuffle"])


@STRATEGIES
def test_key_duplicates_keep_last_by_order_column_with_types_kept(pipeline, spill):
    dedupe = DropDuplicates(["k"], keep="last", order_by="t", spill=spill)
    out = pipeline | beam.Create([FIRST, SECOND]) | dedupe
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


@STRATEGIES
def test_key_duplicates_keep_first_breaks_ties_by_file_and_line(pipeline, spill):
    out = pipeline | beam.Create([SECOND, FIRST]) | DropDuplicates(["k"], order_by="t", spill=spill)
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


@STRATEGIES
def test_rows_without_origin_lines_keep_the_same_survivor_whatever_the_batching(spill, tmp_path):
    """A database source has no line numbers: ties are broken by the rows' content."""
    rows = [{"k": i % 5, "t": i % 2, "v": f"v{i % 11}"} for i in range(60)]
    results = []
    for size in (7, 60):
        batches = [
            with_origin(pa.RecordBatch.from_pylist(rows[i : i + size]), "db.table", None)
            for i in range(0, len(rows), size)
        ]
        target = str(tmp_path / f"out{size}")
        with beam.Pipeline(runner=LocalRunner()) as p:
            out = p | beam.Create(batches) | DropDuplicates(["k"], order_by="t", spill=spill)
            _ = out | WriteToParquet(target)
        results.append(pq.read_table(target).sort_by("k").to_pylist())
    assert results[0] == results[1]
    assert [row["t"] for row in results[0]] == [0] * 5


def test_spill_files_go_to_spill_dir_and_are_removed_after_the_run(tmp_path):
    spill = tmp_path / "spill"

    def while_reading(batch, spill=spill):
        # Rows come back from the spill files, which are still there at this point.
        names = [n for folder in spill.iterdir() for n in os.listdir(folder)]
        if not names or not all(name.endswith(".arrow") for name in names):
            raise AssertionError(f"no spill files in {spill}: {names}")
        return [batch]

    with beam.Pipeline(runner=LocalRunner()) as p:
        out = p | beam.Create([FIRST, SECOND]) | DropDuplicates(["k"], spill_dir=str(spill))
        kept = out | beam.FlatMap(while_reading) | beam.FlatMap(visible_rows)
        assert_that(kept | beam.Map(lambda r: r["k"]), equal_to([1, 2, 3]))
    assert list(spill.iterdir()) == []


def test_spill_needs_key_columns():
    with pytest.raises(ValueError, match="Spill files need key `columns`"):
        DropDuplicates(spill=True)


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

    from beam_etl.keyed.buckets import key_buckets

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


def _kept(tmp_path, name, batches, dedupe) -> list[dict]:
    target = str(tmp_path / name)
    with beam.Pipeline(runner=LocalRunner()) as p:
        _ = p | beam.Create(batches) | dedupe | WriteToParquet(target)
    return pq.read_table(target).to_pylist()


def test_both_strategies_keep_the_same_row_whatever_the_input_order(tmp_path):
    """No origin lines (a Parquet or database source): content breaks the tie, the same way
    with spill files and with a shuffle, even for reordered bytes (`1221` / `2112`)."""
    first = with_origin(pa.record_batch({"k": [1], "v": ["1221"]}), "t.parquet", None)
    second = with_origin(pa.record_batch({"k": [1, 2], "v": ["2112", "x"]}), "t.parquet", None)
    results = [
        _kept(tmp_path, f"{spill}-{i}", order, DropDuplicates(["k"], spill=spill))
        for spill in (True, False)
        for i, order in enumerate(([first, second], [second, first]))
    ]
    assert all(result == results[0] for result in results)


def test_spill_handles_binary_and_dictionary_columns(tmp_path):
    def batch(keys, source):
        return with_origin(
            pa.record_batch(
                {
                    "k": pa.array(keys).dictionary_encode(),
                    "raw": pa.array([b"\xff\xfe", b"\xfe\xff"][: len(keys)], pa.binary()),
                }
            ),
            source,
            None,
        )

    batches = [batch(["a", "b"], "x.parquet"), batch(["b"], "y.parquet")]
    for spill in (True, False):
        kept = _kept(tmp_path, f"bin-{spill}", batches, DropDuplicates(["k"], spill=spill))
        assert sorted(row["k"] for row in kept) == ["a", "b"]


def test_windowed_input_is_deduplicated_per_window():
    from apache_beam.transforms import window

    batches = [with_origin(pa.record_batch({"k": [1, 1, 2]}), "w.csv", [2, 3, 4])]
    with beam.Pipeline(runner=LocalRunner()) as p:
        out = (
            p
            | beam.Create(batches)
            | beam.Map(lambda b: window.TimestampedValue(b, 10))
            | beam.WindowInto(window.FixedWindows(60))
            | DropDuplicates(["k"])  # spill files are for the global window: a shuffle here
        )
        assert_that(out | beam.FlatMap(visible_rows), equal_to([{"k": 1}, {"k": 2}]))


@STRATEGIES
def test_outputs_are_named_like_every_other_step(pipeline, spill):
    result = pipeline | beam.Create([FIRST, SECOND]) | DropDuplicates(["k"], spill=spill)
    assert isinstance(result, Deduplicated) and result._fields == ("output", "error")
    assert_that(
        result.output | "Keys" >> beam.FlatMap(visible_rows) | beam.Map(lambda r: r["k"]),
        equal_to([1, 2, 3]),
        label="Output",
    )
    assert_that(result.error, equal_to([]), label="Error")
    assert_that(  # piped on, it is its output, as when it gave its batches alone
        result | "Piped" >> beam.FlatMap(visible_rows) | beam.combiners.Count.Globally(),
        equal_to([3]),
        label="Piped",
    )
    pipeline.run().wait_until_finish()


def test_spilling_steps_log_no_type_hint_warnings(caplog):
    from beam_etl.quality.dataset import CheckUnique

    with caplog.at_level(logging.WARNING), beam.Pipeline(runner=LocalRunner()) as p:
        batches = p | beam.Create([FIRST, SECOND])
        _ = batches | "Dedupe" >> DropDuplicates(["k"], spill=True)
        _ = batches | "Unique" >> CheckUnique(["v"], spill=True)
    hints = [r.getMessage() for r in caplog.records if "type hint" in r.getMessage()]
    assert hints == []


def test_every_step_of_the_catalogue_is_exported_from_transforms():
    import beam_etl.transforms
    from beam_etl.core.catalogue import STEP, catalogue

    steps = sorted(name for name, entry in catalogue().items() if entry.kind == STEP)
    assert [name for name in steps if not hasattr(beam_etl.transforms, name)] == []
    assert set(steps) <= set(beam_etl.transforms.__all__)
    from beam_etl.transforms import CheckUnique, ValidateRecords  # noqa: F401
