"""The worker process of local multi-process runs: Beam's SDK harness, quiet like its launcher,
started from a fork server so that it does not pay Beam's imports.

`LocalRunner` starts `python -m beam_etl.worker` instead of Beam's
`apache_beam.runners.worker.sdk_worker_main` for `--direct_running_mode=multi_processing`: the
same harness, but

- it writes to the terminal only when the launcher runs with `--debug` (the launcher sets
  `BEAM_ETL_DEBUG=1`): a failure inside a step reaches the launcher through Beam's Fn API and
  is reported there in one line, so the worker's own log lines and tracebacks add nothing;
- on Ctrl-C it leaves at once and silently; the launcher reports the interruption. (A worker
  that stayed would keep the launcher waiting for it at exit.)
- its bundles end without waiting for Beam's state sampler (`core.local.shorten_state_sampling`);
- unless under `--debug`, start-up warnings that do not apply to a local worker are not sent
  to the launcher (which prints its workers' warnings through its `local_job_service`
  logger): no main session was staged (none is: steps are pickled whole), and the launcher's
  DirectRunner-only options are not worker options.

**Fork server.** Every worker process used to import Beam and beam_etl (~1 CPU s each) when
the runner reached its first stage, so 2 workers started ~1.3 s after the launcher had done
its own imports and planning. `start_server` starts one process (`--serve SOCKET`) as the run
begins, which imports all that once, in parallel with the launcher, and then forks a worker
for each `--attach SOCKET SERVER_PID` process the runner starts: the attaching process (a
plain Python start, ~30 ms, with Ctrl-C ignored) sends its environment, working directory and
standard streams, and waits for one byte (`_FORKED`: a worker was forked for it) and then the
forked worker's exit status; a worker whose attaching process dies (the runner kills it)
leaves too. The forked worker takes the attaching process's environment and folder, reseeds
numpy's global generator, and resets the server's signal handlers. The server leaves when its
launcher does (its standard input closes) or on SIGINT/SIGTERM, removing its socket folder. A
process reuses its server until its environment (but for the per-run progress address) or
its folder changes. If the server cannot start, has died, or leaves before forking a worker,
the attaching process runs the harness itself, as before.
"""

import atexit
import contextlib
import gc
import json
import logging
import os
import selectors
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Final

from beam_etl.core.resources import usable_cores

#: (logger, start of the message) of the worker's start-up warnings that do not apply here.
_IRRELEVANT: tuple[tuple[str, str], ...] = (
    ("apache_beam.runners.worker.sdk_worker_main", "No semi_persistent_directory found"),
    ("apache_beam.runners.worker.sdk_worker_main", "No session file found"),
    ("apache_beam.options.pipeline_options", "Discarding unparseable args"),
)


