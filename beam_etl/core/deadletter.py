"""The one dead-letter record shape, its reason codes, and the sink that writes it.

Every stage that rejects rows (parse, cast, check, schema, sink write) emits `DeadLetter`
records on a tagged output named `ERROR`. A dead letter is a row of its own (rejects are few),
so the dead-letter output is a PCollection of `DeadLetter`, not of Arrow batches.
"""

from typing import Any, Final, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import dumps_safe, origins, payloads

#: Name of the tagged dead-letter output of every composite that can reject rows.
ERROR: Final = "error"
#: Name of the main output of such composites.
OUTPUT: Final = "output"

# Stable reason codes: add new ones, never rename.
MALFORMED_CSV: Final = "malformed_csv"
INVALID_ENCODING: Final = "invalid_encoding"
CAST_FAILED: Final = "cast_failed"
FUNCTION_FAILED: Final = "function_failed"
DB_CONSTRAINT: Final = "db_constraint"
NULL_CURSOR: Final = "null_cursor"
RETRIES_EXHAUSTED: Final = "retries_exhausted"


class DeadLetter(NamedTuple):
    """A rejected row with why and where it was rejected.

    Attributes:
        step: label of the step that rejected the row.
        reason: stable reason code (`malformed_csv`, `cast_failed`, ...).
        message: a human explanation naming the column and value where there is one.
        source: file path or table name the row came from, if known.
        line: 1-based line in `source` where the row starts, if known.
        key: the row's key in `source` (for tables), if known.
        payload: the original row: raw text for unparseable input, else a JSON-safe dict.
        run_id: the run that rejected it; stamped by the sink when empty.
    """

    step: str
    reason: str
    message: str
    source: str | None = None
    line: int | None = None
    key: str | None = None
    payload: Any = None
    run_id: str = ""

    @property
    def origin(self) -> str:
        """Return `file:line` or `table:key`, or what is known of it."""
        where = self.source or "?"
        if self.line is not None:
            return f"{where}:{self.line}"
        if self.key is not None:
            return f"{where}:{self.key}"
        return where

    def to_json(self, run_id: str = "") -> str:
        """Return the record as one JSON line (without the newline)."""
        return dumps_safe(
            {
                "run_id": self.run_id or run_id,
                "step": self.step,
                "reason": self.reason,
                "message": self.message,
                "origin": self.origin,
                "source": self.source,
                "line": self.line,
                "key": self.key,
                "payload": self.payload,
            }
        )


def rejects_from_mask(
    batch: pa.RecordBatch, rejected: pa.Array, *, step: str, reason: str, messages: list[str]
) -> list[DeadLetter]:
    """Return one dead letter per True entry of `rejected`, with messages given in that order."""
    taken = batch.take(pc.indices_nonzero(rejected))
    return [
        DeadLetter(step, reason, message, source, line, None, payload)
        for message, source, line, payload in zip(messages, *origins(taken), payloads(taken))
    ]


def reject_all(batch: pa.RecordBatch, *, step: str, reason: str, message: str) -> list[DeadLetter]:
    """Return one dead letter per row of `batch`, all with the same reason and message."""
    return [
        DeadLetter(step, reason, message, source, line, None, payload)
        for source, line, payload in zip(*origins(batch), payloads(batch))
    ]
