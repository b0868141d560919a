"""Sources and sinks on Arrow record batches.

```python
from beam_etl.io import ReadFromCsv, WriteToParquet, WriteToSqlite
```
Names are imported on first use, so a connector whose driver is not installed (fastavro,
openpyxl, psycopg2, pymysql) costs nothing until it is used.
"""

import importlib
from typing import Any

from beam_etl.core.catalogue import exports

#: Every connector of the catalogue (`beam_etl.core.catalogue`), by the module it lives in.
_WHERE = exports("io")

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module `beam_etl.io` has no attribute `{name}`")
