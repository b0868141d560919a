"""The run-level publish protocol: sinks prepare during the run, all publish after the verdict.

Without it each sink would commit as soon as its own input is complete, so a run that fails
later (a count that does not add up, a quality gate, another sink that cannot stage) would
already have changed a database. With it:

1. **Prepare** (inside the pipeline, once per sink, after its last bundle): file sinks check
   that their target can be written (a folder where a file is expected, a row limit ...);
   database sinks run their whole load in a transaction that is rolled back, which tells
   exactly which rows the database refuses (they leave as dead letters during the run) and how
   many rows will be written. The sink then records a *pending publish* (its publish callable
   and its staged parts) under the run's folder and counts its rows as written.
2. **Verdict** (the launcher, after the pipeline finished): the run failed, a conservation
   check failed, or a quality gate failed -> every pending publish is discarded with its
   staged parts: nothing was published.
3. **Publish** (the launcher): databases first (most likely to fail), then files, then dead
   letters; each database in one transaction with its ledger row. A database that now refuses a
   row it accepted when prepared (someone changed the table meanwhile) publishes nothing and
   fails the run, naming what was published before it. A re-run with the same run id publishes
   the rest: ledgers make re-publishing a database a no-op; file targets are replaced whole.

A pipeline built outside `deferred_publishing` (a user's own `beam.Pipeline`) publishes each
sink inside the pipeline as soon as its gates pass: there is no launcher to wait for.
"""

import contextlib
import contextvars
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from apache_beam.internal import pickler
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.config import first_line
from beam_etl.core.errors import ConnectorError

#: Order in which pending publishes run: databases, then data files, then dead letters.
DATABASE: Final = 0
FILES: Final = 1
DEAD_LETTERS: Final = 2
PENDING_SUFFIX: Final = ".pending"
VETO_SUFFIX: Final = ".veto"

_DEFERRED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "beam_etl_deferred_publishing", default=None
)
_STAGING: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "beam_etl_staging_folders", default=None
)


