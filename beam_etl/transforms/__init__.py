"""Processors over Arrow record batches, usable in any Beam pipeline.

```python
from beam_etl.transforms import CastColumns, DropDuplicates, FilterRows, ValidateRecords
```
Composites that can reject rows return `WithErrors(output, error)`; `error` holds `DeadLetter`s.

Every step a spec can name is here, the quality checks (`ValidateRecords`, `CheckUnique`, ...)
and `ConformToSchema` included. Those live in the higher packages `beam_etl.quality` and
`beam_etl.schema` (which import this one), so they are looked up on first use, not imported.
"""

import importlib
from typing import Any, Final

from beam_etl.transforms.aggregate import Aggregate
from beam_etl.transforms.chains import Chain, batch_step
from beam_etl.transforms.changes import ApplyChanges
from beam_etl.transforms.cleaning import (
    CastColumns,
    DropColumns,
    DropNulls,
    FillNulls,
    RenameColumns,
    ReorderColumns,
    SelectColumns,
)
from beam_etl.transforms.dedupe import Deduplicated, DropDuplicates
from beam_etl.transforms.diff import DiffSnapshots
from beam_etl.transforms.expressions import DeriveColumns, FilterRows
from beam_etl.transforms.fill import FillForward
from beam_etl.transforms.outputs import WithErrors
from beam_etl.transforms.relational import JoinInputs, LookupJoin
from beam_etl.transforms.routing import SplitRows, UnionInputs
from beam_etl.transforms.rows import MapBatches, MapRows, RowsToBatches, SchemaOf, ToKeyedRows
from beam_etl.transforms.text import ChangeCase, StandardizeNulls, TrimWhitespace

# Steps of higher packages, by name: importing them here would be an import cycle.
_HIGHER: Final = {
    "CheckCompleteness": "beam_etl.quality.dataset",
    "CheckRejectedShare": "beam_etl.quality.dataset",
    "CheckRowCount": "beam_etl.quality.dataset",
    "CheckUnique": "beam_etl.quality.dataset",
    "ConformToSchema": "beam_etl.schema.conform",
    "ValidateRecords": "beam_etl.quality.validate",
}


def __getattr__(name: str) -> Any:
    if name in _HIGHER:
        return getattr(importlib.import_module(_HIGHER[name]), name)
    raise AttributeError(f"module `beam_etl.transforms` has no attribute `{name}`")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HIGHER])


__all__ = [
    "Aggregate",
    "ApplyChanges",
    "CastColumns",
    "Chain",
    "ChangeCase",
    "CheckCompleteness",
    "CheckRejectedShare",
    "CheckRowCount",
    "CheckUnique",
    "ConformToSchema",
    "Deduplicated",
    "DeriveColumns",
    "DiffSnapshots",
    "DropColumns",
    "DropDuplicates",
    "DropNulls",
    "FillForward",
    "FillNulls",
    "FilterRows",
    "JoinInputs",
    "LookupJoin",
    "MapBatches",
    "MapRows",
    "RenameColumns",
    "ReorderColumns",
    "RowsToBatches",
    "SchemaOf",
    "SelectColumns",
    "SplitRows",
    "StandardizeNulls",
    "ToKeyedRows",
    "TrimWhitespace",
    "UnionInputs",
    "ValidateRecords",
    "WithErrors",
    "batch_step",
]
