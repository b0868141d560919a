"""Slowly changing dimensions, type 2: the database sinks' `scd2` mode, shared by dialects.

A table in `scd2` keeps every version of a row: the load's columns, then `valid_from`,
`valid_to` (null while current), `is_current` and `row_hash` (a 64-bit hash of the row's
values, computed in Arrow before staging). Each publish, in one transaction and range by
range of the staged rows (so that a refused row costs that row):

1. closes the current version of every staged key whose row changed (another `row_hash`) or
   that the load deletes (`hard_delete_column` true: the `deleted` column of change events):
   `valid_to` and `is_current = false`;
2. inserts a new current version for every staged key that has none (new keys, and the
   keys step 1 just closed), unless the load deletes it.

Unchanged rows change nothing, so a re-run, or a run over an unchanged source, adds no
version. "What did key K look like at time T" is
`WHERE key = K AND valid_from <= T AND (valid_to IS NULL OR valid_to > T)`. A full snapshot
without a delete flag never closes keys it lacks: feed `DiffSnapshots` (or CDC) events,
whose `deleted` column closes them, with `hard_delete_column: deleted`.
"""

import json
import os
from datetime import UTC, datetime
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_etl.core.batches import HIDDEN_PREFIX
from beam_etl.keyed.buckets import fast_row_hash

VALID_FROM: Final = "valid_from"
VALID_TO: Final = "valid_to"
IS_CURRENT: Final = "is_current"
ROW_HASH: Final = "row_hash"
COLUMNS: Final = (VALID_FROM, VALID_TO, IS_CURRENT, ROW_HASH)
#: Change-event metadata: stored with each version, but not part of what makes it differ.
EVENT_METADATA: Final = frozenset(
    {
        "op",
        "deleted",
        "before",
        "source_ts",
        "source_name",
        "source_position",
        "source_table",
        "source_txid",
        "source_seq",
    }
)


def hashed_columns(schema: pa.Schema, flag: str | None) -> list[str]:
    """Return the columns whose values make a version differ: the visible ones, without the
    delete flag and change-event metadata."""
    skip = {*EVENT_METADATA, *(COLUMNS), *([flag] if flag else [])}
    return [
        f.name
        for f in schema
        if not f.name.startswith(HIDDEN_PREFIX)
        and f.name not in skip
        and not pa.types.is_nested(f.type)
    ]


def with_row_hash(batch: pa.RecordBatch, flag: str | None) -> pa.RecordBatch:
    """Return `batch` with `row_hash` (signed 64-bit) appended.

    Raises:
        ValueError: the batch already has a column `scd2` adds.
    """
    clash = [name for name in COLUMNS if name in batch.schema.names]
    if clash:
        raise ValueError(f"Column(s) {clash} are kept by mode `scd2`; rename them in the input")
    hashes = fast_row_hash(batch, hashed_columns(batch.schema, flag)).view(np.int64)
    return batch.append_column(ROW_HASH, pa.array(hashes, pa.int64()))


