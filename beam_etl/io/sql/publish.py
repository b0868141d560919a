"""Stage every bundle, then publish once: the composite with a dead-letter output, the result
of a publish, and the check that a deferred publish still does what its trial found.

Sinks stage each bundle as Arrow IPC files (hidden origin columns kept, so that a row the
database refuses is reported with its file and line); one publish step, after every bundle has
finished, loads the committed bundles' files into a temporary staging table and applies the
write mode in one transaction. A run that fails before publishing never touches the database,
and a retried bundle's files never reach the publish step.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import apache_beam as beam

from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ALREADY_PUBLISHED, ROWS_DROPPED, ROWS_WRITTEN, step_counter
from beam_etl.core.publish import DATABASE, Pending, fault_point, pending_folder, record, veto
from beam_etl.io._files import (
    Part,
    StageFn,
    check_gates,
    discard_folder,
    gate_failures,
)
from beam_etl.io._ipcparts import IpcPartWriter


class Published(NamedTuple):
    """What a publish did: rows written, rows dropped on purpose, rows the database refused;
    `already`: the ledger says this run id was published before, so nothing changed."""

    written: int
    dropped: int
    rejects: list[DeadLetter]
    already: bool = False


def check_expected(result: Published, expect: Published | None, table: str) -> None:
    """Raise `ConnectorError` when a publish would not do what its trial found (someone changed
    `table` between the run's prepare and its publish): then nothing is published."""
    if expect is None or expect.already:
        return
    found = (result.written, sorted(r.origin for r in result.rejects))
    tried = (expect.written, sorted(r.origin for r in expect.rejects))
    if found != tried:
        raise ConnectorError(
            f"`{table}` changed while the run was deciding: it would now take "
            f"{result.written:,} row(s) and refuse {len(result.rejects):,}, where the run's "
            f"trial took {expect.written:,} and refused {len(expect.rejects):,}; nothing was "
            "published to it"
        )


class _PublishFn(beam.DoFn):
    """Publishes at once, or (under `deferred_publishing`) tries the load in a transaction that
    is rolled back, sends the refused rows to the dead letters, and records a pending publish
    that the launcher runs after the verdict (see `io/_publish.py`)."""

    def __init__(
        self,
        publish: Callable[..., Published],
        step: str,
        folder: str,
        pending: str | None = None,
    ):
        self._publish = publish
        self._step = step
        self._folder = folder
        self._pending = pending

    def process(self, parts: list[Part], gates=()):
        parts = sorted(parts)
        failed = gate_failures(gates)
        if self._pending is None:
            check_gates(gates, self._step)
            result = self._publish(parts)
            discard_folder(self._folder)
        elif failed:  # the launcher's verdict reads the veto; nothing is tried
            veto(self._pending, self._step, failed)
            result = Published(sum(rows for _, rows in parts), 0, [])
        else:
            result = self._publish(parts, commit=False)
            expect = result._replace(rejects=[r._replace(payload=None) for r in result.rejects])
            pending = Pending(self._step, DATABASE, self._publish, parts, self._folder, expect)
            record(self._pending, pending)
            fault_point("after_prepare")
        if result.already:
            step_counter(self._step, ALREADY_PUBLISHED).inc()
        step_counter(self._step, ROWS_WRITTEN).inc(result.written)
        step_counter(self._step, ROWS_DROPPED).inc(result.dropped)
        for letter in result.rejects:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        yield result.written


class StageAndPublishDb(beam.PTransform):
    """Stage every bundle as IPC files, then call `publish(parts)` once, after all bundles.

    Output: `(written, error)`: one element (rows written), and the `DeadLetter`s of rows the
    database refused.
    """

    def __init__(
        self,
        folder: str,
        publish: Callable[[list[Part]], Published],
        *,
        step: str,
        gates: tuple = (),
    ) -> None:
        super().__init__()
        self._folder = folder
        self._publish = publish
        self._step = step
        self._gates = tuple(gates)

    def expand(self, batches):
        parts = (
            batches
            | "Stage"
            >> beam.ParDo(StageFn(functools.partial(IpcPartWriter, keep_origin=True), self._folder))
            | "AwaitBundles" >> beam.combiners.ToList()
        )
        publish_fn = _PublishFn(self._publish, self._step, self._folder, pending_folder())
        publish = beam.ParDo(publish_fn)
        if self._gates:
            gates = self._gates | "MergeGates" >> beam.Flatten()
            publish = beam.ParDo(publish_fn, gates=beam.pvalue.AsList(gates))
        out = parts | "Publish" >> publish.with_outputs(ERROR, main=OUTPUT)
        return out[OUTPUT], out[ERROR]
