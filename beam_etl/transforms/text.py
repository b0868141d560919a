"""Text cleaning on Arrow batches: trim and normalise whitespace, change case, and turn
empty strings and null markers into nulls.

Every step keeps the order of rows, works on whole batches with `pyarrow.compute` (utf8
kernels) and rejects nothing; it applies to the named text columns, or to every text column.
"""

import functools
from typing import ClassVar, Final

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import column_list, visible_schema
from beam_etl.core.deadletter import OUTPUT
from beam_etl.core.errors import DataError
from beam_etl.transforms._base import BatchResult, BatchStep
from beam_etl.transforms.cleaning import check_columns, is_text

DEFAULT_NULL_MARKERS: Final = ("", "N/A", "n/a", "NA", "null", "NULL", "None", "none")
CASES: Final = {"lower": "utf8_lower", "upper": "utf8_upper", "title": "utf8_title"}


def _text_columns(schema: pa.Schema, columns: list[str] | None, what: str) -> list[str]:
    """The named columns (which must be text), or every visible text column when None."""
    if columns is None:
        return [f.name for f in visible_schema(schema) if is_text(f.type)]
    check_columns(schema, columns)
    other = [c for c in columns if not is_text(schema.field(c).type)]
    if other:
        found = schema.field(other[0]).type
        raise ValueError(f"{what} applies to text columns; `{other[0]}` is {found}")
    return columns


def _map_text(
    columns: list[str] | None, what: str, function, batch: pa.RecordBatch, step: str
) -> BatchResult:
    try:
        names = _text_columns(batch.schema, columns, what)
    except ValueError as exc:
        raise DataError(f"{exc} (step `{step}`)") from None
    for name in names:
        index = batch.schema.get_field_index(name)
        batch = batch.set_column(index, name, function(batch.column(index)))
    return batch, [], 0


def _optional_names(columns: list[str] | None, argument: str) -> list[str] | None:
    return None if columns is None else column_list(columns, argument)


def _trim(normalize: bool, values: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.replace_substring_regex(trimmed, r"\s+", " ") if normalize else trimmed


class _TextStep(BatchStep):
    """A step applying one function to text columns; outputs only `output`."""

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)
    columns: list[str] | None

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Check the columns exist and hold text; the schema is unchanged."""
        _text_columns(schema, self.columns, type(self).__name__)
        return schema

    def text_function(self):
        raise NotImplementedError

    def batch_function(self):
        return functools.partial(_map_text, self.columns, type(self).__name__, self.text_function())


class TrimWhitespace(_TextStep):
    """Strip leading and trailing whitespace (Unicode) from text columns; nulls stay null.

    With `normalize_spaces`, every inner run of whitespace also becomes one space.
    """

    def __init__(self, columns: list[str] | None = None, *, normalize_spaces: bool = False):
        """Args:
        columns: text columns to trim; every text column when not given.
        normalize_spaces: also collapse inner runs of whitespace into one space.
        """
        super().__init__()
        self.columns = _optional_names(columns, "columns")
        self.normalize_spaces = bool(normalize_spaces)

    def text_function(self):
        return functools.partial(_trim, self.normalize_spaces)


class ChangeCase(_TextStep):
    """Convert text columns to `lower`, `upper` or `title` case (Unicode-aware)."""

    def __init__(self, columns: list[str], *, case: str = "lower") -> None:
        """Args:
        columns: the text columns to convert.
        case: `lower`, `upper` or `title` (first letter of each word upper-case).
        """
        super().__init__()
        if case not in CASES:
            raise ValueError(f"`case` must be one of {', '.join(CASES)}, not `{case}`")
        self.columns = _optional_names(columns, "columns")
        self.case = case

    def text_function(self):
        return getattr(pc, CASES[self.case])


def _null_markers(markers: tuple[str, ...], values: pa.Array) -> pa.Array:
    found = pc.is_in(pc.utf8_trim_whitespace(values), value_set=pa.array(markers, values.type))
    return pc.if_else(found, pa.scalar(None, values.type), values)


class StandardizeNulls(_TextStep):
    """Turn empty strings and null markers (`N/A`, `null` ...) in text columns into nulls.

    A value is a marker when, with surrounding whitespace removed, it equals one of `markers`
    exactly (case matters: list each spelling). So whitespace-only values become null too.
    """

    def __init__(
        self, columns: list[str] | None = None, *, markers: list[str] | None = None
    ) -> None:
        """Args:
        columns: text columns to clean; every text column when not given.
        markers: the values meaning null; default `""`, `N/A`, `n/a`, `NA`, `null`, `NULL`,
            `None`, `none`.
        """
        super().__init__()
        self.columns = _optional_names(columns, "columns")
        chosen = DEFAULT_NULL_MARKERS if markers is None else markers
        if not all(isinstance(m, str) for m in chosen):
            raise ValueError("`markers` must list strings")
        self.markers = tuple(m.strip() for m in chosen)

    def text_function(self):
        return functools.partial(_null_markers, self.markers)
