"""ApplyChanges: the net change per key, with out-of-order, duplicated, late and re-inserted
events, on FnApiRunner in process and with two worker processes (same output)."""

import datetime as dt
import os

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.io._changes import CHANGE_COLUMNS, EventBuilder
from beam_etl.runner import LocalRunner
from beam_etl.transforms.changes import ApplyChanges, net_changes, split_key_changes
from beam_etl.transforms.diff import EVENT_COLUMNS

COLUMNS = pa.schema([("id", pa.int64()), ("name", pa.string())])
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _batch(events, before=False) -> pa.RecordBatch:
    """events: (op, id, name, seq, seconds after T0[, old id])."""
    builder = EventBuilder(COLUMNS, step="src", table="public.t", before=before)
    for op, key, name, seq, seconds, *old in events:
        builder.add(
            op,
            [key, name],
            ts=T0 + dt.timedelta(seconds=seconds),
            position=f"0/{seq:X}",
            txid=seq,
            seq=seq,
            old=[old[0], "old"] if old else None,
        )
    batch = builder.build()
    assert batch is not None
    return batch


# Batches in an order that is not commit order; a duplicate delivery; a late event.
BATCHES = [
    [("u", 1, "one-2", 2, 2), ("u", 1, "one-3", 3, 3), ("c", 2, "two", 4, 4)],
    [("c", 1, "one", 1, 1), ("d", 2, None, 5, 5), ("d", 3, None, 6, 6)],
    [("c", 3, "three-again", 7, 7), ("u", 4, "four", 8, 8), ("u", 4, "four", 8, 8)],
    [("c", 5, "five", 9, 9), ("d", 5, None, 10, 10), ("c", 5, "five-again", 11, 11)],
    [("r", 6, "six", 0, 0), ("u", 7, "seven", 12, 3600), ("u", 7, "seven-late", 13, 60)],
]
EXPECTED = [
    (1, "one-3", "c", False, 3),  # insert + update + update -> one insert
    (3, "three-again", "u", False, 7),  # delete then insert -> upsert
    (4, "four", "u", False, 8),  # delivered twice -> once
    (5, "five-again", "c", False, 11),  # re-inserted after a delete
    (6, "six", "r", False, 0),
    (7, "seven", "u", False, 12),  # the late one went to the dead letters
]  # key 2: inserted then deleted -> nothing


def _rows(batch):
    return [(r["id"], r["name"], r["op"], r["deleted"], r["source_seq"]) for r in batch.to_pylist()]


def test_the_change_columns_extend_the_snapshot_diff_events():
    assert CHANGE_COLUMNS[: len(EVENT_COLUMNS)] == EVENT_COLUMNS


def test_net_changes_is_the_same_whatever_the_order_of_events():
    table = pa.Table.from_batches([_batch(e) for e in BATCHES])
    results = []
    for order in (range(table.num_rows), reversed(range(table.num_rows))):
        shuffled = table.take(pa.array(list(order)))
        net, late, dropped = net_changes(shuffled, ["id"], {}, 600 * 1_000_000)
        late_seqs = [shuffled.column("source_seq")[i].as_py() for i in late]
        results.append((sorted(_rows(net)), late_seqs, dropped))
    assert results[0] == results[1]
    assert results[0][0] == EXPECTED
    assert results[0][1] == [13]
    # 15 events: 6 out, 1 late, 8 dropped (2 merged into key 1, 2 cancelled for key 2, 1 for
    # key 3, 1 duplicate for key 4, 2 for key 5)
    assert results[0][2] == 8


def test_events_at_or_before_the_applied_position_are_dropped():
    applied = {(1,): (5, 0)}
    table = pa.Table.from_batches([_batch([("u", 1, "old", 4, 4), ("u", 1, "new", 6, 6)])])
    net, late, dropped = net_changes(table, ["id"], applied, None)
    assert _rows(net) == [(1, "new", "u", False, 6)]
    assert (late, dropped) == ([], 1)
    assert applied[(1,)][0] == 6


def test_a_key_change_becomes_a_delete_and_an_insert():
    batch = _batch([("u", 9, "moved", 1, 1, 8), ("u", 7, "same", 2, 2, 7)], before=True)
    split = split_key_changes(["id"], batch)
    assert [(r["id"], r["op"], r["deleted"]) for r in split.to_pylist()] == [
        (8, "d", True),
        (9, "c", False),
        (7, "u", False),
    ]


def _run(options: list[str]) -> None:
    pipeline = test_pipeline.TestPipeline(
        runner=LocalRunner(), options=PipelineOptions(options), blocking=True
    )
    batches = pipeline | "Events" >> beam.Create([_batch(e) for e in BATCHES]).with_output_types(
        pa.RecordBatch
    )
    applied = batches | "Apply" >> ApplyChanges(["id"], allowed_lateness="10m", buckets=4)
    rows = applied.output | "Rows" >> beam.FlatMap(_rows)
    assert_that(rows, equal_to(EXPECTED), label="NetChanges")
    late = applied.error | "Late" >> beam.Map(lambda letter: (letter.reason, letter.key))
    assert_that(late, equal_to([("late_change", "id=7, source_table='public.t'")]), label="Late")
    pipeline.run()


@pytest.mark.parametrize(
    "options",
    [[], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]],
    ids=["in_process", "two_workers"],
)
def test_apply_changes_gives_the_same_output_on_one_and_two_workers(options, monkeypatch):
    # Worker processes unpickle this module's functions: let them import it.
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    _run(options)


def test_windows_each_get_their_net_change():
    pipeline = test_pipeline.TestPipeline(runner=LocalRunner())
    events = [("c", 1, "a", 1, 10), ("u", 1, "b", 2, 20), ("u", 1, "c", 3, 70)]
    batches = pipeline | beam.Create([_batch(events)]).with_output_types(pa.RecordBatch)
    applied = batches | "Apply" >> ApplyChanges("id", window="1m")
    assert_that(
        applied.output | beam.FlatMap(_rows),
        equal_to([(1, "b", "c", False, 2), (1, "c", "u", False, 3)]),
        label="PerWindow",
    )
    pipeline.run()
