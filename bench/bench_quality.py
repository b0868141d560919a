"""Benchmark (issue 6): the cost of schema conformance plus row-level quality checks.

Usage: `PYTHONPATH=. python bench/bench_quality.py [--rows N] [--repeat K] [--profile V]`.

Over the cached orders CSV (`bench/datagen.py`, 3M rows by default), two beam_etl pipelines on
`LocalRunner` (one worker), interleaved, each in a fresh subprocess:

- `bare`: ReadFromCsv (nine typed columns, `amount` as text) -> WriteToParquet, dead letters
  to JSONL. The reference: what reading and writing alone cost.
- `quality`: ReadFromCsv -> ConformToSchema (the declared schema below: `amount` becomes
  float64, `id` non-nullable) -> ValidateRecords with five checks -> WriteToParquet, dead
  letters (conformance and check rejects) to JSONL.

Checks (`ValidateRecords`):

| check | config | fails on this data |
|---|---|---|
| not_null | customer_id, severity reject | ~2% (empty customer ids): 60k dead letters |
|          | (variant `quality_warn`: severity warn, so no dead letters at all) |  |
| range | amount in [0, 1,000,000) | none |
| regex | email full match `[^@\\s]+@[^@\\s]+\\.[a-z]+` | none |
| allowed_values | country in 13 of the 14 codes (no `BR`), severity warn | ~7% (counted) |
| length | country length 2..2 | none |

The figure of interest is the extra time of `quality` over `bare` in percent (issue target:
at most 40%). Each run is checked: `bare` writes every row, and `quality`'s rows out plus its
dead letters equal the input rows.

A fourth variant, `unique`, is the bare pipeline plus `CheckUnique(["id"])` (a dataset-level
check: only the keys cross the shuffle, rows wait in spill files); ids are unique, so every
row is compared and none rejected.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
import datagen

BEAM_IMPORTS = ("pyarrow.csv", "pyarrow.parquet", "apache_beam", "beam_etl.io.csvio")

SCHEMA = {
    "version": 1,
    "primary_key": ["id"],
    "fields": [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "customer_id", "type": "int64"},
        {"name": "country", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "amount", "type": "float64"},
        {"name": "quantity", "type": "int64"},
        {"name": "created_at", "type": "timestamp"},
        {"name": "active", "type": "bool"},
        {"name": "note", "type": "string"},
    ],
}
COUNTRIES = ["FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "CH", "PL", "SE", "JP", "CA"]
CHECKS = [
    {"check": "not_null", "column": "customer_id"},
    {"check": "range", "column": "amount", "min": 0, "max": 1_000_000, "inclusive": [True, False]},
    {
        "check": "regex",
        "column": "email",
        "pattern": r"[^@\s]+@[^@\s]+\.[a-z]+",
        "full_match": True,
    },
    {"check": "allowed_values", "column": "country", "values": COUNTRIES, "severity": "warn"},
    {"check": "length", "column": "country", "min": 2, "max": 2},
]


CHECKS_WARN = [dict(CHECKS[0], severity="warn"), *CHECKS[1:]]


def _pipeline(
    csv_path: str,
    out_dir: str,
    dead_letters: str,
    quality: bool,
    warn_only: bool = False,
    unique: bool = False,
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_etl.io.csvio import ReadFromCsv
    from beam_etl.io.deadletters import WriteToDeadLetters
    from beam_etl.io.parquetio import WriteToParquet
    from beam_etl.quality.dataset import CheckUnique
    from beam_etl.quality.validate import ValidateRecords
    from beam_etl.runner import LocalRunner
    from beam_etl.schema.conform import ConformToSchema

    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions([]))
    read = p | "read" >> ReadFromCsv(csv_path, columns=dict(datagen.COLUMN_TYPES))
    errors = [read.error]
    final = read.output
    if quality:
        conformed = final | "conform" >> ConformToSchema(SCHEMA, mode="discard_columns")
        checked = conformed.output | "checks" >> ValidateRecords(
            CHECKS_WARN if warn_only else CHECKS
        )
        errors += [conformed.error, checked.error]
        final = checked.output
    if unique:
        checked_unique = final | "unique" >> CheckUnique(["id"])
        errors.append(checked_unique.error)
        final = checked_unique.output
    final | "write" >> WriteToParquet(out_dir)
    tuple(errors) | "dl" >> WriteToDeadLetters(dead_letters)
    p.run().wait_until_finish()


def run_bare(csv_path: str, out_dir: str, dead_letters: str) -> None:
    _pipeline(csv_path, out_dir, dead_letters, quality=False)


def run_quality(csv_path: str, out_dir: str, dead_letters: str) -> None:
    _pipeline(csv_path, out_dir, dead_letters, quality=True)


def run_quality_warn(csv_path: str, out_dir: str, dead_letters: str) -> None:
    _pipeline(csv_path, out_dir, dead_letters, quality=True, warn_only=True)


def run_unique(csv_path: str, out_dir: str, dead_letters: str) -> None:
    _pipeline(csv_path, out_dir, dead_letters, quality=False, unique=True)


_ROWS = {}


def _check(name: str, out: str, dead_letters: str) -> dict:
    result = h.parquet_check(out, dead_letters, ())
    expected = _ROWS.get("rows")
    if expected is not None and result["rows"] + result["dead_letters"] != expected:
        raise SystemExit(f"{name}: rows out + dead letters != {expected:,} input rows: {result}")
    return result


def _inputs(args) -> dict:
    _ROWS["rows"] = args.rows
    return dict.fromkeys(
        ("bare", "quality", "quality_warn", "unique"), datagen.ensure_csv(args.rows, args.seed)
    )


def _summary(args, results) -> str:
    if "bare" not in results or "quality" not in results:
        return ""
    bare = results["bare"].median("seconds")
    quality = results["quality"].median("seconds")
    extra = 100 * (quality - bare) / bare
    per_round = [
        100 * (q.seconds - b.seconds) / b.seconds
        for b, q in zip(results["bare"].samples, results["quality"].samples)
    ]
    rounds = ", ".join(f"{p:+.0f}%" for p in per_round)
    text = (
        f"Conformance + 5 checks, 2% of rows rejected (dead letters written): median "
        f"{quality:.2f} s vs bare {bare:.2f} s = {extra:+.1f}% extra; per round: {rounds}"
    )
    if "quality_warn" in results:
        warn = results["quality_warn"].median("seconds")
        text += (
            f"\nConformance + 5 checks, no row rejected (not_null as warn): {warn:.2f} s = "
            f"{100 * (warn - bare) / bare:+.1f}% extra (issue 6 target for the checks: <= +40%)"
        )
    if "unique" in results:
        unique = results["unique"].median("seconds")
        text += (
            f"\nCheckUnique(id) alone: {unique:.2f} s = {100 * (unique - bare) / bare:+.1f}% extra"
        )
    return text


BENCH = h.Benchmark(
    script=__file__,
    description="Conformance + five row checks vs the bare CSV -> Parquet pipeline (beam_etl).",
    work=(
        "bare: ReadFromCsv -> WriteToParquet; quality: ReadFromCsv -> ConformToSchema "
        "(amount text -> float64) -> ValidateRecords(not_null, range, regex, allowed_values "
        "[warn], length) -> WriteToParquet; LocalRunner, 1 worker"
    ),
    variants=[
        h.Variant("bare", "bare read -> write (ref)", "q", run_bare, BEAM_IMPORTS),
        h.Variant("quality", "conform + 5 checks", "q", run_quality, BEAM_IMPORTS),
        h.Variant("quality_warn", "same, not_null as warn", "q", run_quality_warn, BEAM_IMPORTS),
        h.Variant("unique", "bare + CheckUnique(id)", "q", run_unique, BEAM_IMPORTS),
    ],
    groups={"q": h.Group("Quality overhead (beam_etl, 1 worker)", False, "vs bare")},
    inputs=_inputs,
    check=_check,
    summary=_summary,
)


if __name__ == "__main__":
    h.main(BENCH)
