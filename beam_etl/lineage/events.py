"""OpenLineage run events (START, COMPLETE, FAIL) of a run, through the OpenLineage client.

Each event names the job (`namespace`, the spec's name), the run (a UUID derived from the
pipeline and the run id, the same in every event of a run), the sources as inputs and the
sinks as outputs, with facets: `schema`, `dataSource` and `columnLineage` (from the plan,
see `columns`), and once the run has ended `dataQualityMetrics` (rows read, per source),
`outputStatistics` (rows written, per sink; not on FAIL, which publishes nothing) and
`dataQualityAssertions` (the quality checks upstream of a sink, and the run's conservation
check). A failed run's event carries its one-line error.

Events go to a JSON Lines file (by default `.beam_etl/lineage.jsonl` beside the run report)
and, when a URL is configured (spec `lineage: {url: ...}` or `OPENLINEAGE_URL`), to that HTTP
endpoint (Marquez: `/api/v1/lineage`, API key from `OPENLINEAGE_API_KEY`). A transport that
fails costs one warning line, never the run.
"""

import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, Final

import pyarrow as pa

from beam_etl import __version__
from beam_etl.config import mask_dsn
from beam_etl.lineage.columns import Flow, Lineage, Origin, analyse
from beam_etl.spec.registry import SINK, SOURCE

PRODUCER: Final = f"urn:beam_etl:{__version__}"
DEFAULT_NAMESPACE: Final = "beam_etl"
_SUBTYPES: Final = {
    "identity": "IDENTITY",
    "aggregation": "AGGREGATION",
    "filter": "FILTER",
    "join": "JOIN",
    "group_by": "GROUP_BY",
    "sort": "SORT",
}


@dataclass(frozen=True)
class Settings:
    """Where a run's events go; `url` may hold a password and is printed masked only."""

    file: str
    url: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    enabled: bool = True


def settings_for(spec: Any, work_dir: str) -> Settings:
    """Return the event settings of `spec` (its `lineage:` key, then the environment)."""
    config = getattr(spec, "lineage", None) or {}
    return Settings(
        file=os.path.abspath(config.get("file") or os.path.join(work_dir, "lineage.jsonl")),
        url=config.get("url") or os.environ.get("OPENLINEAGE_URL") or None,
        namespace=config.get("namespace")
        or os.environ.get("OPENLINEAGE_NAMESPACE")
        or DEFAULT_NAMESPACE,
        enabled=config.get("enabled", True),
    )


