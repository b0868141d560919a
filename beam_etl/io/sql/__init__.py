"""One loader for every SQL database.

`dialect` says what a database must provide (connect, transient errors, quoting, bulk load,
describe, upsert / insert-ignore SQL, table swap, ledger); `loader` holds the plan every load
follows (create or drift, fast append, stage, dedupe, bisecting apply, ledger), `ledger` the
publish transaction around it and `sink` the write transform every connector shares; `modes`
the write modes; `options` the typed settings; `read` the key-range reader. `postgres*`,
`mysql*` and `sqlite` hold dialect code only (`dialect.BaseDialect` gives the standard SQL);
the public connectors (`beam_etl.io.postgresio`, `mysqlio`, `sqliteio`) stay thin.
"""
