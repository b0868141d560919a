"""What the command line does: list transforms, print a plan, execute a plan with a report."""

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from beam_etl.core import errors
from beam_etl.core.catalogue import arguments, catalogue, outputs_of, summary
from beam_etl.core.errors import BeamEtlError, PipelineFailedError, SpecError
from beam_etl.core.publish import fault_point, publish_all
from beam_etl.core.state import RunState, StateStore, incremental_state
from beam_etl.history import HistoryObserver
from beam_etl.lineage import RunLineage
from beam_etl.observers import Watch
from beam_etl.pipeline import Plan, load_plan
from beam_etl.progress import display
from beam_etl.report import RunReport, counters, step_reports, step_seconds
from beam_etl.reporting import write_run_reports
from beam_etl.runs import RunFolders

_ERROR_LINE = re.compile(r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)$", re.M)
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
INTERRUPTED = "Interrupted (Ctrl-C) while running; nothing was published"
_OUR_ERRORS = frozenset(
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and name.endswith("Error")
)
_WHILE_RUNNING = re.compile(r"\s*\[while running '([^']+)'\]")


def list_transforms() -> str:
    """Return every type with its kind, summary and arguments (defaults shown)."""
    lines = []
    for name, entry in sorted(catalogue().items(), key=lambda item: (item[1].kind, item[0])):
        try:
            factory = entry.load()
        except ImportError as exc:
            lines.append(f"{name} ({entry.kind}): unavailable: {exc}\n")
            continue
        outputs = outputs_of(factory, entry.kind)
        extra = f"; outputs: {', '.join(outputs)}" if len(outputs) > 1 else ""
        lines.append(f"{name} ({entry.kind}{extra})\n    {summary(factory)}")
        accepted, _ = arguments(factory)
        for argument in accepted:
            if argument.name == "run_id":
                continue
            default = "required" if argument.required else f"default: {argument.default!r}"
            lines.append(f"      {argument.name} ({default}) {argument.doc}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip()


def describe(plan: Plan) -> str:
    """Return the validated graph, one node a line, with inputs and known output columns."""
    lines = [f"pipeline `{plan.spec.name}` ({plan.spec.source}): {len(plan.ordered)} nodes"]
    width = max(len(node.name) for node in plan.ordered)
    for node in plan.ordered:
        inputs = ", ".join(str(ref) for ref in node.inputs)
        arrow = f" <- {inputs}" if inputs else ""
        lines.append(f"  {node.kind:<6} {node.name:<{width}}  {node.type}{arrow}")
        schema = getattr(plan.transforms[node.name], "schema", None)
        if schema is not None:
            columns = ", ".join(f"{f.name}: {f.type}" for f in schema)
            lines.append(f"  {'':<6} {'':<{width}}  columns: {columns}")
    return "\n".join(lines)


def _pipeline_options(beam_args: list[str]):
    from apache_beam.options.pipeline_options import PortableOptions

    from beam_etl.runner import launcher_options  # lazy: the command line starts fast

    options = launcher_options(beam_args)
    # Beam's construction-time type check stays on (~0.1 s per run): without it, declared
    # output types do not reach the PCollections, and batches crossing a shuffle are pickled
    # instead of Arrow IPC (`RecordBatchCoder`): a pickled slice carries its whole parent
    # batch, which made a 1M-row `DiffSnapshots` run 5x slower with 16x the memory.
    runner_name = options.get_all_options()["runner"]
    portable = options.view_as(PortableOptions)
    endpoint = portable.job_endpoint or ""
    # Beam's default worker environment is Docker; for a job service on this machine, run the
    # workers in this process (LOOPBACK) unless the user chose otherwise.
    if (
        runner_name == "PortableRunner"
        and not portable.environment_type
        and (endpoint.startswith(_LOOPBACK_HOSTS))
    ):
        portable.environment_type = "LOOPBACK"
    return options, runner_name


def failure_message(exc: BaseException, redact, lines: dict[str, int] | None = None) -> str:
    """Return one line saying why a run failed, from Beam's (often nested) exception text,
    naming the step (and its spec line, from `lines`) where Beam says which step it ran."""
    text = str(exc)
    found = _ERROR_LINE.findall(text)
    ours = [(kind, msg) for kind, msg in found if kind.startswith("beam_etl.")]
    if ours:
        kind, message = ours[0]
    elif found:
        kind, message = found[-1]
    else:
        kind, message = type(exc).__name__, (text.strip().splitlines() or [""])[0]
    message = message.strip()
    running = _WHILE_RUNNING.search(message) or _WHILE_RUNNING.search(text)
    message = _WHILE_RUNNING.sub("", message).rstrip()
    where = ""
    if running:
        step = running.group(1).split("/")[0]
        line = (lines or {}).get(step)
        where = f" (step `{step}`" + (f", line {line})" if line else ")")
    name = kind.rsplit(".", 1)[-1]
    prefix = "" if kind.startswith("beam_etl.") or name in _OUR_ERRORS else f"{name}: "
    return redact(f"{prefix}{message}{where}")


def execute(
    plan: Plan,
    beam_args: list[str],
    run_id: str,
    report_path: str,
    *,
    work_dir: str | None = None,
    observers: list | tuple = (),
    checkpoints=None,
) -> RunReport:
    """Run the plan, decide the verdict, then publish every sink; write and return the report.

    Sinks only prepare while the pipeline runs (see `beam_etl.core.publish`): nothing is
    published unless the run finished, every count adds up and no quality gate failed.
    `work_dir` holds the run's pending publishes and its list of staging folders (default:
    `.beam_etl/` beside the report); runs killed earlier are cleaned up from there.
    `observers` (with the spec's and the registered ones, see `beam_etl.observers`) see the
    run start, progress and end; every run is appended to the history in the work dir.
    `checkpoints` (a `CheckpointPlan`) checkpoints or restores steps; a failed run keeps its
    checkpoints for `--resume`.

    Raises:
        PipelineFailedError: the run failed, its counts do not add up or a sink could not
            publish (report written).
    """
    import apache_beam as beam

    from beam_etl.core.publish import (  # lazy: the command line starts fast
        collecting_staging,
        deferred_publishing,
    )
    from beam_etl.runner import resolve  # lazy: the command line starts fast

    options, runner_name = _pipeline_options(beam_args)
    runner = resolve(runner_name)
    started, clock = datetime.now(UTC), time.monotonic()
    runs = RunFolders(
        work_dir or os.path.join(os.path.dirname(os.path.abspath(report_path)), ".beam_etl")
    )
    openlineage = RunLineage(plan, run_id, runs.work_dir)  # START before, COMPLETE/FAIL after
    watch = Watch(plan, run_id, runs.work_dir, [HistoryObserver(), openlineage, *observers])
    runs.sweep()
    run_dir = runs.start(run_id)
    pending = os.path.join(run_dir, "pending")
    pipeline = beam.Pipeline(runner=runner, options=options)
    checks_path = f"{report_path}.checks.jsonl"
    state = RunState(
        StateStore(os.path.join(runs.work_dir, "state.sqlite")), plan.spec.name, run_id
    )
    keeper = state_keeper(plan)
    if keeper is not None:
        state.catch_up(keeper[1].state_store().entries(plan.spec.name))
    with deferred_publishing(pending), incremental_state(state), collecting_staging() as staging:
        plan.build(pipeline, checks_path, checkpoints)
    runs.remember_staging(run_dir, staging)
    error, result, outcome = None, None, None
    watch.start()
    try:
        try:
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as exc:  # any failure inside the run: report it, then fail the run
            lines = {node.name: node.line for node in plan.ordered}
            error = failure_message(exc, plan.loaded.redact, lines)
            if "KeyboardInterrupt" in error:  # Ctrl-C inside a step, wrapped by Beam
                error = INTERRUPTED
        except KeyboardInterrupt:
            error = INTERRUPTED
        names = [node.name for node in plan.ordered]
        steps = step_reports(
            plan.ordered,
            counters(result) if result is not None else {},
            step_seconds(result, names) if result is not None else {},
            plan.transforms,
        )
        if checkpoints is not None:  # restored steps: their upstream did not run
            checkpoints.adjust(steps)
        quality = _quality(checks_path, report_path, plan.loaded.redact)
        error = error or verdict(steps, pending, quality)
        if error is None:
            try:
                with incremental_state(state):  # a `keep_state` sink commits it with its load
                    outcome = publish_all(pending, last=keeper[0] if keeper else None)
            except BeamEtlError as exc:
                error = plan.loaded.redact(str(exc))
        if error is None:  # state only moves once every sink has published
            fault_point("before_state_commit")
            state.commit()
    finally:
        if error is not None or outcome is None:
            state.discard()
        runs.finish(run_dir)  # pending publishes not made, and their staging, are discarded
        watch.close()
    report = RunReport(
        run_id=run_id,
        pipeline=plan.spec.name,
        spec=os.path.abspath(plan.spec.source),
        status="succeeded" if error is None else "failed",
        started_at=started.isoformat(),
        ended_at=datetime.now(UTC).isoformat(),
        elapsed_seconds=round(time.monotonic() - clock, 3),
        runner=runner_name if isinstance(runner, str) else type(runner).__name__,
        steps=steps,
        conservation_ok=all(step.balanced for step in steps),
        error=error,
        published=outcome.published if outcome else [],
        already_published=outcome.skipped if outcome else [],
        warnings=list(state.warnings) + (checkpoints.warnings() if checkpoints else []),
    )
    report.quality = quality
    report.write(report_path)
    watch.finished(report)  # observers' run_finished (history first: the HTML report reads it)
    pages = write_run_reports(report_path, plan, run_id)  # HTML + Markdown, failed runs too
    if error is not None:
        print(report.summary(), file=sys.stderr)
        print(f"html report: {pages['html']}", file=sys.stderr)
        hint = checkpoints.finish(succeeded=False) if checkpoints is not None else ""
        raise PipelineFailedError(f"{error}{hint} (report: {report_path})")
    if checkpoints is not None:
        checkpoints.finish(succeeded=True)
    return report


def state_keeper(plan: Plan) -> tuple[str, Any] | None:
    """Return the name and transform of the sink that keeps the run's state in its database
    (`keep_state`), if any.

    Raises:
        SpecError: more than one sink keeps it.
    """
    keepers = [
        (node, plan.transforms[node.name])
        for node in plan.ordered
        if getattr(plan.transforms[node.name], "keep_state", False)
    ]
    if len(keepers) > 1:
        node = keepers[1][0]
        raise SpecError(
            f"Only one sink can keep the state (`keep_state`); `{keepers[0][0].name}` already does",
            step=node.name,
            line=node.line,
        )
    return (keepers[0][0].name, keepers[0][1]) if keepers else None


def verdict(steps: list, pending: str, quality: dict | None) -> str | None:
    """Return why the run must not publish (counts that do not add up, a failed quality
    check), or None when every sink may publish."""
    from beam_etl.core.publish import vetoes  # lazy: the command line starts fast

    unbalanced = [s.name for s in steps if not s.balanced]
    if unbalanced:
        return "Row counts do not add up: " + ", ".join(unbalanced) + "; nothing was published"
    reasons = [r for found in vetoes(pending).values() for r in found]
    for check in (quality or {}).get("checks", []):
        if check.get("outcome") == "failed":
            reasons.append(
                f"`{check.get('check')}` of step `{check.get('step')}`: {check.get('message')}"
            )
    if reasons:
        return f"A quality check failed: {'; '.join(dict.fromkeys(reasons))}; nothing was published"
    return None


def _quality(checks_path: str, report_path: str, redact=str) -> dict | None:
    """Read the run's check results (if any) and write the Markdown and HTML quality reports,
    with every value substituted from the environment masked (`redact`), as in the run
    report and on the console."""
    if not os.path.exists(checks_path):
        return None
    from beam_etl.quality.checks import CheckResult  # lazy: the command line starts fast
    from beam_etl.quality.report import (  # lazy: the command line starts fast
        quality_section,
        render_html,
        render_markdown,
    )

    with open(checks_path, encoding="utf-8") as lines:
        results = [CheckResult(**json.loads(line)) for line in lines if line.strip()]
    os.remove(checks_path)
    section = _redacted(quality_section(results), redact)
    stem = report_path.removesuffix(".json")
    for suffix, render in ((".quality.md", render_markdown), (".quality.html", render_html)):
        with open(stem + suffix, "w", encoding="utf-8") as out:
            out.write(render(section))
    return section


def _redacted(value: Any, redact) -> Any:
    """Return `value` (JSON-like) with `redact` applied to every string in it; numbers and
    structure untouched."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, redact) for item in value]
    return value


def _follows(args: argparse.Namespace, plan: Plan) -> bool:
    modes = [getattr(t, "mode", None) for t in plan.transforms.values()]
    runs = getattr(args, "follow_runs", None)
    return bool(getattr(args, "follow", False) or runs or "follow" in modes)


def follow(args: argparse.Namespace, beam_args: list[str], variables: dict[str, str], plan) -> int:
    """Repeat bounded runs (each its own run id) every `interval` of the change sources, until
    Ctrl-C or `--follow-runs`; a failed run is reported and the next one reads the same changes
    again (positions are confirmed only after a run published)."""
    intervals = [getattr(t, "interval", None) for t in plan.transforms.values()]
    pause = min([i for i in intervals if isinstance(i, int | float)] or [5])
    once = argparse.Namespace(**{**vars(args), "once": True, "run_id": None})
    done, runs = 0, getattr(args, "follow_runs", None)
    try:
        while runs is None or done < runs:
            started = time.monotonic()
            try:
                run(once, beam_args, variables)
            except BeamEtlError as exc:
                print(f"error: {exc}", file=sys.stderr)
            done += 1
            if runs is None or done < runs:
                time.sleep(max(0.0, pause - (time.monotonic() - started)))
    except KeyboardInterrupt:
        print(f"follow stopped after {done} run(s)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace, beam_args: list[str], variables: dict[str, str]) -> int:
    """Load, validate and (unless --dry-run) run the spec named by `args`; return exit code."""
    from beam_etl.checkpoints.command import (  # lazy: the command line starts fast
        checkpoint_plan,
        resume_run_id,
    )
    from beam_etl.core.publish import new_run_id  # lazy: the command line starts fast
    from beam_etl.usage import DEMO_DIR, DEMO_SPEC  # lazy: the command line starts fast

    output_dir = os.path.abspath(args.output_dir)
    spec_path = args.pipeline or DEMO_SPEC
    run_id = resume_run_id(args, output_dir, spec_path) or args.run_id or new_run_id()
    names = {"OUTPUT_DIR": output_dir, "DEMO_DIR": DEMO_DIR, **variables}
    from beam_etl.clusters import prepare  # lazy: the command line starts fast
    from beam_etl.runner import resolve  # lazy: the command line starts fast

    runner = resolve(_pipeline_options(beam_args)[1])  # a typo fails before anything is loaded
    plan = load_plan(spec_path, run_id=run_id, variables=names)
    if not args.dry_run and not getattr(args, "once", False) and _follows(args, plan):
        return follow(args, beam_args, variables, plan)
    if args.dry_run:
        print(describe(plan))
        print("spec is valid (dry run: nothing was run)")
        return 0
    if isinstance(runner, str):  # Flink, Spark, a job service: defaults, then is it there?
        beam_args = prepare(beam_args, runner)
    report_path = args.report or os.path.join(output_dir, "run_report.json")
    checkpoints = checkpoint_plan(args, plan, output_dir, run_id)
    if checkpoints is not None and checkpoints.resumed:
        print(checkpoints.resume_line())
    shown = display(getattr(args, "progress", "auto"))
    report = execute(
        plan,
        beam_args,
        run_id,
        report_path,
        observers=[shown] if shown else [],
        checkpoints=checkpoints,
    )
    print(report.summary())
    print(f"report: {report_path}")
    print(f"html report: {report_path.removesuffix('.json')}.html")
    if report.quality is not None:
        stem = report_path.removesuffix(".json")
        print(f"data quality: {report.quality['status']} (see {stem}.quality.md)")
    return 0
