"""Dataset-level checks: uniqueness across files, batches and workers; bounds; fail gates sinks."""

import re

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.core.batches import with_origin
from beam_etl.io.csvio import ReadFromCsv
from beam_etl.io.parquetio import WriteToParquet
from beam_etl.quality.dataset import (
    CheckCompleteness,
    CheckRejectedShare,
    CheckRowCount,
    CheckUnique,
    QualityCheckError,
)
from beam_etl.runner import LocalRunner

A = "id,name\n1,ann\n2,bob\n3,cy\n4,\n5,eve\n"
B = "id,name\n6,fay\n3,cy2\n7,gil\n1,ann\n,nul\n,nul2\n"


def _pipeline(workers: int):
    args = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    return test_pipeline.TestPipeline(
        runner=LocalRunner(), options=PipelineOptions(args if workers == 2 else [])
    )


@pytest.mark.parametrize("spill", [True, False], ids=["spill", "key-counts"])
@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_uniqueness_rejects_every_duplicate_across_files_and_batches(write_file, workers, spill):
    paths = [write_file("a.csv", A), write_file("b.csv", B)]
    pipeline = _pipeline(workers)
    # Tiny blocks: each file is parsed into several batches.
    read = pipeline | "read" >> ReadFromCsv(paths, block_size_mb=0.00002)
    assert_that(
        read.output | beam.combiners.Count.Globally() | beam.Map(lambda n: n >= 4),
        equal_to([True]),
        label="SeveralBatches",
    )
    check = CheckUnique(["id"], spill=spill)
    out = read.output | "unique" >> check
    assert_that(
        out.output | beam.FlatMap(lambda b: b.column("id").to_pylist()),
        equal_to([2, 4, 5, 6, 7, None, None]),
        label="Valid",
    )
    assert_that(
        out.error | beam.Map(lambda d: (d.reason, d.source.rsplit("/", 1)[1], d.line, d.message)),
        equal_to(
            [
                ("duplicate_key", "a.csv", 2, "Key (id) = [1] occurs 2 times"),
                ("duplicate_key", "a.csv", 4, "Key (id) = [3] occurs 2 times"),
                ("duplicate_key", "b.csv", 3, "Key (id) = [3] occurs 2 times"),
                ("duplicate_key", "b.csv", 5, "Key (id) = [1] occurs 2 times"),
            ]
        ),
        label="Invalid",
    )
    assert_that(
        check.results
        | beam.Map(lambda r: (r.rows_evaluated, r.rows_failed, r.outcome, r.examples)),
        equal_to(
            [
                (
                    11,
                    4,
                    "warned",
                    ({"value": "[1]", "origin": "2 rows"}, {"value": "[3]", "origin": "2 rows"}),
                )
            ]
        ),
        label="Results",
    )
    pipeline.run().wait_until_finish()


def test_uniqueness_of_a_column_set_can_report_without_rejecting(pipeline):
    batches = [
        pa.record_batch({"a": [1, 1, 2], "b": ["x", "y", "x"]}),
        pa.record_batch({"a": [1, 2], "b": ["y", None]}),
    ]
    check = CheckUnique(["a", "b"], reject=False)
    out = pipeline | beam.Create(batches) | "unique" >> check
    assert_that(out.output | beam.Map(lambda b: b.num_rows), equal_to([3, 2]), label="Valid")
    assert_that(out.error, equal_to([]), label="Invalid")
    assert_that(
        check.results | beam.Map(lambda r: (r.check, r.rows_failed, r.outcome)),
        equal_to([("unique_a_b", 2, "warned")]),
        label="Results",
    )
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("spill", [True, False], ids=["spill", "key-counts"])
def test_uniqueness_of_three_columns_with_dictionary_keys(pipeline, spill):
    def batch(values):
        columns = {name: pa.array(v).dictionary_encode() for name, v in zip("abc", values)}
        return pa.record_batch(columns)

    batches = [batch((["x", "x"], ["y", "y"], ["1", "2"])), batch((["x"], ["y"], ["2"]))]
    check = CheckUnique(["a", "b", "c"], spill=spill)
    out = pipeline | beam.Create(batches) | "unique" >> check
    assert_that(
        out.error | beam.Map(lambda d: d.message),
        equal_to(['Key (a, b, c) = ["x","y","2"] occurs 2 times'] * 2),
        label="Invalid",
    )
    assert_that(
        out.output | beam.FlatMap(lambda b: b.column("c").to_pylist()),
        equal_to(["1"]),
        label="Valid",
    )
    pipeline.run().wait_until_finish()


def _first_run(tmp_path) -> str:
    target = str(tmp_path / "out")
    with test_pipeline.TestPipeline(runner=LocalRunner()) as p:
        _ = p | beam.Create([pa.record_batch({"id": [100]})]) | "write" >> WriteToParquet(target)
    return target