def version_time() -> str:
    """Return this publish's time as an SQL timestamp literal's text (UTC, microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def statements(
    quote,
    *,
    dest: str,
    source: str,
    names: list[str],
    values: list[str],
    keys: list[str],
    flag: str | None,
    in_range: str,
    at: str,
    true: str = "TRUE",
    false: str = "FALSE",
    key_cast=None,
    fresh: bool = False,
) -> list[str]:
    """Return the two statements (close, insert) that apply one range of staged rows.

    `quote` quotes an identifier; `values` are the SELECT expressions of `names` over the
    staged rows `s`; `in_range` the condition on the staged row number (two parameters);
    `at` the timestamp literal of this publish; `key_cast(k)` the staged key as the target's
    type (default: `s.k`). `fresh`: the target was created by this publish (nothing to close;
    MySQL cannot read a temporary table twice in one statement).
    """
    cast = key_cast or (lambda k: f"s.{quote(k)}")

    def match(target: str) -> str:
        return " AND ".join(f"{target}.{quote(k)} = {cast(k)}" for k in keys)

    deleted = f"s.{quote(flag)} = {true}" if flag else false
    kept = f"(s.{quote(flag)} IS NULL OR s.{quote(flag)} = {false})" if flag else true
    hashed = f"{dest}.{quote(ROW_HASH)}"
    close = (
        f"UPDATE {dest} SET {quote(VALID_TO)} = {at}, {quote(IS_CURRENT)} = {false} "
        f"WHERE {dest}.{quote(IS_CURRENT)} = {true} AND EXISTS (SELECT 1 FROM {source} s "
        f"WHERE {match(dest)} AND {in_range} AND ({deleted} OR {hashed} IS NULL OR "
        f"{hashed} <> s.{quote(ROW_HASH)}))"
    )
    columns = ", ".join(quote(n) for n in [*names, VALID_FROM, VALID_TO, IS_CURRENT])
    insert = (
        f"INSERT INTO {dest} ({columns}) SELECT {', '.join(values)}, {at}, NULL, {true} "
        f"FROM {source} s WHERE {in_range} AND {kept}"
    )
    if fresh:
        return [insert]
    current = f"(SELECT 1 FROM {dest} t WHERE {match('t')} AND t.{quote(IS_CURRENT)} = {true})"
    return [close, f"{insert} AND NOT EXISTS {current}"]


def extra_columns(quote, timestamp: str, boolean: str) -> list[str]:
    """Return the column definitions `scd2` adds to a table it creates (`row_hash` is in
    the load)."""
    return [
        f"{quote(VALID_FROM)} {timestamp} NOT NULL",
        f"{quote(VALID_TO)} {timestamp}",
        f"{quote(IS_CURRENT)} {boolean} NOT NULL",
    ]


# --- Parquet: a history dataset of one file per version ------------------------------------
#
# A folder of version files `v-<valid_from>-<run id>.parquet`, one per run that changed
# something: the rows new or changed since the current view, and a tombstone (`deleted`
# true, other columns null) per key deleted. Every file has the load's columns, then
# `valid_from` (the publish's time, UTC) and `row_hash`. `history_view(path, at)` derives
# the view at any time (default: now) and `valid_to` of every version; nothing is rewritten.

VERSION_PREFIX: Final = "v-"
TOMBSTONE: Final = "deleted"


def version_files(path: str) -> list[str]:
    """Return the version files of the history dataset `path`, oldest first."""
    if not os.path.isdir(path):
        return []
    names = sorted(
        n for n in os.listdir(path) if n.startswith(VERSION_PREFIX) and n.endswith(".parquet")
    )
    return [os.path.join(path, n) for n in names]


def history(path: str) -> pa.Table | None:
    """Return every version in `path` with `valid_to` (null while current) and `is_current`."""
    files = version_files(path)
    if not files:
        return None
    table = pa.concat_tables(
        [pq.read_table(f) for f in files], promote_options="permissive"
    ).combine_chunks()
    keys = json.loads(table.schema.metadata[b"beam_etl.scd2.keys"])
    order = pc.sort_indices(table, [*((k, "ascending") for k in keys), (VALID_FROM, "ascending")])
    table = table.take(order)
    starts = table.column(VALID_FROM).to_numpy()
    same = np.ones(table.num_rows, dtype=bool)
    for k in keys:
        column = table.column(k)
        same[:-1] &= (
            pc.equal(column.slice(1), column.slice(0, len(column) - 1))
            .fill_null(False)
            .to_numpy(zero_copy_only=False)
        )
    same[-1] = False
    ends = np.where(same, np.roll(starts, -1), np.datetime64("NaT"))
    valid_to = pa.array(ends, table.schema.field(VALID_FROM).type, mask=~same)
    table = table.append_column(VALID_TO, valid_to)
    table = table.append_column(IS_CURRENT, pa.array(~same))
    return table


def history_view(path: str, at: datetime | None = None) -> pa.Table | None:
    """Return the rows as they were at `at` (default: now) from the history dataset `path`:
    per key the version valid then, tombstones left out."""
    table = history(path)
    if table is None:
        return None
    stamp = pa.scalar(at or datetime.now(UTC), table.schema.field(VALID_FROM).type)
    valid = pc.and_(
        pc.less_equal(table.column(VALID_FROM), stamp),
        pc.or_kleene(pc.is_null(table.column(VALID_TO)), pc.greater(table.column(VALID_TO), stamp)),
    )
    table = table.filter(valid)
    if TOMBSTONE in table.column_names:
        table = table.filter(pc.invert(pc.fill_null(table.column(TOMBSTONE), False)))
    return table


def publish_parquet_version(
    path: str,
    parts_batches,
    schema: pa.Schema,
    keys: list[str],
    flag: str | None,
    run_id: str,
    compression: str,
) -> int:
    """Write the version of this run (rows new or changed since the current view, and
    tombstones of deleted keys) into the history dataset `path`; return its rows. A run id
    already published there writes nothing again."""
    if any(run_id in os.path.basename(f) for f in version_files(path)):
        return 0
    current = history_view(path)
    load = pa.Table.from_batches(list(parts_batches), schema=schema) if schema else None
    if load is None or not load.num_rows:
        return 0
    position = pa.array(np.arange(load.num_rows, dtype=np.int64))
    last = (
        load.select(keys)
        .append_column("__beam_etl_index", position)
        .group_by(keys, use_threads=False)
        .aggregate([("__beam_etl_index", "max")])
    )
    index = last.column("__beam_etl_index_max")
    load = load.take(pc.take(index, pc.sort_indices(index)))  # the last row per key
    if TOMBSTONE in load.column_names and flag != TOMBSTONE:
        raise ValueError(f"Column `{TOMBSTONE}` is kept by mode `scd2`; rename it in the input")
    deleting = pc.fill_null(load.column(flag), False) if flag else pa.repeat(False, load.num_rows)
    if current is not None and current.num_rows:
        known = current.select([*keys, ROW_HASH]).rename_columns([*keys, "__beam_etl_previous"])
        indexed = load.select([*keys, ROW_HASH]).append_column(
            "__beam_etl_index", pa.array(np.arange(load.num_rows, dtype=np.int64))
        )
        joined = indexed.join(known, keys, join_type="left outer", use_threads=False)
        joined = joined.sort_by("__beam_etl_index")
        previous = joined.column("__beam_etl_previous")
        present = pc.is_valid(previous).to_numpy(zero_copy_only=False)
        same = pc.fill_null(pc.equal(previous, joined.column(ROW_HASH)), False).to_numpy(
            zero_copy_only=False
        )
    else:
        present = np.zeros(load.num_rows, dtype=bool)
        same = present
    deleting = deleting.to_numpy(zero_copy_only=False)
    changed = ~deleting & ~same
    gone = deleting & present
    stamp = datetime.now(UTC)
    rows = load.filter(pa.array(changed))
    tombstones = load.filter(pa.array(gone)).select(keys)
    out = [rows.drop_columns([flag]) if flag and flag in rows.column_names else rows]
    if tombstones.num_rows:
        out.append(tombstones)
    version = pa.concat_tables(out, promote_options="permissive")
    version = version.append_column(
        TOMBSTONE,
        pa.array(np.arange(version.num_rows) >= rows.num_rows),  # tombstones come last
    )
    if not version.num_rows:
        return 0
    version = version.append_column(
        VALID_FROM, pa.repeat(pa.scalar(stamp, pa.timestamp("us", tz="UTC")), version.num_rows)
    )
    version = version.replace_schema_metadata({"beam_etl.scd2.keys": json.dumps(keys)})
    os.makedirs(path, exist_ok=True)
    name = f"{VERSION_PREFIX}{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-{run_id}.parquet"
    temporary = os.path.join(path, f".{name}.tmp")
    pq.write_table(version, temporary, compression=compression)
    os.replace(temporary, os.path.join(path, name))
    return version.num_rows
