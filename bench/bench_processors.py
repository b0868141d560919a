"""Benchmark (issue 5): a chain of processors, beam_etl against the same work in plain pyarrow.

Usage: `PYTHONPATH=. python bench/bench_processors.py [--rows N] [--repeat K] [--profile V]`.

Over the cached orders CSV (`bench/datagen.py`, 3M rows by default), every variant reads the nine
typed columns (`amount` as text) and then:

1. cast: `amount` to float64;
2. trim: strip whitespace from the text columns (`country`, `email`, `note`);
3. derive: `total = amount * quantity`;
4. filter: keep `amount > 10` (about 90.5% of the rows);
5. dedupe (the `dedupe` group only): one row per `id`, the first in file order;

and writes snappy Parquet. Two comparison groups, each with a pyarrow reference:

- `chain`: steps 1-4. `pyarrow` streams the CSV (`pyarrow.csv.open_csv`, 16 MiB blocks, the
  same as ReadFromCsv) and applies `pyarrow.compute` per batch into one `ParquetWriter`;
  `beam` is ReadFromCsv -> CastColumns -> TrimWhitespace -> DeriveColumns -> FilterRows ->
  WriteToParquet on `LocalRunner` (one worker), dead letters to JSONL.
- `dedupe`: steps 1-5. `pyarrow_dedupe` reads the whole CSV (`pyarrow.csv.read_csv`), applies
  the steps to the table and keeps the first row per `id` (`Table.group_by(id).aggregate(
  [(row index, "min")])` then `take`), then writes; `beam_dedupe` adds `DropDuplicates(["id"])`
  (a keyed shuffle of batches: each batch split into 64 hash buckets of `id`, a GroupByKey of
  the sub-batches in Arrow IPC, one sort per bucket).

Note: ids in the generated data are unique, so dedupe drops nothing; every row still goes
through the shuffle (the worst case for the row path, and the usual case for a "safety" dedupe).
Outputs are checked equal within a group (rows, schema, sum of amount and total, distinct ids).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import datagen

THRESHOLD = 10
TEXT_COLUMNS = ("country", "email", "note")
BEAM_IMPORTS = ("pyarrow.csv", "pyarrow.parquet", "apache_beam", "beam_etl.io.csvio")


def _pyarrow_steps(data):
    """Cast, trim, derive, filter on a RecordBatch or a Table (same code for both)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = data.schema.names
    i = names.index("amount")
    amount = pc.cast(data.column(i), pa.float64())
    data = data.set_column(i, "amount", amount)
    for name in TEXT_COLUMNS:
        j = names.index(name)
        data = data.set_column(j, name, pc.utf8_trim_whitespace(data.column(j)))
    total = pc.multiply_checked(amount, pc.cast(data.column("quantity"), pa.float64()))
    data = data.append_column("total", total)
    return data.filter(pc.greater(amount, THRESHOLD))


def run_pyarrow_chain(csv_path: str, out_dir: str, _dead_letters: str) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=h.PYARROW_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=h.pyarrow_convert_options(),
    )
    os.makedirs(out_dir, exist_ok=True)
    writer = None
    for batch in reader:
        batch = _pyarrow_steps(batch)
        if writer is None:
            writer = pq.ParquetWriter(
                os.path.join(out_dir, "part-00000.parquet"), batch.schema, compression="snappy"
            )
        if batch.num_rows:
            writer.write_batch(batch)
    if writer is not None:
        writer.close()


def run_pyarrow_dedupe(csv_path: str, out_dir: str, _dead_letters: str) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=h.PYARROW_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=h.pyarrow_convert_options(),
    )
    table = _pyarrow_steps(table)
    # Keep the first row (in file order) of every id.
    indexed = pa.table({"id": table.column("id"), "_row": np.arange(table.num_rows)})
    first = indexed.group_by("id", use_threads=False).aggregate([("_row", "min")])
    keep = pc.sort_indices(first.column("_row_min"))
    table = table.take(pc.take(first.column("_row_min"), keep))
    os.makedirs(out_dir, exist_ok=True)
    pq.write_table(
        table,
        os.path.join(out_dir, "part-00000.parquet"),
        compression="snappy",
        row_group_size=262_144,
    )


