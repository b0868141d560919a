"""Benchmark (issue 3): compressed CSV in, CSV out; beam_etl against plain pyarrow streaming.

Usage: `PYTHONPATH=. python bench/bench_file_formats.py [--rows N] [--repeat K] [--profile V]`.

Two comparison groups over the orders data of `bench/datagen.py` (3M rows by default); each
variant runs in a fresh subprocess, interleaved, beam_etl on `LocalRunner` with one worker:

(a) gzip CSV -> Parquet. Input: the cached CSV gzipped once (`gzip -6 -n`, cached beside it
    as `.csv.gz`). `gz_pyarrow`: `pyarrow.csv.open_csv` on a gzip `CompressedInputStream`
    (16 MiB blocks) -> one `ParquetWriter` (snappy). `gz_beam`: ReadFromCsv on the `.csv.gz`
    (nine typed columns) -> WriteToParquet, dead letters to JSONL. A compressed file is read
    whole by one worker in beam_etl (no byte-range splits).
(b) Parquet -> CSV. Input: the CSV converted once with pyarrow to one Parquet file (amount cast
    to float64, snappy, 262,144-row groups; cached as `.parquet`). `pq_pyarrow`:
    `ParquetFile.iter_batches` -> `pyarrow.csv.CSVWriter` into one file. `pq_beam`:
    ReadFromParquet -> WriteToCsv (one file: Arrow IPC staging parts, then one CSVWriter pass
    at publish).

Outputs are read back and must agree within a group: (a) rows, schema, sums of id and
quantity; (b) rows, header, sums of id and amount parsed back from the CSV.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import datagen

BEAM_IMPORTS = ("pyarrow.csv", "pyarrow.parquet", "apache_beam", "beam_etl.io.csvio")
ROW_GROUP_ROWS = 262_144
CSV_NAME = "orders.csv"


# ---------------------------------------------------------------------------- inputs


def ensure_gzip(csv_path: str) -> str:
    """Return `csv_path + .gz`, creating it once with `gzip -6 -n` (deterministic)."""
    target = csv_path + ".gz"
    if not os.path.exists(target):
        temporary = f"{target}.{os.getpid()}.tmp"
        print(f"Gzipping {csv_path} ...", file=sys.stderr, flush=True)
        with open(temporary, "wb") as out:
            subprocess.run(["gzip", "-6", "-n", "-c", csv_path], stdout=out, check=True)
        os.replace(temporary, target)
    return target


def ensure_parquet(csv_path: str) -> str:
    """Return the CSV converted once to Parquet (amount as float64), creating it if missing."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = os.path.splitext(csv_path)[0] + f"_rg{ROW_GROUP_ROWS}.parquet"
    if not os.path.exists(target):
        print(f"Converting {csv_path} to Parquet ...", file=sys.stderr, flush=True)
        table = pacsv.read_csv(
            csv_path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=h.pyarrow_convert_options(),
        )
        i = table.schema.get_field_index("amount")
        table = table.set_column(i, "amount", pc.cast(table.column(i), pa.float64()))
        temporary = f"{target}.{os.getpid()}.tmp"
        pq.write_table(table, temporary, compression="snappy", row_group_size=ROW_GROUP_ROWS)
        os.replace(temporary, target)
    return target


def _inputs(args) -> dict:
    csv_path = datagen.ensure_csv(args.rows, args.seed)
    chosen = args.variants.split(",")
    found = {}
    if any(n.startswith("gz_") for n in chosen):
        found.update(dict.fromkeys(("gz_pyarrow", "gz_beam"), ensure_gzip(csv_path)))
    if any(n.startswith("pq_") for n in chosen):
        found.update(dict.fromkeys(("pq_pyarrow", "pq_beam"), ensure_parquet(csv_path)))
    return found


# ---------------------------------------------------------------------------- (a) gzip CSV


