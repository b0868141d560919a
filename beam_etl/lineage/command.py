"""`python -m beam_etl.run lineage`: where does a column come from? Nothing is run.

```
python -m beam_etl.run lineage --pipeline spec.yaml                  # every sink column
python -m beam_etl.run lineage --pipeline spec.yaml --column revenue_table.revenue
python -m beam_etl.run lineage --pipeline spec.yaml --column route.cancelled.status --format json
```
A column is `node.column` (a sink's column, or a source's or step's main output) or
`node.output.column` (a named output, such as a split's branch).
"""

import json
import os
from typing import Any

from beam_etl.core.catalogue import SINK, did_you_mean
from beam_etl.core.errors import UsageError
from beam_etl.lineage.columns import Flow, Lineage, analyse, column_lineage, origin_entry
from beam_etl.pipeline import load_plan
from beam_etl.usage import DEMO_DIR, DEMO_SPEC
from beam_etl.usage import variables as _variables


def _parser() -> Any:
    from beam_etl.usage import DEFAULT_OUTPUT_DIR, UsageParser  # the command line's own parser

    parser = UsageParser(
        prog="python -m beam_etl.run lineage",
        description="Show where columns come from (sources, steps, transformations), "
        "from the spec alone: nothing is run.",
    )
    parser.add_argument("--pipeline", metavar="FILE", help="the spec (default: the demo)")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NODE.COLUMN",
        help="a column, as `sink.column`, `step.column` or `step.output.column` (repeatable; "
        "default: every column of every sink)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="as for a run")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--debug", action="store_true")
    return parser


def command(argv: list[str]) -> int:
    """Run `lineage` with `argv`; print the answer; return the exit code."""

    args = _parser().parse_args(argv)
    names = {
        "OUTPUT_DIR": os.path.abspath(args.output_dir),
        "DEMO_DIR": DEMO_DIR,
        **_variables(args.set),
    }
    plan = load_plan(args.pipeline or DEMO_SPEC, run_id="lineage", variables=names)
    if not args.column:
        everything = column_lineage(plan)
        text = json.dumps(everything, indent=2) if args.format == "json" else _all_text(plan)
        print(text)
        return 0
    lineage = analyse(plan)
    answers = [_answer(lineage, column) for column in args.column]
    if args.format == "json":
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
    else:
        print("\n\n".join(_text(answer) for answer in answers))
    return 0


def _resolve(lineage: Lineage, wanted: str) -> tuple[str, Flow, str]:
    """Return (where, flow, column) for `node.column` or `node.output.column`."""
    parts = wanted.split(".")
    nodes = {node.name: node for node in lineage.nodes}
    if len(parts) < 2 or parts[0] not in nodes:
        hint = did_you_mean(parts[0], nodes) if len(parts) > 1 else ""
        raise UsageError(
            f"`--column {wanted}` must name a node and a column (`node.column`).{hint} "
            f"Nodes: {', '.join(nodes)}"
        )
    node = nodes[parts[0]]
    if len(parts) >= 3 and (node.name, parts[1]) in lineage.flows:
        where, column = f"{node.name}.{parts[1]}", ".".join(parts[2:])
        flow = lineage.flows[(node.name, parts[1])]
    else:
        output = "input" if node.kind == SINK else "output"
        where, column, flow = node.name, ".".join(parts[1:]), lineage.flows[(node.name, output)]
    if flow.columns is None:
        raise UsageError(f"The columns of `{where}` are not known: {flow.unknown}")
    if column not in flow.columns:
        hint = did_you_mean(column, flow.columns)
        raise UsageError(
            f"`{where}` has no column `{column}`.{hint} Columns: {', '.join(flow.columns)}"
        )
    return where, flow, column


def _answer(lineage: Lineage, wanted: str) -> dict[str, Any]:
    where, flow, column = _resolve(lineage, wanted)
    kind = flow.schema.field(column).type if flow.schema is not None else None
    origins = flow.columns[column]  # type: ignore[index]
    return {
        "column": f"{where}.{column}",
        "type": str(kind) if kind is not None else None,
        "from": [origin_entry(o, lineage.datasets) for o in origins],
        "computed": flow.computed.get(column),
        "rows_decided_by": [origin_entry(o, lineage.datasets) for o in flow.indirect],
    }


def _text(answer: dict[str, Any]) -> str:
    kind = f" ({answer['type']})" if answer["type"] else ""
    lines = [f"{answer['column']}{kind}"]
    for entry in answer["from"]:
        lines.append(f"  <- {entry['source']}.{entry['column']}  {entry['dataset']}")
        path = " -> ".join([entry["source"], *entry["via"]])
        lines.append(f"     {entry['transformation']}, via {path}")
        if entry["description"]:
            lines.append(f"     {entry['description']}")
    if not answer["from"]:
        lines.append(f"  <- no input column: {answer['computed'] or 'computed'}")
    if answer["rows_decided_by"]:
        lines.append("  rows decided by (indirect):")
        for entry in answer["rows_decided_by"]:
            step = entry["via"][-1] if entry["via"] else entry["source"]
            lines.append(
                f"     {entry['source']}.{entry['column']}  {entry['transformation']} at {step}"
                + (f": {entry['description']}" if entry["description"] else "")
            )
    return "\n".join(lines)


def _all_text(plan: Any) -> str:
    lineage = analyse(plan)
    blocks = []
    for node in lineage.nodes:
        if node.kind != SINK:
            continue
        flow = lineage.flows[(node.name, "input")]
        dataset = lineage.datasets[node.name]
        if flow.columns is None:
            blocks.append(f"{node.name} -> {dataset.uri}\n  columns unknown: {flow.unknown}")
            continue
        answers = [_answer(lineage, f"{node.name}.{column}") for column in flow.columns]
        blocks.append(f"{node.name} -> {dataset.uri}\n" + "\n".join(_text(a) for a in answers))
    return "\n\n".join(blocks)