def _run_beam(csv_path: str, out_dir: str, dead_letters: str, dedupe: bool) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_etl.io.csvio import ReadFromCsv
    from beam_etl.io.deadletters import WriteToDeadLetters
    from beam_etl.io.parquetio import WriteToParquet
    from beam_etl.runner import LocalRunner
    from beam_etl.transforms import (
        CastColumns,
        DeriveColumns,
        DropDuplicates,
        FilterRows,
        TrimWhitespace,
    )

    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions([]))
    read = p | "read" >> ReadFromCsv(csv_path, columns=dict(datagen.COLUMN_TYPES))
    cast = read.output | "cast" >> CastColumns({"amount": "float64"})
    trimmed = cast.output | "trim" >> TrimWhitespace(list(TEXT_COLUMNS))
    derived = trimmed.output | "derive" >> DeriveColumns({"total": "amount * quantity"})
    kept = derived.output | "filter" >> FilterRows(f"amount > {THRESHOLD}")
    final = kept.output
    if dedupe:
        final = final | "dedupe" >> DropDuplicates(["id"])
    final | "write" >> WriteToParquet(out_dir)
    errors = (read.error, cast.error, derived.error, kept.error)
    errors | "dl" >> WriteToDeadLetters(dead_letters)
    p.run().wait_until_finish()


def run_beam_chain(csv_path: str, out_dir: str, dead_letters: str) -> None:
    _run_beam(csv_path, out_dir, dead_letters, dedupe=False)


def run_beam_dedupe(csv_path: str, out_dir: str, dead_letters: str) -> None:
    _run_beam(csv_path, out_dir, dead_letters, dedupe=True)


def _check(name: str, out: str, dead_letters: str) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    result = h.parquet_check(out, dead_letters, ("amount", "total"))
    ids = pq.read_table(out, columns=["id"]).column("id") if result["rows"] else None
    result["distinct ids"] = pc.count_distinct(ids).as_py() if ids is not None else 0
    return result


BENCH = h.Benchmark(
    script=__file__,
    description="Processors chain (cast, trim, derive, filter, dedupe): pyarrow vs beam_etl.",
    work=(
        f"read 9 typed columns, cast amount to float64, trim {', '.join(TEXT_COLUMNS)}, "
        f"derive total = amount * quantity, keep amount > {THRESHOLD}, [dedupe on id], "
        "write snappy Parquet; beam_etl on LocalRunner, 1 worker"
    ),
    variants=[
        h.Variant("pyarrow", "pyarrow streaming (ref)", "chain", run_pyarrow_chain),
        h.Variant("beam", "beam_etl 1 worker", "chain", run_beam_chain, BEAM_IMPORTS),
        h.Variant("pyarrow_dedupe", "pyarrow whole table (ref)", "dedupe", run_pyarrow_dedupe),
        h.Variant("beam_dedupe", "beam_etl 1 worker", "dedupe", run_beam_dedupe, BEAM_IMPORTS),
    ],
    groups={
        "chain": h.Group("Chain without dedupe (cast, trim, derive, filter)", True, "vs pyarrow"),
        "dedupe": h.Group("Chain with DropDuplicates(id)", True, "vs pyarrow"),
    },
    inputs=lambda args: dict.fromkeys(
        ("pyarrow", "beam", "pyarrow_dedupe", "beam_dedupe"),
        datagen.ensure_csv(args.rows, args.seed),
    ),
    check=_check,
    compared_keys=("rows", "schema", "sum(amount)", "sum(total)", "distinct ids"),
)


if __name__ == "__main__":
    h.main(BENCH)
