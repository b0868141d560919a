"""File helpers shared by the file connectors: matching, staging and publishing.

Sinks write each bundle to a part file in a staging folder beside the target, then one
publish step (after every bundle has finished) moves the parts into place with renames. A
failed run therefore never leaves a partial file where a reader would take it for complete,
and parts written by retried bundles are never published (only committed bundles' outputs
reach the publish step).
"""

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Final, Protocol

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_etl.core.deadletter import ERROR, OUTPUT
from beam_etl.core.errors import CheckFailedError, ConnectorError
from beam_etl.core.metrics import ALREADY_PUBLISHED, ROWS_DROPPED, ROWS_WRITTEN, step_counter
from beam_etl.core.publish import (
    DEAD_LETTERS,
    FILES,
    Pending,
    Published,
    discard_folder,
    fault_point,
    pending_folder,
    record,
    remove_if_empty,
    remove_tree,
    staged,
    veto,
)
from beam_etl.core.state import current_state

__all__ = ["DEAD_LETTERS", "discard_folder", "remove_if_empty", "remove_tree"]

SUCCESS_MARKER: Final = "_SUCCESS"
STAGING_DIR: Final = ".beam_etl-staging"
SORT_LIMIT: Final = 20_000

Part = tuple[str, int]  # (staged file path, rows in it)


def match_files(pattern: str | list[str]) -> list[tuple[str, int]]:
    """Return `(path, size)` of every file matching the glob pattern(s), sorted by path.

    Raises:
        ConnectorError: a pattern matches no file.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    found: dict[str, int] = {}
    for one in patterns:
        try:
            result = FileSystems.match([one])[0]
        except Exception as exc:  # Beam raises BeamIOError for unreadable folders
            raise ConnectorError(f"Cannot list files matching `{one}`: {exc}") from exc
        files = [m for m in result.metadata_list if not os.path.basename(m.path).startswith(".")]
        if not files:
            raise ConnectorError(f"No file matches `{one}`; check the path and the glob pattern")
        for meta in files:
            found[meta.path] = meta.size_in_bytes
    return sorted(found.items())


def new_files(step: str, files: list, incremental: bool | str) -> list:
    """Return the `files` (paths, or `(path, size)` pairs) an incremental source loads: those
    no earlier successful run loaded. All of them when `incremental` is false.

    A file is known by its path, size and modification time (`incremental: hash`: by the
    SHA-256 of its bytes). A known file that changed since it was loaded is not loaded again
    and not skipped in silence: the run reports it (`state reset --source` loads everything
    again). A file modified in the last second may still be being written: it is left for the
    next run. The files loaded become the source's state once the run has published.

    Raises:
        ValueError: `incremental` outside the launcher (there is no state to keep).
    """
    if not incremental:
        return files
    if incremental not in (True, "hash"):
        raise ValueError(f"`incremental` must be true, false or `hash`, not `{incremental}`")
    state = current_state()
    if state is None:
        raise ValueError(f"`incremental` on `{step}` needs the state of `python -m beam_etl.run`")
    known: dict[str, Any] = (state.get(step) or {}).get("files", {})
    loaded, changed, young, now = {}, [], [], time.time()
    chosen = []
    for item in files:
        path = item[0] if isinstance(item, tuple) else item
        try:
            stat = os.stat(path)
        except FileNotFoundError:  # deleted since it was listed: nothing to load
            continue
        if now - stat.st_mtime < 1.0:
            young.append(path)
            continue
        mark = _content_hash(path) if incremental == "hash" else [stat.st_size, stat.st_mtime_ns]
        if path not in known:
            chosen.append(item)
            loaded[path] = mark
        elif known[path] != mark:
            changed.append(path)
            loaded[path] = known[path]  # still the version that was loaded
        else:
            loaded[path] = mark
    if changed:
        state.warn(
            f"`{step}`: {len(changed)} file(s) changed since they were loaded and were not "
            f"loaded again: {', '.join(f'`{p}`' for p in changed[:5])}"
            + (" ..." if len(changed) > 5 else "")
            + f" (to load every file again: state reset --source {step})"
        )
    if young:
        state.warn(f"`{step}`: {len(young)} file(s) still being written, left for the next run")
    state.propose(step, {"files": loaded})
    return chosen


def _content_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def staging_dir(target: str, token: str) -> str:
    """Return the staging folder for `target`: hidden, beside it, so renames stay local."""
    parent = os.path.dirname(os.path.abspath(target))
    return staged(os.path.join(parent, STAGING_DIR, f"{os.path.basename(target)}-{token}"))


class BundleWriter:
    """Writes the elements of one bundle to part files; subclassed per format."""

    suffix = ""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.parts: list[Part] = []

    def new_path(self) -> str:
        os.makedirs(self.folder, exist_ok=True)
        return os.path.join(self.folder, f"part-{uuid.uuid4().hex}{self.suffix}")

    def write(self, element: Any) -> None:
        raise NotImplementedError

    def close(self) -> list[Part]:
        raise NotImplementedError

    def abort(self) -> None:
        """The bundle failed before `close`: release what the writer holds besides its files
        (a connection, a thread). Its parts are never published."""


class RollingWriter(BundleWriter):
    """A bundle writer with one part file open at a time (`_writer`, at `_path`, holding
    `_rows` rows); a subclass starts a new part after `_close_current()`."""

    _writer: Any
    _path: str
    _rows: int

    def _finish_part(self) -> None:
        """Write out what the open part still holds in memory, before it is closed."""

    def _close_current(self) -> None:
        if self._writer is not None:
            self._finish_part()
            self._writer.close()
            self.parts.append((self._path, self._rows))
            self._writer = None

    def close(self) -> list[Part]:
        self._close_current()
        return self.parts


class StageFn(beam.DoFn):
    """Writes each bundle with a fresh `make_writer(folder)`; emits the parts it wrote."""

    def __init__(self, make_writer: Callable[[str], BundleWriter], folder: str) -> None:
        self._make_writer = make_writer
        self._folder = folder
        self._writer: BundleWriter | None = None

    def start_bundle(self) -> None:
        self._abort()

    def process(self, element):
        if self._writer is None:
            self._writer = self._make_writer(self._folder)
        self._writer.write(element)
        return ()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            for part in writer.close():
                yield WindowedValue(part, MIN_TIMESTAMP, (GlobalWindow(),))

    def teardown(self) -> None:
        self._abort()

    def _abort(self) -> None:
        """Release the writer a failed bundle left (it never reached `finish_bundle`)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.abort()


