"""Column lineage from the plan alone: where each column of each node comes from.

Nothing runs. Schemas flow from the sources (declared columns, or the header a file source
read when the spec was loaded) through every step that can say its output schema, as spec
validation does; each built-in step has a rule (see `rules`) saying which input columns each
output column is made of and how (`identity`, `cast`, `text`, `fill`, `expression`,
`aggregation`, `conform`), and which columns decide which rows pass (`filter`, `join`,
`group_by`, `sort`: indirect lineage, as OpenLineage calls it). A step without a rule (a user
function, a third-party type) or after an unknown schema makes its output `unknown`, with the
reason: lineage is never guessed.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.batches import HIDDEN_PREFIX
from beam_etl.core.catalogue import SINK, SOURCE, outputs_of
from beam_etl.core.errors import BeamEtlError
from beam_etl.lineage.datasets import Dataset, dataset_of
from beam_etl.pipeline.model import Node

IDENTITY: Final = "identity"
#: How much a step changes a value, least first: a chain of steps is named by its strongest.
_STRENGTH: Final = {
    IDENTITY: 0,
    "text": 1,
    "fill": 1,
    "cast": 2,
    "conform": 2,
    "expression": 3,
    "aggregation": 4,
}


@dataclass(frozen=True)
class Origin:
    """A source column an output column (or a row filter) is made from."""

    source: str  # the source node
    column: str
    via: tuple[str, ...] = ()  # steps between the source and here, in order
    transformation: str = IDENTITY
    notes: tuple[str, ...] = ()  # what each changing step did: `tidy/cast: cast to double`

    def through(self, step: str, transformation: str, note: str) -> "Origin":
        """Return this origin carried through `step`, which applied `transformation`."""
        via = self.via if self.via[-1:] == (step,) else (*self.via, step)
        strongest = max(self.transformation, transformation, key=_STRENGTH.__getitem__)
        return Origin(
            self.source, self.column, via, strongest, (*self.notes, note) if note else self.notes
        )


@dataclass(frozen=True)
class Flow:
    """What is known of one output of one node: its schema and each column's origins.

    `columns` is None when the columns cannot be told; `unknown` says why.
    """

    schema: pa.Schema | None
    columns: dict[str, tuple[Origin, ...]] | None
    indirect: tuple[Origin, ...] = ()
    unknown: str | None = None
    computed: dict[str, str] = field(default_factory=dict)  # columns made of no input column
    letters: tuple[str, ...] = ()  # for dead letters: the nodes that rejected them


def unknown(reason: str) -> Flow:
    """Return a flow whose columns cannot be told, and why."""
    return Flow(None, None, (), reason)


@dataclass(frozen=True)
class Change:
    """One output column of a step: the input columns it is made of, how, and a note."""

    inputs: tuple[tuple[int, str], ...]  # (input index, column)
    transformation: str = IDENTITY
    note: str = ""


@dataclass
class StepLineage:
    """A rule's answer for one output: its columns (in order) and the indirect inputs."""

    columns: dict[str, Change]
    indirect: list[tuple[int, str, str, str]] = field(
        default_factory=list
    )  # (input, col, how, note)
    schema: pa.Schema | None = None


def carry(step: str, label: str, inputs: list[Flow], lineage: StepLineage) -> Flow:
    """Return the output flow of `step` from its input flows and a rule's answer."""
    columns: dict[str, tuple[Origin, ...]] = {}
    computed: dict[str, str] = {}
    for name, change in lineage.columns.items():
        note = f"{label}: {change.note}" if change.note else ""
        origins, before = [], []
        for index, column in change.inputs:
            before.append(inputs[index].computed.get(column, ""))
            for origin in (inputs[index].columns or {}).get(column, ()):
                origins.append(origin.through(step, change.transformation, note))
        columns[name] = tuple(dict.fromkeys(origins))
        if not origins:  # a constant, `count(*)`, a value the run sets: say what made it
            computed[name] = "; ".join(n for n in [*dict.fromkeys(before), note] if n)
    indirect = [o for flow in inputs for o in flow.indirect]
    for index, column, how, note in lineage.indirect:
        for origin in (inputs[index].columns or {}).get(column, ()):
            moved = origin.through(step, IDENTITY, f"{label}: {note}" if note else "")
            indirect.append(replace(moved, transformation=how))
    return Flow(lineage.schema, columns, tuple(dict.fromkeys(indirect)), None, computed)


def source_flow(node: Node, transform: Any) -> Flow:
    """Return a source's flow: every declared (or header-read) column, as itself."""
    try:
        schema = getattr(transform, "schema", None)
    except (OSError, ValueError, BeamEtlError) as exc:  # a header that cannot be read now
        return unknown(f"the columns of source `{node.name}` cannot be read: {exc}")
    if not isinstance(schema, pa.Schema):
        return unknown(f"source `{node.name}` declares no columns and its schema is not read")
    schema = pa.schema([f for f in schema if not f.name.startswith(HIDDEN_PREFIX)])
    return Flow(schema, {f.name: (Origin(node.name, f.name),) for f in schema})


