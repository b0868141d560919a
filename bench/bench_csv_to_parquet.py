"""Benchmark: CSV -> cast -> filter -> Parquet, plain pyarrow against beam_etl pipelines.

Usage: `python bench/bench_csv_to_parquet.py [--rows N] [--repeat K] [--json FILE]`.

Every variant does the same work on the same cached CSV (see `bench/datagen.py`): read nine
typed columns (`amount` as text), cast `amount` to float64, keep `amount > 10`, write snappy
Parquet. Variants run interleaved (A, B, C, A, B, C, ...), each in a fresh subprocess, so that
page cache and machine noise are shared evenly and memory is measured per variant:

- `pyarrow`: `pyarrow.csv.open_csv` streaming, `pyarrow.compute` per batch, one
  `pyarrow.parquet.ParquetWriter`. The reference: what the engine alone costs.
- `beam1`: the beam_etl pipeline (ReadFromCsv, CastColumns, FilterRows, WriteToParquet, dead
  letters to JSONL) on `LocalRunner`, one in-process worker.
- `beam2`: the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`.

A first, untimed round warms the page cache and checks that every variant wrote the same rows
(count, schema and sum of `amount`, read back from the Parquet output); every timed run is
checked again. Memory is sampled from /proc for the whole process tree (so multi-process
workers count) and also taken from `getrusage` (peak of the largest single process).
`--profile` instead runs the one-worker pipeline once under cProfile and prints where it spends
its time. Timings are reported, never asserted.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Final

BENCH_DIR: Final = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT: Final = os.path.dirname(BENCH_DIR)
OUT_DIR: Final = os.path.join(BENCH_DIR, "out")

sys.path.insert(0, BENCH_DIR)
import datagen  # noqa: E402 - the generator lives beside this script

#: name -> (label, extra pipeline arguments); `None` marks the plain pyarrow reference.
VARIANTS: Final[dict[str, tuple[str, list[str] | None]]] = {
    "pyarrow": ("pyarrow (reference)", None),
    "beam1": ("beam_etl 1 worker", []),
    "beam2": (
        "beam_etl 2 workers",
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    ),
}
FILTER_THRESHOLD: Final = 10
NULL_VALUES: Final = ["", "NULL", "null", "\\N"]  # beam_etl's ReadFromCsv defaults
PYARROW_BLOCK_BYTES: Final = 16 << 20  # same as ReadFromCsv's default block_size_mb
POLL_SECONDS: Final = 0.1
#: A run during which other processes used this much of the machine's CPU is flagged.
SUSPECT_PERCENT: Final = 10
_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")
_MIB: Final = 1 << 20


# --------------------------------------------------------------------------------------------
# Child side: one variant, one run.
# --------------------------------------------------------------------------------------------


def _run_pyarrow(csv_path: str, out_dir: str) -> None:
    """The reference: stream the CSV with pyarrow, cast and filter per batch, write Parquet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    arrow_types = {
        "int64": pa.int64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us"),  # what beam_etl's `timestamp` means
    }
    types = {name: arrow_types[t] for name, t in datagen.COLUMN_TYPES.items()}
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=PYARROW_BLOCK_BYTES),
        # Same parsing rules as ReadFromCsv with a quote character: quoted newlines allowed.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=NULL_VALUES,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    schema = reader.schema
    index = schema.get_field_index("amount")
    schema = schema.set(index, pa.field("amount", pa.float64()))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "part-00000.parquet")
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for batch in reader:
            amount = pc.cast(batch.column(index), pa.float64())
            batch = batch.set_column(index, "amount", amount)
            batch = batch.filter(pc.greater(amount, FILTER_THRESHOLD))
            if batch.num_rows:
                writer.write_batch(batch)


