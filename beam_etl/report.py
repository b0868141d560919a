"""The run report: per step rows in, out, rejected and dropped, time, and the conservation check.

Counts come from the counters the builder attaches to every output (`rows_out`,
`rows_rejected`), the counters sources and sinks keep (`rows_read`, `rows_written`) and the
counters of steps that drop rows on purpose (`rows_dropped`). A step's rows in are the rows
of the outputs it reads (or, for a source, the records it read). For every step,
rows in = rows out + rows rejected + rows dropped; a run where that fails is a failed run.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from beam_etl.core.catalogue import SINK, SOURCE
from beam_etl.core.contract import declared
from beam_etl.core.metrics import (
    NAMESPACE,
    ROWS_DROPPED,
    ROWS_OUT,
    ROWS_READ,
    ROWS_REJECTED,
    ROWS_WRITTEN,
    output_counter,
)
from beam_etl.pipeline.model import Node

_TIME_METRIC = "ptransform_execution_time:total_msecs"


@dataclass
class StepReport:
    """Counts and time of one node of the spec."""

    name: str
    kind: str
    type: str
    inputs: list[str]
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_dropped: int
    seconds: float
    balanced: bool


@dataclass
class RunReport:
    """What a run did; written as JSON next to the outputs."""

    run_id: str
    pipeline: str
    spec: str
    status: str
    started_at: str
    ended_at: str
    elapsed_seconds: float
    runner: str
    steps: list[StepReport] = field(default_factory=list)
    conservation_ok: bool = True
    error: str | None = None
    quality: dict[str, Any] | None = None
    published: list[str] = field(default_factory=list)  # sinks published by this run
    already_published: list[str] = field(default_factory=list)  # published before: skipped
    warnings: list[str] = field(default_factory=list)  # e.g. changed files an increment skipped

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def write(self, path: str) -> None:
        """Write the report to `path` atomically."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(self.to_json())
            out.write("\n")
        os.replace(temporary, path)

    def summary(self) -> str:
        """Return a short table of rows per step, then totals and elapsed time."""
        width = max([4, *(len(s.name) for s in self.steps)])
        lines = [
            f"{'step':<{width}}  {'rows in':>10}  {'rows out':>10}  {'rejected':>9}  "
            f"{'dropped':>8}  {'secs':>6}"
        ]
        for s in self.steps:
            flag = "" if s.balanced else "  <- counts do not add up"
            lines.append(
                f"{s.name:<{width}}  {s.rows_in:>10,}  {s.rows_out:>10,}  {s.rows_rejected:>9,}  "
                f"{s.rows_dropped:>8,}  {s.seconds:>6.1f}{flag}"
            )
        read = sum(s.rows_in for s in self.steps if s.kind == SOURCE)
        rejected = sum(s.rows_rejected for s in self.steps)
        for name in self.already_published:
            lines.append(f"{name}: run {self.run_id} was already published there: skipped")
        lines += [f"warning: {message}" for message in self.warnings]
        lines.append(
            f"run {self.run_id} {self.status} in {self.elapsed_seconds:.1f} s: {read:,} rows read, "
            f"{rejected:,} rejected"
        )
        return "\n".join(lines)


def counters(result: Any) -> dict[str, int]:
    """Return the beam_etl step counters of a finished run, `<step>:<what>` -> value."""
    from apache_beam.metrics.metric import MetricsFilter

    found: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for metric in query["counters"]:
        value = metric.committed if metric.committed is not None else metric.attempted
        found[metric.key.metric.name] = found.get(metric.key.metric.name, 0) + (value or 0)
    return found


def step_seconds(result: Any, names: list[str]) -> dict[str, float]:
    """Return active seconds per node (Beam's per-transform execution time, where available)."""
    seconds = dict.fromkeys(names, 0.0)
    try:
        query = result.monitoring_metrics().query()
    except (AttributeError, NotImplementedError):
        return seconds  # runners without monitoring metrics report no time
    for metric in query.get("counters", []):
        if _TIME_METRIC not in metric.key.metric.name:
            continue
        top = (metric.key.step or "").split("/")[0]
        if top in seconds:
            value = metric.committed if metric.committed is not None else metric.attempted
            seconds[top] += (value or 0) / 1000.0
    return seconds


def step_reports(
    nodes: list[Node],
    counts: dict[str, int],
    seconds: dict[str, float],
    transforms: dict[str, Any] | None = None,
) -> list[StepReport]:
    """Return the report of each node with its conservation check.

    A transform's `SIDE_INPUTS` (inputs it looks up, such as a join's dimension table) do not
    count as rows in; a transform with `CONSERVES_ROWS = False` (aggregations, joins) makes
    no promise of rows in = out + rejected + dropped, so it is not checked.
    """

    def count(node: str, what: str) -> int:
        return counts.get(f"{node}:{what}", 0)

    reports = []
    for node in nodes:
        transform = (transforms or {}).get(node.name)
        side = set(declared(transform, node.kind).side_inputs)
        if node.kind == SOURCE:
            rows_in = count(node.name, ROWS_READ)
        else:
            rows_in = sum(
                count(ref.node, output_counter(ref.output))
                for ref in node.inputs
                if str(ref) not in side and ref.node not in side
            )
        conserves = declared(transform, node.kind).conserves_rows
        if node.kind == SINK:
            rows_out = count(node.name, ROWS_WRITTEN)
        else:  # every routed output counts (`rows_out`, `rows_out.<name>`)
            prefix = f"{node.name}:{ROWS_OUT}"
            rows_out = sum(
                value
                for name, value in counts.items()
                if name == prefix or name.startswith(prefix + ".")
            )
        rejected = count(node.name, ROWS_REJECTED)
        dropped = count(node.name, ROWS_DROPPED)
        reports.append(
            StepReport(
                name=node.name,
                kind=node.kind,
                type=node.type,
                inputs=[str(ref) for ref in node.inputs],
                rows_in=rows_in,
                rows_out=rows_out,
                rows_rejected=rejected,
                rows_dropped=dropped,
                seconds=round(seconds.get(node.name, 0.0), 3),
                balanced=(not conserves) or rows_in == rows_out + rejected + dropped,
            )
        )
    return reports
