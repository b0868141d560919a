"""What the single-file sinks share: stage bundles as Arrow IPC, render one file at publish.

Every bundle is staged on disk as Arrow IPC stream files (bounded memory: nothing is gathered in
a list). Once every bundle has finished, one publish call knows the row count of each part
before reading any of them, so a document sink can refuse an input larger than its `max_rows`
without materialising it. The file is rendered under a temporary name beside the target and
renamed into place, so a failed or refused run leaves nothing (or the previous file) at `path`.
"""

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, ClassVar

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.batches import dumps, json_safe
from beam_etl.core.contract import ungated
from beam_etl.core.errors import ConnectorError
from beam_etl.io._files import (
    Part,
    StageAndPublish,
    check_file_target,
    discard_folder,
    replacing,
    staging_dir,
)
from beam_etl.io._ipcparts import IpcPartWriter, parts_schema, read_parts

#: Renders batches conforming to a schema into the file at the given (temporary) path.
Render = Callable[[str, pa.Schema, Iterator[pa.RecordBatch]], None]


def cell_text(value: Any) -> str:
    """Return how a document shows one value: empty for null, ISO 8601 for dates and times.

    Booleans are `true`/`false`, decimals keep their exact digits, binary is base64, and lists,
    structs and maps are compact JSON.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (str, int, float, Decimal)):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return dumps(json_safe(value))


def is_numeric(data_type: pa.DataType) -> bool:
    """Whether a column holds numbers (documents align them to the right)."""
    return (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or (pa.types.is_decimal(data_type))
    )


class _PublishDocument:
    """Picklable publish step: check the row limit, render to a temporary file, rename."""

    def __init__(
        self, path: str, folder: str, render: Render, *, sink: str, max_rows: int | None
    ) -> None:
        self.path = path
        self.folder = folder
        self.render = render
        self.sink = sink
        self.max_rows = max_rows

    def prepare(self, parts: list[Part]) -> None:
        """Fail the run (nothing published) when the file cannot hold the input or be written."""
        self._check_rows(parts)
        check_file_target(self.path)

    def __call__(self, parts: list[Part]) -> int:
        rows = self._check_rows(parts)
        try:
            with replacing(self.path) as temporary:
                schema = parts_schema(parts)
                self.render(temporary, schema, read_parts(parts, schema))
        except ConnectorError:
            raise
        except Exception as exc:  # a value the format cannot hold, a full disk ...
            raise ConnectorError(
                f"`{self.sink}` cannot write `{self.path}`: {type(exc).__name__}: {exc}"
            ) from exc
        self._discard_staging()
        return rows

    def _check_rows(self, parts: list[Part]) -> int:
        rows = sum(count for _, count in parts)
        if self.max_rows is not None and rows > self.max_rows:
            self._discard_staging()
            raise ConnectorError(
                f"`{self.sink}` holds at most {self.max_rows:,} rows (`max_rows`); the input "
                f"has {rows:,}: write Parquet or CSV instead (nothing was written to "
                f"`{self.path}`)"
            )
        return rows

    def _discard_staging(self) -> None:
        discard_folder(self.folder)


class WriteDocument(beam.PTransform):
    """Write all input batches to the one file at `path`, atomically, after every bundle.

    Subclasses set `path` and `max_rows` (None: no limit) and return their renderer from
    `renderer()`. Output: one element, the number of rows written.
    """

    path: str
    max_rows: int | None
    GATED: ClassVar[bool] = True  # takes `Gated(rows, gates)` (see `beam_etl.core.contract`)

    def renderer(self) -> Render:
        raise NotImplementedError

    def expand(self, batches):
        batches, gates = ungated(batches)
        self.staging = folder = staging_dir(self.path, uuid.uuid4().hex[:12])
        publish = _PublishDocument(
            self.path, folder, self.renderer(), sink=type(self).__name__, max_rows=self.max_rows
        )
        return batches | StageAndPublish(
            IpcPartWriter, folder, publish, step=self.label, gates=gates
        )


def check_max_rows(max_rows: int, ceiling: int | None = None) -> None:
    """Raise ValueError unless `max_rows` is a positive integer (and at most `ceiling`)."""
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows <= 0:
        raise ValueError(f"`max_rows` must be a positive integer, not `{max_rows}`")
    if ceiling is not None and max_rows > ceiling:
        raise ValueError(f"`max_rows` must be at most {ceiling:,}, not `{max_rows}`")
