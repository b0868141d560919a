"""The one dead-letter record shape, its reason codes, and the sink that writes it.

Every stage that rejects rows (parse, cast, check, schema, sink write) emits `DeadLetter`
records on a tagged output named `ERROR`. A dead letter is a row of its own (rejects are few),
so the dead-letter output is a PCollection of `DeadLetter`, not of Arrow batches.
"""

import json
from typing import Any, ClassVar, Final, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batches import dumps_safe, origins, payloads

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


class WriteToDeadLetters(beam.PTransform):
    """Write dead letters to one JSON Lines file, published only when the branch succeeds.

    The file is written under a temporary name and renamed into place once every bundle has
    finished, so a failed run never leaves a partial file at `path`. A re-run replaces the file.
    Input: a PCollection of `DeadLetter`, or a tuple of them (`(a.error, b.error) | ...`):
    prefer the tuple to a `beam.Flatten()`, which makes local runners copy every letter.
    """

    #: The spec builder hands several inputs over as a tuple, not flattened.
    TUPLE_INPUT: ClassVar[bool] = True

    def __init__(self, path: str, *, run_id: str | None = None) -> None:
        """Args:
        path: the JSON Lines file to write (parent directories are created).
        run_id: stamped into every record; a fresh id when not given.
        """
        super().__init__()
        from beam_etl.io._files import new_run_id

        self.path = path
        self.run_id = run_id or new_run_id()

    def expand(self, letters):
        from beam_etl.io._files import DEAD_LETTERS, PublishSingleFile

        publish = PublishSingleFile(
            self.path,
            label=self.label,
            sort_key=_by_origin,
            render=_JsonLine(self.run_id),
            order=DEAD_LETTERS,
        )
        written = letters | "Publish" >> publish
        self.staging = publish.staging
        return written


class _JsonLine:
    """Renders a dead letter as its JSON line, stamped with the run id (picklable)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def __call__(self, letter: DeadLetter) -> str:
        return letter.to_json(self.run_id)


def _by_origin(line: str) -> tuple:
    """Sort key of a dead-letter JSON line: source, line, step, then the whole record."""
    record = json.loads(line)
    return (record["source"] or "", record["line"] or 0, record["step"], line)
