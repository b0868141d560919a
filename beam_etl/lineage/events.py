"""OpenLineage run events (START, COMPLETE, FAIL) of a run.

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

Events are built as the JSON the OpenLineage client writes. The file is written without the
client (importing it costs ~0.2 s, most of it HTTP libraries) unless OpenLineage's own
configuration could change what the client emits (see `client_configured`); the HTTP
endpoint, and the file in that case, go through the client as before.
"""

import io
import json
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
from beam_etl.core.catalogue import SOURCE
from beam_etl.core.config import mask_dsn
from beam_etl.core.graph import reachable
from beam_etl.lineage.columns import Flow, Lineage, Origin, analyse

PRODUCER: Final = f"urn:beam_etl:{__version__}"
RUN_EVENT_SCHEMA: Final = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
# The facets' schema versions of the OpenLineage client (`FacetClass._get_schema()`), as
# `VERSION/FacetName`; a test holds them equal to the installed client's.
_FACET_SCHEMAS: Final = "https://openlineage.io/spec/facets"
SCHEMA_FACET: Final = "1-2-0/SchemaDatasetFacet"
DATASOURCE_FACET: Final = "1-0-1/DatasourceDatasetFacet"
COLUMN_LINEAGE_FACET: Final = "1-2-0/ColumnLineageDatasetFacet"
METRICS_FACET: Final = "1-0-3/DataQualityMetricsInputDatasetFacet"
STATISTICS_FACET: Final = "1-0-2/OutputStatisticsOutputDatasetFacet"
ASSERTIONS_FACET: Final = "1-1-0/DataQualityAssertionsDatasetFacet"
ENGINE_FACET: Final = "1-1-1/ProcessingEngineRunFacet"
ERROR_FACET: Final = "1-0-1/ErrorMessageRunFacet"
JOB_TYPE_FACET: Final = "2-0-4/JobTypeJobFacet"
TAGS_FACET: Final = "1-0-0/TagsRunFacet"
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


def _facet(schema: str, **fields: Any) -> dict[str, Any]:
    """Return a facet as OpenLineage serialises it; `schema` is `VERSION/FacetName`."""
    url = f"{_FACET_SCHEMAS}/{schema}.json#/$defs/{schema.rpartition('/')[2]}"
    return {"_producer": PRODUCER, "_schemaURL": url, **fields}


def _schema_facet(schema: pa.Schema | None, columns: dict | None) -> dict[str, Any]:
    named: list[tuple[str, str | None]] = []
    if schema is not None:
        named = [(f.name, str(f.type)) for f in schema]
    else:
        named = [(name, None) for name in columns or {}]
    fields: list[dict[str, Any]] = [
        {"name": name, "type": kind, "ordinal_position": i + 1, "fields": []}
        for i, (name, kind) in enumerate(named)
    ]
    return _facet(SCHEMA_FACET, fields=fields)


def _input_field(origin: Origin, lineage: Lineage, kind: str) -> dict[str, Any]:
    dataset = lineage.datasets[origin.source]
    subtype = _SUBTYPES.get(origin.transformation, "TRANSFORMATION")
    transformation = {
        "type": kind,
        "subtype": subtype,
        "description": "; ".join(origin.notes) or None,
        "masking": False,
    }
    return {
        "namespace": dataset.namespace,
        "name": dataset.name,
        "field": origin.column,
        "transformations": [transformation],
    }


def _column_lineage_facet(flow: Flow, lineage: Lineage) -> dict[str, Any]:
    fields = {
        name: {"inputFields": [_input_field(o, lineage, "DIRECT") for o in origins]}
        for name, origins in (flow.columns or {}).items()
        if origins
    }
    indirect = [_input_field(o, lineage, "INDIRECT") for o in flow.indirect]
    return _facet(COLUMN_LINEAGE_FACET, fields=fields, dataset=indirect)


def _upstream(plan: Any, name: str) -> set[str]:
    """Names of every node `name` reads from, directly or not."""
    by_name = {node.name: node for node in plan.ordered}
    return reachable([name], lambda each: [ref.node for ref in by_name[each].inputs]) - {name}


