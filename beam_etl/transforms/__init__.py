"""Processors over Arrow record batches, usable in any Beam pipeline.

```python
from beam_etl.transforms import CastColumns, DropDuplicates, FilterRows, ValidateRecords
```
Composites that can reject rows return `WithErrors(output, error)`; `error` holds `DeadLetter`s.

Every step a spec can name is here, the quality checks (`ValidateRecords`, `CheckUnique`, ...)
and `ConformToSchema` included. Names are imported on first use (as in `beam_etl.io`): a run
imports the modules of the steps it uses, and the quality and schema steps, which live in the
higher packages `beam_etl.quality` and `beam_etl.schema` (which import this one), are no
import cycle.
"""

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # for type checkers (this package's own); `__getattr__` imports on first use
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
    from beam_etl.transforms.rows import (
        MapBatches,
        MapRows,
        RowsToBatches,
        SchemaOf,
        ToKeyedRows,
    )
    from beam_etl.transforms.text import ChangeCase, StandardizeNulls, TrimWhitespace

_WHERE: Final = {
    "Aggregate": "beam_etl.transforms.aggregate",
    "ApplyChanges": "beam_etl.transforms.changes",
    "CastColumns": "beam_etl.transforms.cleaning",
    "Chain": "beam_etl.transforms.chains",
    "ChangeCase": "beam_etl.transforms.text",
    "CheckCompleteness": "beam_etl.quality.dataset",
    "CheckRejectedShare": "beam_etl.quality.dataset",
    "CheckRowCount": "beam_etl.quality.dataset",
    "CheckUnique": "beam_etl.quality.dataset",
    "ConformToSchema": "beam_etl.schema.conform",
    "Deduplicated": "beam_etl.transforms.dedupe",
    "DeriveColumns": "beam_etl.transforms.expressions",
    "DiffSnapshots": "beam_etl.transforms.diff",
    "DropColumns": "beam_etl.transforms.cleaning",
    "DropDuplicates": "beam_etl.transforms.dedupe",
    "DropNulls": "beam_etl.transforms.cleaning",
    "FillForward": "beam_etl.transforms.fill",
    "FillNulls": "beam_etl.transforms.cleaning",
    "FilterRows": "beam_etl.transforms.expressions",
    "JoinInputs": "beam_etl.transforms.relational",
    "LookupJoin": "beam_etl.transforms.relational",
    "MapBatches": "beam_etl.transforms.rows",
    "MapRows": "beam_etl.transforms.rows",
    "RenameColumns": "beam_etl.transforms.cleaning",
    "ReorderColumns": "beam_etl.transforms.cleaning",
    "RowsToBatches": "beam_etl.transforms.rows",
    "SchemaOf": "beam_etl.transforms.rows",
    "SelectColumns": "beam_etl.transforms.cleaning",
    "SplitRows": "beam_etl.transforms.routing",
    "StandardizeNulls": "beam_etl.transforms.text",
    "ToKeyedRows": "beam_etl.transforms.rows",
    "TrimWhitespace": "beam_etl.transforms.text",
    "UnionInputs": "beam_etl.transforms.routing",
    "ValidateRecords": "beam_etl.quality.validate",
    "WithErrors": "beam_etl.transforms.outputs",
    "batch_step": "beam_etl.transforms.chains",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module `beam_etl.transforms` has no attribute `{name}`")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


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
