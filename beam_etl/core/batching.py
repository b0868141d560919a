"""Batch sizes chosen by bytes, not rows.

A reader that builds batches row by row (a database cursor, Avro records, Excel rows) or slices
them from a file (Parquet) asks a `BatchSizer` how many rows the next batch should hold. The
sizer aims at `DEFAULT_BATCH_BYTES` of Arrow memory a batch: it starts from the schema's
estimated row width (a first batch of `PROBE_ROWS` measures rows with text), learns the real
width from every batch it is shown, and aims lower when the machine (or the process's cgroup)
is short of memory (`core.resources.available_memory`), so that a table of 2,000 wide columns
and one of 3 narrow ones both move in batches of a few MiB. Rows built as Python objects
first (Avro records, rows a database driver returns) are taken at most `PYTHON_ROWS` at a
time: each costs far more memory as an object than in Arrow. A size given by the user
(`batch_rows`) is kept as given.

The chosen sizes are logged at DEBUG (`--debug`): the first choice, and each change by half or
more.
"""

import logging
import os
import time
from typing import Final

import pyarrow as pa

from beam_etl.core.resources import available_memory

_LOG = logging.getLogger(__name__)

#: The Arrow memory a batch aims at.
DEFAULT_BATCH_BYTES: Final = 8 << 20
MIN_ROWS: Final = 64
MAX_ROWS: Final = 1 << 20
#: The first batch of rows whose width is not known yet.
PROBE_ROWS: Final = 256
#: At most this many rows built as Python objects at once (records, driver rows).
PYTHON_ROWS: Final = 50_000
#: The width assumed for a column of variable width (text, binary, nested) before any is seen.
_VARIABLE_WIDTH: Final = 32
#: Below this much available memory per batch target, batches shrink (at most 8 times).
_ROOM_PER_TARGET: Final = 64
_CHECK_EVERY_S: Final = 1.0


def check_batch_rows(batch_rows: object) -> None:
    """Refuse a `batch_rows` that is neither none (sized by bytes) nor a positive integer."""
    if batch_rows is not None and (
        not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1
    ):
        raise ValueError(
            f"`batch_rows` must be a positive integer (or none: sized by bytes), not `{batch_rows}`"
        )


def estimated_row_bytes(schema: pa.Schema) -> float:
    """Bytes a row of `schema` takes in Arrow, guessed from its types (one validity bit and the
    value's width; `_VARIABLE_WIDTH` for text, binary and nested values)."""
    width = 0.0
    for field in schema:
        bits = _bit_width(field.type)
        width += ((_VARIABLE_WIDTH + 4) if bits is None else bits / 8) + 1 / 8
    return max(width, 1.0)


def _fixed_width(schema: pa.Schema) -> bool:
    return all(_bit_width(field.type) is not None for field in schema)


def _bit_width(data_type: pa.DataType) -> int | None:
    try:
        return data_type.bit_width
    except ValueError:  # variable width
        return None


class BatchSizer:
    """How many rows the next batch of one reader should hold (see the module docstring).

    rows: a fixed size (the user's `batch_rows`): kept as given, nothing is learned.
    schema: the rows' schema, if known (the first guess of their width).
    max_rows: at most this many rows a batch (`PYTHON_ROWS` for rows built as objects).
    """

    def __init__(
        self,
        step: str,
        *,
        rows: int | None = None,
        schema: pa.Schema | None = None,
        max_rows: int = MAX_ROWS,
        target_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> None:
        self._step = step
        self._fixed = rows
        self._target = target_bytes
        self._max = max_rows
        self._width = estimated_row_bytes(schema) if schema is not None else None
        # Until a batch is seen, a width guessed for text may be far too small: a first batch
        # of at most `PROBE_ROWS` measures it.
        self._known = schema is not None and _fixed_width(schema)
        self._scale = 1.0
        self._checked = 0.0
        self._reported = 0

    @property
    def fixed(self) -> bool:
        return self._fixed is not None

    @property
    def measured(self) -> bool:
        """Whether the width comes from a batch seen (or from a schema of fixed widths)."""
        return self._known

    def rows(self) -> int:
        """The number of rows for the next batch."""
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if now - self._checked >= _CHECK_EVERY_S:
            self._checked = now
            self._scale = pressure_scale(self._target, available_memory())
        width = self._width or 1024.0
        rows = int(min(max(self._target * self._scale / width, MIN_ROWS), self._max))
        if not self._known:
            return min(rows, PROBE_ROWS)
        if not self._reported or not self._reported / 2 < rows < self._reported * 2:
            _LOG.debug(
                "%s: batches of %d rows (about %.0f bytes a row, %.1f MiB a batch%s) in process %d",
                self._step,
                rows,
                width,
                rows * width / (1 << 20),
                "" if self._scale == 1 else f", lowered {1 / self._scale:.0f}x: memory is short",
                os.getpid(),
            )
            self._reported = rows
        return rows

    def observe(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Learn the row width from a batch just built."""
        if self._fixed is not None or not batch.num_rows:
            return
        width = max(batch.nbytes / batch.num_rows, 1.0)
        self._known = True
        self._width = width if self._width is None else (self._width + width) / 2


def pressure_scale(target: int, room: int | None) -> float:
    """How much of the target a batch may take, with `room` bytes of memory available (None:
    unknown): 1 when there is room for `_ROOM_PER_TARGET` batches, less below that, down
    to 1/8."""
    if room is None:
        return 1.0
    return min(max(room / (target * _ROOM_PER_TARGET), 1 / 8), 1.0)


def log_text_blocks(step: str, block_bytes: int, batch: pa.RecordBatch) -> None:
    """Log at DEBUG the batches a text reader (CSV, JSON) makes of its blocks: their size is
    set by `block_size_mb` of text, not by this module."""
    _LOG.debug(
        "%s: blocks of %.1f MiB of text make batches of about %d rows (%.1f MiB) in process %d",
        step,
        block_bytes / (1 << 20),
        batch.num_rows,
        batch.nbytes / (1 << 20),
        os.getpid(),
    )
