"""The Beam side of checkpoints: write a step's outputs with a marker, read them back.

`Materialise` writes every output of a step (Arrow batches as Arrow IPC stream files, any other
element, such as dead letters, as pickled records), then writes the step's completion marker
once all parts exist, then reads the parts back: what follows the step reads the checkpoint,
not the step's in-memory output. So a step's checkpoint is complete before anything after it
runs (the marker is a stage boundary), and a fresh run and a resumed one feed the rest of the
pipeline the same way. `Restore` reads a complete checkpoint in place of the step.

Rows are kept with their hidden origin columns, so later dead letters still name the file and
line. Bounded; the order of rows across parts is not kept (as between any two Beam stages).
"""

import functools
import os
import pickle
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_etl.checkpoints.store import MARKER, CheckpointError, write_json

BATCHES: Final = "batches"
RECORDS: Final = "records"
# A part: (output name, kind, path relative to the step folder, rows or records in it).
Part = tuple[str, str, str, int]


class _WritePartsFn(beam.DoFn):
    """Writes a bundle's elements of one output as parts; emits each part when it closes."""

    def __init__(self, folder: str, output: str) -> None:
        self._folder = folder
        self._output = output

    def setup(self) -> None:
        os.makedirs(os.path.join(self._folder, self._output), exist_ok=True)

    def start_bundle(self) -> None:
        self._parts: list[Part] = []
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None
        self._records: Any = None
        self._counts = {BATCHES: 0, RECORDS: 0}
        self._paths = {BATCHES: "", RECORDS: ""}

    def _new_path(self, kind: str) -> str:
        suffix = ".arrows" if kind == BATCHES else ".pickle"
        relative = os.path.join(self._output, uuid.uuid4().hex + suffix)
        self._paths[kind], self._counts[kind] = relative, 0
        return os.path.join(self._folder, relative)

    def process(self, element: Any) -> None:
        if isinstance(element, pa.RecordBatch):
            self._write_batch(element)
        else:
            if self._records is None:
                self._records = open(self._new_path(RECORDS), "wb")  # noqa: SIM115
            pickle.dump(element, self._records, protocol=pickle.HIGHEST_PROTOCOL)
            self._counts[RECORDS] += 1

    def _write_batch(self, element: pa.RecordBatch) -> None:
        if element.num_rows:
            if self._writer is not None and not element.schema.equals(self._schema):
                self._close_batches()
            if self._writer is None:
                self._schema = element.schema
                self._writer = pa.ipc.new_stream(self._new_path(BATCHES), element.schema)
            self._writer.write_batch(element)
            self._counts[BATCHES] += element.num_rows

    def _close_batches(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._parts.append((self._output, BATCHES, self._paths[BATCHES], self._counts[BATCHES]))
            self._writer = None

    def finish_bundle(self) -> Iterator[WindowedValue]:
        self._close_batches()
        if self._records is not None:
            self._records.close()
            self._parts.append((self._output, RECORDS, self._paths[RECORDS], self._counts[RECORDS]))
            self._records = None
        for part in self._parts:
            yield WindowedValue(part, MIN_TIMESTAMP, (GlobalWindow(),))
        self._parts = []


def _write_marker(
    parts: list[Part], folder: str, step: str, fingerprint: str, outputs: list[str]
) -> dict[str, Any]:
    """Write the step's marker listing exactly `parts`; return it."""
    listed: dict[str, Any] = {name: {"parts": [], "rows": 0} for name in outputs}
    for output, kind, path, rows in sorted(parts):
        listed[output]["parts"].append([kind, path, rows])
        listed[output]["rows"] += rows
    marker: dict[str, Any] = {"step": step, "fingerprint": fingerprint, "outputs": listed}
    marker["written_at"] = time.time()
    write_json(os.path.join(folder, MARKER), marker)
    return marker


def _parts_of(output: str, marker: dict[str, Any]) -> list[Part]:
    return [(output, kind, path, rows) for kind, path, rows in marker["outputs"][output]["parts"]]


class _ReadPartFn(beam.DoFn):
    """Reads one part back; a part missing or holding other than its recorded rows fails."""

    def __init__(self, folder: str, step: str) -> None:
        self._folder = folder
        self._step = step

    def process(self, part: Part) -> Iterator[Any]:
        _, kind, relative, expected = part
        path = os.path.join(self._folder, relative)
        found = 0
        try:
            if kind == BATCHES:
                with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
                    for batch in reader:
                        found += batch.num_rows
                        yield batch
            else:
                with open(path, "rb") as source:
                    while True:
                        try:
                            record = pickle.load(source)
                        except EOFError:
                            break
                        found += 1
                        yield record
        except (OSError, pa.ArrowInvalid, pickle.UnpicklingError) as exc:
            raise CheckpointError(
                f"Checkpoint part `{path}` of step `{self._step}` cannot be read ({exc}); "
                "remove the run's checkpoints (`checkpoints clean`) and run again"
            ) from None
        if found != expected:
            raise CheckpointError(
                f"Checkpoint part `{path}` of step `{self._step}` holds {found} rows, its "
                f"marker says {expected}; remove the run's checkpoints and run again"
            )


class Materialise(beam.PTransform):
    """Write PCollections to a step's checkpoint folder, then read some of them back.

    Input: `{key: PCollection}` (keys `node.output`: the step's own outputs, and outputs of
    steps before it that other branches read, such as their dead letters); returns the keys
    of `read_back`, read from the checkpoint once its marker is written.
    """

    def __init__(self, folder: str, step: str, fingerprint: str, read_back: list[str]) -> None:
        super().__init__()
        self._folder = folder
        self._step = step
        self._fingerprint = fingerprint
        self._read_back = read_back

    def expand(self, outputs: dict[str, Any]) -> dict[str, Any]:
        names = sorted(outputs)
        parts = [
            outputs[name] | f"Write[{name}]" >> beam.ParDo(_WritePartsFn(self._folder, name))
            for name in names
        ]
        marker = (
            tuple(parts)
            | "Parts" >> beam.Flatten()
            | "Gather" >> beam.combiners.ToList()
            | "Mark"
            >> beam.Map(
                _write_marker,
                folder=self._folder,
                step=self._step,
                fingerprint=self._fingerprint,
                outputs=names,
            )
        )
        return {
            name: marker
            | f"List[{name}]" >> beam.FlatMap(functools.partial(_parts_of, name))
            | f"Spread[{name}]" >> beam.Reshuffle()
            | f"Read[{name}]" >> beam.ParDo(_ReadPartFn(self._folder, self._step))
            for name in self._read_back
        }


class Restore(beam.PTransform):
    """Read a complete checkpoint (described by its `marker`) in place of its step.

    Returns `{key: PCollection}` for the marker's keys (`node.output`) named in `keys`.
    """

    def __init__(self, folder: str, step: str, marker: dict[str, Any], keys: list[str]) -> None:
        super().__init__()
        self._folder = folder
        self._step = step
        self._marker = marker
        self._keys = keys

    def expand(self, begin: Any) -> dict[str, Any]:
        return {
            name: begin
            | f"List[{name}]" >> beam.Create(_parts_of(name, self._marker))
            | f"Spread[{name}]" >> beam.Reshuffle()
            | f"Read[{name}]" >> beam.ParDo(_ReadPartFn(self._folder, self._step))
            for name in self._keys
        }
