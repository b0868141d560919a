"""Processors over Arrow record batches, usable in any Beam pipeline.

```python
from beam_etl.transforms import CastColumns, DropDuplicates, FilterRows
```
Composites that can reject rows return `WithErrors(output, error)`; `error` holds `DeadLetter`s.
"""

from beam_etl.transforms.aggregate import Aggregate
from beam_etl.transforms.chains import Chain, batch_step
from beam_etl.transforms.cleaning import (
    CastColumns,
    DropColumns,
    DropNulls,
    FillNulls,
    RenameColumns,
    ReorderColumns,
    SelectColumns,
)
from beam_etl.transforms.dedupe import DropDuplicates
from beam_etl.transforms.expressions import DeriveColumns, FilterRows
from beam_etl.transforms.fill import FillForward
from beam_etl.transforms.outputs import WithErrors
from beam_etl.transforms.relational import JoinInputs, LookupJoin
from beam_etl.transforms.routing import SplitRows, UnionInputs
from beam_etl.transforms.rows import MapBatches, MapRows, RowsToBatches, SchemaOf, ToKeyedRows
from beam_etl.transforms.text import ChangeCase, StandardizeNulls, TrimWhitespace

__all__ = [
    "Aggregate",
    "CastColumns",
    "Chain",
    "ChangeCase",
    "DeriveColumns",
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
    "WithErrors",
    "batch_step",
]
