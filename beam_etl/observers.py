"""Observers: hooks that see a run start, progress, finish step by step, and end.

An observer is any object with some of these methods (`Observer` gives no-op defaults):

- `run_started(info: RunInfo)`: once, before the pipeline runs;
- `step_progress(progress: Progress)`: about twice a second while it runs, with the rows (and
  bytes) read per source, rows out and rejected per step so far, rows/s, percent and ETA
  where the input size is known, the step most recently active and the dead letters so far;
- `step_finished(step: StepReport)`: once per node after the run, in graph order, with the
  final counts and active seconds of `beam_etl.report` (Beam has no per-step completion hook);
- `run_finished(summary: RunSummary)`: once, in success or failure, with status, times,
  totals and peak memory (the launcher's; each worker's when progress was watched).

Register one from Python with `register(observer)` (every later run in the process calls it),
pass it to `beam_etl.cli.execute(..., observers=[...])` for one run, or name it in a spec:
`observers: ["my_hooks:notify"]` (a class is instantiated without arguments; a plain function
is called as `function(event_name, payload)` for every event). An observer that raises never
fails the run: one warning line is logged per observer and event.

Progress comes from the workers themselves, through the channel of `beam_etl.core.tally`. It is
opened only when some observer wants `step_progress` (the progress display does; `--progress
off` and the history alone do not): workers then send nothing at all.
"""

import contextlib
import hashlib
import importlib
import json
import logging
import os
import resource
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from beam_etl.core.errors import SpecError
from beam_etl.core.tally import CHANNEL_ENV, Channel, flush

_LOG = logging.getLogger(__name__)
#: How often observers get `step_progress` while a run goes on.
TICK_SECONDS: Final = 0.5
_RATE_WINDOW: Final = 5.0  # seconds of samples behind rows/s and ETA
EVENTS: Final = ("run_started", "step_progress", "step_finished", "run_finished")
_ROWS_READ, _ROWS_OUT, _ROWS_REJECTED, _BYTES_READ = (
    "rows_read",
    "rows_out",
    "rows_rejected",
    "bytes_read",
)


@dataclass(frozen=True)
class RunInfo:
    """What `run_started` receives."""

    run_id: str
    pipeline: str
    spec: str  # path of the spec file
    fingerprint: str  # sha256 of the normalized spec (see `fingerprint`)
    started_at: datetime
    steps: list[tuple[str, str, str]]  # (name, kind, type) in graph order
    source_bytes: dict[str, int | None]  # input size per source, where known (files)
    work_dir: str  # `<output dir>/.beam_etl`: state, history


@dataclass(frozen=True)
class SourceProgress:
    """Rows and bytes one source has read so far."""

    name: str
    rows: int
    bytes: int
    total_bytes: int | None
    rows_per_second: float
    percent: float | None  # of total_bytes, when known and bytes are reported
    eta_seconds: float | None


@dataclass(frozen=True)
class Progress:
    """What `step_progress` receives: counts so far (estimates; final ones come after)."""

    run_id: str
    elapsed_seconds: float
    sources: list[SourceProgress]
    steps: dict[str, dict[str, int]]  # step -> {rows_out, rows_rejected, ...} so far
    current_step: str | None
    dead_letters: int
    workers: int  # processes that reported


@dataclass(frozen=True)
class RunSummary:
    """What `run_finished` receives."""

    run_id: str
    pipeline: str
    fingerprint: str
    status: str  # succeeded | failed
    error: str | None
    started_at: datetime
    finished_at: datetime
    seconds: float
    rows_read: int
    rows_written: int
    rows_rejected: int
    steps: list[Any]  # `beam_etl.report.StepReport`s
    peak_rss_mb: float  # the launcher's
    worker_peak_rss_mb: dict[int, float]  # pid -> MB of workers that reported (see Watch)
    work_dir: str
    report: Any = None  # the `beam_etl.report.RunReport`


