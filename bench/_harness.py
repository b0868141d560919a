"""Shared driver for the benchmarks that compare beam_etl variants with a reference.

Reuses the machinery of `bench_csv_to_parquet.py` (imported, not copied): the /proc process-tree
memory sampler, the machine-load accounting, the child environment, the version list and the
cProfile printer. What this module adds is a generic version of that script's driver, which is
tied to its own three variants:

- a `Benchmark` is a set of `Variant`s split into comparison groups; the first variant of a
  group is its reference (ratios are "reference time / variant time", i.e. throughput ratio);
- each variant runs in a fresh subprocess (the benchmark script re-invoked with `--child`),
  interleaved with the others, after an untimed warm-up round;
- after every run the output is read back (`Check`) and, in groups marked `compare`, every
  variant must agree with the reference, or the benchmark stops;
- `--profile VARIANT` runs one variant once under cProfile and prints the top entries.

Timings are printed, never asserted.
"""

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

BENCH_DIR: Final = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import bench_csv_to_parquet as base  # noqa: E402 - the existing benchmark's machinery
import datagen  # noqa: E402

REPO_ROOT: Final = base.REPO_ROOT
OUT_DIR: Final = base.OUT_DIR
SUSPECT_PERCENT: Final = base.SUSPECT_PERCENT
_MIB: Final = 1 << 20
NULL_VALUES: Final = base.NULL_VALUES
PYARROW_BLOCK_BYTES: Final = base.PYARROW_BLOCK_BYTES


@dataclass(frozen=True)
class Variant:
    """One way of doing a benchmark's work.

    `run(input_path, out_dir, dead_letters_path)` does the work in the child process (imports
    inside it are done before the clock starts by `imports`). `group` names the comparison
    table it belongs to; the first variant of each group is that group's reference.
    """

    name: str
    label: str
    group: str
    run: Callable[[str, str, str], None]
    imports: tuple[str, ...] = ("pyarrow.csv", "pyarrow.parquet")


@dataclass(frozen=True)
class Group:
    title: str
    compare: bool = True  # outputs of the group's variants must be equal
    ratio_label: str = "vs ref"


@dataclass
class Benchmark:
    script: str  # __file__ of the benchmark script
    description: str
    work: str  # one paragraph printed before the runs
    variants: list[Variant]
    groups: dict[str, Group]
    #: (args) -> {variant name: input path}; creates cached inputs as needed.
    inputs: Callable[[argparse.Namespace], dict[str, str]]
    #: (variant name, out dir, dead letters path) -> dict of comparable facts about the output.
    check: Callable[[str, str, str], dict[str, Any]]
    #: keys of the check dict compared across a group (others are shown only).
    compared_keys: tuple[str, ...] = ("rows", "schema")
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: (args, results) -> extra text printed after the tables.
    summary: Callable[[argparse.Namespace, dict[str, "Result"]], str] | None = None
    default_repeat: int = 3

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


@dataclass
class Result:
    variant: Variant
    samples: list[base.Sample] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)


# --------------------------------------------------------------------------------------------
# Child side.
# --------------------------------------------------------------------------------------------


def _child(bench: Benchmark, args: argparse.Namespace) -> None:
    import importlib
    import logging
    import resource

    logging.basicConfig(level=logging.WARNING)
    variant = bench.variant(args.child)
    for module in variant.imports:
        importlib.import_module(module)
    profiler = None
    if args.profile_to:
        import cProfile

        profiler = cProfile.Profile()
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    variant.run(args.input, args.out, args.dead_letters)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - began
    if profiler is not None:
        profiler.dump_stats(args.profile_to)
    with open(args.result, "w", encoding="utf-8") as out:
        json.dump(
            {
                "seconds": seconds,
                "maxrss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "maxrss_children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            },
            out,
        )


# --------------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------------


