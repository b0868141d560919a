"""DiffSnapshots: change events between runs, by primary key and row hash, with real pipelines."""

import json
import os
import uuid

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline

from beam_etl.runner import LocalRunner
from beam_etl.transforms.diff import DiffSnapshots, diff_bucket


def _run(tmp_path, rows: list[dict], **options) -> tuple[list, list]:
    """Diff `rows` against the snapshot in tmp_path; return (events, dead letters)."""
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    snapshot = str(tmp_path / "snapshot")
    with test_pipeline.TestPipeline(runner=LocalRunner()) as p:
        batches = p | beam.Create([pa.RecordBatch.from_pylist(rows)])
        diff = batches | DiffSnapshots("id", snapshot=snapshot, buckets=4, **options)
        _ = diff.output | "Events" >> beam.Map(_save, str(out), "event")
        _ = diff.error | "Letters" >> beam.Map(
            lambda d, folder: _save([(d.reason, d.payload)], folder, "letter"), str(out)
        )
    events, letters = [], []
    for path in sorted(out.iterdir()):
        found = json.loads(path.read_text())
        (events if path.name.startswith("event") else letters).extend(found)
    letters = [tuple(letter) for letter in letters]
    return sorted(events, key=lambda e: (e["id"], e["op"])), letters


def _save(element, folder: str, kind: str) -> None:
    rows = _plain(element) if isinstance(element, pa.RecordBatch) else element
    path = os.path.join(folder, f"{kind}-{uuid.uuid4().hex}.json")
    with open(path, "w") as out:
        json.dump(rows, out)


def _plain(batch: pa.RecordBatch) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k in ("id", "v", "op", "deleted")}
        for row in batch.to_pylist()
    ]


@pytest.mark.parametrize("spill", [True, False], ids=["spill", "shuffle"])
def test_first_run_creates_then_changes_are_c_u_d_and_unchanged_rows_are_dropped(tmp_path, spill):
    first = [{"id": i, "v": f"a{i}"} for i in range(1, 6)]
    events, letters = _run(tmp_path, first, spill=spill)
    assert events == [{"id": i, "v": f"a{i}", "op": "c", "deleted": False} for i in range(1, 6)]
    assert letters == []
    second = [
        {"id": 1, "v": "a1"},  # unchanged
        {"id": 2, "v": "changed"},  # u
        {"id": 4, "v": "a4"},  # unchanged
        {"id": 5, "v": "a5"},
        {"id": 9, "v": "new"},  # c
    ]  # 3 is gone: d
    events, _ = _run(tmp_path, second, spill=spill)
    assert events == [
        {"id": 2, "v": "changed", "op": "u", "deleted": False},
        {"id": 3, "v": None, "op": "d", "deleted": True},
        {"id": 9, "v": "new", "op": "c", "deleted": False},
    ]
    events, _ = _run(tmp_path, second, spill=not spill)  # nothing changed, either way
    assert events == []


@pytest.mark.parametrize("spill", [True, False], ids=["spill", "shuffle"])
def test_unchanged_rows_can_be_emitted_as_r(tmp_path, spill):
    rows = [{"id": 1, "v": "x"}]
    _run(tmp_path, rows, spill=spill)
    events, _ = _run(tmp_path, rows, emit_unchanged=True, spill=spill)
    assert events == [{"id": 1, "v": "x", "op": "r", "deleted": False}]


@pytest.mark.parametrize("spill", [True, False], ids=["spill", "shuffle"])
def test_null_and_repeated_keys_are_dead_letters_and_the_last_copy_is_compared(tmp_path, spill):
    rows = [{"id": None, "v": "n"}, {"id": 7, "v": "first"}, {"id": 7, "v": "last"}]
    events, letters = _run(tmp_path, rows, spill=spill)
    assert events == [{"id": 7, "v": "last", "op": "c", "deleted": False}]
    assert sorted(letters, key=str) == [
        ("duplicate_key", {"id": 7, "v": "first"}),
        ("null_key", {"id": None, "v": "n"}),
    ]


def test_diff_bucket_is_one_join():
    current = pa.table({"id": [1, 2, 3], "__beam_etl_hash": pa.array([10, 20, 30], pa.uint64())})
    previous = pa.table({"id": [2, 3, 4], "__beam_etl_hash": pa.array([20, 99, 40], pa.uint64())})
    ops, index, gone = diff_bucket(current, previous, ["id"])
    assert dict(zip(index.to_pylist(), ops.to_pylist())) == {0: "c", 1: "r", 2: "u"}
    assert gone.to_pylist() == [{"id": 4}]


def test_a_primary_key_that_names_an_event_column_is_refused():
    with pytest.raises(ValueError, match="cannot name op"):
        DiffSnapshots("op", snapshot="/tmp/x")


def test_value_hash_is_stable_across_widths_and_batches_and_tells_values_apart():
    import datetime

    import numpy as np

    from beam_etl.keyed.buckets import fast_row_hash, value_hash

    assert (
        value_hash(pa.array([1, None, 3], pa.int32())) == value_hash(pa.array([1, None, 3]))
    ).all()
    stamps = pa.array([datetime.datetime(2024, 1, 1), datetime.datetime(2024, 1, 2)])
    assert value_hash(stamps)[0] != value_hash(stamps)[1]
    table = pa.table({"id": [1, 2, 3, 4], "v": ["a", "b", None, "d"], "x": [1.5, 2.5, 3.5, None]})
    whole = fast_row_hash(table)
    halves = np.concatenate([fast_row_hash(b) for b in table.to_batches(max_chunksize=2)])
    assert (whole == halves).all()
    assert len(set(whole.tolist())) == 4
    swapped = pa.table({"id": [1], "v": ["a"], "x": [2.5]})  # x of row 2 in row 1
    assert fast_row_hash(swapped)[0] != whole[0]


def test_a_snapshot_kept_with_another_row_hash_asks_for_a_state_reset(tmp_path):
    from beam_etl.core.state import RunState, StateStore, incremental_state

    store = StateStore(str(tmp_path / "state.sqlite"))
    store.commit("p", "r0", {"diff": {"snapshot": "x", "buckets": 32}})  # no `hash`: older
    with incremental_state(RunState(store, "p", "r1")):
        p = beam.Pipeline()
        batches = p | beam.Create([pa.RecordBatch.from_pylist([{"id": 1}])])
        with pytest.raises(ValueError, match="state reset --source diff"):
            _ = batches | "diff" >> DiffSnapshots("id")