class Observer:
    """Base class with a no-op for every event: override the ones you need."""

    def run_started(self, info: RunInfo) -> None:
        """Called once before the pipeline runs."""

    def step_progress(self, progress: Progress) -> None:
        """Called about every `TICK_SECONDS` while the pipeline runs."""

    def step_finished(self, step: Any) -> None:
        """Called once per node after the run with its final `StepReport`."""

    def run_finished(self, summary: RunSummary) -> None:
        """Called once when the run ended, in success or failure."""


class _FunctionObserver(Observer):
    """Calls `function(event, payload)` for every event."""

    def __init__(self, function) -> None:
        self._function = function
        self.name = getattr(function, "__qualname__", repr(function))

    def __getattribute__(self, name: str):
        if name in EVENTS:
            function = object.__getattribute__(self, "_function")
            return lambda payload: function(name, payload)
        return object.__getattribute__(self, name)


_REGISTERED: list[Any] = []


def register(observer: Any) -> Any:
    """Make `observer` see every later run of this process; return it (usable as a decorator
    of a class, which is then instantiated, or of a function `(event, payload)`)."""
    _REGISTERED.append(_adapt(observer))
    return observer


def unregister(observer: Any) -> None:
    """Stop calling an observer given to `register` (unknown ones are ignored)."""
    for found in list(_REGISTERED):
        if (
            found is observer
            or getattr(found, "_function", None) is observer
            or (isinstance(observer, type) and isinstance(found, observer))
        ):
            _REGISTERED.remove(found)


def registered() -> list[Any]:
    """Return the observers given to `register`, in order."""
    return list(_REGISTERED)


def _adapt(target: Any) -> Any:
    if isinstance(target, type):
        return target()
    if any(callable(getattr(target, event, None)) for event in EVENTS):
        return target
    if callable(target):
        return _FunctionObserver(target)
    raise TypeError(f"`{target!r}` is not an observer: give a class, an object or a function")


def load(reference: str, *, spec_dir: str | None = None, line: int | None = None) -> Any:
    """Import `module:attribute` and return it as an observer (see the module docs).

    A module next to the spec (`spec_dir`) is found too.

    Raises:
        SpecError: the import fails or the attribute is no observer (one line, with `line`).
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(f"Observer `{reference}` must look like `module:attribute`", line=line)
    try:
        module = _import(module_name, spec_dir)
    except Exception as exc:  # the user's module fails to import: say so in one line
        message = _first_line(exc)
    else:
        if not hasattr(module, attribute):
            message = f"module `{module_name}` has no attribute `{attribute}`"
        else:
            try:
                return _adapt(getattr(module, attribute))
            except TypeError as exc:
                message = str(exc)
            except Exception as exc:  # the observer class's constructor failed
                message = _first_line(exc)
    raise SpecError(f"Cannot load observer `{reference}`: {message}", line=line) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _import(module_name: str, spec_dir: str | None):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if spec_dir is None or exc.name != module_name.split(".")[0]:
            raise
    sys.path.insert(0, spec_dir)
    try:
        return importlib.import_module(module_name)
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(spec_dir)


def from_spec(spec: Any) -> list[Any]:
    """Return the observers a spec names under `observers:` (see `load`)."""
    spec_dir = os.path.dirname(os.path.abspath(spec.source))
    return [
        load(reference, spec_dir=spec_dir, line=line)
        for reference, line in getattr(spec, "observers", ())
    ]


def fingerprint(spec: Any, run_id: str = "") -> str:
    """Return the sha256 of the spec's meaning: name, nodes (type, config, inputs), observers.

    Comments, layout and key order do not change it; values are taken after substitution,
    except the run id (where `${RUN_ID}` was used), replaced back by its variable so that runs
    of one spec share a fingerprint (ids shorter than 8 characters are left: too likely to
    occur by chance).
    """
    nodes = [
        {
            "name": n.name,
            "kind": n.kind,
            "type": n.type,
            "config": n.config,
            "inputs": [str(r) for r in n.inputs],
        }
        for n in spec.nodes
    ]
    document = {
        "name": spec.name,
        "nodes": nodes,
        "observers": [ref for ref, _ in getattr(spec, "observers", ())],
    }
    text = json.dumps(document, sort_keys=True, default=str, ensure_ascii=False)
    if len(run_id) >= 8:
        text = text.replace(run_id, "${RUN_ID}")
    return hashlib.sha256(text.encode()).hexdigest()


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MB."""
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    return round(kilobytes / 1024, 1)


