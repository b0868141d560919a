"""Finding the staged rows a database refuses: applying ranges with bisection, and the
set-based SELECTs that name refused rows before any bisection.
"""

from collections.abc import Callable
from typing import Any, Final

ONE_BY_ONE: Final = 512  # refused ranges this small are applied row by row (see apply_bisecting)


def apply_bisecting(
    cursor: Any,
    run_range: Callable[[int, int], int],
    low: int,
    high: int,
    *,
    is_row_error: Callable[[BaseException], bool],
    message_of: Callable[[BaseException], str],
    prepare: Callable[[], object] | None = None,
    one_by_one: Callable[[int, int], tuple[int, list[tuple[int, str]]]] | None = None,
) -> tuple[int, list[tuple[int, str]]]:
    """Apply `run_range(start, end)` to staging rows `[low, high)`, isolating refused rows.

    Each range runs inside a savepoint; when the database refuses it for a row-level reason
    (constraint, value out of range), the range is split in halves until single rows remain,
    which are returned as `(row number, message)`. Before the first split, `prepare()` runs
    once: it may take refused rows out set-based and index the row numbers, so that the
    rest costs about `2 * rejects * log2(rows)` indexed statements. A refused range of at
    most `ONE_BY_ONE` rows goes to `one_by_one(start, end)` instead, when given: it applies
    the rows one at a time in one round trip, returning what `run_range` added up and the
    refused rows. Other errors propagate.

    Returns:
        The sum of `run_range`'s results over applied ranges, and the refused rows.
    """
    applied, refused = 0, []
    pending = [(low, high)]
    while pending:
        start, end = pending.pop()
        cursor.execute("SAVEPOINT beam_etl_range")
        try:
            applied += run_range(start, end)
        except Exception as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT beam_etl_range")
            if not is_row_error(exc):
                raise
            if prepare is not None:  # once: then the same range again, without what it found
                run_once, prepare = prepare, None
                run_once()
                pending.append((start, end))
            elif one_by_one is not None and end - start <= ONE_BY_ONE:
                count, found = one_by_one(start, end)
                applied += count
                refused += found
            elif end - start <= 1:
                refused.append((start, message_of(exc)))
            else:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]  # lower half first: keeps order
        else:
            cursor.execute("RELEASE SAVEPOINT beam_etl_range")
    return applied, refused


def refusals_sql(source: str, row: str, checks: list[tuple[str, str]]) -> str:
    """Return a SELECT of `(row number, message)` for the staged rows of `source` (alias `s`)
    that a check refuses; `checks` are `(condition, message)` SQL pairs, the first true one
    names the row's message. CASE keeps the order, so a cast in a later check never sees a
    row an earlier check refused."""
    cases = " ".join(f"WHEN {condition} THEN {message}" for condition, message in checks)
    return (
        f"SELECT r, m FROM (SELECT s.{row} AS r, CASE {cases} END AS m FROM {source} s) AS c "
        "WHERE m IS NOT NULL"
    )


def unique_violations_sql(
    source: str, row: str, values: list[str], message: str, where: str = "TRUE"
) -> str:
    """Return a SELECT of `(row number, message)` for the staged rows whose `values` (SQL on
    alias `s`, none null) repeat an earlier staged row's: a unique key refuses all but the
    first. `message` is SQL on the repeated values, named `k0`, `k1`, ..."""
    named = ", ".join(f"{value} AS k{i}" for i, value in enumerate(values))
    keys = ", ".join(f"k{i}" for i in range(len(values)))
    not_null = " AND ".join(f"{value} IS NOT NULL" for value in values)
    return (
        f"SELECT r, {message} FROM (SELECT v.*, ROW_NUMBER() OVER (PARTITION BY {keys} "
        f"ORDER BY r) AS n FROM (SELECT s.{row} AS r, {named} FROM {source} s "
        f"WHERE {not_null} AND {where}) AS v) AS d WHERE n > 1"
    )
