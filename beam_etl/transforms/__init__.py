"""Processors over Arrow record batches, usable in any Beam pipeline.

```python
from beam_etl.transforms import CastColumns, DropDuplicates, FilterRows
```
Composites that can reject rows return `WithErrors(output, error)`; `error` holds `DeadLetter`s.
"""

from beam_etl.transforms.cleaning import CastColumns, DropNulls, RenameColumns, SelectColumns
from beam_etl.transforms.dedupe import DropDuplicates
from beam_etl.transforms.expressions import DeriveColumns, FilterRows
from beam_etl.transforms.outputs import WithErrors
from beam_etl.transforms.rows import MapBatches, MapRows, RowsToBatches, SchemaOf, ToKeyedRows

__all__ = [
    "CastColumns",
    "DeriveColumns",
    "DropDuplicates",
    "DropNulls",
    "FilterRows",
    "MapBatches",
    "MapRows",
    "RenameColumns",
    "RowsToBatches",
    "SchemaOf",
    "SelectColumns",
    "ToKeyedRows",
    "WithErrors",
]
