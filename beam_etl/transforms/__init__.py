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

# ruff: noqa: F401  (the TYPE_CHECKING imports name the exports for type checkers)

import importlib
from typing import TYPE_CHECKING, Any, Final

from beam_etl.core.catalogue import exports

if TYPE_CHECKING:  # for type checkers (this package's own); `__getattr__` imports on first use
    from beam_etl.core.outputs import WithErrors
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

#: Every processor of the catalogue (`beam_etl.core.catalogue`), by the module it lives in.
_WHERE: Final = exports("transforms")


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module `beam_etl.transforms` has no attribute `{name}`")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = sorted(_WHERE)
