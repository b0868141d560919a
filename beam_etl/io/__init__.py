"""Sources and sinks on Arrow record batches.

```python
from beam_etl.io import ReadFromCsv, WriteToParquet, WriteToSqlite
```
Names are imported on first use, so a connector whose driver is not installed (fastavro,
openpyxl, psycopg2, pymysql) costs nothing until it is used.
"""

import importlib
from typing import Any

_WHERE = {
    "ReadFromCsv": "beam_etl.io.csvio",
    "WriteToCsv": "beam_etl.io.csvio",
    "WriteToParquet": "beam_etl.io.parquetio",
    "WriteToSqlite": "beam_etl.io.sqliteio",
    "ReadFromSqlite": "beam_etl.io.sqliteio",
    "WriteToDeadLetters": "beam_etl.deadletter",
    "ReadFromJson": "beam_etl.io.jsonio",
    "WriteToJson": "beam_etl.io.jsonio",
    "ReadFromParquet": "beam_etl.io.parquetio",
    "parquet_history": "beam_etl.io.parquetio",
    "ReadFromPostgres": "beam_etl.io.postgresio",
    "WriteToPostgres": "beam_etl.io.postgresio",
    "ReadFromMySql": "beam_etl.io.mysqlio",
    "WriteToMySql": "beam_etl.io.mysqlio",
    "ReadFromPostgresChanges": "beam_etl.io.pgcdc",
    "ReadFromDebeziumJson": "beam_etl.io.debezium",
    "ReadFromMySqlChanges": "beam_etl.io.mysqlcdc",
    "ReadFromAvro": "beam_etl.io.avroio",
    "WriteToAvro": "beam_etl.io.avroio",
    "ReadFromExcel": "beam_etl.io.excelio",
    "WriteToExcel": "beam_etl.io.excelio",
    "WriteToHtml": "beam_etl.io.htmlio",
    "WriteToMarkdown": "beam_etl.io.htmlio",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module `beam_etl.io` has no attribute `{name}`")
