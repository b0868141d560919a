"""Progress: what workers report to the launcher, and the display of `--progress`.

On a terminal (`bar`) a live `rich` view shows, per source, rows and bytes read, a bar with the
percent and ETA where the input size is known (files), rows/s, then the step most recently
active and the dead letters so far; it is redrawn about twice a second. Elsewhere (`log`) one
plain line goes to stderr every `LOG_SECONDS`. `auto` (the default) picks `bar` when stderr
is a terminal and `log` otherwise, and stays off under pytest unless asked.

Counts come from the workers themselves: the counters of `beam_etl.metrics` also add their
increments (per batch) to a tally of their process, which `report` sends at most every
`SEND_SECONDS` (and `flush` at the end of each bundle) as one UDP datagram to the launcher's
`Channel` on 127.0.0.1, whose address workers find in `BEAM_ETL_PROGRESS`. Tallies are
cumulative, so a lost datagram loses nothing; a launcher that is gone costs a failed `sendto`,
never a run. Counts are estimates while the run goes on (a retried bundle counts twice); the
run report has the exact ones.

The displays are observers (see `beam_etl.observers`, which imports this module: they are
plain classes with the observer methods, not subclasses of `Observer`).
"""

import contextlib
import importlib.util
import json
import logging
import os
import resource
import secrets
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:  # the observers module imports this one: its types are for annotations
    from beam_etl.observers import Progress, RunInfo, RunSummary, SourceProgress

_LOG = logging.getLogger(__name__)
#: Environment variable holding the launcher's progress address (`host:port/token`).
CHANNEL_ENV: Final = "BEAM_ETL_PROGRESS"
#: How often a process sends its tally at most.
SEND_SECONDS: Final = 0.25
MODES: Final = ("auto", "bar", "log", "off")
#: Seconds between two log lines (`BEAM_ETL_PROGRESS_SECONDS` overrides it).
LOG_SECONDS: Final = 3.0


class _Tally:
    """This process's running totals per (step, counter), sent to the launcher when due."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channel: str | None = None
        self._address: tuple[str, int] | None = None
        self._token = ""
        self._totals: dict[str, int] = {}
        self._due = 0.0
        self._socket: socket.socket | None = None

    def add(self, step: str, what: str, count: int, *, flush: bool = False) -> None:
        channel = os.environ.get(CHANNEL_ENV)
        if not channel or not (count or flush):
            return
        with self._lock:
            if channel != self._channel:  # a new run: start over
                self._start(channel)
            if count:
                key = f"{step}\x1f{what}"
                self._totals[key] = self._totals.get(key, 0) + count
            now = time.monotonic()
            if (now < self._due and not flush) or self._address is None or not self._totals:
                return
            self._due = now + SEND_SECONDS
            message = {
                "token": self._token,
                "pid": os.getpid(),
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "counts": self._totals,
            }
            data = json.dumps(message, separators=(",", ":")).encode()
            address, sock = self._address, self._socket
        try:
            if sock is not None:
                sock.sendto(data, address)
        except OSError:  # the launcher is gone or busy: progress is best effort, the run is not
            pass

    def _start(self, channel: str) -> None:
        self._channel, self._totals, self._due = channel, {}, 0.0
        host_port, _, self._token = channel.partition("/")
        host, _, port = host_port.rpartition(":")
        try:
            self._address = (host, int(port))
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
        except (ValueError, OSError):
            self._address = None


_TALLY = _Tally()


def report(step: str, what: str, count: int) -> None:
    """Add `count` to counter `what` of `step` for the progress of the current run.

    Cheap (a dict update; one datagram at most every `SEND_SECONDS`); a no-op outside a run
    the launcher watches. Call it per batch, not per row.
    """
    _TALLY.add(step, what, count)


def flush() -> None:
    """Send this process's tally now (at the end of a bundle), so the launcher's last
    `step_progress` has every count."""
    _TALLY.add("", "", 0, flush=True)


class Channel:
    """The launcher's end: a UDP socket on 127.0.0.1 that every worker process reports to."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._token = secrets.token_hex(6)
        port = self._socket.getsockname()[1]
        self.address = f"127.0.0.1:{port}/{self._token}"
        self.latest: dict[int, dict[str, int]] = {}  # pid -> its cumulative counts
        self.rss_kb: dict[int, int] = {}

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for datagrams, then take in every one that came."""
        self._socket.settimeout(timeout)
        while True:
            try:
                data = self._socket.recv(65536)
            except (TimeoutError, BlockingIOError):
                return
            self._socket.settimeout(0)
            try:
                message = json.loads(data)
                if message.get("token") != self._token:
                    continue
                pid = int(message["pid"])
                self.latest[pid] = {str(k): int(v) for k, v in message["counts"].items()}
                self.rss_kb[pid] = int(message.get("rss_kb") or 0)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not ours

    def totals(self) -> dict[tuple[str, str], int]:
        """Return the counts of every process added up, `(step, counter)` -> value."""
        found: dict[tuple[str, str], int] = {}
        for counts in self.latest.values():
            for key, value in counts.items():
                step, _, what = key.partition("\x1f")
                found[(step, what)] = found.get((step, what), 0) + value
        return found

    def wake(self) -> None:
        """Make a `poll` waiting for datagrams return now."""
        with contextlib.suppress(OSError):
            self._socket.sendto(b"", self._socket.getsockname())

    def close(self) -> None:
        self._socket.close()


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