def _run_beam(csv_path: str, out_dir: str, dead_letters: str, extra_args: list[str]) -> None:
    """The beam_etl pipeline, built with the public API."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_etl.io.csvio import ReadFromCsv
    from beam_etl.io.deadletters import WriteToDeadLetters
    from beam_etl.io.parquetio import WriteToParquet
    from beam_etl.runner import LocalRunner
    from beam_etl.transforms.cleaning import CastColumns
    from beam_etl.transforms.expressions import FilterRows

    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions(extra_args))
    read = p | "read" >> ReadFromCsv(csv_path, columns=dict(datagen.COLUMN_TYPES))
    cast = read.output | "cast" >> CastColumns({"amount": "float64"})
    kept = cast.output | "filter" >> FilterRows(f"amount > {FILTER_THRESHOLD}")
    kept.output | "write" >> WriteToParquet(out_dir)
    errors = (read.error, cast.error, kept.error)
    errors | "dl" >> WriteToDeadLetters(dead_letters)
    p.run().wait_until_finish()


def _import_variant(name: str) -> None:
    """Import what a variant needs before the clock starts (import time is not its work)."""
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401

    if VARIANTS[name][1] is not None:
        import apache_beam  # noqa: F401

        import beam_etl.io.csvio  # noqa: F401


def child_main(args: argparse.Namespace) -> None:
    """Run one variant once and write its timing and rusage to `args.result`."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    _import_variant(args.child)
    profiler = None
    if args.profile_to:
        import cProfile

        profiler = cProfile.Profile()
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    extra = VARIANTS[args.child][1]
    if extra is None:
        _run_pyarrow(args.csv, args.out)
    else:
        _run_beam(args.csv, args.out, args.dead_letters, extra)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - began
    if profiler is not None:
        profiler.dump_stats(args.profile_to)
    result = {
        "seconds": seconds,
        # Linux reports ru_maxrss in KiB. CHILDREN: the largest reaped descendant (workers).
        "maxrss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "maxrss_children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    with open(args.result, "w", encoding="utf-8") as out:
        json.dump(result, out)


# --------------------------------------------------------------------------------------------
# Parent side: memory sampling of a process tree.
# --------------------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str]]:
    """Return pid -> (parent pid, command name) for every process visible in /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue  # exited meanwhile
        close = text.rfind(b")")
        command = text[text.find(b"(") + 1 : close].decode(errors="replace")
        found[int(entry)] = (int(text[close + 2 :].split()[1]), command)
    return found


def _tree(root: int) -> dict[int, str]:
    """Return pid -> command name of `root` and all its live descendants."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    tree, pending = {}, [root]
    while pending:
        pid = pending.pop()
        tree[pid] = processes.get(pid, (0, "?"))[1]
        pending.extend(children.get(pid, ()))
    return tree


def _busy_cpu_seconds() -> float:
    """Return the CPU time every process of the machine has used since boot (all cores)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_and_pss(pid: int) -> tuple[int, int]:
    """Return the resident and proportional set sizes of `pid` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            rss = int(statm.read().split()[1]) * _PAGE_BYTES
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            match = re.search(rb"^Pss:\s+(\d+) kB", rollup.read(), re.MULTILINE)
        return rss, int(match.group(1)) * 1024 if match else rss
    except (OSError, ValueError, IndexError):
        return 0, 0


class TreeMemorySampler(threading.Thread):
    """Samples the summed RSS and PSS of a process tree every `POLL_SECONDS`, keeping peaks.

    Summed RSS counts pages shared between processes (libraries) once per process; PSS splits
    them, so the PSS sum is the fairer total for several processes. Sampling can miss a peak
    shorter than the interval; `getrusage` peaks (per process) are exact.
    """

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self._root = root
        self._stop_event = threading.Event()
        self.peak_rss = 0
        self.peak_pss = 0
        self.max_processes = 0
        self.commands: list[str] = []  # command names when the most processes were alive

    def sample(self) -> None:
        tree = _tree(self._root)
        sizes = {pid: _rss_and_pss(pid) for pid in tree}
        live = sorted(tree[pid] for pid, (rss, _) in sizes.items() if rss)
        self.peak_rss = max(self.peak_rss, sum(rss for rss, _ in sizes.values()))
        self.peak_pss = max(self.peak_pss, sum(pss for _, pss in sizes.values()))
        if len(live) > self.max_processes:
            self.max_processes, self.commands = len(live), live

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(POLL_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# --------------------------------------------------------------------------------------------
# Parent side: running variants and checking their outputs.
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run of one variant."""

    round: int
    seconds: float
    wall_seconds: float
    peak_tree_rss_mib: float
    peak_tree_pss_mib: float
    maxrss_single_mib: float
    processes: int
    commands: list[str]
    cpu_seconds: float
    other_cpu_percent: float
    rows_written: int


@dataclass
class VariantResult:
    """Every timed run of a variant and their summary."""

    name: str
    label: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)

    def peak(self, attribute: str) -> float:
        return max(getattr(s, attribute) for s in self.samples)


@dataclass(frozen=True)
class OutputCheck:
    """What a variant wrote, read back from its Parquet output."""

    rows: int
    schema: str
    amount_sum: float
    files: int
    dead_letters: int


def _paths(name: str) -> tuple[str, str]:
    return os.path.join(OUT_DIR, name), os.path.join(OUT_DIR, f"{name}.deadletters.jsonl")


def _clean(name: str) -> None:
    out, dead_letters = _paths(name)
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(dead_letters)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    if REPO_ROOT not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, path) if p)
    return env


@dataclass(frozen=True)
class Run:
    """What the parent saw of one child run."""

    result: dict  # what the child reported: seconds and its getrusage peaks
    wall_seconds: float
    sampler: TreeMemorySampler
    cpu_seconds: float  # user + system of the child and its reaped descendants (workers)
    other_cpu_percent: float  # CPU used meanwhile by processes outside the tree, % of machine


def run_variant(name: str, csv_path: str, round_number: int, profile_to: str | None = None) -> Run:
    """Run `name` once in a fresh subprocess; return its timings, memory and CPU use."""
    _clean(name)
    out, dead_letters = _paths(name)
    os.makedirs(os.path.join(OUT_DIR, "logs"), exist_ok=True)
    log_path = os.path.join(OUT_DIR, "logs", f"{name}-round{round_number}.log")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--csv",
        csv_path,
        "--out",
        out,
        "--dead-letters",
        dead_letters,
        "--result",
        result_path,
    ]
    if profile_to:
        command += ["--profile-to", profile_to]
    try:
        with open(log_path, "wb") as log:
            busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
            began = time.perf_counter()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=REPO_ROOT
            )
            sampler = TreeMemorySampler(process.pid)
            sampler.start()
            # wait4: the child's rusage includes the workers it reaped (Beam waits for them).
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - began
            code = process.returncode = os.waitstatus_to_exitcode(status)
            sampler.stop()
            tree_cpu = usage.ru_utime + usage.ru_stime
            other = _busy_cpu_seconds() - busy - tree_cpu - (_own_cpu_seconds() - own)
            other_percent = max(0.0, 100 * other / (wall * (os.cpu_count() or 1)))
        if code != 0:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                tail = log.read()[-4000:]
            raise SystemExit(f"Variant `{name}` failed with exit code {code}:\n{tail}")
        with open(result_path, encoding="utf-8") as handle:
            return Run(json.load(handle), wall, sampler, tree_cpu, other_percent)
    finally:
        os.remove(result_path)


def check_output(name: str) -> OutputCheck:
    """Read back what `name` wrote: rows, schema, sum of `amount`, dead letters."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out, dead_letters = _paths(name)
    files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    schema = pq.read_schema(files[0]) if files else None
    amount = sum(pc.sum(pq.read_table(f, columns=["amount"])["amount"]).as_py() or 0 for f in files)
    letters = 0
    if os.path.exists(dead_letters):
        with open(dead_letters, "rb") as handle:
            letters = sum(1 for _ in handle)
    text = ", ".join(f"{f.name}:{f.type}" for f in schema) if schema else ""
    return OutputCheck(rows, text, round(amount, 2), len(files), letters)


def _verify(checks: dict[str, OutputCheck], where: str) -> None:
    """Stop unless every variant wrote the same rows (count, schema, sum of `amount`)."""
    reference = next(iter(checks.values()))
    tolerance = 1e-9 * max(1.0, abs(reference.amount_sum))
    for check in checks.values():
        same = (check.rows, check.schema) == (reference.rows, reference.schema)
        if not same or abs(check.amount_sum - reference.amount_sum) > tolerance:
            details = "\n".join(f"  {n}: {asdict(c)}" for n, c in checks.items())
            raise SystemExit(
                f"Outputs differ ({where}); the comparison would not be honest:\n{details}"
            )


# --------------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------------


def _format_table(results: list[VariantResult], rows: int) -> str:
    reference = next((r for r in results if r.name == "pyarrow"), None)
    reference_rate = rows / reference.median("seconds") if reference else None
    header = (
        "variant",
        "median s",
        "min s",
        "rows/s",
        "vs pyarrow",
        "tree RSS MiB",
        "tree PSS MiB",
        "1-proc MiB",
        "procs",
        "CPU s",
        "other %",
        "wall s",
        "rows out",
    )
    lines = []
    for result in results:
        median = result.median("seconds")
        rate = rows / median
        ratio = f"{rate / reference_rate:.2f}x" if reference_rate else "-"
        lines.append(
            (
                result.label,
                f"{median:.2f}",
                f"{min(s.seconds for s in result.samples):.2f}",
                f"{rate:,.0f}",
                ratio,
                f"{result.median('peak_tree_rss_mib'):,.0f}",
                f"{result.median('peak_tree_pss_mib'):,.0f}",
                f"{result.median('maxrss_single_mib'):,.0f}",
                str(max(s.processes for s in result.samples)),
                f"{result.median('cpu_seconds'):.1f}",
                f"{max(s.other_cpu_percent for s in result.samples):.0f}",
                f"{result.median('wall_seconds'):.2f}",
                f"{result.samples[-1].rows_written:,}",
            )
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(cells)

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(row) for row in lines)])