def paths(bench: Benchmark, name: str) -> tuple[str, str]:
    """Return (output folder, dead-letter file) of a variant."""
    stem = os.path.splitext(os.path.basename(bench.script))[0]
    folder = os.path.join(OUT_DIR, stem)
    return os.path.join(folder, name), os.path.join(folder, f"{name}.deadletters.jsonl")


def _clean(bench: Benchmark, name: str) -> None:
    out, dead_letters = paths(bench, name)
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(dead_letters)
    os.makedirs(os.path.dirname(out), exist_ok=True)


def run_variant(
    bench: Benchmark, name: str, input_path: str, round_number: int, profile_to: str | None = None
) -> base.Run:
    """Run variant `name` once in a fresh subprocess; return timings, memory and CPU use."""
    _clean(bench, name)
    out, dead_letters = paths(bench, name)
    stem = os.path.splitext(os.path.basename(bench.script))[0]
    os.makedirs(os.path.join(OUT_DIR, "logs"), exist_ok=True)
    log_path = os.path.join(OUT_DIR, "logs", f"{stem}-{name}-round{round_number}.log")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    command = [
        sys.executable,
        os.path.abspath(bench.script),
        "--child",
        name,
        "--input",
        input_path,
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
            busy, own = base._busy_cpu_seconds(), base._own_cpu_seconds()
            began = time.perf_counter()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=base._child_env(), cwd=REPO_ROOT
            )
            sampler = base.TreeMemorySampler(process.pid)
            sampler.start()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - began
            code = process.returncode = os.waitstatus_to_exitcode(status)
            sampler.stop()
            tree_cpu = usage.ru_utime + usage.ru_stime
            other = base._busy_cpu_seconds() - busy - tree_cpu - (base._own_cpu_seconds() - own)
            other_percent = max(0.0, 100 * other / (wall * (os.cpu_count() or 1)))
        if code != 0:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                tail = log.read()[-4000:]
            raise SystemExit(f"Variant `{name}` failed with exit code {code}:\n{tail}")
        with open(result_path, encoding="utf-8") as handle:
            return base.Run(json.load(handle), wall, sampler, tree_cpu, other_percent)
    finally:
        os.remove(result_path)


def count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def parquet_check(out: str, dead_letters: str, sums: tuple[str, ...]) -> dict[str, Any]:
    """Rows, schema (name:type), sums of numeric columns and dead letters of a Parquet folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(out)
        for f in names
        if f.endswith(".parquet")
    )
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    schema = pq.read_schema(files[0]) if files else None
    result: dict[str, Any] = {
        "rows": rows,
        "schema": ", ".join(f"{f.name}:{f.type}" for f in schema) if schema else "",
        "files": len(files),
        "dead_letters": count_lines(dead_letters),
    }
    for column in sums:
        total = 0.0
        for f in files:
            if schema is not None and column in schema.names:
                total += pc.sum(pq.read_table(f, columns=[column])[column]).as_py() or 0
        result[f"sum({column})"] = round(total, 2)
    return result


def _verify(bench: Benchmark, checks: dict[str, dict[str, Any]], where: str) -> None:
    for key, group in bench.groups.items():
        if not group.compare:
            continue
        members = [n for n in checks if bench.variant(n).group == key]
        if len(members) < 2:
            continue
        reference = checks[members[0]]
        for name in members[1:]:
            check = checks[name]
            for item in bench.compared_keys:
                a, b = reference.get(item), check.get(item)
                if isinstance(a, float) and isinstance(b, float):
                    same = abs(a - b) <= 1e-9 * max(1.0, abs(a))
                else:
                    same = a == b
                if not same:
                    details = "\n".join(f"  {n}: {checks[n]}" for n in members)
                    raise SystemExit(
                        f"Outputs differ in group `{key}` ({where}, `{item}`); the comparison "
                        f"would not be honest:\n{details}"
                    )


def format_table(bench: Benchmark, group_key: str, results: list[Result], rows: int) -> str:
    group = bench.groups[group_key]
    reference = results[0]
    ref_seconds = reference.median("seconds")
    header = (
        "variant",
        "median s",
        "min s",
        "rows/s",
        group.ratio_label,
        "tree RSS MiB",
        "1-proc MiB",
        "CPU s",
        "other %",
        "rows out",
        "dead letters",
    )
    lines = []
    for result in results:
        median = result.median("seconds")
        lines.append(
            (
                result.variant.label,
                f"{median:.2f}",
                f"{min(s.seconds for s in result.samples):.2f}",
                f"{rows / median:,.0f}",
                f"{ref_seconds / median:.2f}x",
                f"{result.median('peak_tree_rss_mib'):,.0f}",
                f"{result.median('maxrss_single_mib'):,.0f}",
                f"{result.median('cpu_seconds'):.1f}",
                f"{max(s.other_cpu_percent for s in result.samples):.0f}",
                f"{result.checks[-1].get('rows', 0):,}",
                f"{result.checks[-1].get('dead_letters', 0):,}",
            )
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(cells)

    rule = "-" * len(fmt(header))
    return "\n".join([f"{group.title}", fmt(header), rule, *(fmt(row) for row in lines)])


LEGEND: Final = """\
median s / min s: time inside the subprocess (pipeline construction or file open to the end of
  the write; imports excluded), over the timed rounds. rows/s: input rows / median s.