class _Drop(logging.Filter):
    """Drop a logger's records whose message starts with `start`."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self._start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._start)


def _drop_irrelevant_warnings() -> None:
    for name, start in _IRRELEVANT:
        logging.getLogger(name).addFilter(_Drop(start))


def _leave(signum, frame) -> None:
    os._exit(128 + signum)


def _quiet_process() -> None:
    """Unless under `--debug`: leave silently on Ctrl-C and write nothing to the terminal."""
    if os.environ.get("BEAM_ETL_DEBUG") != "1":
        signal.signal(signal.SIGINT, _leave)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)  # Beam logs and gRPC's C core both write to file descriptor 2
        os.close(quiet)


def _harness() -> None:
    """Run Beam's SDK harness with beam_etl's settings (see the module's docstring)."""
    from apache_beam.runners.worker import sdk_worker_main

    from beam_etl.core.local import shorten_state_sampling  # after the redirect: Beam logs

    shorten_state_sampling()
    if os.environ.get("BEAM_ETL_DEBUG") != "1":
        _drop_irrelevant_warnings()
    sdk_worker_main.main(sys.argv)


# --------------------------------------------------------------------------------------------
# The fork server
# --------------------------------------------------------------------------------------------

#: A worker process keeps about this many cores busy: pyarrow's threads parse, cast and encode
#: beside its Python thread (CSV -> Parquet, 3M rows: 4.6 CPU s in 2.4 s on 2 cores).
CORES_PER_WORKER: Final = 2


def chosen_workers(requested: int) -> int:
    """The number of local workers for `--direct_num_workers=requested`: as asked, or for 0
    (Beam's "as many as there are cores") one per `CORES_PER_WORKER` cores this process may
    use, at least 1 (then in process: on 2 cores one worker is the fastest)."""
    if requested != 0:
        return requested
    return max(1, usable_cores() // CORES_PER_WORKER)


#: How long an attaching process waits for the server's socket to appear.
ATTACH_WAIT_SECONDS: Final = 60.0
_HEADER: Final = struct.Struct("!Q")
#: What a forked worker sends its attaching process first: the server has forked it.
_FORKED: Final = b"F"


class _Server:
    """The launcher's handle on its fork server (one per launcher process, reused by runs)."""

    def __init__(self) -> None:
        self.started_in = _surroundings()
        # A socket's path holds at most ~107 bytes: a long TMPDIR gives way to /tmp.
        base = tempfile.gettempdir()
        base = base if len(base) <= 64 else "/tmp"
        self._folder = tempfile.mkdtemp(prefix="beam_etl_workers_", dir=base)  # mode 700
        self.socket = os.path.join(self._folder, "fork.sock")
        debug = os.environ.get("BEAM_ETL_DEBUG") == "1"
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "beam_etl.worker", "--serve", self.socket],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
            )
        except OSError:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        # The server may still be importing (a run that ended early): no need to wait for it.
        # Its workers are processes of their own and are not touched.
        try:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.terminate()
            self._process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


_SERVER: _Server | None = None
_SERVER_LOCK = threading.Lock()


#: Set by the launcher for each run (`beam_etl.core.tally.CHANNEL_ENV`), read by workers when
#: they report, never at import: a forked worker has it from its attaching process.
_PER_RUN: Final = frozenset({"BEAM_ETL_PROGRESS"})


def _surroundings() -> tuple:
    """What a server's imports depend on: its environment (`PYTHONPATH`, ...) and folder."""
    return os.getcwd(), sorted(item for item in os.environ.items() if item[0] not in _PER_RUN)


def start_server() -> None:
    """Start this process's fork server if it is not running.

    Cheap to call again: a running server is reused by later runs of the process, unless the
    environment or the working folder changed since it started (its `sys.path` and its
    imports were made in those): then a new one starts. A server that cannot start (no
    temporary folder, no process) is no error: each worker then imports Beam itself.
    """
    _running_server()


def _running_server() -> _Server | None:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive() or _SERVER.started_in != _surroundings():
            if _SERVER is not None:
                _SERVER.stop()
            try:
                _SERVER = _Server()
            except OSError as exc:
                logging.getLogger(__name__).debug("No fork server for workers: %s", exc)
                _SERVER = None
        return _SERVER


def _stop_server() -> None:
    with _SERVER_LOCK:
        if _SERVER is not None:
            _SERVER.stop()


atexit.register(_stop_server)  # a process that never starts a server: nothing to stop


def worker_command() -> str:
    """Return the shell command a local runner starts for each worker process."""
    server = _running_server()
    python = shlex.quote(sys.executable)
    if server is None:
        return f"exec {python} -m beam_etl.worker"
    # The attaching process ignores Ctrl-C from its start (a Python started with SIGINT ignored
    # installs no KeyboardInterrupt handler: no traceback while it imports); its forked worker
    # leaves on Ctrl-C, which ends it too.
    attach = f"--attach {shlex.quote(server.socket)} {server.pid}"
    return f"trap '' INT; exec {python} -m beam_etl.worker {attach}"


def _serve(path: str) -> None:
    """Import what a worker needs once, then fork a worker for every attaching process.

    Its socket and folder go with it, however it leaves: its launcher may have been killed
    (`kill`, `kill -9`: no `atexit` there) or interrupted.
    """

    def remove() -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))  # the folder the launcher made for it

    def leave(signum, frame) -> None:
        remove()
        os._exit(128 + signum)

    _quiet_process()
    signal.signal(signal.SIGINT, leave)  # the launcher reports Ctrl-C; its input closes
    signal.signal(signal.SIGTERM, leave)
    try:
        _serve_on(path)
    finally:
        remove()


