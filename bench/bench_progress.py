"""What the progress display costs: the same run with `--progress off`, `log` and `bar`.

    PYTHONPATH=. python bench/bench_progress.py [--rows 3000000] [--repeat 5] [--workers 1,2]

Work: the CSV -> Parquet run of `bench_csv_to_parquet.py` (`bench/datagen.py`'s orders CSV,
nine declared columns, `amount` cast to float64, `amount > 10` kept, snappy Parquet, dead
letters to JSONL) through `python -m beam_etl.run`, whole process, from start to exit.

Variants, interleaved (`off, log, bar, off, ...`) after an untimed warm-up round:
- `off`: no observer wants progress, so no channel is opened and workers send nothing;
- `log`: progress through the UDP channel, one log line every 3 s to a pipe;
- `bar`: the same drawn by `rich` twice a second on a pseudo-terminal (drained, discarded).

Printed per worker count: median wall seconds and median CPU seconds of the process tree
(workers included, from `getrusage(RUSAGE_CHILDREN)`), and each variant's ratio to `off`
(1.02 = 2% slower), and `other %`: the CPU other processes used meanwhile, as % of the
machine (high: the figures are noise). Compare ratios of one invocation only. Nothing is
asserted.
"""

import argparse
import os
import pty
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Final

BENCH_DIR: Final = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import bench_csv_to_parquet as base  # noqa: E402 - its /proc/stat machine-load reading
import datagen  # noqa: E402 - the benchmarks' shared data generator

VARIANTS: Final = ("off", "log", "bar")
SPEC: Final = """\
name: bench_progress
sources:
  - name: orders
    type: ReadFromCsv
    config:
      path: {csv}
      columns: {columns}
steps:
  - name: cast
    type: CastColumns
    input: orders
    config: {{columns: {{amount: float64}}}}
  - name: keep
    type: FilterRows
    input: cast
    config: {{where: "amount > 10"}}
sinks:
  - name: out
    type: WriteToParquet
    input: keep
    config: {{path: "${{OUTPUT_DIR}}/orders"}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, cast.error, keep.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects.jsonl"}}
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _drain(leader: int, process: subprocess.Popen) -> bytes:
    """Read a pseudo-terminal until the process closes it (as a terminal would); return the
    last 4 KiB written (to show when the run failed)."""
    tail = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if not ready:
            if process.poll() is not None:
                return tail
            continue
        try:
            data = os.read(leader, 1 << 16)
        except OSError:  # EIO: the process closed the terminal
            return tail
        if not data:
            return tail
        tail = (tail + data)[-4096:]


def run_once(variant: str, spec: str, output: str, workers: int) -> tuple[float, float, float]:
    """Run the spec once with `--progress VARIANT`; return the wall and CPU seconds of its
    process tree and the CPU other processes used meanwhile (% of the machine)."""
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--output-dir", output]
    command += ["--progress", variant, "--run-id", f"bench-{time.time_ns()}"]
    if workers > 1:
        command += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["TERM"] = "xterm-256color"
    busy, cpu, start = base._busy_cpu_seconds(), _children_cpu(), time.perf_counter()
    # Every variant on a pseudo-terminal, as a user at a terminal runs them: a piped `off`
    # against a terminal `bar` measured the pipe, not the display.
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True
    )
    os.close(follower)
    try:
        output = _drain(leader, process)
    finally:
        os.close(leader)
    code = process.wait()
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    other = (base._busy_cpu_seconds() - busy - cpu) / (wall * (os.cpu_count() or 1))
    if code != 0:
        text = output.decode(errors="replace")
        raise SystemExit(f"run with --progress {variant} failed (exit {code}):\n{text}")
    return wall, cpu, max(0.0, 100 * other)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    args = parser.parse_args()
    csv = datagen.ensure_csv(args.rows)
    folder = tempfile.mkdtemp(prefix="bench_progress_")
    try:
        spec = os.path.join(folder, "spec.yaml")
        columns = "{" + ", ".join(f"{k}: {v}" for k, v in datagen.COLUMN_TYPES.items()) + "}"
        with open(spec, "w", encoding="utf-8") as out:
            out.write(SPEC.format(csv=csv, columns=columns))
        print(f"input: {csv} ({os.path.getsize(csv) / (1 << 20):.0f} MiB, {args.rows:,} rows)")
        for workers in [int(w) for w in args.workers.split(",")]:
            _measure(spec, os.path.join(folder, "out"), workers, args.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(spec: str, output: str, workers: int, repeat: int) -> None:
    for variant in VARIANTS:  # warm-up: page cache, imports compiled
        run_once(variant, spec, output, workers)
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpus: dict[str, list[float]] = {v: [] for v in VARIANTS}
    others: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeat):
        for variant in VARIANTS:
            wall, cpu, other = run_once(variant, spec, output, workers)
            walls[variant].append(wall)
            cpus[variant].append(cpu)
            others[variant].append(other)
    print(f"\n{workers} worker(s), {repeat} interleaved runs each (medians)")
    print(
        f"{'progress':<9} {'wall s':>8} {'vs off':>7} {'cpu s':>8} {'vs off':>7} "
        f"{'other %':>8}  all wall s"
    )
    base_wall = statistics.median(walls["off"])
    base_cpu = statistics.median(cpus["off"])
    for variant in VARIANTS:
        wall, cpu = statistics.median(walls[variant]), statistics.median(cpus[variant])
        every = " ".join(f"{w:.2f}" for w in walls[variant])
        other = statistics.median(others[variant])
        print(
            f"{variant:<9} {wall:>8.2f} {wall / base_wall:>7.3f} {cpu:>8.2f} "
            f"{cpu / base_cpu:>7.3f} {other:>8.0f}  {every}"
        )


if __name__ == "__main__":
    main()