def ol_run_id(pipeline: str, run_id: str) -> str:
    """Return the OpenLineage run id (a UUID) of beam_etl run `run_id` of `pipeline`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"beam_etl:{pipeline}:{run_id}"))


def _schema_facet(schema: pa.Schema | None, columns: dict | None) -> Any:
    from openlineage.client.facet_v2 import schema_dataset

    named: list[tuple[str, str | None]] = []
    if schema is not None:
        named = [(f.name, str(f.type)) for f in schema]
    else:
        named = [(name, None) for name in columns or {}]
    fields = [
        schema_dataset.SchemaDatasetFacetFields(name=name, type=kind, ordinal_position=i + 1)
        for i, (name, kind) in enumerate(named)
    ]
    return schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)


def _input_field(origin: Origin, lineage: Lineage, kind: str) -> Any:
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    dataset = lineage.datasets[origin.source]
    subtype = _SUBTYPES.get(origin.transformation, "TRANSFORMATION")
    transformation = cl.Transformation(
        type=kind, subtype=subtype, description="; ".join(origin.notes) or None, masking=False
    )
    return cl.InputField(
        namespace=dataset.namespace,
        name=dataset.name,
        field=origin.column,
        transformations=[transformation],
    )


def _column_lineage_facet(flow: Flow, lineage: Lineage) -> Any:
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    fields = {
        name: cl.Fields(inputFields=[_input_field(o, lineage, "DIRECT") for o in origins])
        for name, origins in (flow.columns or {}).items()
        if origins
    }
    indirect = [_input_field(o, lineage, "INDIRECT") for o in flow.indirect]
    return cl.ColumnLineageDatasetFacet(fields=fields, dataset=indirect, producer=PRODUCER)


def _upstream(plan: Any, name: str) -> set[str]:
    """Names of every node `name` reads from, directly or not."""
    by_name = {node.name: node for node in plan.ordered}
    found: set[str] = set()
    todo = [name]
    while todo:
        for ref in by_name[todo.pop()].inputs:
            if ref.node not in found:
                found.add(ref.node)
                todo.append(ref.node)
    return found


def _assertions(plan: Any, sink: str, report: Any) -> Any:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    found = [dq.Assertion(assertion="rows_conserved", success=bool(report.conservation_ok))]
    upstream = _upstream(plan, sink)
    for check in (report.quality or {}).get("checks", []):
        if check.get("step") in upstream:
            found.append(
                dq.Assertion(
                    assertion=str(check.get("check")),
                    success=check.get("outcome") in ("passed", "rejected"),
                    column=check.get("column"),
                    severity=check.get("severity"),
                    name=f"{check.get('step')}.{check.get('check')}",
                    actual=str(check.get("rows_failed")),
                    expected="0",
                )
            )
    return dq.DataQualityAssertionsDatasetFacet(assertions=found, producer=PRODUCER)


def build_event(
    event_type: str,
    plan: Any,
    lineage: Lineage,
    run_id: str,
    settings: Settings,
    report: Any = None,
) -> Any:
    """Return the `RunEvent` of type START, COMPLETE or FAIL (the latter two with `report`)."""
    from openlineage.client import event_v2 as ev
    from openlineage.client.facet_v2 import (
        data_quality_metrics_input_dataset,
        datasource_dataset,
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
        processing_engine_run,
    )

    counts = {step.name: step for step in (report.steps if report is not None else [])}
    inputs, outputs = [], []
    for node in lineage.nodes:
        if node.kind not in (SOURCE, SINK):
            continue
        dataset = lineage.datasets[node.name]
        flow = lineage.flows[(node.name, "output" if node.kind == SOURCE else "input")]
        facets: dict[str, Any] = {
            "schema": _schema_facet(flow.schema, flow.columns),
            "dataSource": datasource_dataset.DatasourceDatasetFacet(
                name=dataset.namespace, uri=dataset.uri, producer=PRODUCER
            ),
        }
        step = counts.get(node.name)
        if node.kind == SOURCE:
            extra: dict[str, Any] = {}
            if step is not None:
                extra["dataQualityMetrics"] = (
                    data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                        columnMetrics={}, rowCount=step.rows_in, producer=PRODUCER
                    )
                )
            inputs.append(
                ev.InputDataset(
                    namespace=dataset.namespace, name=dataset.name, facets=facets, inputFacets=extra
                )
            )
            continue
        if flow.columns is not None:
            facets["columnLineage"] = _column_lineage_facet(flow, lineage)
        out: dict[str, Any] = {}
        if report is not None:
            facets["dataQualityAssertions"] = _assertions(plan, node.name, report)
            if step is not None and event_type == "COMPLETE":
                out["outputStatistics"] = (
                    output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                        rowCount=step.rows_out, producer=PRODUCER
                    )
                )
        outputs.append(
            ev.OutputDataset(
                namespace=dataset.namespace, name=dataset.name, facets=facets, outputFacets=out
            )
        )
    run_facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=__version__,
            name="beam_etl",
            openlineageAdapterVersion=version("openlineage-python"),
            producer=PRODUCER,
        )
    }
    if report is not None and report.error:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=report.error, programmingLanguage="python", producer=PRODUCER
        )
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="BEAM_ETL", jobType="PIPELINE", producer=PRODUCER
        )
    }
    return ev.RunEvent(
        eventType=ev.RunState[event_type],
        eventTime=datetime.now(UTC).isoformat(),
        run=ev.Run(runId=ol_run_id(plan.spec.name, run_id), facets=run_facets),
        job=ev.Job(namespace=settings.namespace, name=plan.spec.name, facets=job_facets),
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class RunLineage:
    """Emits the OpenLineage events of one run: `start()` before it, `finish(report)` after
    (or, as an observer of the run, `run_started` and `run_finished`).

    Emission never fails the run: a transport that fails prints one warning line (once per
    transport and run) and is not tried again in that run; as an observer, anything else that
    goes wrong here is one warning line of `beam_etl.observers`.
    """

    def __init__(
        self, plan: Any, run_id: str, work_dir: str, warn: Callable[[str], None] = _warn
    ) -> None:
        self.plan, self.run_id = plan, run_id
        self.settings = settings_for(plan.spec, work_dir)
        self.lineage: Lineage | None = None  # analysed at `start`, inside the observer call
        self._warn = warn
        self._transports: dict[str, Any] | None = None

    name = "openlineage"  # as an observer (see `beam_etl.observers`)

    def start(self) -> None:
        """Emit START (datasets, schemas, column lineage)."""
        self._emit("START")

    def run_started(self, info: Any) -> None:
        """As an observer: emit START."""
        self.start()

    def run_finished(self, summary: Any) -> None:
        """As an observer: emit COMPLETE or FAIL from the summary's run report."""
        self.finish(summary.report)

    def finish(self, report: Any) -> None:
        """Emit COMPLETE or FAIL with the run report's counts, checks and error."""
        self._emit("COMPLETE" if report.status == "succeeded" else "FAIL", report)

    def _emit(self, event_type: str, report: Any = None) -> None:
        if not self.settings.enabled:
            return
        if self.lineage is None:
            self.lineage = analyse(self.plan)
        event = build_event(event_type, self.plan, self.lineage, self.run_id, self.settings, report)
        for where, client in list(self._clients().items()):
            try:
                client.emit(event)
            except Exception as exc:  # any transport failure: one warning line, run goes on
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                redact = getattr(getattr(self.plan, "loaded", None), "redact", str)
                self._warn(redact(mask_dsn(f"lineage events not sent to {where}: {reason}")))
                del self._transports[where]  # type: ignore[union-attr]

    def _clients(self) -> dict[str, Any]:
        if self._transports is None:
            self._transports = _clients(self.settings)
        return self._transports


def _clients(settings: Settings) -> dict[str, Any]:
    """One OpenLineage client per destination, by the destination's printable name."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    os.makedirs(os.path.dirname(settings.file), exist_ok=True)
    found = {
        settings.file: OpenLineageClient(
            transport=FileTransport(FileConfig(log_file_path=settings.file, append=True))
        )
    }
    if settings.url:
        params: dict[str, Any] = {"url": settings.url, "timeout": 5.0, "retry": {"total": 0}}
        if os.environ.get("OPENLINEAGE_API_KEY"):
            params["auth"] = {"type": "api_key", "apiKey": os.environ["OPENLINEAGE_API_KEY"]}
        transport = HttpTransport(HttpConfig.from_dict(params))
        found[mask_dsn(settings.url)] = OpenLineageClient(transport=transport)
    return found
