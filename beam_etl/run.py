"""`python -m beam_etl.run`: load a spec, validate it, run it, report.

With no arguments it runs the bundled demo; `infer-schema PATH` prints a file's schema.
Arguments it does not know are Beam pipeline options and pass through (`--runner`,
`--direct_num_workers`, `--job_endpoint`, ...).
Exit codes: 0 success, 1 the pipeline failed (its counts do not add up, a quality check
failed, a sink could not publish, Ctrl-C), 2 usage or spec error. Known errors print one line
and no traceback, unless `--debug`.
"""

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from beam_etl import __version__
from beam_etl.core.errors import BeamEtlError, UsageError
from beam_etl.usage import (
    DEFAULT_OUTPUT_DIR,
    DEMO_DIR,
    DEMO_SPEC,
    UsageParser,
)
from beam_etl.usage import (
    variables as _variables,
)

_EPILOG = """\
Print a file's or a query's schema to pin in a spec:
  python -m beam_etl.run infer-schema data/orders.csv [--format yaml] [--sample-rows N|all]
  python -m beam_etl.run infer-schema --source postgres --database shop --query "SELECT ..."

Replay chosen dead letters after fixing their cause (loads exactly those rows, once):
  python -m beam_etl.run replay --pipeline spec.yaml --dead-letters out/rejects.jsonl
      [--reason cast_failed] [--step NAME] [--into NAME] [--skip-sink NAME] [--dry-run]

Render a run's HTML (or Markdown) report again, beside its JSON:
  python -m beam_etl.run report beam_etl_output/run_report.json [--format html|md]

Show the runs recorded beside the outputs (status, times, counts, memory):
  python -m beam_etl.run history [--pipeline spec.yaml] [--output-dir DIR] [--last 20]

Resume a failed run from its checkpoints (`checkpoint: true` steps, or --checkpoint-all):
  python -m beam_etl.run --pipeline spec.yaml --resume RUN_ID|last
  python -m beam_etl.run checkpoints list|clean [--older-than 7d] [--output-dir D | --pipeline F]

Show where a column comes from, from the spec alone (nothing is run):
  python -m beam_etl.run lineage --pipeline spec.yaml [--column sink.column] [--format json]

Show or forget what incremental sources remember between runs:
  python -m beam_etl.run state show|reset --pipeline spec.yaml [--source NAME]

Any other --option is a Beam pipeline option, for example:
  --direct_num_workers=2 --direct_running_mode=multi_processing   (two local processes)
  --runner=PortableRunner --job_endpoint=localhost:8099            (a Beam job service)
  --runner=FlinkRunner --flink_master=HOST:PORT   (scripts/clusters.sh up flink; README "Flink")
The default runner is beam_etl's local runner (DirectRunner's choice without Prism).
"""


def _parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="python -m beam_etl.run",
        description="Run a beam_etl pipeline spec (the bundled demo when none is given).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pipeline", metavar="FILE", help="YAML pipeline spec to run")
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help="folder for the demo's outputs and the run report; ${OUTPUT_DIR} in specs "
        f"(default: ./{DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument(
        "--report", metavar="FILE", help="run report path (default: OUTPUT_DIR/run_report.json)"
    )
    parser.add_argument("--run-id", help="run id (default: a new one); ${RUN_ID} in specs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a spec variable ${NAME} (repeatable)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the spec and print the graph without running it",
    )
    parser.add_argument(
        "--checkpoint-all",
        action="store_true",
        help="checkpoint every source and step (as `checkpoint: true` on each)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="rerun RUN_ID (or `last`), reusing its checkpoints that still match the spec",
    )
    parser.add_argument(
        "--list-transforms",
        nargs="?",
        const="text",
        choices=("text", "markdown"),
        help="list every transform type with its arguments (`markdown`: the README's table)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "off"),
        default="auto",
        help="progress while running: a live view on a terminal (bar), a line every few "
        "seconds (log), none (off); auto: bar on a terminal, else log (default: auto)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="repeat the run every `interval` of its change sources (as `mode: follow`)",
    )
    parser.add_argument("--follow-runs", type=int, metavar="N", help="with --follow: stop after N")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Beam's logs")
    parser.add_argument("--version", action="version", version=f"beam_etl {__version__}")
    return parser


