"""Typed schemas: the model, conversions (Arrow, JSON, Avro, SQL DDL), inference, conformance.

```python
from beam_etl.schema import ConformToSchema, Schema, infer_schema, load_schema
```
Names are imported on first use, so reading a schema does not import Beam.
"""

import importlib
from typing import Any, Final

_WHERE: Final = {
    "ConformToSchema": "beam_etl.schema.conform",
    "Field": "beam_etl.schema.model",
    "Schema": "beam_etl.schema.model",
    "SchemaContractError": "beam_etl.schema.conform",
    "SchemaError": "beam_etl.schema.model",
    "infer_schema": "beam_etl.schema.infer",
    "load_schema": "beam_etl.schema.model",
    "to_ddl": "beam_etl.schema.ddl",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module `beam_etl.schema` has no attribute `{name}`")