_LEGEND: Final = """\
median s / min s: time inside the subprocess, from building the pipeline (or opening the CSV)
  to the end of the write, imports excluded; medians over the timed rounds.
rows/s: input rows / median s. vs pyarrow: throughput ratio to the pyarrow reference.
tree RSS / tree PSS MiB: peak of the summed RSS / PSS of the subprocess and all its
  descendants (Beam's worker processes included), sampled from /proc every 0.1 s; summed RSS
  counts shared library pages once per process, PSS shares them out (fairer for 2 workers).
1-proc MiB: getrusage ru_maxrss, the exact peak of the largest single process (the variant's
  own process or a reaped worker); it does not add workers together.
procs: most processes seen alive at once in the tree. CPU s: median user + system CPU of the
  tree (workers included) over the whole subprocess. other %: the most CPU that processes
  outside the tree used during one of the variant's runs, as % of the machine (/proc/stat);
  from about 10% the run shared the machine and its timing is suspect (flagged per round).
  wall s: subprocess wall time, with interpreter start and imports. rows out: rows in the
  Parquet output (checked equal across variants on every round)."""


def _versions() -> dict[str, str]:
    import numpy
    import pyarrow

    found = {
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        found["apache_beam"] = version("apache-beam")
    return found


def _reproduce(argv: list[str]) -> str:
    script = os.path.relpath(os.path.abspath(__file__), REPO_ROOT)
    return (
        f"cd {shlex.quote(REPO_ROOT)} && PYTHONPATH={shlex.quote(REPO_ROOT)} "
        f"{shlex.quote(sys.executable)} {script} {shlex.join(argv)}"
    ).rstrip()


# --------------------------------------------------------------------------------------------
# Profiling mode.
# --------------------------------------------------------------------------------------------


def _location(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    for root in (REPO_ROOT, *sys.path):
        if root and filename.startswith(root + os.sep):
            filename = os.path.relpath(filename, root)
            break
    return f"{filename}:{line}({function})"


def print_profile(path: str, top: int) -> None:
    """Print the top entries of a cProfile dump: beam_etl/pyarrow by cumulative time, and
    everything by own time."""
    import pstats

    stats = pstats.Stats(path).stats  # key -> (primitive calls, calls, own, cumulative, callers)
    total = max(ct for _, _, _, ct, _ in stats.values())

    def ours(key: tuple[str, int, str]) -> bool:
        text = f"{key[0]} {key[2]}"
        return "beam_etl" in text or "pyarrow" in text

    def show(title: str, keys: list) -> None:
        print(f"\n{title}")
        print(f"{'cumul s':>9} {'own s':>8} {'calls':>9}  function")
        for key in keys[:top]:
            _, calls, own, cumulative, _ = stats[key]
            print(f"{cumulative:9.2f} {own:8.2f} {calls:9d}  {_location(key)}")

    by_cumulative = sorted(stats, key=lambda k: stats[k][3], reverse=True)
    print(f"Profiled time (main thread): {total:.2f} s")
    show(
        f"Top {top} by cumulative time, inside beam_etl / pyarrow:",
        [k for k in by_cumulative if ours(k)],
    )
    show(
        f"Top {top} by own time, all functions:",
        sorted(stats, key=lambda k: stats[k][2], reverse=True),
    )


# --------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CSV -> cast -> filter -> Parquet: pyarrow against beam_etl (1 and 2 workers)."
    )
    parser.add_argument("--rows", type=int, default=3_000_000, help="CSV data rows (3e6)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (3)")
    parser.add_argument("--seed", type=int, default=datagen.DEFAULT_SEED, help="data seed")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed first round (outputs are still checked on every run)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="beam1",
        choices=list(VARIANTS),
        help="instead of timing, run one variant (default beam1) once under cProfile",
    )
    parser.add_argument("--top", type=int, default=15, help="profile entries to print (15)")
    hidden = argparse.SUPPRESS
    parser.add_argument("--child", choices=list(VARIANTS), help=hidden)
    parser.add_argument("--csv", help=hidden)
    parser.add_argument("--out", help=hidden)
    parser.add_argument("--dead-letters", help=hidden)
    parser.add_argument("--result", help=hidden)
    parser.add_argument("--profile-to", help=hidden)
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be positive")
    return args


