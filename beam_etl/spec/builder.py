"""Validated spec -> Beam graph. Each node is applied under its spec name as the label."""

from typing import Any

import apache_beam as beam

from beam_etl.metrics import ROWS_OUT, ROWS_REJECTED, CountRows
from beam_etl.spec.model import Node
from beam_etl.spec.registry import SINK

Outputs = dict[tuple[str, str], Any]


def _named_outputs(node: Node, result: Any) -> dict[str, Any]:
    if node.kind == SINK:
        return {}
    if hasattr(result, "_fields"):  # a NamedTuple such as WithErrors(output, error)
        return dict(zip(result._fields, result))
    if isinstance(result, dict):
        return dict(result)
    if isinstance(result, beam.pvalue.DoOutputsTuple):
        return {tag: result[tag] for tag in result._tags} | {"output": result[None]}
    return {"output": result}


def _input_of(node: Node, transform: Any, outputs: Outputs) -> Any:
    pcolls = [outputs[(ref.node, ref.output)] for ref in node.inputs]
    if getattr(transform, "MULTI_INPUT", False):
        return {str(ref): pcoll for ref, pcoll in zip(node.inputs, pcolls)}
    if len(pcolls) == 1:
        return pcolls[0]
    return tuple(pcolls) | f"{node.name}/MergeInputs" >> beam.Flatten()


def build(pipeline: beam.Pipeline, ordered: list[Node], transforms: dict[str, Any]) -> Outputs:
    """Apply every node to `pipeline` in order; return each node's named outputs.

    Every output is also counted (`<node>:rows_out`, `<node>:rows_rejected`) for the run report.
    """
    outputs: Outputs = {}
    for node in ordered:
        transform = transforms[node.name]
        if node.inputs:
            result = _input_of(node, transform, outputs) | node.name >> transform
        else:
            result = pipeline | node.name >> transform
        for output, pcoll in _named_outputs(node, result).items():
            outputs[(node.name, output)] = pcoll
            what = ROWS_REJECTED if output == "error" else ROWS_OUT
            _ = pcoll | f"Count[{node.name}.{output}]" >> CountRows(node.name, what)
    return outputs
