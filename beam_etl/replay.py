"""`python -m beam_etl.run replay`: feed chosen dead letters back into the step that rejected them.

```
python -m beam_etl.run replay --pipeline spec.yaml --dead-letters out/rejects.jsonl \\
    [--reason cast_failed] [--step orders] [--into NAME] [--skip-sink NAME] [beam options]
```

The spec (fixed: a wider cast, a relaxed check) is built as for a run, but only from the
target step on: its input is replaced by the dead letters' payloads, restored to the types
that input has (`beam_etl.interop.payloads`), with their original file and line in the hidden
origin columns. Steps and sinks downstream of the target run as in a normal run (a lookup's
dimension and a join's other inputs are read in full); nothing else runs. A source as target
is replaced by the payloads typed to its (fixed) columns. The replay runs under the launcher's
verdict-first publishing with a run id derived from the spec and the chosen letters, so:

- exactly the chosen rows are loaded: sinks must append or merge (database sinks with
  `mode: append | merge | insert_only`); a sink that replaces its whole target (files,
  `mode: replace`) is refused unless left out with `--skip-sink`;
- rows that fail again become dead letters in `<file>.<replay run id>.jsonl` beside each
  dead-letter sink's file (the original file is left as it is);
- a letter is replayed once: the state store remembers the letters of every replay that
  published, and a replay of the same letters with the same spec has the same run id, which
  the sinks' ledgers have seen. Rerunning a replay changes nothing.

Steps downstream that look at whole datasets (dedupe, aggregations, row-count checks) see only
the replayed rows. Incremental sources and snapshot diffs may not be on the replay's path.
"""

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, Final

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.catalogue import SINK, SOURCE
from beam_etl.core.contract import declared
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import UsageError
from beam_etl.core.graph import reachable
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.core.state import StateStore, current_state
from beam_etl.interop.payloads import restore_batches
from beam_etl.io.deadletters import WriteToDeadLetters
from beam_etl.pipeline import Plan, load_plan
from beam_etl.pipeline.model import InputRef, Node
from beam_etl.pipeline.validate import check_schemas
from beam_etl.usage import UsageParser, variables

#: The state-store entry (per pipeline) listing the letters every published replay replayed.
STATE_KEY: Final = "replay:dead-letters"
#: Sink modes that add to a target instead of replacing it.
APPENDING_MODES: Final = ("append", "merge", "insert_only")
_FIELDS: Final = ("step", "reason", "message", "payload")
_STATEFUL_TYPES: Final = ("DiffSnapshots",)


@dataclasses.dataclass(frozen=True)
class Letter:
    """One line of a dead-letter file: its text, its record and its digest."""

    text: str
    record: dict[str, Any]
    number: int

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.record, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def read_letters(path: str) -> list[Letter]:
    """Return the dead letters of a JSON Lines file (as `WriteToDeadLetters` writes them).

    Raises:
        UsageError: the file cannot be read, or a line is not a dead-letter record.
    """
    try:
        with open(path, encoding="utf-8") as lines:
            texts = lines.read().splitlines()
    except OSError as exc:
        raise UsageError(f"Cannot read dead letters `{path}`: {exc.strerror}") from None
    letters = []
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"Line {number} of `{path}` is not JSON: {exc.msg}") from None
        missing = [key for key in _FIELDS if not isinstance(record, dict) or key not in record]
        if missing:
            raise UsageError(
                f"Line {number} of `{path}` is not a dead letter (no {', '.join(missing)})"
            )
        letters.append(Letter(text, record, number))
    return letters


def select(letters: list[Letter], reasons: list[str], step: str | None) -> list[Letter]:
    """Return the letters with one of `reasons` (any when empty) rejected by `step` (any)."""
    return [
        letter
        for letter in letters
        if (not reasons or letter.record["reason"] in reasons)
        and (step is None or letter.record["step"] == step)
    ]


def replay_run_id(spec_text: bytes, target: str, letters: list[Letter]) -> str:
    """Return the replay's run id: the same spec, target and letters give the same id."""
    digest = hashlib.sha256(spec_text)
    digest.update(f"\0{target}\0".encode())
    for letter in letters:
        digest.update(letter.digest.encode("ascii"))
    return f"replay-{digest.hexdigest()[:16]}"