class Publisher(Protocol):
    """What `StageAndPublish` calls with the staged parts, once, after every bundle: one
    protocol for every publishing shape (a folder of parts, a single file, a whole document, a
    database table).

    - `__call__(parts)` publishes now and returns the rows written (an `int`) or a
      `Published` (rows written, dropped, refused as dead letters, already published).
    - optional `prepare(parts)`: under deferred publishing, check before the verdict that the
      target can be written (a target that cannot fails the run, not the publish).
    - optional `trial(parts) -> Published | None`: under deferred publishing, try the load and
      roll it back (databases): its refused rows become the run's dead letters, and the
      launcher's publish after the verdict must find the same (`Pending.expect`); None: no
      trial was possible without changing the target. A publisher with a trial also has its
      staging folder removed after an immediate publish.
    """

    def __call__(self, parts: list[Part]) -> "int | Published": ...


class _PublishFn(beam.DoFn):
    """Publishes the staged parts at once, or (under `deferred_publishing`) prepares or tries
    them and records a pending publish for the launcher (see `beam_etl.core.publish`)."""

    def __init__(
        self,
        publish: Publisher,
        step: str,
        *,
        folder: str,
        pending: str | None,
        order: int,
    ) -> None:
        self._publish = publish
        self._step = step
        self._folder = folder
        self._pending = pending
        self._order = order

    def process(self, parts: list[Part], gates=()):
        parts = sorted(parts)
        failed = gate_failures(gates)
        trial = getattr(self._publish, "trial", None)
        expect = None
        if self._pending is None:
            check_gates(gates, self._step)
            result = _as_published(self._publish(parts))
            if trial is not None:
                discard_folder(self._folder)
        elif failed:  # the launcher's verdict reads the veto; the run keeps its counts
            veto(self._pending, self._step, failed)
            result = Published(sum(rows for _, rows in parts))
        else:
            tried = trial(parts) if trial is not None else None
            if tried is not None:
                result = tried
                expect = result._replace(rejects=[r._replace(payload=None) for r in result.rejects])
            else:
                prepare = getattr(self._publish, "prepare", None)
                if prepare is not None:
                    prepare(parts)  # a target that cannot be written fails the run, not publish
                result = Published(sum(rows for _, rows in parts))
            pending = Pending(self._step, self._order, self._publish, parts, self._folder, expect)
            record(self._pending, pending)
            fault_point("after_prepare")
        if result.already:
            step_counter(self._step, ALREADY_PUBLISHED).inc()
        step_counter(self._step, ROWS_WRITTEN).inc(result.written)
        if trial is not None:
            step_counter(self._step, ROWS_DROPPED).inc(result.dropped)
        for letter in result.rejects:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        yield result.written


