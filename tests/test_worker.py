"""Local worker processes are forked from a server that has done Beam's imports once."""

import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_etl import runner, worker
from beam_etl.runner import LocalRunner

TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _lines(tmp_path, flags: list[str], line) -> list[list[str]]:
    """Run `line` (a lambda: pickled whole) on 40 elements spread over the workers."""
    out = tmp_path / "lines"
    with beam.Pipeline(runner=LocalRunner(), options=PipelineOptions(flags)) as p:
        _ = (
            p
            | beam.Create(list(range(40)))
            | beam.Reshuffle()
            | beam.Map(line)
            | beam.io.WriteToText(str(out), shard_name_template="")
        )
    return [text.split() for text in out.read_text().splitlines()]


def _run_with(tmp_path, flags: list[str]) -> list[tuple[int, int]]:
    """(pid, parent pid) of the process that handled each element."""
    rows = _lines(tmp_path, flags, lambda _: f"{os.getpid()} {os.getppid()}")
    return [(int(pid), int(parent)) for pid, parent in rows]


def _run_on_two_workers(tmp_path) -> list[tuple[int, int]]:
    return _run_with(tmp_path, TWO_WORKERS)


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(child) for child in f.read().split()}


def test_workers_are_forked_from_the_server_and_the_server_is_reused(tmp_path):
    first = _run_on_two_workers(tmp_path)
    assert len(first) == 40
    parents = {parent for _, parent in first}
    assert len(parents) == 1 and os.getpid() not in parents  # forked by the server
    server = parents.pop()
    assert server in _children(os.getpid())
    second = _run_on_two_workers(tmp_path)
    assert {parent for _, parent in second} == {server}  # the same server, still running


def test_a_changed_environment_starts_a_new_server(tmp_path, monkeypatch):
    (before,) = {parent for _, parent in _run_on_two_workers(tmp_path)}
    monkeypatch.setenv("BEAM_ETL_TEST_MARK", "changed")
    (after,) = {parent for _, parent in _run_on_two_workers(tmp_path)}
    assert after != before
    for _ in range(100):  # the old server was stopped
        if before not in _children(os.getpid()):
            break
        time.sleep(0.05)
    assert before not in _children(os.getpid())


def test_without_a_server_each_worker_runs_the_harness_itself(tmp_path, monkeypatch):
    ended = subprocess.Popen(["true"])
    ended.wait()  # a server that has died: its process is gone
    command = f"exec {sys.executable} -m beam_etl.worker --attach {tmp_path}/no.sock {ended.pid}"
    monkeypatch.setattr(runner, "worker_command", lambda: command)
    began = time.monotonic()
    rows = _run_on_two_workers(tmp_path)
    assert time.monotonic() - began < worker.ATTACH_WAIT_SECONDS / 2  # did not wait for it
    assert len(rows) == 40
    # each worker is the process the runner started: its parent is this process
    assert {parent for _, parent in rows} == {os.getpid()}


def test_a_server_that_cannot_start_leaves_each_worker_to_import_beam(tmp_path, monkeypatch):
    def cannot_start(*args, **kwargs):
        raise PermissionError("no temporary folder here")

    monkeypatch.setattr(worker, "_Server", cannot_start)
    monkeypatch.setenv("BEAM_ETL_TEST_MARK", "no server")  # the running one does not fit
    rows = _run_on_two_workers(tmp_path)
    assert len(rows) == 40
    assert {parent for _, parent in rows} == {os.getpid()}  # started by the runner itself


def test_a_worker_leaves_when_its_attaching_process_is_killed(tmp_path):
    worker.start_server()
    socket_path, server = worker._SERVER.socket, worker._SERVER.pid
    before = _children(server)
    # A control address where nothing listens: the forked harness keeps trying to connect.
    env = dict(os.environ, CONTROL_API_SERVICE_DESCRIPTOR='url: "localhost:9"')
    attach = subprocess.Popen(
        [sys.executable, "-m", "beam_etl.worker", "--attach", socket_path, str(server)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        forked = set()
        for _ in range(200):
            forked = _children(server) - before
            if forked:
                break
            time.sleep(0.05)
        assert len(forked) == 1
        (pid,) = forked
        attach.send_signal(signal.SIGKILL)
        attach.wait(timeout=30)
        for _ in range(200):
            if _gone(pid):
                break
            time.sleep(0.05)
        assert _gone(pid)
    finally:
        if attach.poll() is None:
            attach.kill()


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (reaped, or a zombie its parent reaps within a second)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


AUTO = ["--direct_num_workers=0", "--direct_running_mode=multi_processing"]


def test_zero_workers_on_two_cores_is_one_worker_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "usable_cores", lambda: 2)
    rows = _run_with(tmp_path, AUTO)
    assert {pid for pid, _ in rows} == {os.getpid()}  # in process, no worker process


def test_zero_workers_on_eight_cores_is_four_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "usable_cores", lambda: 8)
    assert worker.chosen_workers(0) == 4 and worker.chosen_workers(3) == 3
    rows = _run_with(tmp_path, AUTO)
    pids = {pid for pid, _ in rows}
    assert os.getpid() not in pids and 1 <= len(pids) <= 4  # worker processes ran them


