"""Lineage from the spec graph: datasets, column lineage, OpenLineage events.

- `column_lineage(plan)`: where every sink column comes from, without running anything.
- `RunLineage`: the OpenLineage START / COMPLETE / FAIL events of a run (see `events`).
- `python -m beam_etl.run lineage --pipeline spec.yaml [--column sink.column]` (see `command`).
"""

from beam_etl.lineage.columns import Flow, Lineage, Origin, analyse, column_lineage
from beam_etl.lineage.datasets import Dataset, dataset_of
from beam_etl.lineage.events import RunLineage, build_event, settings_for

__all__ = [
    "Dataset",
    "Flow",
    "Lineage",
    "Origin",
    "RunLineage",
    "analyse",
    "build_event",
    "column_lineage",
    "dataset_of",
    "settings_for",
]