ratio column: throughput ratio to the group's first row (its reference): ref s / variant s.
tree RSS MiB: peak summed RSS of the subprocess and its descendants (sampled every 0.1 s).
1-proc MiB: getrusage ru_maxrss of the largest single process. CPU s: user+system of the tree.
other %: the most CPU used by processes outside the tree during one run, as % of the machine
  (>= 10% flagged: the machine was shared). rows out / dead letters: read back after the run."""


def reproduce(bench: Benchmark, argv: list[str]) -> str:
    script = os.path.relpath(os.path.abspath(bench.script), REPO_ROOT)
    return (
        f"cd {shlex.quote(REPO_ROOT)} && PYTHONPATH={shlex.quote(REPO_ROOT)} "
        f"{shlex.quote(sys.executable)} {script} {shlex.join(argv)}"
    ).rstrip()


def _parse(bench: Benchmark, argv: list[str]) -> argparse.Namespace:
    names = [v.name for v in bench.variants]
    parser = argparse.ArgumentParser(description=bench.description)
    parser.add_argument("--rows", type=int, default=3_000_000, help="CSV data rows (3e6)")
    parser.add_argument("--repeat", type=int, default=bench.default_repeat, help="timed rounds")
    parser.add_argument("--seed", type=int, default=datagen.DEFAULT_SEED, help="data seed")
    parser.add_argument("--variants", default=",".join(names), help="comma-separated subset")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first round")
    parser.add_argument(
        "--profile", choices=names, help="instead of timing, run one variant under cProfile"
    )
    parser.add_argument("--top", type=int, default=20, help="profile entries to print (20)")
    if bench.add_arguments:
        bench.add_arguments(parser)
    hidden = argparse.SUPPRESS
    parser.add_argument("--child", choices=names, help=hidden)
    parser.add_argument("--input", help=hidden)
    parser.add_argument("--out", help=hidden)
    parser.add_argument("--dead-letters", help=hidden)
    parser.add_argument("--result", help=hidden)
    parser.add_argument("--profile-to", help=hidden)
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(names)
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be positive")
    return args


def main(bench: Benchmark, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(bench, argv)
    if args.child:
        _child(bench, args)
        return
    began = time.perf_counter()
    inputs = bench.inputs(args)
    if args.profile:
        stem = os.path.splitext(os.path.basename(bench.script))[0]
        profile_path = os.path.join(OUT_DIR, f"{stem}-{args.profile}.prof")
        os.makedirs(OUT_DIR, exist_ok=True)
        run = run_variant(bench, args.profile, inputs[args.profile], 0, profile_to=profile_path)
        print(
            f"{bench.variant(args.profile).label} under cProfile: {run.result['seconds']:.2f} s; "
            f"stats in {os.path.relpath(profile_path, REPO_ROOT)}"
        )
        base.print_profile(profile_path, args.top)
        return
    chosen = args.variants.split(",")
    names = [v.name for v in bench.variants if v.name in chosen]
    print(f"Command: {reproduce(bench, argv)}")
    for path in sorted(set(inputs[n] for n in names)):
        print(
            f"Input:   {os.path.relpath(path, REPO_ROOT)} ({os.path.getsize(path) / _MIB:,.0f} MiB)"
        )
    print(
        f"Machine: {os.cpu_count()} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in base._versions().items())
    )
    print(f"Work:    {bench.work}")
    print(f"Rounds interleaved: {', '.join(names)}")

    def one_round(round_number: int) -> dict[str, tuple[base.Run, dict]]:
        done = {}
        label = "Warm-up (untimed)" if round_number == 0 else f"Round {round_number}/{args.repeat}"
        print(f"{label}: ", end="", flush=True)
        for name in names:
            run = run_variant(bench, name, inputs[name], round_number)
            out, dead_letters = paths(bench, name)
            check = bench.check(name, out, dead_letters)
            done[name] = (run, check)
            load = run.other_cpu_percent
            busy = f" (other load {load:.0f}%)" if load >= SUSPECT_PERCENT else ""
            print(f"{name} {run.result['seconds']:.1f}s{busy} ", end="", flush=True)
        print()
        _verify(bench, {n: c for n, (_, c) in done.items()}, label)
        return done

    if not args.no_warmup:
        for name, (_, check) in one_round(0).items():
            print(f"  {name:16} {check}")

    results = {n: Result(bench.variant(n)) for n in names}
    for round_number in range(1, args.repeat + 1):
        for name, (run, check) in one_round(round_number).items():
            result, sampler = run.result, run.sampler
            maxrss_kib = max(result["maxrss_self_kib"], result["maxrss_children_kib"])
            results[name].checks.append(check)
            results[name].samples.append(
                base.Sample(
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
                    rows_written=check.get("rows", 0),
                )
            )
    print()
    for key in bench.groups:
        members = [results[n] for n in names if bench.variant(n).group == key]
        if members:
            print(format_table(bench, key, members, args.rows))
            print()
    print(LEGEND)
    if bench.summary:
        text = bench.summary(args, results)
        if text:
            print()
            print(text)
    elapsed = time.perf_counter() - began
    print(f"\nTotal benchmark time: {elapsed:.0f} s. Reproduce: {reproduce(bench, argv)}")
    if args.json:
        payload = {
            "command": reproduce(bench, argv),
            "rows": args.rows,
            "repeat": args.repeat,
            "inputs": inputs,
            "cpus": os.cpu_count(),
            "versions": base._versions(),
            "total_seconds": round(elapsed, 1),
            "variants": {
                r.variant.name: {
                    "label": r.variant.label,
                    "group": r.variant.group,
                    "median_seconds": r.median("seconds"),
                    "rows_per_second": args.rows / r.median("seconds"),
                    "median_peak_tree_rss_mib": r.median("peak_tree_rss_mib"),
                    "median_cpu_seconds": r.median("cpu_seconds"),
                    "checks": r.checks,
                    "samples": [asdict(s) for s in r.samples],
                }
                for r in results.values()
            },
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
        print(f"Results written to {args.json}")


def arrow_types() -> dict[str, Any]:
    """The benchmark CSV's column types as Arrow types (as beam_etl reads them)."""
    import pyarrow as pa

    mapping = {
        "int64": pa.int64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us"),
    }
    return {name: mapping[t] for name, t in datagen.COLUMN_TYPES.items()}


def pyarrow_convert_options(types: dict | None = None):
    """ConvertOptions matching ReadFromCsv's defaults (null markers, strings may be null)."""
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(
        column_types=types if types is not None else arrow_types(),
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
