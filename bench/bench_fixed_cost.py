"""Benchmark: the fixed cost of a run, as a user waits: `python -m beam_etl.run` on a 1-row CSV
-> Parquet spec (with its dead-letter sink) against `python -c "import apache_beam"`, in the
same run.

Usage: `PYTHONPATH=. python bench/bench_fixed_cost.py [--repeat K] [--bytecode cached|off]`.

Both commands run interleaved (import, run, import, run, ...), every run a fresh process;
medians of `--repeat` runs (after one untimed warm-up of each). The difference is what a run
costs beyond importing Beam: the spec, the graph, the runner, the verdict, the publish, the
report and lineage. `--bytecode cached` (the default) keeps compiled bytecode in a private
cache folder, as an installed package has it; `off` sets `PYTHONDONTWRITEBYTECODE=1` (some
machines, this one included, set it), so beam_etl's own modules are compiled on every run.
Timings are printed, never asserted.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

SPEC = """name: tiny
sources:
  - {name: src, type: ReadFromCsv, config: {path: "${SPEC_DIR}/in.csv"}}
sinks:
  - {name: out, type: WriteToParquet, input: src, config: {path: "${OUTPUT_DIR}/out"}}
  - {name: dl, type: WriteToDeadLetters, input: src.error, config: {path: "${OUTPUT_DIR}/dl.jsonl"}}
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--bytecode", choices=("cached", "off"), default="cached")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ)
        if args.bytecode == "cached":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        spec = os.path.join(work, "spec.yaml")
        with open(spec, "w", encoding="utf-8") as out:
            out.write(SPEC)
        with open(os.path.join(work, "in.csv"), "w", encoding="utf-8") as out:
            out.write("id,v\n1,a\n")
        imports = [sys.executable, "-c", "import apache_beam"]
        run = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--progress", "off"]

        def one_run(index: int) -> float:
            output = os.path.join(work, f"out-{index}")
            return timed([*run, "--output-dir", output], env)

        timed(imports, env)  # warm-up: page cache and, when cached, the bytecode
        one_run(-1)
        bare, ours = [], []
        for index in range(args.repeat):
            bare.append(timed(imports, env))
            ours.append(one_run(index))
    base, total = statistics.median(bare), statistics.median(ours)
    print(f"bytecode {args.bytecode}, medians of {args.repeat}, whole processes")
    print(f"python -c 'import apache_beam'   {base:6.3f} s")
    print(f"python -m beam_etl.run (1 row)   {total:6.3f} s")
    print(f"fixed cost beyond the import     {total - base:6.3f} s  (target <= 0.4 s)")


if __name__ == "__main__":
    main()
