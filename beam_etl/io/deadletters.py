"""The dead-letter sink: every rejected row of a run in one JSON Lines file, published with
the run's verdict (the record shape and its reason codes live in `beam_etl.core.deadletter`)."""

import json
from typing import ClassVar

import apache_beam as beam

from beam_etl.core.deadletter import DeadLetter
from beam_etl.core.publish import DEAD_LETTERS, new_run_id
from beam_etl.io._files import PublishSingleFile


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
        self.path = path
        self.run_id = run_id or new_run_id()

    def expand(self, letters):
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
