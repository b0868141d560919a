"""beam_etl: ETL pipelines on Apache Beam with Arrow record batches between steps.

Public entry points:
- `beam_etl.io`: sources and sinks (`ReadFromCsv`, `WriteToParquet`, `WriteToSqlite`, ...).
- `beam_etl.transforms`: processors usable in any Beam pipeline (`CastColumns`, `FilterRows`, ...).
- `beam_etl.pipeline`: load, validate and build YAML pipeline specs.
- `python -m beam_etl.run`: the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
