"""The command line of checkpoints: `--resume`, `--checkpoint-all`, `checkpoints list|clean`."""

import argparse
import os
import time
from typing import Any

from beam_etl.checkpoints.plan import CheckpointPlan
from beam_etl.checkpoints.store import (
    checkpoints_root,
    clean_runs,
    describe_runs,
    latest_run,
    list_runs,
    parse_age,
)
from beam_etl.core.errors import UsageError
from beam_etl.pipeline import load_plan
from beam_etl.usage import DEMO_DIR, UsageParser


def resume_run_id(args: argparse.Namespace, output_dir: str, spec_path: str) -> str | None:
    """Return the run id `--resume` names (`last`: the newest run of this spec), or None.

    Raises:
        UsageError: `--run-id` names another run, or `last` finds no run with checkpoints.
    """
    wanted = getattr(args, "resume", None)
    if not wanted:
        return None
    root = checkpoints_root(output_dir)
    run_id = latest_run(root, spec_path) if wanted == "last" else wanted
    if run_id is None:
        raise UsageError(f"`--resume last`: no run of `{spec_path}` left checkpoints in `{root}`")
    if args.run_id and args.run_id != run_id:
        raise UsageError(f"`--resume {wanted}` resumes run `{run_id}`; drop `--run-id`")
    return run_id


def checkpoint_plan(
    args: argparse.Namespace, plan: Any, output_dir: str, run_id: str
) -> CheckpointPlan | None:
    """Return the run's checkpoint plan from `--checkpoint-all`, `--resume` and the spec."""
    return CheckpointPlan.prepare(
        plan,
        output_dir,
        run_id,
        checkpoint_all=bool(getattr(args, "checkpoint_all", False)),
        resume=bool(getattr(args, "resume", None)),
    )


def main(argv: list[str], *, default_output_dir: str, demo_spec: str) -> int:
    """`checkpoints list|clean [--older-than AGE] [--output-dir D | --pipeline SPEC]`."""

    parser = UsageParser(
        prog="python -m beam_etl.run checkpoints",
        description="List or remove the checkpoints runs left for --resume.",
    )
    parser.add_argument("action", choices=("list", "clean"))
    parser.add_argument("--output-dir", default=default_output_dir, help="as for a run")
    parser.add_argument("--pipeline", metavar="FILE", help="only runs of this spec's pipeline")
    parser.add_argument("--older-than", metavar="AGE", help="only runs older than AGE (7d, 12h)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        older = parse_age(args.older_than) if args.older_than else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    root = checkpoints_root(os.path.abspath(args.output_dir))
    pipeline = _pipeline_name(args, demo_spec) if args.pipeline else None
    if args.action == "list":
        runs = list_runs(root, pipeline)
        if older is not None:
            runs = [r for r in runs if _age(r) >= older]
        print(describe_runs(runs) or f"no checkpoints in {root}")
        return 0
    removed, running = clean_runs(root, older_than=older, pipeline=pipeline)
    print(f"removed the checkpoints of {len(removed)} run(s) from {root}")
    for run_id in running:
        print(f"kept run {run_id}: it is still running")
    return 0


def _age(run: dict[str, Any]) -> float:
    return time.time() - run["updated_at"]


def _pipeline_name(args: argparse.Namespace, demo_spec: str) -> str:
    output_dir = os.path.abspath(args.output_dir)
    names = {"OUTPUT_DIR": output_dir, "DEMO_DIR": DEMO_DIR}
    for item in args.set:
        name, _, value = item.partition("=")
        names[name] = value
    return load_plan(args.pipeline or demo_spec, run_id="checkpoints", variables=names).spec.name
