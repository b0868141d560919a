"""Validated spec -> Beam graph. Each node is applied under its spec name as the label."""

from typing import Any

import apache_beam as beam

from beam_etl.core.batches import dumps, json_safe
from beam_etl.core.catalogue import SINK
from beam_etl.core.contract import Gated, declared, undeclared_outputs
from beam_etl.core.errors import SpecError
from beam_etl.core.metrics import CountRows, output_counter
from beam_etl.io._files import PublishSingleFile
from beam_etl.pipeline.model import Node

Outputs = dict[tuple[str, str], Any]


def _named_outputs(node: Node, transform: Any, result: Any) -> dict[str, Any]:
    declaration = declared(transform, node.kind)
    if hasattr(result, "_fields"):  # a NamedTuple such as WithErrors(output, error)
        named = dict(zip(result._fields, result))
    elif isinstance(result, dict):
        named = dict(result)
    elif isinstance(result, beam.pvalue.DoOutputsTuple):
        named = {tag: result[tag] for tag in result._tags} | {"output": result[None]}
    else:
        named = {"output": result}
    extra = undeclared_outputs(named, declaration, node.kind)
    if extra:  # it would be dropped silently: the transform's contract is wrong
        raise SpecError(
            f"`{type(transform).__name__}` returned outputs it does not declare in OUTPUTS: "
            f"{', '.join(extra)}",
            step=node.name,
            line=node.type_line,
        )
    return {name: pcoll for name, pcoll in named.items() if name in declaration.outputs}


def _input_of(node: Node, transform: Any, outputs: Outputs) -> Any:
    pcolls = [outputs[(ref.node, ref.output)] for ref in node.inputs]
    shape = declared(transform, node.kind).input_shape
    if shape == "inputs":
        return {str(ref): pcoll for ref, pcoll in zip(node.inputs, pcolls)}
    if len(pcolls) == 1:
        return pcolls[0]
    if shape == "tuple":
        return tuple(pcolls)
    return tuple(pcolls) | f"{node.name}/MergeInputs" >> beam.Flatten()


def _check_result_json(result: Any) -> str:
    return dumps(json_safe(result._asdict() if hasattr(result, "_asdict") else result))


def _apply(pipeline, node: Node, transform: Any, outputs: Outputs, gates: list, results: list):
    """Apply one node; return its named outputs and whether it added a quality gate."""
    before = len(gates)
    if node.inputs:
        pvalue = _input_of(node, transform, outputs)
        former = node.kind == SINK and gates and hasattr(transform, "gates")
        if former and not declared(transform, node.kind).gated:  # the former gates protocol
            raise SpecError(
                f"`{type(transform).__name__}` takes quality gates through a `gates` "
                "attribute, which the builder no longer sets: declare `GATED = True` and read "
                "them with `beam_etl.core.contract.ungated` (its gates would be ignored)",
                step=node.name,
                line=node.type_line,
            )
        if node.kind == SINK and gates and declared(transform, node.kind).gated:
            merged = tuple(gates) | f"{node.name}/Gates" >> beam.Flatten()
            pvalue = Gated(pvalue, merged)  # publishes only if every gate so far passed
        result = pvalue | node.name >> transform
    else:
        result = pipeline | node.name >> transform
    if hasattr(result, "_fields") and "gate" in result._fields:
        gates.append(result.gate)
    if isinstance(getattr(transform, "results", None), beam.pvalue.PCollection):
        gates.append(transform.results)  # quality check results: a failed one gates
        results.append(transform.results)
    return _named_outputs(node, transform, result), len(gates) > before


def build(
    pipeline: beam.Pipeline,
    ordered: list[Node],
    transforms: dict[str, Any],
    checks_path: str | None = None,
    checkpoints: Any = None,
) -> Outputs:
    """Apply every node to `pipeline` in order; return each node's named outputs.

    Every output is also counted (`<node>:rows_out`, `<node>:rows_rejected`) for the run report.
    Sinks are applied last, so that each can be handed every quality gate of the run (the
    `gate` output of checks) as an input: a `GATED` sink gets `Gated(rows, gates)` and
    publishes only if all pass (see `beam_etl.core.contract`).
    With `checks_path`, the quality checks' results are written there as JSON Lines.
    With `checkpoints` (a `beam_etl.checkpoints.plan.CheckpointPlan`), steps are checkpointed,
    or restored from a checkpoint, and nodes only restored ones read are not applied.
    """
    outputs: Outputs = checkpoints.restore_all(pipeline) if checkpoints is not None else {}
    for (name, output), pcoll in outputs.items():
        _ = pcoll | f"Count[{name}.{output}]" >> CountRows(name, output_counter(output))
    gates: list[Any] = []
    results: list[Any] = []
    for node in [n for n in ordered if n.kind != SINK] + [n for n in ordered if n.kind == SINK]:
        transform = transforms[node.name]
        if checkpoints is not None and not checkpoints.builds(node):
            continue  # restored outputs stand in for it
        named, gated = _apply(pipeline, node, transform, outputs, gates, results)
        if checkpoints is not None:
            named = checkpoints.materialise(node, named, outputs, gated=gated)
        for output, pcoll in named.items():
            outputs[(node.name, output)] = pcoll
            what = output_counter(output)
            _ = pcoll | f"Count[{node.name}.{output}]" >> CountRows(node.name, what)
    if checks_path and results:
        _ = (
            tuple(results)
            | "QualityResults/Merge" >> beam.Flatten()
            | "QualityResults/ToJson" >> beam.Map(_check_result_json)
            | "QualityResults/Write"
            >> PublishSingleFile(checks_path, label="QualityResults", order=None)
        )
    return outputs