def run_gz_pyarrow(gz_path: str, out_dir: str, _dead_letters: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    stream = pa.CompressedInputStream(pa.OSFile(gz_path, "rb"), "gzip")
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=h.PYARROW_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=h.pyarrow_convert_options(),
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "part-00000.parquet")
    with pq.ParquetWriter(path, reader.schema, compression="snappy") as writer:
        for batch in reader:
            if batch.num_rows:
                writer.write_batch(batch)


def run_gz_beam(gz_path: str, out_dir: str, dead_letters: str) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_etl.io.csvio import ReadFromCsv
    from beam_etl.io.deadletters import WriteToDeadLetters
    from beam_etl.io.parquetio import WriteToParquet
    from beam_etl.runner import LocalRunner

    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions([]))
    read = p | "read" >> ReadFromCsv(gz_path, columns=dict(datagen.COLUMN_TYPES))
    read.output | "write" >> WriteToParquet(out_dir)
    read.error | "dl" >> WriteToDeadLetters(dead_letters)
    p.run().wait_until_finish()


# ---------------------------------------------------------------------------- (b) Parquet -> CSV


def run_pq_pyarrow(parquet_path: str, out_dir: str, _dead_letters: str) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    source = pq.ParquetFile(parquet_path)
    os.makedirs(out_dir, exist_ok=True)
    with pacsv.CSVWriter(os.path.join(out_dir, CSV_NAME), source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=65_536):
            writer.write_batch(batch)


def run_pq_beam(parquet_path: str, out_dir: str, _dead_letters: str) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_etl.io.csvio import WriteToCsv
    from beam_etl.io.parquetio import ReadFromParquet
    from beam_etl.runner import LocalRunner

    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions([]))
    batches = p | "read" >> ReadFromParquet(parquet_path)
    batches | "write" >> WriteToCsv(os.path.join(out_dir, CSV_NAME))
    p.run().wait_until_finish()


# ---------------------------------------------------------------------------- checks


def _check(name: str, out: str, dead_letters: str) -> dict:
    if name.startswith("gz_"):
        return h.parquet_check(out, dead_letters, ("id", "quantity"))
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    path = os.path.join(out, CSV_NAME)
    with open(path, "rb") as handle:
        header = handle.readline().decode().strip()
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=["id", "amount"],
            column_types={"id": pa.int64(), "amount": pa.float64()},
        ),
    )
    return {
        "rows": table.num_rows,
        "header": header,
        "sum(id)": pc.sum(table["id"]).as_py(),
        "sum(amount)": round(pc.sum(table["amount"]).as_py() or 0, 2),
        "MiB": round(os.path.getsize(path) / (1 << 20), 1),
        "dead_letters": h.count_lines(dead_letters),
    }


BENCH = h.Benchmark(
    script=__file__,
    description="gzip CSV -> Parquet and Parquet -> CSV: pyarrow streaming vs beam_etl.",
    work=(
        "(a) read the gzipped CSV (9 typed columns) and write snappy Parquet; (b) read the "
        "Parquet file and write one CSV file; beam_etl on LocalRunner, 1 worker"
    ),
    variants=[
        h.Variant("gz_pyarrow", "pyarrow open_csv(gzip stream) (ref)", "gz", run_gz_pyarrow),
        h.Variant("gz_beam", "beam_etl 1 worker", "gz", run_gz_beam, BEAM_IMPORTS),
        h.Variant("pq_pyarrow", "pyarrow iter_batches -> CSVWriter (ref)", "pq", run_pq_pyarrow),
        h.Variant("pq_beam", "beam_etl 1 worker", "pq", run_pq_beam, BEAM_IMPORTS),
    ],
    groups={
        "gz": h.Group("(a) gzip CSV -> Parquet", True, "vs pyarrow"),
        "pq": h.Group("(b) Parquet -> CSV", True, "vs pyarrow"),
    },
    inputs=_inputs,
    check=_check,
    compared_keys=("rows", "schema", "header", "sum(id)", "sum(quantity)", "sum(amount)"),
)


if __name__ == "__main__":
    h.main(BENCH)
