"""PostgreSQL's speed paths: a trial predicted without loading, `COPY` straight into the target
(append, replace, a first merge) while no row is refused, and refused ranges applied row by row
in one server-side loop.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import HIDDEN_PREFIX
from beam_etl.io.sql.postgres_checks import _VARCHAR, _exactness, _is_row_error, _overflow, _q
from beam_etl.io.sql.postgres_copy import _copy_in
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.staging import (
    ROW_COLUMN,
    StagedOrigins,
    conform,
    distinct_keys,
    last_rows,
    numbered,
    own_columns,
    parts_schema,
    read_parts,
)
from beam_etl.io.sql.values import UnloadableError, loadable, sql_type

if TYPE_CHECKING:  # annotations only: the loader does not import dialects
    from beam_etl.io.sql.loader import SqlLoad


def name_target(load: "SqlLoad", message: str) -> str:
    """Return a database message with the replacement table called by the target's name."""
    return message.replace(f"_beam_etl_new_{load.token}", load.table.rpartition(".")[2])


def predict(load: "SqlLoad", parts: list[Any]) -> Published | None:
    """Return what loading `parts` will do without loading them, when the database
    cannot refuse a row the Arrow screening (`unloadable`) lets through: the load creates
    the table (append or replace, no keys), or merges into a table that only a primary key
    on the merge keys guards (see `_predict_merge`). None otherwise: then the trial loads."""
    if load.o.mode == "merge":
        return _predict_merge(load, parts)
    if (
        load.o.mode not in ("append", "replace")
        or load.keys
        or not load.o.create_table
        or load.d.columns(load) is not None
    ):
        return None
    schema = parts_schema(parts)
    if schema is None:
        return Published(0, 0, [])
    fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
    for f in fields:
        sql_type(f.type, "postgres")  # raises for a type no column holds, as the load
    staged = sum(rows for _, rows in parts)
    load.origins.screen(parts, fields)
    rejects = load.screened()
    return Published(staged - len(rejects), 0, rejects)


def _predict_merge(load: "SqlLoad", parts: list[Any]) -> Published | None:
    """Predict a `merge`: every staged key is written once (the last row per key), when
    nothing but the primary key on the merge keys can refuse a row: no trigger, CHECK,
    foreign key (either way), exclusion or other unique key, row security, domain or
    always-generated identity column; every loaded column stores its values exactly (text
    into a varchar: measured here); the user may write (or create) the table; no staged
    key is null. None otherwise."""
    schema = parts_schema(parts)
    keys, flag = load.keys, load.o.hard_delete
    if schema is None or not keys:
        return None
    fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
    columns = [f for f in fields if f.name != flag]
    if not set(keys) <= {f.name for f in columns}:
        return None
    existing = load.d.columns(load)
    max_chars: dict[str, int] = {}
    if existing is None:
        if not load.o.create_table or not _may(load, "create"):
            return None
        for f in columns:
            sql_type(f.type, "postgres")  # raises for a type no column holds, as the load
    else:
        if any(f.name not in existing for f in columns) and load.o.drift != "evolve":
            return None
        if not _may(load, "write") or _guarded(load):
            return None
        target = load.d.describe(load, load.target)
        for f in columns:
            column = target.get(f.name)
            if column is None:
                continue  # added by the load: nullable, of its own type
            if column.not_null and f.name not in keys:
                return None
            if _overflow(f.name, f.type, column.type, column.base):
                return None
            if _exactness(f.name, f.type, column.type, column.base):
                size = _VARCHAR.fullmatch(column.type)
                if not (size and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))):
                    return None
                max_chars[f.name] = int(size[1])  # measured in Arrow below
        unique = load.d.unique_keys(load, load.target)
        if [u[1] for u in unique] != [frozenset(keys)]:
            return None
    found, too_long = [], False
    for batch in load.origins.batches(parts, pa.schema([*fields, *StagedOrigins.FIELDS])):
        found.append(own_columns(batch, keys))
        for name, limit in max_chars.items():
            longest = pc.max(pc.utf8_length(batch.column(name))).as_py()
            too_long = too_long or (longest is not None and longest > limit)
    table = pa.concat_tables(found).combine_chunks() if found else None
    if too_long or (table is not None and any(table.column(k).null_count for k in keys)):
        load.origins = StagedOrigins("postgres")  # the trial screens again
        return None
    written = distinct_keys(table, keys) if table is not None else 0
    rejects = [
        load.origins.reject(load.o.step, load.table, keys, row, message)
        for row, message in load.origins.screened
    ]
    staged = sum(rows for _, rows in parts)
    return Published(written, staged - written - len(rejects), rejects)


def _may(load: "SqlLoad", action: str) -> bool:
    """Whether this user may `write` (insert, update, delete) the target, or `create` it."""
    if action == "write":
        load.cursor.execute(
            "SELECT has_table_privilege(to_regclass(%s), 'INSERT, UPDATE, DELETE')",
            (load.target,),
        )
    else:
        schema = load.table.rpartition(".")[0] or None
        load.cursor.execute(
            "SELECT has_schema_privilege(COALESCE(%s, current_schema()), 'CREATE')", (schema,)
        )
    return bool(load.cursor.fetchone()[0])


