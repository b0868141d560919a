"""The progress display: moving counts on a terminal (read through a pseudo-terminal) with one
and two workers, periodic log lines when stderr is not a terminal, off under pytest.

The long runs read a 3,000,000-row CSV (6 columns, about 136 MB, made by `_orders_csv`):
reading it takes some 4-8 s on a shared 2-core machine, long enough to watch counts move.
"""

import fcntl
import io
import itertools
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from beam_etl import progress as display_module
from beam_etl.observers import Progress, SourceProgress

ROWS = 3_000_000
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
COUNT = re.compile(rb"([\d,]+) rows, ")
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
SPEC = """\
name: progress_orders
sources:
  - name: orders
    type: ReadFromCsv
    config: {{path: "{csv}", columns: {{amount: string}}}}
steps:
  - name: cast
    type: CastColumns
    input: orders
    config: {{columns: {{amount: "decimal(10,2)"}}}}
  - name: open_orders
    type: FilterRows
    input: cast
    config: {{where: "status != 'cancelled'"}}
sinks:
  - name: out
    type: WriteToParquet
    input: open_orders
    config: {{path: "${{OUTPUT_DIR}}/orders"}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, cast.error, open_orders.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects.jsonl"}}
"""


def _orders_csv(path: str, rows: int) -> None:
    """Write an orders extract: id, customer, amount, date, status, region."""
    rng = np.random.default_rng(7)
    days = pa.array(rng.integers(19000, 19700, rows).astype("int32")).cast(pa.date32())
    statuses = np.array(["new", "paid", "shipped", "cancelled"])
    regions = np.array(["north", "south", "east", "west"])
    table = pa.table(
        {
            "order_id": np.arange(1, rows + 1),
            "customer_id": rng.integers(1, 50_000, rows),
            "amount": np.round(rng.random(rows) * 1000, 2),
            "order_date": days,
            "status": statuses[rng.integers(0, 4, rows)],
            "region": regions[rng.integers(0, 4, rows)],
        }
    )
    pacsv.write_csv(table, path)


@pytest.fixture(scope="module")
def big_spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("progress")
    csv = folder / "orders.csv"
    _orders_csv(str(csv), ROWS)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(csv=csv))
    return spec


def _environment(**extra: str) -> dict[str, str]:
    """The test's environment as a user's shell would have it (not under pytest)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.pop("BEAM_ETL_PROGRESS", None)
    return {**env, **extra}


def _run_in_pty(command: list[str], env: dict[str, str]) -> tuple[int, list[tuple[float, bytes]]]:
    """Run `command` on a 160x40 pseudo-terminal; return its exit code and timed output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True
    )
    os.close(follower)
    chunks: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append((time.monotonic(), data))
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return process.wait(timeout=60), chunks


def _counts(chunks: list[tuple[float, bytes]]) -> list[tuple[float, int]]:
    """Return each new row count shown, with the time it reached the terminal."""
    seen: list[tuple[float, int]] = []
    for at, data in chunks:
        for match in COUNT.finditer(ANSI.sub(b"", data)):
            count = int(match.group(1).replace(b",", b""))
            if not seen or count != seen[-1][1]:
                seen.append((at, count))
    return seen


@pytest.mark.parametrize("workers", [[], TWO_WORKERS], ids=["1-worker", "2-workers"])
def test_a_terminal_shows_counts_moving_at_least_every_2_seconds(big_spec, tmp_path, workers):
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(big_spec)]
    command += ["--output-dir", str(tmp_path / "out"), *workers]
    code, chunks = _run_in_pty(command, _environment(TERM="xterm-256color"))
    text = ANSI.sub(b"", b"".join(data for _, data in chunks)).decode(errors="replace")
    assert code == 0, text[-2000:]
    assert "run " in text and "succeeded" in text
    shown = [(at, count) for at, count in _counts(chunks) if count > 0]
    counts = [count for _, count in shown]
    assert len(counts) >= 2, text[-2000:]
    assert counts == sorted(counts)  # distinct and increasing
    assert counts[-1] == ROWS  # the last view has every row
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(shown)]
    assert max(gaps) <= 2.0, (gaps, counts)
    assert "135.7 MB" in text and "%" in text and "rows/s" in text
    assert re.search(r"step (orders|cast|open_orders|out)", text)
    assert "0 dead letters" in text
    if workers:
        assert "2 workers" in text
    assert "━" in text  # rich's bar


