"""Deterministic, vectorized generator of the benchmark's "orders" CSV.

Rows are built a chunk at a time as Arrow string columns (numpy draws, pyarrow compute for the
formatting), joined into lines with `binary_join_element_wise`, and the joined array's data
buffer is written as is: no Python loop over rows. The same `rows` and `seed` always give the
same bytes. Run alone to (re)build the file: `python bench/datagen.py --rows 3000000`.
"""

import argparse
import os
import sys
import time
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Bump when the generated content changes, so cached files are not reused by mistake.
GENERATOR_VERSION: Final = 1
DEFAULT_SEED: Final = 20250102
DATA_DIR: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CHUNK_ROWS: Final = 250_000

COLUMNS: Final = (
    "id",
    "customer_id",
    "country",
    "email",
    "amount",
    "quantity",
    "created_at",
    "active",
    "note",
)
#: The type of each column as the benchmark reads it (beam_etl type names).
COLUMN_TYPES: Final = {
    "id": "int64",
    "customer_id": "int64",
    "country": "string",
    "email": "string",
    "amount": "string",
    "quantity": "int64",
    "created_at": "timestamp",
    "active": "bool",
    "note": "string",
}

_COUNTRIES = ("FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "CH", "PL", "SE", "JP", "BR", "CA")
_DOMAINS = ("example.com", "mail.test", "shop.example.org", "corp.test", "inbox.example.net")
_NOTES = (
    "gift wrap",
    "leave at door",
    "call before delivery",
    "fragile",
    "express",
    "second attempt",
    "customer asked for invoice",
    "priority",
)
# Quoted notes holding the delimiter (and, for one, a doubled quote), as a CSV writer emits them.
_QUOTED_NOTES = (
    '"late, re-shipped"',
    '"damaged box, refunded"',
    '"said ""ok"", then cancelled, then re-ordered"',
)
_EPOCH_2024: Final = 1_704_067_200  # 2024-01-01 00:00:00 UTC
_TWO_YEARS: Final = 2 * 365 * 86_400


def csv_path(rows: int, seed: int = DEFAULT_SEED, data_dir: str = DATA_DIR) -> str:
    """Return where the CSV for `rows` and `seed` is cached."""
    return os.path.join(data_dir, f"orders_{rows}_s{seed}_v{GENERATOR_VERSION}.csv")


def _blank(values: pa.Array, mask: np.ndarray) -> pa.Array:
    """Return `values` with the masked entries replaced by the empty string."""
    return pc.if_else(pa.array(mask), pa.scalar(""), values)


def _pick(rng: np.random.Generator, choices: tuple[str, ...], n: int) -> pa.Array:
    """Return `n` strings drawn uniformly from `choices` (dictionary decoded)."""
    indices = pa.array(rng.integers(0, len(choices), n).astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(choices)).cast(pa.string())


def _to_text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _chunk_lines(start: int, n: int, seed: int) -> pa.Array:
    """Return the `n` lines (each ending in a newline) of rows `start` .. `start + n - 1`."""
    rng = np.random.default_rng([seed, start])
    ids = _to_text(np.arange(start + 1, start + n + 1, dtype=np.int64))
    customers = rng.integers(1, 250_000, n)
    customer_text = _blank(_to_text(customers), rng.random(n) < 0.02)
    email = pc.binary_join_element_wise(
        pa.scalar("user"), _to_text(customers), pa.scalar("@"), _pick(rng, _DOMAINS, n), ""
    )
    # Amounts in cents, log-normal around 50.00, so that `amount > 10` drops roughly 9%.
    cents = np.minimum(rng.lognormal(np.log(5_000), 1.2, n), 99_999_999).astype(np.int64)
    amount = pc.binary_join_element_wise(
        _to_text(cents // 100), pc.utf8_lpad(_to_text(cents % 100), 2, "0"), "."
    )
    amount = _blank(amount, rng.random(n) < 0.005)
    quantity = _to_text(rng.integers(1, 20, n))
    seconds = _EPOCH_2024 + rng.integers(0, _TWO_YEARS, n)
    created = pc.cast(pa.array(seconds).cast(pa.timestamp("s")), pa.string())
    active = pc.if_else(pa.array(rng.random(n) < 0.7), pa.scalar("true"), pa.scalar("false"))
    draw = rng.random(n)
    note = _pick(rng, _NOTES, n)
    note = pc.if_else(pa.array(draw < 0.03), _pick(rng, _QUOTED_NOTES, n), note)
    note = _blank(note, draw > 0.65)
    fields = [ids, customer_text, _pick(rng, _COUNTRIES, n), email, amount, quantity, created]
    line = pc.binary_join_element_wise(*fields, active, note, ",")
    return pc.binary_join_element_wise(line, pa.scalar("\n"), "")


def _data_bytes(lines: pa.Array) -> memoryview:
    """Return the concatenated characters of a string array without nulls (zero-copy)."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset :]
    first, last = int(offsets[0]), int(offsets[len(lines)])
    return memoryview(lines.buffers()[2])[first:last]


def generate(path: str, rows: int, seed: int = DEFAULT_SEED) -> None:
    """Write the CSV (header plus `rows` rows) to `path`, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as out:
            out.write((",".join(COLUMNS) + "\n").encode())
            for start in range(0, rows, CHUNK_ROWS):
                lines = _chunk_lines(start, min(CHUNK_ROWS, rows - start), seed)
                out.write(_data_bytes(lines))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def ensure_csv(rows: int, seed: int = DEFAULT_SEED, data_dir: str = DATA_DIR) -> str:
    """Return the path of the cached CSV for `rows` and `seed`, generating it if missing."""
    path = csv_path(rows, seed, data_dir)
    if not os.path.exists(path):
        began = time.perf_counter()
        print(f"Generating {rows:,} rows into {path} ...", file=sys.stderr, flush=True)
        generate(path, rows, seed)
        size = os.path.getsize(path) / (1 << 20)
        took = time.perf_counter() - began
        print(f"  done: {size:,.0f} MiB in {took:.1f} s", file=sys.stderr, flush=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: generate (or find) the cached CSV and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000, help="data rows (default 3e6)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    if args.force and os.path.exists(csv_path(args.rows, args.seed)):
        os.remove(csv_path(args.rows, args.seed))
    print(ensure_csv(args.rows, args.seed))


if __name__ == "__main__":
    main()