def _assertions(plan: Any, sink: str, report: Any) -> dict[str, Any]:
    conserved = bool(report.conservation_ok)
    found = [{"assertion": "rows_conserved", "success": conserved, "params": {}}]
    upstream = _upstream(plan, sink)
    for check in (report.quality or {}).get("checks", []):
        if check.get("step") in upstream:
            found.append(
                {
                    "assertion": str(check.get("check")),
                    "success": check.get("outcome") in ("passed", "rejected"),
                    "column": check.get("column"),
                    "severity": check.get("severity"),
                    "name": f"{check.get('step')}.{check.get('check')}",
                    "actual": str(check.get("rows_failed")),
                    "expected": "0",
                    "params": {},
                }
            )
    return _facet(ASSERTIONS_FACET, assertions=found)


def _client_tags() -> dict[str, Any]:
    """The run facet `tags` the OpenLineage client adds to every run event it emits."""
    client = version("openlineage-python")
    return {
        "_producer": f"https://github.com/OpenLineage/OpenLineage/tree/{client}/client/python",
        "_schemaURL": f"{_FACET_SCHEMAS}/{TAGS_FACET}.json#/$defs/TagsRunFacet",
        "tags": [
            {"key": "openlineage_client_version", "value": client, "source": "OPENLINEAGE_CLIENT"}
        ],
    }


def build_event(
    event_type: str,
    plan: Any,
    lineage: Lineage,
    run_id: str,
    settings: Settings,
    report: Any = None,
) -> dict[str, Any]:
    """Return the run event of type START, COMPLETE or FAIL (the latter two with `report`),
    as the OpenLineage client writes it to a JSON Lines file by default (its `tags` facet
    included): plain JSON values, no null, the OpenLineage client not imported."""
    counts = {step.name: step for step in (report.steps if report is not None else [])}
    inputs, outputs = [], []
    for node, dataset, flow in lineage.endpoints():
        facets: dict[str, Any] = {
            "schema": _schema_facet(flow.schema, flow.columns),
            "dataSource": _facet(DATASOURCE_FACET, name=dataset.namespace, uri=dataset.uri),
        }
        step = counts.get(node.name)
        where = {"namespace": dataset.namespace, "name": dataset.name, "facets": facets}
        if node.kind == SOURCE:
            extra: dict[str, Any] = {}
            if step is not None:
                extra["dataQualityMetrics"] = _facet(
                    METRICS_FACET, columnMetrics={}, rowCount=step.rows_in
                )
            inputs.append({**where, "inputFacets": extra})
            continue
        if flow.columns is not None:
            facets["columnLineage"] = _column_lineage_facet(flow, lineage)
        out: dict[str, Any] = {}
        if report is not None:
            facets["dataQualityAssertions"] = _assertions(plan, node.name, report)
            if step is not None and event_type == "COMPLETE":
                out["outputStatistics"] = _facet(STATISTICS_FACET, rowCount=step.rows_out)
        outputs.append({**where, "outputFacets": out})
    run_facets: dict[str, Any] = {
        "processing_engine": _facet(
            ENGINE_FACET,
            version=__version__,
            name="beam_etl",
            openlineageAdapterVersion=version("openlineage-python"),
        ),
        "tags": _client_tags(),
    }
    if report is not None and report.error:
        run_facets["errorMessage"] = _facet(
            ERROR_FACET, message=report.error, programmingLanguage="python"
        )
    job_facets = {
        "jobType": _facet(
            JOB_TYPE_FACET, processingType="BATCH", integration="BEAM_ETL", jobType="PIPELINE"
        )
    }
    event = {
        "eventType": event_type,
        "eventTime": datetime.now(UTC).isoformat(),
        "run": {"runId": ol_run_id(plan.spec.name, run_id), "facets": run_facets},
        "job": {"namespace": settings.namespace, "name": plan.spec.name, "facets": job_facets},
        "inputs": inputs,
        "outputs": outputs,
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
    }
    return _plain(event)