def new_run_id() -> str:
    """Return a fresh run id: UTC time plus a random suffix, sortable and unique."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


@contextlib.contextmanager
def deferred_publishing(folder: str) -> Iterator[None]:
    """Make the sinks built inside the block record pending publishes in `folder`."""
    token = _DEFERRED.set(folder)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


@contextlib.contextmanager
def collecting_staging() -> Iterator[list[Any]]:
    """Collect, in the list it yields, every staging folder the transforms built inside the
    block will use (`staged`), and every staging kept elsewhere (`staged_elsewhere`): the run
    records them before it starts and removes them when it ends, whatever the outcome, or the
    next run does if this one is killed."""
    folders: list[Any] = []
    token = _STAGING.set(folders)
    try:
        yield folders
    finally:
        _STAGING.reset(token)


def staged(folder: str) -> str:
    """Return `folder`, a staging or spill folder a transform being built will use, after
    recording it for the run that builds it (see `collecting_staging`)."""
    folders = _STAGING.get()
    if folders is not None and folder not in folders:
        folders.append(folder)
    return folder


def staged_elsewhere(remover: Any) -> Any:
    """Return `remover` after recording it for the run that builds it (see
    `collecting_staging`): a picklable object whose `remove()` removes staging a transform keeps
    outside the file system (a database sink's staging table), whether or not it exists."""
    found = _STAGING.get()
    if found is not None:
        found.append(remover)
    return remover


def collects_staging() -> bool:
    """Whether staging made now is recorded for a run that removes it (`collecting_staging`)."""
    return _STAGING.get() is not None


def pending_folder() -> str | None:
    """Return the folder for pending publishes of sinks being built now, None to publish at once."""
    return _DEFERRED.get()


class Published(NamedTuple):
    """What a publish did: rows written, rows dropped on purpose, rows the target refused
    (`DeadLetter`s); `already`: the target's ledger says this run id was published before, so
    nothing changed. A publisher may return it instead of a row count."""

    written: int
    dropped: int = 0
    rejects: list = []
    already: bool = False


@dataclass
class Pending:
    """A prepared publish: what to call with which staged parts, and what preparing found."""

    step: str
    order: int
    publish: Any  # publish(parts) -> rows, or publish(parts, expect=...) for databases
    parts: list[tuple[str, int]]
    staging: str | None = None  # the folder holding the parts, removed when discarded
    expect: Any = None  # what the database's trial load found (a `Published`), if any

    def run(self) -> Any:
        if self.expect is None:
            return self.publish(self.parts)
        return self.publish(self.parts, expect=self.expect)


def record(folder: str, pending: Pending) -> None:
    """Write `pending` to `folder` atomically; a retried bundle replaces its own record."""
    final = FileSystems.join(folder, f"{pending.order}-{pending.step}{PENDING_SUFFIX}")
    temporary = f"{final}.{os.getpid()}.tmp"
    with FileSystems.create(temporary) as out:
        out.write(pickler.dumps(pending))
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([temporary], [final])


def veto(folder: str, step: str, reasons: list[str]) -> None:
    """Record that `step` must not publish (a quality gate failed): the verdict fails the run."""
    path = FileSystems.join(folder, f"{step}{VETO_SUFFIX}")
    with FileSystems.create(path) as out:
        out.write("\n".join(reasons).encode("utf-8"))


def vetoes(folder: str) -> dict[str, list[str]]:
    """Return the reasons recorded by `veto`, by step."""
    if not FileSystems.exists(folder):
        return {}
    found = FileSystems.match([FileSystems.join(folder, f"*{VETO_SUFFIX}")])[0].metadata_list
    reasons = {}
    for meta in found:
        with FileSystems.open(meta.path) as source:
            step = os.path.basename(meta.path).removesuffix(VETO_SUFFIX)
            reasons[step] = source.read().decode("utf-8").splitlines()
    return reasons


def pending_publishes(folder: str) -> list[Pending]:
    """Return the pending publishes recorded in `folder`, in publishing order."""
    if not FileSystems.exists(folder):
        return []
    found = FileSystems.match([FileSystems.join(folder, f"*{PENDING_SUFFIX}")])[0].metadata_list
    pendings = []
    for meta in found:
        with FileSystems.open(meta.path) as source:
            pendings.append(pickler.loads(source.read()))
    return sorted(pendings, key=lambda p: (p.order, p.step))


@dataclass
class PublishOutcome:
    """What publishing did, sink by sink."""

    published: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already published by this run id
    results: dict[str, Any] = field(default_factory=dict)


def publish_all(folder: str, last: str | None = None) -> PublishOutcome:
    """Publish every pending publish recorded in `folder`, in order (the step `last`, which
    commits the run's state with its load, after every other).

    Raises:
        ConnectorError: a sink failed to publish; the message names it, what was published
            before it and what was not, and how to complete the run.
    """
    pendings = pending_publishes(folder)
    pendings.sort(key=lambda p: p.step == last)  # stable: the others keep their order
    outcome = PublishOutcome()
    for index, pending in enumerate(pendings):
        if index:
            fault_point("between_publishes")
        try:
            result = pending.run()
        except (Exception, KeyboardInterrupt) as exc:  # Ctrl-C: the open transaction is lost
            rest = [p.step for p in pendings[index + 1 :]]
            done = ", ".join(f"`{s}`" for s in outcome.published + outcome.skipped) or "none"
            raise ConnectorError(
                f"Publishing `{pending.step}` failed: {_first_line(exc)}. Published before it: "
                f"{done}; not published: {', '.join(f'`{s}`' for s in [pending.step, *rest])}. "
                "Re-run with the same --run-id to publish the rest (what was published is "
                "not written twice)"
            ) from exc
        if pending.staging:
            discard_folder(pending.staging)
        already = bool(getattr(result, "already", False))
        (outcome.skipped if already else outcome.published).append(pending.step)
        outcome.results[pending.step] = result
    return outcome


def _first_line(exc: BaseException) -> str:
    text = first_line(exc)
    kind = type(exc).__name__
    return kind if text == kind else f"{kind}: {text}"


def discard(folder: str) -> None:
    """Remove the pending publishes in `folder` and the staged parts they name."""
    with contextlib.suppress(Exception):  # unreadable records: their folder goes regardless
        for pending in pending_publishes(folder):
            if pending.staging:
                discard_folder(pending.staging)
    remove_tree(folder)


def discard_folder(folder: str) -> None:
    """Remove a staging folder, and the shared staging parent when it is left empty."""
    remove_tree(folder)
    if "://" not in folder:
        remove_if_empty(os.path.dirname(folder))


def remove_tree(folder: str) -> None:
    """Remove a folder and what it holds, local or on a Beam file system (`gs://...`, file by
    file); a missing one, or one another worker removes at the same time, is fine."""
    if "://" not in folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    with contextlib.suppress(Exception):
        found = FileSystems.match([f"{folder}/*"])[0].metadata_list
        if found:
            FileSystems.delete([item.path for item in found])


def remove_if_empty(path: str) -> None:
    # Not empty: another sink of this or a concurrent run still stages there.
    with contextlib.suppress(OSError):
        os.rmdir(path)


def fault_point(name: str) -> None:
    """Kill this process at the marked point `name` when `BEAM_ETL_KILL_AT` names it.

    A test hook of the fault-injection suite (tests/faults): it simulates `kill -9` at the
    riskiest moments of a run (`after_prepare`, `between_publishes`, `after_publish`).
    """
    if os.environ.get("BEAM_ETL_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