class _QuietBeam(logging.Filter):
    """Hide Beam's own log lines unless --debug: its import-time chatter (missing GCP clients,
    ...), and the ERROR lines and tracebacks it logs when a step fails, which the run reports
    in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apache_beam" not in record.pathname and not record.name.startswith(
            ("apache_beam", "grpc", "absl")
        )


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if debug:
        os.environ["BEAM_ETL_DEBUG"] = "1"  # worker processes log at the launcher's level
    else:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietBeam())
        warnings.filterwarnings("ignore")
        # Beam's runner threads (worker handlers, data channels) die with tracebacks of their
        # own when a run is stopped; the run reports why it stopped in one line.
        threading.excepthook = _quiet_thread_exception


def _quiet_thread_exception(args: threading.ExceptHookArgs) -> None:
    logging.getLogger(__name__).debug(
        "thread %s: %s", getattr(args.thread, "name", "?"), args.exc_value
    )


def _infer_schema(argv: list[str]) -> int:
    parser = UsageParser(
        prog="python -m beam_etl.run infer-schema",
        description=(
            "Infer a schema from a file (CSV, JSON, Parquet, Avro, Excel) or from a PostgreSQL "
            "or MySQL table or query, and print it, to pin in a spec."
        ),
    )
    parser.add_argument("path", nargs="?", help="the file (its extension names the format)")
    parser.add_argument("--source", choices=("postgres", "mysql"), help="read a database")
    parser.add_argument("--table", help="database table to sample (with --source)")
    parser.add_argument("--query", help="SELECT to sample (with --source)")
    parser.add_argument("--database", help="database name (with --source)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="server port (default: the dialect's)")
    parser.add_argument("--user", help="user name (default: postgres / root)")
    parser.add_argument(
        "--dsn-env", help="environment variable holding a DSN (postgresql://... or mysql://...)"
    )
    parser.add_argument(
        "--sample-rows", default="10000", help="rows to look at, or `all` (default: 10000)"
    )
    parser.add_argument("--format", choices=("json", "yaml"), default="json")
    parser.add_argument("--delimiter", default=",", help="CSV field delimiter")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.sample_rows != "all" and not args.sample_rows.isdigit():
        raise UsageError(f"`--sample-rows` must be a number or `all`, not `{args.sample_rows}`")
    if (args.path is None) == (args.source is None):
        raise UsageError("Give a file PATH or `--source postgres|mysql` (see --help)")
    from beam_etl.schema import infer  # lazy: the command line starts fast

    rows = None if args.sample_rows == "all" else int(args.sample_rows)
    try:
        if args.source:
            schema = infer.infer_source_schema(_database_source(args), sample_rows=rows)
        elif (reader := infer.reader_for_path(args.path)) is not None:
            schema = infer.infer_source_schema(reader, sample_rows=rows)
        else:
            schema = infer.infer_schema(args.path, sample_rows=rows, delimiter=args.delimiter)
        text = infer.schema_text(schema, args.format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _state(argv: list[str]) -> int:
    """`state show|reset`: print or forget what incremental sources remember between runs."""
    parser = UsageParser(
        prog="python -m beam_etl.run state",
        description="Show or reset the state incremental sources keep between runs.",
    )
    parser.add_argument("action", choices=("show", "reset"))
    parser.add_argument("--pipeline", metavar="FILE", help="the spec (default: the demo)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="as for a run")
    parser.add_argument("--source", help="only this source or step")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    from beam_etl.core.state import StateStore  # lazy: the command line starts fast
    from beam_etl.pipeline import load_plan  # lazy: the command line starts fast

    output_dir = os.path.abspath(args.output_dir)
    names = {"OUTPUT_DIR": output_dir, "DEMO_DIR": DEMO_DIR, **_variables(args.set)}
    plan = load_plan(args.pipeline or DEMO_SPEC, run_id="state", variables=names)
    store = StateStore(os.path.join(output_dir, ".beam_etl", "state.sqlite"))
    pipeline = plan.spec.name
    from beam_etl.cli import state_keeper  # lazy: the command line starts fast

    keeper = state_keeper(plan)
    kept = keeper[1].state_store() if keeper is not None else None
    holder = keeper[0] if keeper is not None else ""
    if args.action == "reset":
        removed = store.reset(pipeline, args.source)
        if kept is not None:  # the copy committed with the loads goes too
            removed += kept.reset(pipeline, args.source)
        what = f"source `{args.source}`" if args.source else "every source"
        print(f"state of pipeline `{pipeline}` reset for {what} ({removed} entries removed)")
        return 0
    entries = store.entries(pipeline, args.source)
    in_database = kept.entries(pipeline) if kept is not None else {}
    if not entries and not in_database:
        print(f"pipeline `{pipeline}` has no state in {store.path}")
    for entry in entries:
        if entry["source"] in in_database:
            continue  # shown below, as the database holds it (it wins)
        value = json.dumps(entry["value"], sort_keys=True)
        print(f"{entry['source']}: {value} (run {entry['run_id']}, {entry['updated_at']})")
    for source, kept_entry in sorted(in_database.items()):
        if args.source in (None, source):
            shown = json.dumps(kept_entry["value"], sort_keys=True)
            run = kept_entry["run_id"]
            print(f"{source}: {shown} (run {run}, kept in the database of `{holder}`)")
    return 0


def _report(argv: list[str]) -> int:
    """`report RUN_REPORT_JSON`: render a run's HTML or Markdown report again, beside it."""
    parser = UsageParser(
        prog="python -m beam_etl.run report",
        description="Render a run report (run_report.json) again as HTML or Markdown.",
    )
    parser.add_argument("path", metavar="RUN_REPORT_JSON")
    parser.add_argument("--format", choices=("html", "md"), default="html")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.path):
        raise UsageError(f"No run report at `{args.path}`")
    from beam_etl.reporting import write_pages  # lazy: the command line starts fast

    print(f"{args.format} report: {write_pages(args.path, (args.format,))[args.format]}")
    return 0


