"""The progress tally: what every worker process reports to the launcher while a run goes on.

The counters of `beam_etl.core.metrics` also add their increments (per batch) to a tally of
their process, which `report` sends at most every `SEND_SECONDS` (and `flush` at the end of
each bundle) as one UDP datagram to the launcher's `Channel` on 127.0.0.1, whose address workers
find in `BEAM_ETL_PROGRESS`. Tallies are cumulative, so a lost datagram loses nothing; a
launcher that is gone costs a failed `sendto`, never a run. Counts are estimates while the run
goes on (a retried bundle counts twice); the run report has the exact ones. The displays that
read the channel are in `beam_etl.progress`.
"""

import contextlib
import json
import os
import resource
import secrets
import socket
import threading
import time
from typing import Final

#: Environment variable holding the launcher's progress address (`host:port/token`).
CHANNEL_ENV: Final = "BEAM_ETL_PROGRESS"
#: How often a process sends its tally at most.
SEND_SECONDS: Final = 0.25


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