def test_the_command_line_starts_the_server_only_for_worker_processes(monkeypatch):
    from beam_etl.run import _local_worker_processes

    monkeypatch.setattr(worker, "usable_cores", lambda: 2)
    mode = "--direct_running_mode=multi_processing"
    assert _local_worker_processes(["--direct_num_workers=2", mode])
    assert _local_worker_processes(["--direct_running_mode", "multi_processing"])  # 1 process
    assert not _local_worker_processes(["--direct_num_workers=0", mode])  # 1 core pair: in process
    assert not _local_worker_processes(["--direct_num_workers=2"])  # in_memory
    assert not _local_worker_processes(["--runner=FlinkRunner", "--direct_num_workers=2", mode])
    monkeypatch.setattr(worker, "usable_cores", lambda: 8)
    assert _local_worker_processes(["--direct_num_workers", "0", mode])


def test_a_run_s_progress_channel_does_not_start_a_new_server(monkeypatch):
    """The launcher sets the progress address for each run (observers): the server started as
    the command line began is still the one its workers come from."""
    worker.start_server()
    first = worker._SERVER
    monkeypatch.setenv("BEAM_ETL_PROGRESS", "127.0.0.1:9/token")
    worker.start_server()
    assert worker._SERVER is first and first.alive()


def test_forked_workers_do_not_share_numpy_s_random_state(tmp_path):
    """A step drawing from numpy's global generator (np.random.*, pandas' sample()) gets other
    numbers in each worker, as in workers started afresh."""
    rows = _lines(
        tmp_path,
        TWO_WORKERS,
        lambda _: f"{os.getpid()} {__import__('numpy').random.randint(0, 2**62)}",
    )
    assert len({pid for pid, _ in rows}) == 2  # both workers drew
    drawn = [value for _, value in rows]
    assert len(set(drawn)) == len(drawn), sorted(drawn)[:6]


def test_a_killed_launcher_leaves_no_socket_folder(tmp_path):
    """The server removes its socket and folder as it leaves: its launcher, killed, could not."""
    script = (
        "from beam_etl import worker; worker.start_server();"
        " print(worker._SERVER.socket, flush=True); input()"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    socket_path = launcher.stdout.readline().strip()
    assert os.path.exists(os.path.dirname(socket_path))
    time.sleep(0.5)  # the server imports Beam meanwhile
    launcher.kill()
    launcher.wait()
    for _ in range(200):  # the server sees its input close once its imports are done
        if not os.path.exists(os.path.dirname(socket_path)):
            break
        time.sleep(0.05)
    assert not os.path.exists(os.path.dirname(socket_path))


LEFT_SERVER_SCRIPT = """
import os, subprocess, sys, time
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from beam_etl import runner
from beam_etl.runner import LocalRunner

folder = sys.argv[1]
path = os.path.join(folder, "fork.sock")
# A server that leaves (stopped by another thread's run, killed) while workers wait in its backlog.
listen = "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]);"
listen += " s.listen(64); time.sleep(3)"
server = subprocess.Popen([sys.executable, "-c", listen, path])
while not os.path.exists(path):
    time.sleep(0.01)
command = f"exec {sys.executable} -m beam_etl.worker --attach {path} {server.pid}"
runner.worker_command = lambda: command
options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
with beam.Pipeline(runner=LocalRunner(), options=options) as p:
    _ = (p | beam.Create(list(range(4))) | beam.Map(str)
         | beam.io.WriteToText(os.path.join(folder, "out"), shard_name_template=""))
"""


def test_workers_in_the_backlog_of_a_server_that_leaves_run_the_harness_themselves(tmp_path):
    """Before: each attaching process died of `ConnectionResetError` (a traceback) and the run
    waited forever for workers that never came."""
    result = subprocess.run(
        [sys.executable, "-c", LEFT_SERVER_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert sorted((tmp_path / "out").read_text().split()) == ["0", "1", "2", "3"]