def _profile(args: argparse.Namespace, csv_path: str) -> None:
    profile_path = os.path.join(OUT_DIR, f"{args.profile}.prof")
    os.makedirs(OUT_DIR, exist_ok=True)
    run = run_variant(args.profile, csv_path, 0, profile_to=profile_path)
    print(
        f"{VARIANTS[args.profile][0]} under cProfile: {run.result['seconds']:.2f} s "
        f"(wall {run.wall_seconds:.2f} s); stats in {os.path.relpath(profile_path, REPO_ROOT)}"
    )
    print_profile(profile_path, args.top)


def main(argv: list[str] | None = None) -> None:
    """Generate (once) the data, run the variants interleaved, print and save the results."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    if args.child:
        child_main(args)
        return
    began = time.perf_counter()
    csv_path = datagen.ensure_csv(args.rows, args.seed)
    if args.profile:
        _profile(args, csv_path)
        return
    names = [n for n in VARIANTS if n in args.variants.split(",")]
    size_mib = os.path.getsize(csv_path) / _MIB
    print(f"Command: {_reproduce(argv)}")
    print(
        f"Input:   {os.path.relpath(csv_path, REPO_ROOT)} ({args.rows:,} rows, "
        f"{size_mib:,.0f} MiB); {os.cpu_count()} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in _versions().items())
    )
    print(
        f"Work:    read 9 typed columns, cast amount to float64, keep amount > "
        f"{FILTER_THRESHOLD}, write snappy Parquet; rounds interleaved: {', '.join(names)}"
    )

    if not args.no_warmup:
        print("Warm-up round (untimed): ", end="", flush=True)
        checks = {}
        for name in names:
            run = run_variant(name, csv_path, 0)
            checks[name] = check_output(name)
            print(f"{name} {run.result['seconds']:.1f}s ", end="", flush=True)
        print()
        _verify(checks, "warm-up round")
        for name, check in checks.items():
            print(
                f"  {name:8} rows written {check.rows:,}  files {check.files}  "
                f"sum(amount) {check.amount_sum:,.2f}  dead letters {check.dead_letters}"
            )
        print(f"  schema: {next(iter(checks.values())).schema}")

    results = {name: VariantResult(name, VARIANTS[name][0]) for name in names}
    for round_number in range(1, args.repeat + 1):
        print(f"Round {round_number}/{args.repeat}: ", end="", flush=True)
        checks = {}
        for name in names:
            run = run_variant(name, csv_path, round_number)
            checks[name] = check_output(name)
            result, sampler = run.result, run.sampler
            maxrss_kib = max(result["maxrss_self_kib"], result["maxrss_children_kib"])
            results[name].samples.append(
                Sample(
                    round=round_number,
                    seconds=result["seconds"],
                    wall_seconds=run.wall_seconds,
                    peak_tree_rss_mib=sampler.peak_rss / _MIB,
                    peak_tree_pss_mib=sampler.peak_pss / _MIB,
                    maxrss_single_mib=maxrss_kib / 1024,
                    processes=sampler.max_processes,
                    commands=sampler.commands,
                    cpu_seconds=run.cpu_seconds,
                    other_cpu_percent=run.other_cpu_percent,
                    rows_written=checks[name].rows,
                )
            )
            load = run.other_cpu_percent
            busy = f" (other load {load:.0f}%)" if load >= SUSPECT_PERCENT else ""
            print(f"{name} {result['seconds']:.1f}s{busy} ", end="", flush=True)
        print()
        _verify(checks, f"round {round_number}")

    ordered = list(results.values())
    print()
    print(_format_table(ordered, args.rows))
    print()
    print(_LEGEND)
    for result in ordered:
        commands = max((s.commands for s in result.samples), key=len)
        print(f"  processes in the {result.name} tree at its busiest: {', '.join(commands)}")
    elapsed = time.perf_counter() - began
    print(f"\nTotal benchmark time: {elapsed:.0f} s. Reproduce: {_reproduce(argv)}")
    if args.json:
        reference = results.get("pyarrow")
        payload = {
            "command": _reproduce(argv),
            "rows": args.rows,
            "repeat": args.repeat,
            "warmup": not args.no_warmup,
            "csv": csv_path,
            "csv_mib": round(size_mib, 1),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "total_seconds": round(elapsed, 1),
            "variants": {
                r.name: {
                    "label": r.label,
                    "median_seconds": r.median("seconds"),
                    "rows_per_second": args.rows / r.median("seconds"),
                    "throughput_vs_pyarrow": (
                        reference.median("seconds") / r.median("seconds") if reference else None
                    ),
                    "median_peak_tree_rss_mib": r.median("peak_tree_rss_mib"),
                    "median_peak_tree_pss_mib": r.median("peak_tree_pss_mib"),
                    "median_maxrss_single_mib": r.median("maxrss_single_mib"),
                    "samples": [asdict(s) for s in r.samples],
                }
                for r in ordered
            },
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
        print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