@pytest.mark.parametrize(
    "check",
    [
        lambda: CheckUnique(["id"], severity="fail"),
        lambda: CheckRowCount(min_rows=10),
        lambda: CheckCompleteness(["name"], mostly=0.99),
    ],
    ids=["unique", "row-count", "completeness"],
)
def test_a_failing_fail_check_fails_the_run_and_publishes_nothing(tmp_path, check):
    target = _first_run(tmp_path)
    batch = with_origin(pa.record_batch({"id": [1, 1, 2], "name": ["a", None, "c"]}), "x", None)
    pipeline = test_pipeline.TestPipeline(runner=LocalRunner())
    checked = pipeline | beam.Create([batch]) | "check" >> check()
    rows = checked.output if hasattr(checked, "output") else checked
    _ = rows | "write" >> WriteToParquet(target)
    with pytest.raises(Exception, match=r"Quality check `.*` of step `check` failed") as info:
        pipeline.run().wait_until_finish()
    assert isinstance(info.value, QualityCheckError) or "QualityCheckError" in str(info.value)
    assert pq.read_table(target).column("id").to_pylist() == [100]


def test_a_failing_uniqueness_check_removes_its_spill_files(tmp_path):
    spill = tmp_path / "spill"
    batch = with_origin(pa.record_batch({"id": [1, 1, 2]}), "x", None)
    pipeline = test_pipeline.TestPipeline(runner=LocalRunner())
    checked = (
        pipeline
        | beam.Create([batch])
        | "check" >> CheckUnique(["id"], severity="fail", spill_dir=str(spill))
    )
    _ = checked.output | beam.Map(lambda b: b)
    with pytest.raises(Exception, match=r"Quality check `unique_id` of step `check` failed"):
        pipeline.run().wait_until_finish()
    assert list(spill.iterdir()) == []


def test_row_count_and_completeness_pass_rows_and_record_warnings(pipeline):
    batches = [pa.record_batch({"v": [1.0, None, float("nan"), 4.0]})]
    count = CheckRowCount(min_rows=1, max_rows=3, severity="warn")
    complete = CheckCompleteness(["v"], mostly=0.5, severity="warn")
    out = pipeline | beam.Create(batches) | "count" >> count | "complete" >> complete
    assert_that(out | beam.Map(lambda b: b.num_rows), equal_to([4]), label="Rows")
    results = (count.results, complete.results) | beam.Flatten()
    assert_that(
        results
        | beam.Map(lambda r: (r.check, r.rows_evaluated, r.rows_failed, r.outcome, r.message)),
        equal_to(
            [
                ("row_count", 4, 4, "warned", "4 rows, outside [1, 3]"),
                (
                    "completeness_v",
                    4,
                    2,
                    "passed",
                    "50.00% of `v` present; at least 50.00% required",
                ),
            ]
        ),
        label="Results",
    )
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("max_share", "outcome"), [(0.25, "passed"), (0.2, "failed")], ids=["within", "above"]
)
def test_rejected_share_counts_dead_letters_against_rows(max_share, outcome):
    from beam_etl.core.deadletter import DeadLetter

    pipeline = test_pipeline.TestPipeline(runner=LocalRunner())
    rows = pipeline | "rows" >> beam.Create([pa.record_batch({"a": [1, 2, 3]})])
    letters = pipeline | "letters" >> beam.Create([DeadLetter("s", "cast_failed", "m")])
    share = CheckRejectedShare(max_share)
    results = {"s": rows, "s.error": letters} | "share" >> share
    if outcome == "passed":
        assert_that(
            results | beam.Map(lambda r: (r.rows_evaluated, r.rows_failed, r.outcome)),
            equal_to([(4, 1, "passed")]),
            label="Results",
        )
        pipeline.run().wait_until_finish()
        return
    with pytest.raises(
        Exception, match=re.escape("25.00% of rows rejected; at most 20.00% allowed")
    ):
        pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CheckUnique([]), "`columns` must list"),
        (lambda: CheckUnique(["a"], severity="reject"), "`severity` must be warn or fail"),
        (lambda: CheckRowCount(), "`min_rows` or `max_rows`"),
        (lambda: CheckRowCount(min_rows=5, max_rows=2), "is above"),
        (lambda: CheckCompleteness(["a"], mostly=1.5), "`mostly` must be between"),
        (lambda: CheckRejectedShare(-0.1), "`max_share` must be between"),
    ],
    ids=["no-columns", "bad-severity", "no-bounds", "inverted-bounds", "bad-mostly", "bad-share"],
)
def test_bad_arguments_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()