@dataclass
class Lineage:
    """Column lineage of every output of every node of a plan, and its datasets."""

    flows: dict[tuple[str, str], Flow]
    datasets: dict[str, Dataset]
    nodes: list[Node]

    def sink_flow(self, node: Node) -> Flow:
        """Return what a sink writes: its inputs merged (as the builder flattens them)."""
        return self.flows[(node.name, "input")]

    def endpoints(self) -> Iterator[tuple[Node, Dataset, Flow]]:
        """Yield every source and sink in plan order, with its dataset and what it reads or
        writes: a source's output, a sink's input."""
        for node in self.nodes:
            if node.kind in (SOURCE, SINK):
                flow = self.flows[(node.name, "output" if node.kind == SOURCE else "input")]
                yield node, self.datasets[node.name], flow


def analyse(plan: Any) -> Lineage:
    """Return the column lineage of every node output of `plan` (a `beam_etl.pipeline.Plan`)."""
    from beam_etl.lineage.rules import step_flows

    flows: dict[tuple[str, str], Flow] = {}
    datasets: dict[str, Dataset] = {}
    for node in plan.ordered:
        transform = plan.transforms[node.name]
        if node.kind in (SOURCE, SINK):
            datasets[node.name] = dataset_of(node, transform, plan.spec.name)
        if node.kind == SOURCE:
            flow = source_flow(node, transform)
            for output in outputs_of(transform, node.kind):
                flows[(node.name, output)] = (
                    flow if output == "output" else _dead_letters(node.name)
                )
            continue
        inputs = [flows[(ref.node, ref.output)] for ref in node.inputs]
        if node.kind == SINK:
            flows[(node.name, "input")] = _merged(node, inputs)
            for output in outputs_of(transform, node.kind):  # rows a database refused
                flows[(node.name, output)] = _dead_letters(node.name)
            continue
        try:
            produced = step_flows(node, transform, inputs)
        except (ValueError, KeyError, TypeError, BeamEtlError) as exc:
            reason = f"step `{node.name}` ({node.type}) cannot be analysed: {exc}"
            produced = {output: unknown(reason) for output in outputs_of(transform, node.kind)}
        for output in outputs_of(transform, node.kind):
            flows[(node.name, output)] = produced.get(output) or _dead_letters(node.name)
    return Lineage(flows, datasets, list(plan.ordered))


def _dead_letters(*names: str) -> Flow:
    named = ", ".join(f"`{name}`" for name in names)
    return replace(
        unknown(f"dead letters of {named} (the rejected row is their payload)"), letters=names
    )


def _merged(node: Node, inputs: list[Flow]) -> Flow:
    """A node with several inputs reads them flattened: a column comes from every input."""
    if len(inputs) == 1:
        return inputs[0]
    if all(flow.letters for flow in inputs):
        return _dead_letters(*dict.fromkeys(name for flow in inputs for name in flow.letters))
    lost = [flow.unknown for flow in inputs if flow.columns is None]
    if lost:
        return unknown(lost[0] or f"an input of `{node.name}` is unknown")
    columns: dict[str, tuple[Origin, ...]] = {}
    for flow in inputs:
        for name, origins in (flow.columns or {}).items():
            columns[name] = tuple(dict.fromkeys((*columns.get(name, ()), *origins)))
    indirect = tuple(dict.fromkeys(o for flow in inputs for o in flow.indirect))
    schemas = [flow.schema for flow in inputs]
    schema = schemas[0] if all(s is not None and s.equals(schemas[0]) for s in schemas) else None
    computed = {k: v for flow in inputs for k, v in flow.computed.items() if not columns[k]}
    return Flow(schema, columns, indirect, None, computed)


def origin_entry(origin: Origin, datasets: dict[str, Dataset]) -> dict[str, Any]:
    """Return `origin` as an entry of `column_lineage`'s answer (JSON-ready)."""
    return {
        "dataset": datasets[origin.source].uri,
        "source": origin.source,
        "column": origin.column,
        "via": list(origin.via),
        "transformation": origin.transformation,
        "description": "; ".join(origin.notes),
    }


def column_lineage(plan: Any) -> dict[str, Any]:
    """Return the lineage of every sink column of `plan`, without running anything.

    `{"datasets": {"inputs": [...], "outputs": [...]}, "columns": {"<sink>.<column>":
    [{"dataset", "source", "column", "via", "transformation", "description"}]}, "indirect":
    {"<sink>": [...]}, "unknown": {"<sink>": reason}}`. A column made from no input column
    (`count(*)`, a constant) has an empty list and a note in `computed`; `indirect` lists the
    columns that decide which rows reach the sink (filters, join keys, group keys:
    `transformation` says which).
    """
    lineage = analyse(plan)
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    columns: dict[str, list[dict[str, Any]]] = {}
    indirect: dict[str, list[dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    computed: dict[str, str] = {}
    for node, dataset, flow in lineage.endpoints():
        described = {
            "node": node.name,
            "type": node.type,
            "namespace": dataset.namespace,
            "name": dataset.name,
            "uri": dataset.uri,
            "columns": list(flow.columns) if flow.columns is not None else None,
        }
        (inputs if node.kind == SOURCE else outputs).append(described)
        if node.kind != SINK:
            continue
        if flow.columns is None:
            missing[node.name] = flow.unknown or "unknown"
            continue
        for name, origins in flow.columns.items():
            columns[f"{node.name}.{name}"] = [origin_entry(o, lineage.datasets) for o in origins]
            if name in flow.computed:
                computed[f"{node.name}.{name}"] = flow.computed[name]
        indirect[node.name] = [origin_entry(o, lineage.datasets) for o in flow.indirect]
    return {
        "datasets": {"inputs": inputs, "outputs": outputs},
        "columns": columns,
        "indirect": indirect,
        "unknown": missing,
        "computed": computed,
    }
