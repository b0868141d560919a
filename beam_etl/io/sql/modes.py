"""The write modes of a database sink as small strategies: what each needs, which staged row
it keeps per key, how its rows are counted, and the statements that apply one range of staged
rows (built from the dialect's upsert / insert-ignore SQL).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from beam_etl.io import _scd2


@dataclass(frozen=True)
class Mode:
    """One write mode.

    `keep`: the staged row kept per key when a key repeats (`last`, `first` or None: all);
    `counts_applied`: rows written are what the statements counted (else: rows not refused);
    `replaces`: the target's content is replaced; `refuses_taken_keys`: an appended row whose
    key an existing row holds is refused; `refuses_repeats`: a key repeated within the load is
    refused after its first row; `history`: versions are kept (`scd2`).
    """

    name: str
    statements: Callable[..., list[str]]
    needs_keys: bool = False
    keep: str | None = None
    counts_applied: bool = False
    replaces: bool = False
    refuses_taken_keys: bool = False
    refuses_repeats: bool = False
    history: bool = False


def _insert(load: Any, dest: str, source: str, names: list[str], values: list[str]) -> str:
    columns = ", ".join(load.d.quote(n) for n in names)
    return f"INSERT INTO {dest} ({columns}) SELECT {', '.join(values)} FROM {source} s"


def _plain(load, dest, source, names, values, types, in_range, kept) -> list[str]:
    return [f"{_insert(load, dest, source, names, values)} WHERE {in_range}"]


def _insert_only(load, dest, source, names, values, types, in_range, kept) -> list[str]:
    insert = _insert(load, dest, source, names, values)
    return [load.d.insert_ignore_sql(load, insert, dest, in_range)]


def _merge(load, dest, source, names, values, types, in_range, kept) -> list[str]:
    insert = _insert(load, dest, source, names, values)
    return load.d.upsert_sql(load, insert, dest, source, names, types, in_range, kept)


def _history(load, dest, source, names, values, types, in_range, kept) -> list[str]:
    return _scd2.statements(
        load.d.quote,
        dest=dest,
        source=source,
        names=names,
        values=values,
        keys=load.keys,
        flag=load.o.hard_delete,
        in_range=in_range,
        **{"at": f"TIMESTAMP '{_scd2.version_time()}'", **load.d.history_options(load, types)},
    )


MODES: Final[dict[str, Mode]] = {
    mode.name: mode
    for mode in (
        Mode("append", _plain, refuses_taken_keys=True, refuses_repeats=True),
        Mode("replace", _plain, replaces=True, refuses_repeats=True),
        Mode("merge", _merge, needs_keys=True, keep="last"),
        Mode("insert_only", _insert_only, needs_keys=True, keep="first", counts_applied=True),
        Mode("scd2", _history, needs_keys=True, keep="last", counts_applied=True, history=True),
    )
}