def _as_published(result: "int | Published") -> Published:
    return result if isinstance(result, Published) else Published(result)


def gate_failures(gates) -> list[str]:
    """Return the messages of the gates that failed: they say `passed: False`, or (a quality
    check result) `outcome: failed`."""
    return [
        str(getattr(gate, "message", gate))
        for gate in gates
        if getattr(gate, "passed", True) is False or getattr(gate, "outcome", "") == "failed"
    ]


def check_gates(gates, step: str) -> None:
    """Raise `CheckFailedError` if any gate failed. Every sink that publishes at once calls
    this before it publishes anything (deferred sinks record a veto instead)."""
    failed = gate_failures(gates)
    if failed:
        raise CheckFailedError(f"Nothing published by `{step}`: {'; '.join(failed)}")


class StageAndPublish(beam.PTransform):
    """Stage every bundle with `make_writer`, then call `publish(parts)` once, at the end:
    the one publishing mechanism of every sink (see `Publisher`).

    `gates`: PCollections of check results (objects with `passed` and `message`); when
    given, publishing waits for all of them and publishes nothing if any failed.
    Built inside `deferred_publishing(folder)` (the CLI does), the sink only prepares (or
    tries) and records a pending publish; the launcher publishes after the run's verdict.
    `order` is the publishing order of that record (`DATABASE`, `FILES`, `DEAD_LETTERS`), None
    to always publish at once.
    Input: a PCollection, or a tuple of them (each staged where it is produced).
    Output: a PCollection with one element, the number of rows published; with `errors`,
    `(written, error)`: also the `DeadLetter`s of rows the target refused.
    """

    def __init__(
        self,
        make_writer: Callable[[str], BundleWriter],
        folder: str,
        publish: Publisher,
        *,
        step: str,
        gates: tuple = (),
        order: int | None = FILES,
        errors: bool = False,
    ) -> None:
        super().__init__()
        self._make_writer = make_writer
        self._folder = folder
        self._publish = publish
        self._step = step
        self._gates = tuple(gates)
        self._order = order
        self._errors = errors

    def expand(self, pcoll):
        # Several inputs are staged each where it is produced, then only the parts meet: a
        # Flatten of the elements themselves would make the runner materialize every one.
        inputs = list(pcoll) if isinstance(pcoll, (tuple, list)) else [pcoll]
        stage = StageFn(self._make_writer, self._folder)
        if len(inputs) == 1:
            staged = inputs[0] | "Stage" >> beam.ParDo(stage)
        else:
            staged = [p | f"Stage{i}" >> beam.ParDo(stage) for i, p in enumerate(inputs)]
            staged = tuple(staged) | "MergeParts" >> beam.Flatten()
        parts = staged | "AwaitBundles" >> beam.combiners.ToList()
        publish_fn = _PublishFn(
            self._publish,
            self._step,
            folder=self._folder,
            pending=pending_folder() if self._order is not None else None,
            order=self._order or 0,
        )
        publish = beam.ParDo(publish_fn)
        if self._gates:
            gates = self._gates | "MergeGates" >> beam.Flatten()
            publish = beam.ParDo(publish_fn, gates=beam.pvalue.AsList(gates))
        out = parts | "Publish" >> publish.with_outputs(ERROR, main=OUTPUT)
        return (out[OUTPUT], out[ERROR]) if self._errors else out[OUTPUT]