def _guarded(load: "SqlLoad") -> bool:
    """Whether anything but its keys can refuse a row of the target (see
    `_predict_merge`)."""
    load.cursor.execute(
        "SELECT c.relkind <> 'r' OR c.relrowsecurity "
        "OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal) "
        "OR EXISTS (SELECT 1 FROM pg_constraint WHERE (conrelid = c.oid "
        "AND contype IN ('c', 'f', 'x')) OR (confrelid = c.oid AND contype = 'f')) "
        "OR EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "AND (t.typtype = 'd' OR a.attidentity = 'a')) "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (load.target,),
    )
    return bool(load.cursor.fetchone()[0])


def fast_merge_into_new(
    load: "SqlLoad", parts: list[Any], fields: list[pa.Field], columns: list[pa.Field]
) -> int | None:
    """Merge into the table this transaction created (a first load, such as a change
    capture's snapshot): the last row per key, less the rows `hard_delete_column` marks,
    COPYed straight in. Return the keys written (deleted ones included, as the staging
    path counts them), or None when a row is refused or screened out (the staging path
    then refuses that row alone)."""
    keys, flag, sort = load.keys, load.o.hard_delete, load.o.dedup_sort
    schema = pa.schema([*fields, *StagedOrigins.FIELDS])
    # Row numbers as staging gives them while nothing is screened out (else: no fast path).
    keep = last_rows(numbered(parts, [*keys, *([sort] if sort else [])]), keys, sort)
    origins, written = StagedOrigins("postgres"), 0

    def rows() -> Iterator[pa.RecordBatch]:
        nonlocal written
        for batch in origins.batches(parts, schema):
            if origins.screened:
                raise UnloadableError("a row cannot be loaded into postgres as it is")
            if keep is not None:
                batch = batch.filter(pc.is_in(batch.column(ROW_COLUMN), keep))
            written += batch.num_rows
            if flag:
                batch = batch.filter(pc.invert(pc.fill_null(batch.column(flag), False)))
            yield batch

    fast = fast_append(load, parts, columns, load.target, rows(), screened=True)
    return written if fast else None


def fast_append(
    load: "SqlLoad",
    parts: list[Any],
    columns: list[pa.Field],
    dest: str,
    batches: Iterator[pa.RecordBatch] | None = None,
    *,
    screened: bool = False,
) -> bool:
    """COPY `batches` (default: the staged parts) straight into `dest`; False (and nothing
    kept) when a row is refused, or when a value might be changed on the way (the staging
    path checks those row by row). `screened`: `batches` raise at an `unloadable` row
    already."""
    schema = pa.schema(columns)
    target = load.d.describe(load, dest)
    max_chars = {}
    for f in columns:
        check = _exactness(f.name, f.type, *target[f.name][:2])
        size = _VARCHAR.fullmatch(target[f.name].type)
        if check and size and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            max_chars[f.name] = int(size[1])  # checked in Arrow on the way
        elif check:
            return False
    load.execute("SAVEPOINT beam_etl_copy")
    try:
        conformed: Iterator[pa.RecordBatch] = (
            conform(b, schema) for b in batches or read_parts(parts)
        )
        if not screened or max_chars:
            conformed = loadable(conformed, "postgres", max_chars)
        _copy_in(load.cursor, dest, schema.names, conformed, [target[n].type for n in schema.names])
    except Exception as exc:
        load.execute("ROLLBACK TO SAVEPOINT beam_etl_copy")
        if not (_is_row_error(exc) or isinstance(exc, UnloadableError)):
            raise
        return False
    load.execute("RELEASE SAVEPOINT beam_etl_copy")
    return True


def one_by_one(
    load: "SqlLoad", source: str, statements: list[str], start: int, end: int
) -> tuple[int, list[tuple[int, str]]]:
    """Apply staged rows `[start, end)` one at a time in one server-side loop (each row
    in a subtransaction of its own), noting the refused ones: one round trip, where
    bisecting a range with many refused rows takes several per row."""
    log = _q(f"_beam_etl_refused_{load.token}")
    if not load.refused_log:
        load.execute(f"CREATE TEMP TABLE {log} (r bigint, m text) ON COMMIT DROP")
        load.refused_log = True
    row = _q(ROW_COLUMN)
    run = "".join(
        f"EXECUTE $beam_etl${sql.replace('%s', '$1', 1).replace('%s', '$2', 1)}$beam_etl$ "
        "USING r, r + 1; GET DIAGNOSTICS n = ROW_COUNT; "
        for sql in statements
    )
    load.execute(
        "DO $$DECLARE r bigint; n bigint; total bigint := 0; m text; d text; BEGIN "
        f"FOR r IN SELECT {row} FROM {source} WHERE {row} >= {int(start)} "
        f"AND {row} < {int(end)} ORDER BY 1 LOOP BEGIN {run}total := total + n; "
        "EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN "
        "GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL; "
        f"INSERT INTO {log} VALUES (r, CASE WHEN d <> '' THEN m || ' (' || d || ')' "
        "ELSE m END); END; END LOOP; "
        f"INSERT INTO {log} VALUES (NULL, total::text); END$$"
    )
    load.cursor.execute(f"DELETE FROM {log} RETURNING r, m")
    logged = load.cursor.fetchall()
    total = sum(int(m) for r, m in logged if r is None)  # what the last statements counted
    return total, sorted((r, name_target(load, m)) for r, m in logged if r is not None)