class _CountFn(beam.DoFn):
    def __init__(self, step: str, what: str) -> None:
        self._step, self._what = step, what

    def process(self, rows: int) -> Iterator[Any]:
        step_counter(self._step, self._what).inc(rows)
        return iter(())


class ReplayDeadLetters(beam.PTransform):
    """The replayed rows as a source: restored batches and, for a source target, the rows
    that do not fit its columns as dead letters. Proposes the replayed letters as state."""

    def __init__(
        self,
        batches: list[pa.RecordBatch],
        rejected: list[DeadLetter] | None,
        letters: int,
        proposal: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.batches, self.rejected, self.letters = batches, rejected, letters
        self.proposal = proposal
        self.OUTPUTS = (OUTPUT, ERROR) if rejected is not None else (OUTPUT,)

    def expand(self, pbegin):
        state = current_state()
        if state is not None and self.proposal is not None:
            state.propose(STATE_KEY, self.proposal)
        _ = (
            pbegin
            | "Letters" >> beam.Create([self.letters])
            | "CountRead" >> beam.ParDo(_CountFn(self.label, ROWS_READ))
        )
        batches = pbegin | "Rows" >> beam.Create(self.batches, reshuffle=False).with_output_types(
            pa.RecordBatch
        )
        if self.rejected is None:  # a step target: no `error` output (see OUTPUTS)
            return batches
        rejected = pbegin | "Rejected" >> beam.Create(self.rejected).with_output_types(DeadLetter)
        return WithErrors(batches, rejected)


def _consumers(nodes: list[Node]) -> dict[str, list[Node]]:
    found: dict[str, list[Node]] = {node.name: [] for node in nodes}
    for node in nodes:
        for ref in node.inputs:
            found[ref.node].append(node)
    return found


def _downstream(target: str, nodes: list[Node]) -> set[str]:
    consumers = _consumers(nodes)
    return reachable([target], lambda name: [node.name for node in consumers[name]])


def _upstream(names: set[str], by_name: dict[str, Node]) -> set[str]:
    return reachable(names, lambda name: [ref.node for ref in by_name[name].inputs])


def _needs_whole_input(transform: Any, kind: str, ref: InputRef) -> bool:
    """Whether a replayed node must still read input `ref` in full (a lookup's dimension, the
    other sides of a join) rather than drop it (a union, a sink, a flattened input)."""
    declaration = declared(transform, kind)
    if str(ref) in declaration.side_inputs or ref.node in declaration.side_inputs:
        return True
    return declaration.multi_input and not declaration.conserves_rows


def cut_plan(
    plan: Plan, target: str, source: ReplayDeadLetters, skip_sinks: set[str], run_id: str
) -> tuple[Plan, list[str], list[str]]:
    """Return `plan` cut to what a replay into `target` runs, fed by `source`; and notes on
    what was left out, and the dead-letter files the replay writes.

    Raises:
        UsageError: a sink on the way replaces its target, or a stateful node is on the way.
    """
    by_name = {node.name: node for node in plan.ordered}
    reached = _downstream(target, plan.ordered)
    notes: list[str] = []
    inputs: dict[str, list[InputRef]] = {}
    whole: set[str] = set()
    for name in reached - {target}:
        node, transform = by_name[name], plan.transforms[name]
        kept = [
            r
            for r in node.inputs
            if r.node in reached or _needs_whole_input(transform, node.kind, r)
        ]
        whole |= {r.node for r in kept if r.node not in reached}
        inputs[name] = kept
    skipped = _check_sinks(plan, reached, skip_sinks)
    notes += [f"sink `{name}` left out (--skip-sink)" for name in sorted(skipped)]
    needed = (reached - skipped) | _upstream(whole, by_name)
    replaced = {target} if by_name[target].kind == SOURCE else set()
    for name in sorted(needed - replaced):
        transform = plan.transforms[name]
        if by_name[name].type in _STATEFUL_TYPES or getattr(transform, "incremental", None):
            raise UsageError(
                f"`{name}` ({by_name[name].type}) keeps state between runs and is on the "
                "replay's path; a replay would move that state. Replay into a step after it"
            )
    node = by_name[target]
    transforms = {name: plan.transforms[name] for name in needed}
    ordered: list[Node] = []
    if node.kind == SOURCE:
        ordered.append(dataclasses.replace(node, type=ReplayDeadLetters.__name__))
        transforms[target] = source
    else:
        feed = _free_name("replay", by_name)
        ordered.append(Node(feed, SOURCE, ReplayDeadLetters.__name__, {}, [], node.line, node.line))
        transforms[feed] = source
        ordered.append(dataclasses.replace(node, inputs=_target_inputs(plan, node, feed)))
        needed |= _upstream({r.node for r in ordered[-1].inputs if r.node != feed}, by_name)
        transforms |= {name: plan.transforms[name] for name in needed if name not in transforms}
    for each in plan.ordered:
        if each.name in needed and each.name != target:
            ordered.append(dataclasses.replace(each, inputs=inputs.get(each.name, each.inputs)))
    ordered = _in_build_order(ordered)
    redirected = _redirect_dead_letters(ordered, transforms, run_id)
    cut = Plan(plan.spec, ordered, transforms, plan.loaded)
    return cut, notes, redirected


def _free_name(name: str, taken: dict[str, Node]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def _target_inputs(plan: Plan, node: Node, feed: str) -> list[InputRef]:
    """The target's inputs with the replayed rows in place of the stream it rejected from."""
    transform = plan.transforms[node.name]
    line = node.inputs[0].line if node.inputs else node.line
    if not declared(transform, node.kind).multi_input:
        return [InputRef(feed, OUTPUT, line)]
    stream = next(
        (r for r in node.inputs if not _needs_side(transform, node.kind, r)), node.inputs[0]
    )
    return [InputRef(feed, OUTPUT, r.line) if r == stream else r for r in node.inputs]


def _needs_side(transform: Any, kind: str, ref: InputRef) -> bool:
    sides = declared(transform, kind).side_inputs
    return str(ref) in sides or ref.node in sides


def _in_build_order(nodes: list[Node]) -> list[Node]:
    by_name = {node.name: node for node in nodes}
    done: set[str] = set()
    ordered: list[Node] = []

    def visit(node: Node) -> None:
        if node.name in done:
            return
        done.add(node.name)
        for ref in node.inputs:
            visit(by_name[ref.node])
        ordered.append(node)

    for node in nodes:
        visit(node)
    return ordered


def _check_sinks(plan: Plan, reached: set[str], skip_sinks: set[str]) -> set[str]:
    """Return the sinks left out; refuse sinks that would replace their target."""
    sinks = {n.name for n in plan.ordered if n.kind == SINK and n.name in reached}
    unknown = sorted(skip_sinks - sinks)
    if unknown:
        raise UsageError(
            f"--skip-sink `{unknown[0]}` is not a sink the replay reaches "
            f"(it reaches: {', '.join(sorted(sinks)) or 'none'})"
        )
    for name in sorted(sinks - skip_sinks):
        transform = plan.transforms[name]
        if isinstance(transform, WriteToDeadLetters):
            continue
        mode = getattr(transform, "mode", None)
        replaces = mode is not None and mode not in APPENDING_MODES
        replaces |= mode is None and any(hasattr(transform, a) for a in ("path", "database"))
        if replaces:
            what = f"mode `{mode}`" if mode else "it writes its whole target anew"
            raise UsageError(
                f"Sink `{name}` cannot take a replay ({what}): the replayed rows would replace "
                "what earlier runs loaded. Replay into sinks that append or merge (mode "
                f"{', '.join(APPENDING_MODES)}), or leave it out with `--skip-sink {name}`"
            )
    return skip_sinks


def _redirect_dead_letters(nodes: list[Node], transforms: dict[str, Any], run_id: str) -> list[str]:
    """Point every dead-letter sink at `<file>.<run id>.jsonl`: the original file stays."""
    paths = []
    for node in nodes:
        transform = transforms[node.name]
        if node.kind == SINK and isinstance(transform, WriteToDeadLetters):
            stem, extension = os.path.splitext(transform.path)
            transform.path = f"{stem}.{run_id}{extension or '.jsonl'}"
            paths.append(transform.path)
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="python -m beam_etl.run replay",
        description=(
            "Feed chosen dead letters back into the step that rejected them (or --into a "
            "named step) of a (fixed) spec; loads exactly those rows, once."
        ),
    )
    parser.add_argument("--pipeline", metavar="FILE", required=True, help="the spec to run")
    parser.add_argument("--dead-letters", metavar="FILE", required=True, help="JSON Lines file")
    parser.add_argument("--reason", action="append", default=[], help="only this reason code")
    parser.add_argument("--step", help="only letters rejected by this step")
    parser.add_argument("--into", metavar="NAME", help="replay into this step instead")
    parser.add_argument(
        "--skip-sink", action="append", default=[], metavar="NAME", help="leave a sink out"
    )
    parser.add_argument("--output-dir", default=None, help="as for a run (${OUTPUT_DIR})")
    parser.add_argument("--report", metavar="FILE", help="default: OUTPUT_DIR/replay_report.json")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--dry-run", action="store_true", help="show the replay, run nothing")
    parser.add_argument("--debug", action="store_true")
    return parser


def _target_schema(plan: Plan, target: str) -> pa.Schema | None:
    """The schema the replayed rows must have: the target source's columns, or the schema of
    the stream the target step reads (None when the spec cannot say it)."""
    node = next(n for n in plan.ordered if n.name == target)
    transform = plan.transforms[target]
    if node.kind == SOURCE:
        schema = getattr(transform, "schema", None)
        if not isinstance(schema, pa.Schema) and callable(getattr(transform, "sample", None)):
            schema = transform.sample(1).schema
        return schema if isinstance(schema, pa.Schema) else None
    stream = next((r for r in node.inputs if not _needs_side(transform, node.kind, r)), None)
    if stream is None or stream.output == ERROR:
        return None
    return check_schemas(plan.ordered, plan.transforms).get(stream.node)


def _restore(plan: Plan, target: str, letters: list[Letter]) -> tuple[list, list[DeadLetter]]:
    from beam_etl.core.batches import visible_schema  # lazy: the command line starts fast
    from beam_etl.core.deadletter import CAST_FAILED  # lazy: the command line starts fast

    schema = _target_schema(plan, target)
    records = [letter.record for letter in letters]
    origins = [(r.get("source"), r.get("line")) for r in records]
    restored = restore_batches(
        [r["payload"] for r in records],
        origins,
        visible_schema(schema) if schema is not None else None,
    )
    node = next(n for n in plan.ordered if n.name == target)
    if restored.failed and node.kind != SOURCE:
        shown = "; ".join(f"line {letters[i].number}: {m}" for i, m in restored.failed[:3])
        raise UsageError(
            f"{len(restored.failed)} dead letter(s) do not fit the input of `{target}`: {shown}. "
            "Did the spec change the steps before it? Replay into another step with --into"
        )
    rejected = [
        DeadLetter(
            target,
            CAST_FAILED,
            message,
            records[i].get("source"),
            records[i].get("line"),
            records[i].get("key"),
            records[i]["payload"],
        )
        for i, message in restored.failed
    ]
    return restored.batches, rejected


def _chosen(args: argparse.Namespace) -> list[Letter]:
    """The letters the arguments choose, all of one step; raw-text ones left out with a note.

    Raises:
        UsageError: the chosen letters come from several steps.
    """
    chosen = select(read_letters(args.dead_letters), args.reason, args.step)
    letters = [letter for letter in chosen if isinstance(letter.record["payload"], dict)]
    if len(letters) < len(chosen):  # unparseable records: only the source file can be fixed
        print(
            f"{len(chosen) - len(letters)} chosen dead letter(s) hold raw text, not a row "
            "(malformed_csv ...): left out; fix the source file and run again"
        )
    steps = sorted({letter.record["step"] for letter in letters})
    if len(steps) > 1:
        counts = ", ".join(
            f"`{s}` ({sum(lt.record['step'] == s for lt in letters)})" for s in steps
        )
        raise UsageError(
            f"The chosen dead letters come from several steps: {counts}; pick one with --step"
        )
    return letters


def _spec_name(path: str, text: bytes, names: dict[str, str]) -> str:
    """The spec's pipeline name (the state store's key), without building its transforms."""
    from beam_etl.pipeline.loader import load_text  # lazy: the command line starts fast
    from beam_etl.pipeline.model import parse  # lazy: the command line starts fast

    known = {"SPEC_DIR": os.path.dirname(os.path.abspath(path)), "RUN_ID": "replay", **names}
    return parse(load_text(text.decode("utf-8", "replace"), known, source=path).document, path).name


def replay(argv: list[str]) -> int:
    """Run `python -m beam_etl.run replay ARGS`; return the exit code.

    Raises:
        UsageError, SpecError: bad arguments, files or spec (one line each).
        PipelineFailedError: the replay ran and failed (nothing was published).
    """
    from beam_etl import cli  # lazy: the command line starts fast
    from beam_etl.usage import DEFAULT_OUTPUT_DIR, DEMO_DIR  # lazy: the command line starts fast

    args, beam_args = _parser().parse_known_args(argv)
    unknown = [a for a in beam_args if not a.startswith("--")]
    if unknown:
        raise UsageError(f"Unexpected argument `{unknown[0]}` (see --help)")
    letters = _chosen(args)
    if not letters:
        print(f"no dead letter in {args.dead_letters} matches: nothing to replay")
        return 0
    rejected_by = letters[0].record["step"]
    target = args.into or rejected_by
    output_dir = os.path.abspath(args.output_dir or DEFAULT_OUTPUT_DIR)
    report_path = args.report or os.path.join(output_dir, "replay_report.json")
    names = {"OUTPUT_DIR": output_dir, "DEMO_DIR": DEMO_DIR, **variables(args.set)}
    try:
        with open(args.pipeline, "rb") as spec_file:
            spec_text = spec_file.read()
    except OSError as exc:
        raise UsageError(f"Cannot read spec `{args.pipeline}`: {exc.strerror}") from None
    store = StateStore(
        os.path.join(os.path.dirname(os.path.abspath(report_path)), ".beam_etl", "state.sqlite")
    )
    previous = store.get(_spec_name(args.pipeline, spec_text, names), STATE_KEY)
    previous = previous or {"letters": [], "runs": {}}
    done = set(previous["letters"])
    fresh = [letter for letter in letters if letter.digest not in done]
    if not fresh:
        print(
            f"nothing to replay: the {len(letters)} chosen dead letters were replayed before "
            f"(run {', '.join(sorted(previous['runs']))}); rows that failed again are in that "
            "run's dead letters"
        )
        return 0
    run_id = replay_run_id(spec_text, target, fresh)
    plan = load_plan(args.pipeline, run_id=run_id, variables=names)
    if target not in {node.name for node in plan.ordered}:
        raise UsageError(f"The spec has no step `{target}` to replay into; name one with --into")
    batches, rejected = _restore(plan, target, fresh)
    kind = next(n.kind for n in plan.ordered if n.name == target)
    proposal = {
        "letters": sorted(done | {letter.digest for letter in fresh}),
        "runs": {
            **previous["runs"],
            run_id: {
                "file": os.path.abspath(args.dead_letters),
                "letters": len(fresh),
                "into": target,
            },
        },
    }
    source = ReplayDeadLetters(batches, rejected if kind == SOURCE else None, len(fresh), proposal)
    cut, notes, redirected = cut_plan(plan, target, source, set(args.skip_sink), run_id)
    rows = sum(batch.num_rows for batch in batches)
    what = f"{len(fresh)} dead letter(s) of `{rejected_by}` into `{target}` as run {run_id}"
    if args.dry_run:
        print(cli.describe(cut))
        print(f"would replay {what} ({rows} row(s) restored); nothing was run")
        return 0
    report = cli.execute(cut, beam_args, run_id, report_path)
    print(report.summary())
    print(f"replayed {what}; report: {report_path}")
    for note in notes:
        print(note)
    for path in redirected:
        print(f"rows rejected again: {path}")
    return 0