class _TextWriter(BundleWriter):
    suffix = ".txt"

    def __init__(self, folder: str, render: Callable[[Any], str] | None = None) -> None:
        super().__init__(folder)
        self._path = self.new_path()
        self._file = open(self._path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._render = render
        self._rows = 0

    def write(self, element: Any) -> None:
        self._file.write(self._render(element) if self._render else element)
        self._file.write("\n")
        self._rows += 1

    def close(self) -> list[Part]:
        self._file.close()
        return [(self._path, self._rows)]


@contextlib.contextmanager
def replacing(target: str) -> Iterator[str]:
    """Yield a temporary path beside `target`; rename it to `target` when the block succeeds.

    On failure the temporary file is removed and `target` keeps what it held before.
    """
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    temporary = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


_COPY_BYTES: Final = 4 << 20


def copy_parts(parts: list[Part], out: BinaryIO) -> None:
    """Append the bytes of every staged part to `out`, in order: in the kernel
    (`copy_file_range`) when `out` is a plain file, else through Python."""
    for path, _ in parts:
        with open(path, "rb") as part:
            done = _kernel_copy(part, out) if isinstance(out, io.BufferedWriter) else 0
            part.seek(done)
            shutil.copyfileobj(part, out, _COPY_BYTES)


def _kernel_copy(part: BinaryIO, out: io.BufferedWriter) -> int:
    """Copy what `copy_file_range` can of `part` to the end of `out`; return the bytes copied
    (what is left goes through Python: not every pair of files allows it)."""
    out.flush()  # what Python holds for `out` goes before what the kernel appends
    size, done = os.fstat(part.fileno()).st_size, 0
    with contextlib.suppress(OSError):
        while done < size:
            sent = os.copy_file_range(part.fileno(), out.fileno(), size - done)
            if not sent:
                break
            done += sent
    out.seek(0, os.SEEK_END)
    return done


def publish_concatenated(
    target: str, folder: str, parts: list[Part], sort_key: Callable[[str], Any] | None = None
) -> int:
    """Concatenate the staged text parts into `target` atomically; return the lines written.

    With `sort_key`, lines are sorted in memory, up to `SORT_LIMIT` (20,000) lines (small
    outputs such as dead letters); larger outputs are concatenated unsorted.
    """
    rows = sum(count for _, count in parts)
    with replacing(target) as temporary, open(temporary, "wb") as out:
        if sort_key is None or rows > SORT_LIMIT:
            copy_parts(parts, out)
        else:
            lines: list[str] = []
            for path, _ in parts:
                with open(path, encoding="utf-8") as part:
                    lines.extend(part.read().splitlines())
            out.write("".join(f"{line}\n" for line in sorted(lines, key=sort_key)).encode())
    discard_folder(folder)
    return rows


class _PublishConcatenated:
    """Picklable publish callable for `PublishSingleFile`."""

    def __init__(self, target: str, folder: str, sort_key: Callable[[str], Any] | None) -> None:
        self.target = target
        self.folder = folder
        self.sort_key = sort_key

    def __call__(self, parts: list[Part]) -> int:
        return publish_concatenated(self.target, self.folder, parts, self.sort_key)

    def prepare(self, parts: list[Part]) -> None:
        check_file_target(self.target)


class PublishSingleFile(beam.PTransform):
    """Write a PCollection of text lines to one file at `path`, atomically, at the end.

    With `render`, elements are turned into lines by it as they are written.
    With `sort_key`, the lines are sorted in memory first (only for small outputs).
    """

    def __init__(
        self,
        path: str,
        *,
        label: str,
        sort_key: Callable[[str], Any] | None = None,
        render: Callable[[Any], str] | None = None,
        order: int | None = FILES,
    ) -> None:
        super().__init__()
        self._path = path
        self._step = label
        self._sort_key = sort_key
        self._render = render
        self._order = order

    def expand(self, lines):
        self.staging = folder = staging_dir(self._path, uuid.uuid4().hex[:12])
        return lines | StageAndPublish(
            functools.partial(_TextWriter, render=self._render),
            folder,
            _PublishConcatenated(self._path, folder, self._sort_key),
            step=self._step,
            order=self._order,
        )


def publish_folder(target: str, folder: str, parts: list[Part], suffix: str, run_id: str) -> int:
    """Move staged parts into the folder `target`, replacing what a previous run wrote there.

    Parts keep the subfolder they were staged in (Hive-style partitions).
    The new folder is assembled beside the target and swapped in with renames, so readers see
    either the old complete output or the new one. A `_SUCCESS` marker records the run.

    Raises:
        ConnectorError: `target` exists and was not written by beam_etl (it is never deleted).
    """
    check_folder_target(target)
    assembled = os.path.join(folder, "assembled")
    os.makedirs(assembled)
    for index, (path, _) in enumerate(parts):
        # A part staged in a subfolder (`year=2013/`) keeps it: partitioned output.
        destination = os.path.join(assembled, os.path.relpath(os.path.dirname(path), folder))
        os.makedirs(destination, exist_ok=True)
        os.replace(path, os.path.join(destination, f"part-{index:05d}{suffix}"))
    rows = sum(count for _, count in parts)
    marker = {"run_id": run_id, "rows": rows, "files": len(parts)}
    with open(os.path.join(assembled, SUCCESS_MARKER), "w", encoding="utf-8") as out:
        json.dump(marker, out)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if os.path.exists(target):
        old = os.path.join(folder, "previous")
        os.replace(target, old)
    os.replace(assembled, target)
    discard_folder(folder)
    return rows


def check_folder_target(target: str) -> None:
    """Raise `ConnectorError` unless `target` can be replaced by a folder of beam_etl's.

    Called when a sink prepares (so that a run whose target cannot be written publishes
    nothing) and again when it publishes.
    """
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ConnectorError(f"Output path `{target}` exists and is not a folder")
        if os.listdir(target) and not os.path.exists(os.path.join(target, SUCCESS_MARKER)):
            raise ConnectorError(
                f"Refusing to replace `{target}`: it is not empty and has no `{SUCCESS_MARKER}` "
                "marker from an earlier beam_etl run; choose another path or empty it"
            )
    _check_parent(target)


def check_file_target(target: str) -> None:
    """Raise `ConnectorError` unless a file can be written at `target` (not a folder, in a
    folder that exists or can be made, writable)."""
    if "://" in target:
        return  # remote file systems say so when written
    if os.path.isdir(target):
        raise ConnectorError(f"Output path `{target}` is a folder; a file is written there")
    _check_parent(target)


def _check_parent(target: str) -> None:
    if "://" in target:
        return
    parent = os.path.dirname(os.path.abspath(target))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConnectorError(f"Cannot write `{target}`: `{existing}` is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConnectorError(f"Cannot write `{target}`: no permission to write in `{existing}`")


def discard_staging(transforms) -> None:
    """Remove the staging folders of the given sinks after a failed run (never published):
    for pipelines built without the command line, which removes what `collecting_staging`
    recorded."""
    for transform in transforms:
        folder = getattr(transform, "staging", None)
        if folder:
            discard_folder(folder)


def arrow_schema_key(schema: pa.Schema) -> str:
    """Return a string identifying `schema` (names and types), for grouping batches."""
    return ",".join(f"{f.name}:{f.type}" for f in schema)
