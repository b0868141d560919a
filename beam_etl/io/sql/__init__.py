"""One loader for every SQL database.

`dialect` says what a database must provide (connect, transient errors, quoting, bulk load,
describe, upsert / insert-ignore SQL, table swap, ledger); `loader` holds the plan every load
follows (create or drift, fast append, stage, dedupe, bisecting apply, ledger); `modes` the write
modes; `options` the typed settings; `read` the key-range reader; `postgres` and `mysql` hold
dialect code only. The public connectors (`beam_etl.io.postgresio`, `mysqlio`) stay thin.
"""
