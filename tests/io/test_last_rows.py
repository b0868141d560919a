"""`_db.last_rows`: the staged row kept per key before a merge is loaded."""

import pyarrow as pa

from beam_etl.io.sql.staging import ROW_COLUMN, last_rows


def _batches(**columns):
    rows = len(next(iter(columns.values())))
    columns[ROW_COLUMN] = pa.array(range(1, rows + 1), pa.int64())
    table = pa.table(columns)
    return iter(table.to_batches(max_chunksize=2))  # keys repeat across batches


def test_the_largest_sort_value_wins_nulls_lowest_ties_to_the_last_row():
    kept = last_rows(
        _batches(id=[1, 1, 1, 2, 2, 3, 3], v=[5, 9, 9, None, 1, None, None]), ["id"], "v"
    )
    assert sorted(kept.to_pylist()) == [3, 5, 7]


def test_without_sort_the_last_staged_row_wins_and_null_keys_are_all_kept():
    kept = last_rows(_batches(id=[1, None, 1, None, 2]), ["id"], None)
    assert sorted(kept.to_pylist()) == [2, 3, 4, 5]


def test_composite_keys_compare_every_part_and_text_by_its_bytes():
    kept = last_rows(_batches(a=[1, 1, 1, 1], b=["x", "X", "x", None]), ["a", "b"], None)
    assert sorted(kept.to_pylist()) == [2, 3, 4]


def test_no_repeated_key_means_keep_everything():
    assert last_rows(_batches(id=[3, 1, 2]), ["id"], None) is None
    assert last_rows(iter([]), ["id"], None) is None