def _plain(value: Any) -> Any:
    """`value` without nulls, as OpenLineage's `Serde` writes it: None dropped from mappings,
    None and empty mappings dropped from lists, NumPy integers as ints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        items = [_plain(v) for v in value if v is not None]
        return [v for v in items if v is not None and v != {}]
    if type(value).__name__ == "int64":
        return int(value)
    return value


def to_json(event: dict[str, Any]) -> str:
    """Return the JSON line OpenLineage's file transport writes for `event`."""
    return json.dumps(
        event, sort_keys=True, default=lambda o: f"<<non-serializable: {type(o).__qualname__}>>"
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


def client_configured() -> bool:
    """Whether OpenLineage's own configuration could change what its client emits (its
    environment variables, an `openlineage.yml` where the client looks for one): then the
    file is written through the client too."""
    if "OPENLINEAGE_CONFIG" in os.environ or "OPENLINEAGE_DISABLED" in os.environ:
        return True
    if any(name.startswith("OPENLINEAGE__") for name in os.environ):
        return True
    places = (os.getcwd(), os.path.expanduser("~/.openlineage"))
    return any(os.path.isfile(os.path.join(place, "openlineage.yml")) for place in places)


class _JsonLinesFile:
    """Appends events to a local file as OpenLineage's file transport (append mode) does."""

    def __init__(self, path: str) -> None:
        self.path = path

    def emit(self, event: dict[str, Any]) -> None:
        """Append `event` as one JSON line; fail with the file transport's messages."""
        try:
            with open(self.path, "a") as out:
                out.write(to_json(event) + "\n")
        except (PermissionError, io.UnsupportedOperation) as error:
            raise RuntimeError(f"Log file `{self.path}` is not writeable") from error
        except Exception as error:
            raise RuntimeError(f"Failed to write to log file `{self.path}`: {error}") from error


class _Client:
    """An OpenLineage client with one transport, fed the events of `build_event`."""

    def __init__(self, transport: Any) -> None:
        from openlineage.client import OpenLineageClient

        self._client = OpenLineageClient(transport=transport)

    def emit(self, event: dict[str, Any]) -> None:
        """Emit `event` through the client (which adds its own `tags` facet)."""
        self._client.emit(client_event(event))


def client_event(event: dict[str, Any]) -> Any:
    """Return `event` (of `build_event`) as the client's `RunEvent`, without the `tags` run
    facet, which the client adds (with any tags its configuration sets)."""
    from openlineage.client import event_v2 as ev

    run_facets = {k: v for k, v in event["run"]["facets"].items() if k != "tags"}
    job = event["job"]
    return ev.RunEvent(
        eventType=ev.RunState[event["eventType"]],
        eventTime=event["eventTime"],
        run=ev.Run(runId=event["run"]["runId"], facets=run_facets),
        job=ev.Job(namespace=job["namespace"], name=job["name"], facets=dict(job["facets"])),
        inputs=[_client_dataset(ev.InputDataset, d, "inputFacets") for d in event["inputs"]],
        outputs=[_client_dataset(ev.OutputDataset, d, "outputFacets") for d in event["outputs"]],
        producer=event["producer"],
    )


def _client_dataset(kind: Any, dataset: dict[str, Any], own_facets: str) -> Any:
    """Return `dataset` (of `build_event`) as the client's `kind`, an input or output dataset
    whose own facets are under `own_facets`."""
    return kind(
        namespace=dataset["namespace"],
        name=dataset["name"],
        facets=dataset["facets"],
        **{own_facets: dataset[own_facets]},
    )


def _clients(settings: Settings) -> dict[str, Any]:
    """One emitter per destination, by the destination's printable name: the file without
    the OpenLineage client unless its configuration says otherwise, an HTTP endpoint through
    the client."""
    os.makedirs(os.path.dirname(settings.file), exist_ok=True)
    found: dict[str, Any] = {}
    if client_configured():
        from openlineage.client.transport.file import FileConfig, FileTransport

        config = FileConfig(log_file_path=settings.file, append=True)
        found[settings.file] = _Client(FileTransport(config))
    else:
        found[settings.file] = _JsonLinesFile(settings.file)
    if settings.url:
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        params: dict[str, Any] = {"url": settings.url, "timeout": 5.0, "retry": {"total": 0}}
        if os.environ.get("OPENLINEAGE_API_KEY"):
            params["auth"] = {"type": "api_key", "apiKey": os.environ["OPENLINEAGE_API_KEY"]}
        transport = HttpTransport(HttpConfig.from_dict(params))
        found[mask_dsn(settings.url)] = _Client(transport)
    return found
