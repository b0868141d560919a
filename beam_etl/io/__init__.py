"""Sources and sinks on Arrow record batches.

```python
from beam_etl.io import ReadFromCsv, WriteToParquet, WriteToSqlite
```
"""

from beam_etl.deadletter import WriteToDeadLetters
from beam_etl.io.csvio import ReadFromCsv
from beam_etl.io.parquetio import WriteToParquet
from beam_etl.io.sqliteio import WriteToSqlite

__all__ = ["ReadFromCsv", "WriteToDeadLetters", "WriteToParquet", "WriteToSqlite"]