def _serve_on(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # before the imports: early workers wait in the backlog
    listener.listen(64)
    gc.disable()  # everything the imports make is kept: collecting among it only costs time
    import apache_beam.runners.worker.sdk_worker_main  # noqa: F401

    try:
        import beam_etl.io  # preloaded: what the steps a worker unpickles import
        import beam_etl.transforms  # preloaded, as `beam_etl.io`  # noqa: F401
    except ImportError:  # a worker imports what it needs itself, and reports what fails
        pass

    gc.collect()
    gc.freeze()  # the workers share these pages, and their collections skip them
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj == sys.stdin.fileno():
                if not os.read(sys.stdin.fileno(), 1024):
                    return  # the launcher has left
            else:
                connection, _ = listener.accept()
                _fork(connection, listener, selector)
        _reap()


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
    while len(header) < _HEADER.size:
        more = connection.recv(_HEADER.size - len(header))
        if not more:
            raise ConnectionError("the attaching process left")
        header += more
    (size,) = _HEADER.unpack(header)
    payload = bytearray()
    while len(payload) < size:
        more = connection.recv(min(1 << 16, size - len(payload)))
        if not more:
            raise ConnectionError("the attaching process left")
        payload += more
    return json.loads(payload), fds


def _fork(connection: socket.socket, listener: socket.socket, selector) -> None:
    try:
        request, fds = _receive(connection)
    except (OSError, ValueError):
        connection.close()
        return
    pid = os.fork()
    if pid:
        connection.close()
        for fd in fds:
            os.close(fd)
        return
    code = 1
    try:
        selector.close()
        listener.close()
        code = _worker(connection, request, fds)
    finally:
        os._exit(code)


def _worker(connection: socket.socket, request: dict, fds: list[int]) -> int:
    """In the forked process: become the attaching process's worker and run the harness."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    # `random` draws anew after a fork (CPython reseeds it); numpy's global generator, seeded
    # once as the server imported it, would give every worker the same numbers.
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's: it removes the server's socket
    _quiet_process()
    gc.enable()

    def _watch() -> None:  # the runner killed the attaching process: leave too
        try:
            connection.recv(1)
        finally:
            os._exit(1)

    threading.Thread(target=_watch, daemon=True, name="beam_etl-attach-watch").start()
    with contextlib.suppress(OSError):
        connection.sendall(_FORKED)
    code = 0
    try:
        _harness()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError):
        connection.sendall(bytes([code & 0xFF]))
    return code


def _running(pid: int) -> bool:
    """Whether process `pid` runs (not ended, not a zombie its parent has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _attach(path: str, server: int) -> int:
    """In the process the runner started: have the server fork a worker; return its status.

    It runs with Ctrl-C ignored (`worker_command`); without a server it becomes the worker,
    which leaves on Ctrl-C (`_quiet_process`)."""
    import time

    deadline = time.monotonic() + ATTACH_WAIT_SECONDS
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            connection.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline or not _running(server):
                return _without_server(connection)
            time.sleep(0.01)
    payload = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode()
    try:
        socket.send_fds(connection, [_HEADER.pack(len(payload))], [0, 1, 2])
        connection.sendall(payload)
        forked = connection.recv(1)
    except OSError:  # the server left (stopped, killed) with this process in its backlog
        forked = b""
    if forked != _FORKED:
        return _without_server(connection)
    try:
        status = connection.recv(1)
    except OSError:
        status = b""
    return status[0] if status else 1


def _without_server(connection: socket.socket) -> int:
    """No server forked a worker for this process: be the worker, as without a server."""
    connection.close()
    _quiet_process()
    _harness()
    return 0


def main() -> None:
    arguments = sys.argv[1:]
    if arguments[:1] == ["--serve"]:
        _serve(arguments[1])
    elif arguments[:1] == ["--attach"]:
        sys.exit(_attach(arguments[1], int(arguments[2])))
    else:
        _quiet_process()
        _harness()


if __name__ == "__main__":
    main()
