"""Cursor increments for database sources: read only the rows added or changed since last run.

`incremental: {cursor: updated_at, initial: "2024-01-01", lag: "10m", end: null,
on_null: exclude}` makes a source read `cursor >= low AND cursor <= high`, where

- `high` is the cursor's largest value when the run starts (or `end`, for a backfill);
- `low` is the last successful run's `high` minus `lag` (or `initial` on the first run; no
  lower bound without one). The lag re-reads a window, for rows committed late with an older
  cursor value (a long transaction that started before the last run);
- rows read again in that window are not loaded twice: the state keeps a 64-bit hash of every
  row read in the last window, and a re-read row with the same hash is skipped (a row that
  changed since has another hash and is loaded again, as an update).

Integer, date and timestamp cursors are supported. Rows with a null cursor are left out
(`on_null: exclude`) or read by every run (`include`). The new `high` and the window's row
hashes become the state only after every sink has published (see `beam_etl.core.state`).
"""

import datetime as dt
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_etl.io.sql.identifiers import check_identifier

ON_NULL: Final = ("exclude", "include", "reject")
_KEYS: Final = {"cursor", "initial", "lag", "end", "on_null"}
_DURATION: Final = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)?\s*$")
_UNITS: Final = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class CursorIncrement:
    """The `incremental:` setting of a database source, validated when the spec is loaded."""

    cursor: str
    initial: Any = None
    lag: int = 0  # seconds for dates and timestamps, units for integers
    end: Any = None
    on_null: str = "exclude"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CursorIncrement":
        """Raises: ValueError naming the key and value."""
        if not isinstance(config, dict) or "cursor" not in config:
            raise ValueError("`incremental` must be a mapping with at least `cursor:`")
        unknown = set(config) - _KEYS
        if unknown:
            raise ValueError(f"Unknown `incremental` key(s) {sorted(unknown)}; use {sorted(_KEYS)}")
        check_identifier(config["cursor"], "incremental cursor")
        on_null = config.get("on_null", "exclude")
        if on_null not in ON_NULL:
            raise ValueError(f"`on_null` must be one of {', '.join(ON_NULL)}, not `{on_null}`")
        return cls(
            cursor=config["cursor"],
            initial=config.get("initial"),
            lag=parse_lag(config.get("lag", 0)),
            end=config.get("end"),
            on_null=on_null,
        )


def parse_lag(value: Any) -> int:
    """Return a lag (`10m`, `2h`, `1d`, `30s`, or a number) in seconds or cursor units."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    found = _DURATION.match(str(value))
    if not found:
        raise ValueError(f"`lag` must look like 30s, 10m, 2h, 1d or a number, not `{value}`")
    return int(found.group(1)) * _UNITS[found.group(2)]


def to_state(value: Any) -> Any:
    """Return a cursor value as JSON (ISO text for dates and timestamps)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "is_integer"):  # Decimal / float holding an integer
        return int(value)
    return value


def from_state(value: Any, like: Any) -> Any:
    """Return a stored cursor value typed like `like` (a value the database gave)."""
    if isinstance(like, dt.datetime) and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if isinstance(like, dt.date) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def minus(value: Any, lag: int) -> Any:
    """Return `value` moved back by `lag` (seconds for timestamps and dates, units otherwise)."""
    if not lag or value is None:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=lag)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=-(-lag // 86400))
    return value - lag


def typed_bound(value: Any) -> Any:
    """Return a configured bound (`initial`, `end`) as the driver should send it."""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def window_condition(column: str, low: Any, high: Any, on_null: str) -> tuple[str, list[Any]]:
    """Return the SQL condition (on the quoted cursor `column`) and its parameters."""
    parts, params = [], []
    if low is not None:
        parts.append(f"{column} >= %s")
        params.append(low)
    if high is not None:
        parts.append(f"{column} <= %s")
        params.append(high)
    condition = " AND ".join(parts) or f"{column} IS NOT NULL"
    if on_null in ("include", "reject"):  # rejected rows are read to become dead letters
        condition = f"({condition}) OR {column} IS NULL"
    return condition, params


def load_hashes(folder: str | None) -> pa.Array | None:
    """Return the row hashes kept from the last run's window, None when there are none."""
    if not folder or not os.path.isdir(folder):
        return None
    tables = [pq.read_table(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return None
    return pa.concat_tables(tables).column("hash").combine_chunks()


def save_hashes(folder: str, hashes: np.ndarray) -> None:
    """Write one file of row hashes (one per key range read) into the run's scratch folder."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"hashes-{uuid.uuid4().hex}.parquet")
    pq.write_table(pa.table({"hash": pa.array(hashes, pa.uint64())}), path)


def in_window(batch: pa.RecordBatch, cursor: str, start: Any) -> np.ndarray:
    """Return where the batch's cursor is at or after `start` (the next run's re-read window)."""
    if start is None:
        return np.zeros(batch.num_rows, bool)
    column = batch.column(cursor)
    scalar = pa.scalar(start)
    if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(scalar.type):
        scalar = scalar.cast(column.type) if column.type.tz or not scalar.type.tz else scalar
    try:
        found = pc.greater_equal(column, scalar)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        found = pc.greater_equal(column, pc.cast(scalar, column.type))
    return np.asarray(pc.fill_null(found, False))