class Watch:
    """One run's observers: resolves them, runs the progress channel and ticker, dispatches.

    `start()` before the pipeline runs, `close()` when it ended (in a `finally`), then
    `finished(report)` with the run report. Observers are called in order: the ones given,
    the spec's, then the registered ones; `step_progress` comes from a thread of its own.
    """

    def __init__(self, plan: Any, run_id: str, work_dir: str, observers=()) -> None:
        self._observers = [*(_adapt(o) for o in observers), *from_spec(plan.spec), *_REGISTERED]
        self._info = RunInfo(
            run_id=run_id,
            pipeline=plan.spec.name,
            spec=os.path.abspath(plan.spec.source),
            fingerprint=fingerprint(plan.spec, run_id),
            started_at=datetime.now(UTC),
            steps=[(node.name, node.kind, node.type) for node in plan.ordered],
            source_bytes={
                node.name: _input_bytes(plan.transforms.get(node.name))
                for node in plan.ordered
                if node.kind == "source"
            },
            work_dir=work_dir,
        )
        self._warned: set[tuple[int, str]] = set()
        self._channel: Channel | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._previous_env: str | None = None
        self._clock = time.monotonic()
        self._samples: dict[str, deque] = {}
        self._last_steps: dict[str, dict[str, int]] = {}
        self._current: str | None = None

    @property
    def info(self) -> RunInfo:
        return self._info

    def start(self) -> None:
        """Send `run_started`; if an observer wants `step_progress`, open the channel workers
        report to and start the ticker (else workers send nothing at all)."""
        self._clock = time.monotonic()
        self._dispatch("run_started", self._info)
        if not any(_wants_progress(observer) for observer in self._observers):
            return
        self._channel = Channel()
        self._previous_env = os.environ.get(CHANNEL_ENV)
        os.environ[CHANNEL_ENV] = self._channel.address  # workers inherit it
        self._thread = threading.Thread(target=self._tick, name="beam_etl-progress", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the ticker, send a last `step_progress` with the counts of every finished
        bundle, and close the channel (workers still sending are ignored)."""
        if self._thread is None or self._channel is None:
            return
        self._stop.set()
        self._channel.wake()
        self._thread.join()
        self._thread = None
        # Workers' datagrams are in the socket's buffer once their bundles are done (loopback
        # delivery happens inside `sendto`): a last non-blocking read has every count.
        flush()  # what in-process workers counted since their last datagram
        self._channel.poll(0)
        self._dispatch("step_progress", self.progress())
        if self._previous_env is None:
            os.environ.pop(CHANNEL_ENV, None)
        else:
            os.environ[CHANNEL_ENV] = self._previous_env
        self._channel.close()

    def finished(self, report: Any) -> RunSummary:
        """Send `step_finished` per step and `run_finished`; return the summary sent."""
        self.close()
        for step in report.steps:
            self._dispatch("step_finished", step)
        workers = dict(self._channel.rss_kb) if self._channel is not None else {}
        workers.pop(os.getpid(), None)  # in-process workers are the launcher
        summary = RunSummary(
            run_id=report.run_id,
            pipeline=report.pipeline,
            fingerprint=self._info.fingerprint,
            status=report.status,
            error=report.error,
            started_at=datetime.fromisoformat(report.started_at),
            finished_at=datetime.fromisoformat(report.ended_at),
            seconds=float(report.elapsed_seconds),
            rows_read=sum(s.rows_in for s in report.steps if s.kind == "source"),
            rows_written=sum(s.rows_out for s in report.steps if s.kind == "sink"),
            rows_rejected=sum(s.rows_rejected for s in report.steps),
            steps=list(report.steps),
            peak_rss_mb=peak_rss_mb(),
            worker_peak_rss_mb={pid: round(kb / 1024, 1) for pid, kb in workers.items()},
            work_dir=self._info.work_dir,
            report=report,
        )
        self._dispatch("run_finished", summary)
        return summary

    def _tick(self) -> None:
        assert self._channel is not None
        due = time.monotonic() + TICK_SECONDS
        while not self._stop.is_set():
            self._channel.poll(max(0.0, due - time.monotonic()))  # `close` wakes it
            if time.monotonic() >= due:
                due = time.monotonic() + TICK_SECONDS
                self._dispatch("step_progress", self.progress())

    def progress(self) -> Progress:
        """Return the progress so far, from what the workers reported."""
        now = time.monotonic()
        totals = self._channel.totals() if self._channel is not None else {}
        steps: dict[str, dict[str, int]] = {}
        for (step, what), value in totals.items():
            steps.setdefault(step, {})[what] = value
        sources = [
            self._source(name, steps.get(name, {}), total, now)
            for name, total in self._info.source_bytes.items()
        ]
        changed = [
            name
            for name, _, _ in self._info.steps
            if steps.get(name, {}) != self._last_steps.get(name, {})
        ]
        self._current = changed[-1] if changed else self._current
        self._last_steps = steps
        return Progress(
            run_id=self._info.run_id,
            elapsed_seconds=round(now - self._clock, 3),
            sources=sources,
            steps=steps,
            current_step=self._current,
            dead_letters=sum(c.get(_ROWS_REJECTED, 0) for c in steps.values()),
            workers=len(self._channel.latest) if self._channel is not None else 0,
        )

    def _source(self, name: str, counts: dict[str, int], total: int | None, now: float):
        rows = max(
            counts.get(_ROWS_READ, 0), counts.get(_ROWS_OUT, 0) + counts.get(_ROWS_REJECTED, 0)
        )
        done = counts.get(_BYTES_READ, 0)
        samples = self._samples.setdefault(name, deque())
        samples.append((now, rows, done))
        while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW:
            samples.popleft()
        then, rows_then, done_then = samples[0]
        span = now - then
        rate = (rows - rows_then) / span if span > 0 else 0.0
        byte_rate = (done - done_then) / span if span > 0 else 0.0
        percent = min(100.0, 100.0 * done / total) if total and done else None
        eta = None
        if percent is not None and total is not None and byte_rate > 0:
            eta = max(0.0, (total - done) / byte_rate)
        return SourceProgress(name, rows, done, total, round(rate, 1), percent, eta)

    def _dispatch(self, event: str, payload: Any) -> None:
        for observer in self._observers:
            method = getattr(observer, event, None)
            if method is None:
                continue
            try:
                method(payload)
            except Exception as exc:  # an observer never fails the run: one warning, go on
                if (id(observer), event) not in self._warned:
                    self._warned.add((id(observer), event))
                    name = getattr(observer, "name", type(observer).__name__)
                    _LOG.warning(
                        "observer `%s` failed in %s (the run goes on): %s",
                        name,
                        event,
                        _first_line(exc),
                    )


def _wants_progress(observer: Any) -> bool:
    """Whether `observer` does something with `step_progress` (not `Observer`'s no-op)."""
    method = getattr(observer, "step_progress", None)
    return callable(method) and getattr(method, "__func__", None) is not Observer.step_progress


def _input_bytes(transform: Any) -> int | None:
    """Return the size of a file source's input, None when unknown (databases ...)."""
    files = getattr(transform, "_files", None)
    if not isinstance(files, list) or not files:
        return None
    try:
        return sum(int(size) for _, size in files)
    except (TypeError, ValueError):
        return None
