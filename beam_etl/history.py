"""Run history: one row per run, in success or failure, in an SQLite file beside the outputs.

`HistoryObserver` appends a record when a run finishes (`<output dir>/.beam_etl/history.sqlite`,
next to the state store): run id, pipeline name, spec fingerprint, status, start and end,
seconds, rows read, written and rejected, counts per step and peak memory (the launcher's
and, when the run's progress was watched, each worker process's that reported). `load` reads
it back (the HTML run report's chart); `python -m beam_etl.run history` prints it.
"""

import json
import os
import sqlite3
from typing import Any, Final

from beam_etl.core.errors import UsageError
from beam_etl.observers import Observer, RunSummary
from beam_etl.pipeline.loader import load_text
from beam_etl.pipeline.model import parse
from beam_etl.usage import DEFAULT_OUTPUT_DIR, DEMO_DIR, UsageParser
from beam_etl.usage import variables as _variables

FILE_NAME: Final = "history.sqlite"
WORK_DIR: Final = ".beam_etl"
_COLUMNS: Final = (
    "run_id",
    "pipeline",
    "fingerprint",
    "status",
    "started",
    "finished",
    "seconds",
    "rows_read",
    "rows_written",
    "rows_rejected",
    "peak_rss_mb",
    "worker_peak_rss_mb",
    "steps",
    "error",
)
_CREATE: Final = (
    "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "run_id TEXT NOT NULL, pipeline TEXT NOT NULL, fingerprint TEXT NOT NULL, "
    "status TEXT NOT NULL, started TEXT NOT NULL, finished TEXT NOT NULL, seconds REAL NOT NULL, "
    "rows_read INTEGER NOT NULL, rows_written INTEGER NOT NULL, rows_rejected INTEGER NOT NULL, "
    "peak_rss_mb REAL NOT NULL, worker_peak_rss_mb TEXT NOT NULL, steps TEXT NOT NULL, "
    "error TEXT)"
)


def history_path(work_dir: str) -> str:
    """Return the history file of a work dir (`<output dir>/.beam_etl`)."""
    return os.path.join(work_dir, FILE_NAME)


def _connect(path: str) -> sqlite3.Connection:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    connection.execute(_CREATE)
    return connection


def append(work_dir: str, summary: RunSummary) -> None:
    """Append the record of one finished run to the history of `work_dir`."""
    steps = {
        s.name: {"in": s.rows_in, "out": s.rows_out, "rejected": s.rows_rejected}
        for s in summary.steps
    }
    workers = {str(pid): mb for pid, mb in sorted(summary.worker_peak_rss_mb.items())}
    values = (
        summary.run_id,
        summary.pipeline,
        summary.fingerprint,
        summary.status,
        summary.started_at.isoformat(),
        summary.finished_at.isoformat(),
        summary.seconds,
        summary.rows_read,
        summary.rows_written,
        summary.rows_rejected,
        summary.peak_rss_mb,
        json.dumps(workers),
        json.dumps(steps),
        summary.error,
    )
    connection = _connect(history_path(work_dir))
    try:
        connection.execute(
            f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            values,
        )
    finally:
        connection.close()


class HistoryObserver(Observer):
    """Appends every finished run to the history beside its outputs."""

    name = "history"

    def run_finished(self, summary: RunSummary) -> None:
        append(summary.work_dir, summary)


def load(output_dir: str, pipeline: str | None = None, last: int = 20) -> list[dict]:
    """Return the last `last` runs recorded under `output_dir` (of `pipeline` only, if given),
    oldest first, newest last.

    Each run is a dict with `run_id, pipeline, fingerprint, status, started, finished` (ISO
    text), `seconds` (float), `rows_read, rows_written, rows_rejected, peak_rss_mb`, `steps`
    (step -> `{in, out, rejected}`), plus `worker_peak_rss_mb` (pid -> MB) and `error`.
    A folder without history gives an empty list.
    """
    path = history_path(os.path.join(output_dir, WORK_DIR))
    if not os.path.exists(path):
        return []
    connection = _connect(path)
    try:
        rows = connection.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE ? IS NULL OR pipeline = ? "
            "ORDER BY id DESC LIMIT ?",
            (pipeline, pipeline, max(0, last)),
        ).fetchall()
    finally:
        connection.close()
    runs = []
    for row in reversed(rows):
        run: dict[str, Any] = dict(zip(_COLUMNS, row))
        run["steps"] = json.loads(run["steps"])
        run["worker_peak_rss_mb"] = json.loads(run["worker_peak_rss_mb"])
        run["seconds"] = float(run["seconds"])
        runs.append(run)
    return runs


def table(runs: list[dict]) -> str:
    """Return `runs` as a compact text table, one line a run."""
    header = (
        f"{'run id':<26}  {'pipeline':<16}  {'status':<9}  {'started':<19}  {'secs':>7}  "
        f"{'read':>11}  {'written':>11}  {'rejected':>9}  {'peak MB':>8}  fingerprint"
    )
    lines = [header]
    for run in runs:
        workers = run["worker_peak_rss_mb"].values()
        peak = max([run["peak_rss_mb"], *workers])
        lines.append(
            f"{run['run_id']:<26}  {run['pipeline'][:16]:<16}  {run['status']:<9}  "
            f"{run['started'][:19].replace('T', ' '):<19}  {run['seconds']:>7.1f}  "
            f"{run['rows_read']:>11,}  {run['rows_written']:>11,}  {run['rows_rejected']:>9,}  "
            f"{peak:>8.0f}  {run['fingerprint'][:12]}"
        )
    return "\n".join(lines)


def command(argv: list[str]) -> int:
    """`history [--pipeline spec.yaml | --output-dir D] [--last N]`: print the recent runs."""
    parser = UsageParser(
        prog="python -m beam_etl.run history",
        description="Print the runs recorded beside the outputs, oldest first.",
    )
    parser.add_argument("--pipeline", metavar="FILE", help="only the runs of this spec")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="as for a run")
    parser.add_argument("--last", type=int, default=20, help="how many runs (default: 20)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.last < 1:
        raise UsageError(f"`--last` must be at least 1, not `{args.last}`")
    output_dir = os.path.abspath(args.output_dir)
    name = None
    if args.pipeline:
        try:
            with open(args.pipeline, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as exc:
            raise UsageError(f"Cannot read spec `{args.pipeline}`: {exc.strerror}") from None
        names = {"OUTPUT_DIR": output_dir, "DEMO_DIR": DEMO_DIR, "RUN_ID": "history"}
        names["SPEC_DIR"] = os.path.dirname(os.path.abspath(args.pipeline))
        loaded = load_text(text, {**names, **_variables(args.set)}, source=args.pipeline)
        name = parse(loaded.document, args.pipeline).name
    runs = load(output_dir, name, args.last)
    if not runs:
        which = f" of pipeline `{name}`" if name else ""
        print(f"no runs{which} recorded in {history_path(os.path.join(output_dir, WORK_DIR))}")
        return 0
    print(table(runs))
    return 0