def test_without_a_terminal_progress_is_a_log_line_every_few_seconds(big_spec, tmp_path):
    # The file three times (links to it): observers hear every 0.5 s, and reading 3M rows
    # takes ~1 s on a quiet machine, too short for three lines.
    for copy in ("orders_1.csv", "orders_2.csv", "orders_3.csv"):  # in this test's own folder
        (tmp_path / copy).symlink_to(big_spec.parent / "orders.csv")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(csv=tmp_path / "orders_*.csv"))
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", str(spec)]
    command += ["--output-dir", str(tmp_path / "out")]
    process = subprocess.Popen(
        command,
        env=_environment(BEAM_ETL_PROGRESS_SECONDS="0.2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = [(time.monotonic(), line) for line in process.stderr]
    assert process.wait(timeout=300) == 0, lines
    progress = [(at, line) for at, line in lines if line.startswith("progress: ")]
    assert len(progress) >= 3, lines
    assert all(COUNT_TEXT.search(line) for _, line in progress)
    counts = [int(COUNT_TEXT.search(line).group(1).replace(",", "")) for _, line in progress]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(progress)]
    assert all(0.1 <= gap <= 2.0 for gap in gaps), gaps  # one every 0.2 s (asked), not more
    assert all("\x1b[" not in line for _, line in lines)  # plain text, no terminal codes
    assert "step " in progress[-1][1] and "dead letters" in progress[-1][1]


COUNT_TEXT = re.compile(r"orders ([\d,]+) rows, ")


def test_auto_is_off_under_pytest_and_picks_by_terminal_otherwise(monkeypatch):
    assert display_module.display("auto", io.StringIO()) is None  # under pytest
    assert display_module.display("off", io.StringIO()) is None
    assert isinstance(display_module.display("log", io.StringIO()), display_module.LogProgress)
    assert isinstance(display_module.display("bar", io.StringIO()), display_module.LiveProgress)
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert isinstance(display_module.display("auto", io.StringIO()), display_module.LogProgress)
    with pytest.raises(ValueError, match="`--progress` must be one of"):
        display_module.display("loud")


def test_a_log_line_names_rows_bytes_percent_rate_eta_step_and_dead_letters():
    stream = io.StringIO()
    log = display_module.LogProgress(stream, every=2.0)
    source = SourceProgress("orders", 1_234_567, 48 << 20, 136 << 20, 250_000.0, 35.3, 12.4)
    for elapsed in (1.0, 2.5, 3.0, 4.6):
        log.step_progress(Progress("r", elapsed, [source], {}, "cast", 7, 2))
    assert stream.getvalue().splitlines() == [
        "progress: orders 1,234,567 rows, 48.0 MB/136.0 MB, 35%, 250,000 rows/s, ETA 12 s; "
        "step cast; 7 dead letters; 2 s elapsed, 2 workers",
        "progress: orders 1,234,567 rows, 48.0 MB/136.0 MB, 35%, 250,000 rows/s, ETA 12 s; "
        "step cast; 7 dead letters; 5 s elapsed, 2 workers",
    ]


def test_the_live_view_draws_a_bar_per_source_and_the_status_line():
    from datetime import UTC, datetime

    from beam_etl.observers import RunInfo

    stream = io.StringIO()
    live = display_module.LiveProgress(stream)
    info = RunInfo(
        "r", "p", "spec.yaml", "f" * 64, datetime.now(UTC), [], {"orders": 100, "db": None}, "."
    )
    live.run_started(info)
    orders = SourceProgress("orders", 5_000, 50, 100, 1_000.0, 50.0, 3.0)
    db = SourceProgress("db", 7, 0, None, 2.0, None, None)
    live.step_progress(Progress("r", 1.0, [orders, db], {}, "cast", 2, 1))
    live.run_finished(None)  # type: ignore[arg-type]
    text = stream.getvalue()  # not a terminal: rich draws the last view once, at the end
    assert "orders" in text and "5,000 rows, 0.0 MB/0.0 MB, 50%, 1,000 rows/s, ETA 3 s" in text
    assert "db" in text and "7 rows, 2 rows/s" in text
    assert "step cast; 2 dead letters; 1 s elapsed" in text
