"""The columns every change event carries, whoever makes it: a log-based CDC source
(`beam_etl.io._changes` adds the table, transaction and sequence after them) or
`DiffSnapshots`, which compares snapshots."""

from typing import Final

import pyarrow as pa

EVENT_FIELDS: Final = (
    pa.field("op", pa.string()),
    pa.field("deleted", pa.bool_()),
    pa.field("source_ts", pa.timestamp("us", tz="UTC")),
    pa.field("source_name", pa.string()),
    pa.field("source_position", pa.string()),
)
EVENT_COLUMNS: Final = tuple(f.name for f in EVENT_FIELDS)
