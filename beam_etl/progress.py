"""Progress: the display of `--progress`, fed by what workers report to the launcher.

On a terminal (`bar`) a live `rich` view shows, per source, rows and bytes read, a bar with the
percent and ETA where the input size is known (files), rows/s, then the step most recently
active and the dead letters so far; it is redrawn about twice a second. Elsewhere (`log`) one
plain line goes to stderr every `LOG_SECONDS`. `auto` (the default) picks `bar` when stderr
is a terminal and `log` otherwise, and stays off under pytest unless asked.

Counts come from the workers themselves, through the tally and channel of
`beam_etl.core.tally` (UDP datagrams to the launcher: cumulative, best effort).

The displays are observers (see `beam_etl.observers`): plain classes with the observer
methods, not subclasses of `Observer`.
"""

import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:  # for annotations only
    from beam_etl.observers import Progress, RunInfo, RunSummary, SourceProgress


_LOG = logging.getLogger(__name__)
MODES: Final = ("auto", "bar", "log", "off")
#: Seconds between two log lines (`BEAM_ETL_PROGRESS_SECONDS` overrides it).
LOG_SECONDS: Final = 3.0


def display(
    mode: str = "auto", stream: TextIO | None = None
) -> "LogProgress | LiveProgress | None":
    """Return the progress observer for `--progress MODE`, or None when it is off."""
    if mode not in MODES:
        raise ValueError(f"`--progress` must be one of {', '.join(MODES)}, not `{mode}`")
    stream = stream if stream is not None else sys.stderr
    if mode == "auto":
        if "PYTEST_CURRENT_TEST" in os.environ:
            return None
        mode = "bar" if _is_terminal(stream) else "log"
    if mode == "bar" and importlib.util.find_spec("rich") is not None:
        return LiveProgress(stream)
    if mode == "bar":  # `rich` is the optional `progress` extra: lines then
        _LOG.warning("`--progress bar` needs `rich` (pip install beam_etl[progress]); using log")
    if mode in ("bar", "log"):
        every = float(os.environ.get("BEAM_ETL_PROGRESS_SECONDS") or LOG_SECONDS)
        return LogProgress(stream, every=every)
    return None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def source_line(source: "SourceProgress") -> str:
    """Return one source's progress as text: rows, bytes, percent, rows/s, ETA."""
    parts = [f"{source.name} {source.rows:,} rows"]
    if source.bytes:
        size = _megabytes(source.bytes)
        if source.total_bytes:
            size += f"/{_megabytes(source.total_bytes)}"
        parts.append(size)
    if source.percent is not None:
        parts.append(f"{source.percent:.0f}%")
    parts.append(f"{source.rows_per_second:,.0f} rows/s")
    if source.eta_seconds is not None:
        parts.append(f"ETA {_duration(source.eta_seconds)}")
    return ", ".join(parts)


def status_line(progress: "Progress") -> str:
    """Return the line under the sources: current step, dead letters, workers, time."""
    step = progress.current_step or "starting"
    workers = f", {progress.workers} workers" if progress.workers > 1 else ""
    return (
        f"step {step}; {progress.dead_letters:,} dead letters; "
        f"{_duration(progress.elapsed_seconds)} elapsed{workers}"
    )


def _megabytes(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MB"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}:{whole:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{whole:02d}"


class LogProgress:
    """Writes one progress line to `stream` every `every` seconds while the run goes on."""

    name = "progress (log)"

    def __init__(self, stream: TextIO, *, every: float = LOG_SECONDS) -> None:
        self._stream = stream
        self._every = every
        self._due = every

    def step_progress(self, progress: "Progress") -> None:
        if progress.elapsed_seconds < self._due:
            return
        self._due = progress.elapsed_seconds + self._every
        sources = "; ".join(source_line(s) for s in progress.sources)
        self._stream.write(f"progress: {sources}; {status_line(progress)}\n")
        self._stream.flush()


class LiveProgress:
    """Draws the run's progress live on a terminal with `rich` (see the module docs)."""

    name = "progress (bar)"

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live: Any = None
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def run_started(self, info: "RunInfo") -> None:
        # `rich` is an optional dependency (the `progress` extra), imported when drawing.
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.text import Text

        console = Console(file=self._stream)
        self._bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[line]}"),
            console=console,
            auto_refresh=False,
        )
        for name in info.source_bytes:  # a bar fills once a source reports bytes read
            self._tasks[name] = self._bars.add_task(name, total=None, line="waiting")
        self._group = Group
        self._text = Text
        self._live = Live(
            Group(self._bars, Text(f"run {info.run_id} of `{info.pipeline}` starting")),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def step_progress(self, progress: "Progress") -> None:
        if self._live is None:
            return
        for source in progress.sources:
            line = source_line(source).split(" ", 1)[1]
            task = self._tasks[source.name]
            known = source.total_bytes if source.bytes and source.total_bytes else None
            self._bars.update(task, total=known, completed=source.bytes, line=line)
        status = self._text(status_line(progress))
        self._live.update(self._group(self._bars, status), refresh=True)

    def run_finished(self, summary: "RunSummary") -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