def _database_source(args: argparse.Namespace) -> Any:
    """Return the database reader `infer-schema --source` samples (password from the env)."""
    if args.path is not None:
        raise UsageError("Give either a file PATH or `--source`, not both")
    common = {"table": args.table, "query": args.query, "database": args.database}
    common["host"] = args.host
    if args.port is not None:
        common["port"] = args.port
    if args.source == "postgres":
        from beam_etl.io.postgresio import ReadFromPostgres  # lazy: the command line starts fast

        return ReadFromPostgres(**common, user=args.user or "postgres", dsn_env=args.dsn_env)
    from beam_etl.io.mysqlio import ReadFromMySql  # lazy: the command line starts fast

    return ReadFromMySql(**common, user=args.user or "root", dsn_env=args.dsn_env)


def _local_worker_processes(beam_args: list[str]) -> bool:
    """Whether the run asks for local worker processes (then their fork server starts now)."""
    runner = [a for a in beam_args if a.startswith("--runner")]
    if runner and not any(name.lower() in runner[-1].lower() for name in ("direct", "local")):
        return False
    joined = " ".join(beam_args).replace("=", " ").split()
    if "multi_processing" not in joined:
        return False
    from beam_etl.worker import chosen_workers  # lazy: only runs with worker processes

    requested = "1"
    for at, token in enumerate(joined[:-1]):
        if token == "--direct_num_workers":
            requested = joined[at + 1]  # the last one given wins, as in argparse
    return requested != "0" or chosen_workers(0) > 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _configure_logging(debug)
    try:
        if argv[:1] == ["infer-schema"]:
            return _infer_schema(argv[1:])
        if argv[:1] == ["state"]:
            return _state(argv[1:])
        if argv[:1] == ["lineage"]:
            from beam_etl.lineage.command import (
                command as lineage,  # lazy: the command line starts fast
            )

            return lineage(argv[1:])
        if argv[:1] == ["checkpoints"]:
            from beam_etl.checkpoints.command import (
                main as checkpoints,  # lazy: the command line starts fast
            )

            return checkpoints(argv[1:], default_output_dir=DEFAULT_OUTPUT_DIR, demo_spec=DEMO_SPEC)
        if argv[:1] == ["history"]:
            from beam_etl.history import command  # lazy: the command line starts fast

            return command(argv[1:])
        if argv[:1] == ["report"]:
            return _report(argv[1:])
        if argv[:1] == ["replay"]:
            from beam_etl.replay import replay  # lazy: the command line starts fast

            return replay(argv[1:])
        args, beam_args = _parser().parse_known_args(argv)
        unknown = [a for a in beam_args if not a.startswith("--")]
        if unknown:
            raise UsageError(f"Unexpected argument `{unknown[0]}` (see --help)")
        if _local_worker_processes(beam_args):
            from beam_etl.worker import start_server  # lazy: only runs with worker processes

            start_server()  # its imports overlap this process's own and the planning
        with _uncollected():
            from beam_etl import cli  # lazy: the command line starts fast
        if args.list_transforms:
            from beam_etl.core.catalogue import catalogue_table  # lazy, as `cli`

            markdown = args.list_transforms == "markdown"
            print(catalogue_table() if markdown else cli.list_transforms())
            return 0
        return cli.run(args, beam_args, _variables(args.set))
    except BeamEtlError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted (Ctrl-C); nothing was published", file=sys.stderr)
        return 1


def console_main() -> None:
    """Entry point of `python -m beam_etl.run` and `beam-etl`: exit with `main`'s code.

    A Ctrl-C that arrives after the run has ended (while Beam's threads shut down) must not turn
    its exit code into a signal death: the outcome is already decided and printed.
    """
    global _command
    _command = True
    _one_blas_thread()
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    leave(code)


_command = False  # this process is the command line (not a caller of `main`, such as a test)


def _one_blas_thread() -> None:
    """numpy's OpenBLAS starts a thread for each core as numpy is imported, which spin ~0.1 CPU
    s beside the start-up, and nothing in a run multiplies matrices: one thread, unless the
    user's environment says otherwise (worker processes inherit it)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@contextlib.contextmanager
def _uncollected() -> Iterator[None]:
    """No garbage collection while Beam and beam_etl are imported (their ~1M objects are all
    kept: collecting among them cost ~0.1 s of each start); after, what they made is set apart
    for good (`gc.freeze`), so that the run's collections do not go through it again. Only in
    the command line's own process."""
    if not (_command and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def leave(code: int) -> None:
    """Exit with `code` as an interpreter exit does, without its teardown of every module and
    object: with Beam loaded that teardown took ~0.23 s of each run, and nothing is left to
    do in it. As `sys.exit` would: wait for the threads that are not daemons, run the exit
    handlers (logging, temporary folders, the worker server), flush standard streams (exit
    code 120 if that fails and the code was 0, as the interpreter does)."""
    # What the interpreter runs first at exit: the thread pools' exit hooks (they wake their
    # idle workers), then it joins every thread that is not a daemon.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # as the interpreter: output lost, exit code 120
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    console_main()
