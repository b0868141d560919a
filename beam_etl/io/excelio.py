"""Excel (.xlsx) source and sink on openpyxl.

Column types come from the cells, unified per column over every row of every matched file:
one kind of value keeps its type (`int64`, `float64`, `bool`, `string`, `timestamp[us]`,
`date32` for cells formatted as dates without a time, `time64[us]`); integers mixed with
floats give `float64`; dates mixed with date-times give `timestamp[us]`; any other mix (text
with numbers, numbers with dates, booleans with numbers ...) gives `string`, where values are
written as `cell_text` shows them (`true`, `2024-01-31`, `1.5`). A column with no value at all
is `string`. Error cells (`#DIV/0!`) are read as their text. A formula is read as the value
saved with it; a workbook holding a formula without one (written by a program that does not
calculate formulas) is refused, naming the cells, rather than read as empty cells. Excel stores
no time zones and keeps date-times to the millisecond.
"""

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, ClassVar, Final
from xml.etree import ElementTree

import apache_beam as beam
import openpyxl
import pyarrow as pa
import pyarrow.compute as pc
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles.numbers import is_datetime

from beam_etl.core.batches import check_names, with_origin
from beam_etl.core.batching import PYTHON_ROWS, BatchSizer
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.io._documents import Render, WriteDocument, cell_text, check_max_rows
from beam_etl.io._files import match_files
from beam_etl.io._local import FileSource

#: Excel's last row is 1,048,576; one is the header.
EXCEL_MAX_ROWS: Final = 1_048_575
_SHEET_NS: Final = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_FORMULA: Final = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s>/]")
_CHUNK: Final = 1 << 20
_KIND_TYPES: Final[dict[str, pa.DataType]] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "datetime": pa.timestamp("us"),
    "date": pa.date32(),
    "time": pa.time64("us"),
}


def _kind(cell: Any) -> str | None:
    """Return the kind of value a cell holds, or None when it is empty."""
    value = cell.value
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime):
        return "date" if is_datetime(cell.number_format) == "date" else "datetime"
    if isinstance(value, time):
        return "time"
    return "str"  # text, error cells, durations


def unify_kinds(kinds: set[str]) -> str:
    """Return the one kind a column of values of `kinds` is read as (see the module doc)."""
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds == {"int", "float"}:
        return "float"
    if kinds == {"date", "datetime"}:
        return "datetime"
    return "str"


def _open_sheet(path: str, sheet: int | str) -> tuple[Any, Any]:
    """Return `(workbook, worksheet)` opened read-only; the caller closes the workbook."""
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # not a zip, not a workbook, damaged XML
        reason = " ".join(str(exc).split())
        raise ConnectorError(f"Cannot read `{path}` as an Excel workbook: {reason}") from exc
    names = workbook.sheetnames
    if (isinstance(sheet, str) and sheet not in names) or (
        isinstance(sheet, int) and not 0 <= sheet < len(names)
    ):
        workbook.close()
        listed = ", ".join(f"`{name}`" for name in names)
        raise ConnectorError(f"`{path}` has no sheet `{sheet}`; its sheets are {listed}")
    return workbook, workbook[sheet if isinstance(sheet, str) else names[sheet]]


def _has_formulas(worksheet: Any) -> bool:
    """Whether the sheet's XML holds a formula element at all (a fast scan of its bytes)."""
    with worksheet._get_source() as stream:  # openpyxl's read-only sheets read their part so
        tail = b""
        while chunk := stream.read(_CHUNK):
            if _FORMULA.search(tail + chunk):
                return True
            tail = chunk[-32:]
    return False


def uncached_formulas(worksheet: Any, first_row: int = 1) -> list[str]:
    """Return the cells (`B7`) at or below `first_row` holding a formula without a saved value.

    Such cells read as empty (openpyxl gives the value Excel saved with the formula, and
    programs that write workbooks without calculating them save none), so they must not be
    read as nulls. Cells are listed in sheet order.
    """
    if not _has_formulas(worksheet):
        return []
    found = []
    with worksheet._get_source() as stream:
        for _, element in ElementTree.iterparse(stream):
            if element.tag == f"{_SHEET_NS}c":
                formula = element.find(f"{_SHEET_NS}f")
                value = element.find(f"{_SHEET_NS}v")
                # `<v/>` is no value, except for a formula whose text result is empty.
                saved = value is not None and (bool(value.text) or element.get("t") == "str")
                if formula is not None and not saved:
                    cell = element.get("r", "?")
                    row = int(re.sub(r"\D", "", cell) or 0)
                    if row >= first_row:
                        found.append(cell)
            elif element.tag == f"{_SHEET_NS}row":
                element.clear()
    return found


def _check_formulas(path: str, worksheet: Any, header_row: int) -> None:
    cells = uncached_formulas(worksheet, header_row)
    if cells:
        listed = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
        raise ConnectorError(
            f"Cell(s) {listed} of sheet `{worksheet.title}` of `{path}` hold a formula without "
            "a saved value (the program that wrote the file did not calculate it), which "
            "would read as empty; open and save the file in Excel or LibreOffice, or write "
            "values instead of formulas"
        )


def _header(path: str, worksheet: Any, header_row: int) -> list[str]:
    rows = worksheet.iter_rows(min_row=header_row, max_row=header_row, values_only=True)
    cells = list(next(rows, ()))
    while cells and cells[-1] is None:
        cells.pop()  # formatted but empty cells after the last column
    where = f"sheet `{worksheet.title}` of `{path}`"
    if not cells:
        raise ConnectorError(f"Row {header_row} of {where} is empty: it has no header")
    if None in cells:
        column = openpyxl.utils.get_column_letter(cells.index(None) + 1)
        raise ConnectorError(f"Header cell {column}{header_row} of {where} is empty; name it")
    names = [str(cell) for cell in cells]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ConnectorError(f"The header of {where} repeats {', '.join(twice)}")
    return names


def _data_rows(worksheet: Any, header_row: int, width: int) -> Iterator[tuple[int, tuple]]:
    """Yield `(row number, cells)` of every row below the header holding a value."""
    rows = worksheet.iter_rows(min_row=header_row + 1, max_col=width)
    for number, cells in enumerate(rows, start=header_row + 1):
        if any(cell.value is not None for cell in cells):
            yield number, tuple(cells) + (None,) * (width - len(cells))


def scan_sheet(path: str, sheet: int | str, header_row: int) -> tuple[list[str], list[set[str]]]:
    """Return the header of a sheet and the set of value kinds in each column.

    Raises:
        ConnectorError: the file is not a workbook, the sheet is missing or has no header, a
            column is named like a hidden one, or a cell holds a formula without a value.
    """
    workbook, worksheet = _open_sheet(path, sheet)
    try:
        _check_formulas(path, worksheet, header_row)
        names = _header(path, worksheet, header_row)
        check_names(names, path)
        kinds: list[set[str]] = [set() for _ in names]
        for _, cells in _data_rows(worksheet, header_row, len(names)):
            for found, cell in zip(kinds, cells):
                if cell is not None and (kind := _kind(cell)) is not None:
                    found.add(kind)
        return names, kinds
    finally:
        workbook.close()


def _column(cells: list[Any], kind: str, timezone: str | None) -> pa.Array:
    values = [None if cell is None else cell.value for cell in cells]
    if kind == "str":
        values = [None if v is None else v if isinstance(v, str) else cell_text(v) for v in values]
    elif kind == "float":
        values = [None if v is None else float(v) for v in values]
    elif kind == "date":
        values = [None if v is None else v.date() for v in values]
    elif kind == "datetime":
        array = pa.array(values, pa.timestamp("us"))
        if timezone is None:
            return array
        return pc.assume_timezone(array, timezone, ambiguous="earliest", nonexistent="earliest")
    return pa.array(values, _KIND_TYPES[kind])


class _ReadSheetFn(beam.DoFn):
    def __init__(
        self, step: str, sheet: int | str, header_row: int, kinds: list[str], tz: str | None
    ) -> None:
        self._step = step
        self._sheet = sheet
        self._header_row = header_row
        self._kinds = kinds
        self._timezone = tz

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)

    def process(self, file: tuple[str, list[str]]) -> Iterator[pa.RecordBatch]:
        path, names = file
        workbook, worksheet = _open_sheet(path, self._sheet)
        try:
            pending: list[tuple[int, tuple]] = []
            sizer = BatchSizer(self._step, max_rows=PYTHON_ROWS)
            size = sizer.rows()
            for row in _data_rows(worksheet, self._header_row, len(names)):
                pending.append(row)
                if len(pending) >= size:
                    batch = self._batch(path, names, pending)
                    sizer.observe(batch)
                    size = sizer.rows()
                    yield batch
                    pending = []
            if pending:
                yield self._batch(path, names, pending)
        finally:
            workbook.close()

    def _batch(self, path: str, names: list[str], rows: list[tuple[int, tuple]]) -> Any:
        columns = [
            _column([cells[i] for _, cells in rows], kind, self._timezone)
            for i, kind in enumerate(self._kinds)
        ]
        self._rows_read.inc(len(rows))
        batch = pa.RecordBatch.from_arrays(columns, names=names)
        return with_origin(batch, path, [number for number, _ in rows])


class ReadFromExcel(FileSource, beam.PTransform):
    """Read one sheet of Excel workbooks (.xlsx) into Arrow record batches.

    Bounded. Each workbook is read by one worker; rows keep their order within a batch. The
    header row names the columns (trailing empty header cells are ignored, and so are cells
    right of the last named column); rows above it and rows with no value are skipped. Column
    types are unified from every cell of every matched file when the transform is built (see
    this module's documentation: mixed numbers and text become `string`), so nothing is
    rejected. The hidden origin columns hold the file and the Excel row number.
    Output: a PCollection of batches.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = ("output",)

    def __init__(
        self,
        path: str | list[str],
        *,
        sheet: int | str = 0,
        header_row: int = 1,
        timezone: str | None = None,
        incremental: bool | str = False,
    ) -> None:
        """Args:
        path: a workbook, a glob pattern (`data/*.xlsx`) or a list of them.
        sheet: the sheet's name, or its 0-based position (default: the first sheet).
        header_row: the 1-based row holding the column names; data starts below it.
        timezone: read date-times as timestamps in this zone (`UTC`, `Europe/Berlin`);
            naive timestamps when not given (Excel stores no zone).
        incremental: load only files no earlier successful run loaded (true: by path,
            size and modification time; `hash`: by content); see README.
        """
        super().__init__()
        self.incremental = incremental
        if not isinstance(sheet, (int, str)) or isinstance(sheet, bool):
            raise ValueError(f"`sheet` must be a sheet name or a 0-based index, not `{sheet}`")
        if not isinstance(header_row, int) or header_row < 1:
            raise ValueError(f"`header_row` must be a row number from 1, not `{header_row}`")
        if timezone is not None:
            try:
                pc.assume_timezone(pa.array([0], pa.timestamp("us")), timezone)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"Unknown time zone `{timezone}`") from exc
        self.path = path
        self.sheet = sheet
        self.header_row = header_row
        self.timezone = timezone
        self._files, self._kinds, self._schema = self._plan()

    def _plan(self) -> tuple[list[tuple[str, list[str]]], list[str], pa.Schema]:
        files: list[tuple[str, list[str]]] = []
        first: list[str] | None = None
        kinds: list[set[str]] = []
        for path, _ in match_files(self.path):
            names, found = scan_sheet(path, self.sheet, self.header_row)
            if first is None:
                first, kinds = names, [set() for _ in names]
            elif names != first:
                raise ConnectorError(
                    f"The header of `{path}` ({', '.join(names)}) differs from the first "
                    f"file's ({', '.join(first)}); read them with separate sources"
                )
            files.append((path, names))
            for column, more in zip(kinds, found):
                column.update(more)
        unified = [unify_kinds(k) if k else "str" for k in kinds]
        types = [_KIND_TYPES[k] for k in unified]
        if self.timezone is not None:
            types = [
                pa.timestamp("us", self.timezone) if k == "datetime" else t
                for k, t in zip(unified, types)
            ]
        return files, unified, pa.schema(list(zip(first or [], types)))

    @property
    def schema(self) -> pa.Schema:
        """The schema of the output batches (without the hidden origin columns)."""
        return self._schema

    def _local_stages(self) -> list[beam.DoFn]:
        return [_ReadSheetFn(self.label, self.sheet, self.header_row, self._kinds, self.timezone)]

    def expand(self, pbegin):
        read = _ReadSheetFn(self.label, self.sheet, self.header_row, self._kinds, self.timezone)
        return self._read_files(pbegin, [], ("Read", read))


def excel_value(value: Any) -> Any:
    """Return `value` as openpyxl can store it: see `WriteToExcel` for the conversions."""
    if value is None or isinstance(value, (bool, int, float, date, time)):
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
    if isinstance(value, Decimal):
        return float(value)
    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", cell_text(value))


class _RenderExcel:
    def __init__(self, sheet: str) -> None:
        self.sheet = sheet

    def __call__(self, path: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
        workbook = openpyxl.Workbook(write_only=True)
        worksheet = workbook.create_sheet(self.sheet)
        if schema.names:
            worksheet.append(schema.names)
        for batch in batches:
            for row in zip(*(column.to_pylist() for column in batch.columns)):
                worksheet.append([excel_value(value) for value in row])
        workbook.save(path)


class WriteToExcel(WriteDocument):
    """Write the input to one sheet of a new Excel workbook, published atomically at the end.

    The workbook holds one sheet named `sheet`: a header row, then one row per input row
    (nulls are empty cells). Excel has no time zones, decimals or nested values, so zoned
    timestamps are written as UTC wall-clock time (read them back with `timezone: UTC`),
    decimals as floats, binary as base64 and lists or structs as JSON text; control
    characters Excel cannot store become U+FFFD. An input of more than `max_rows` rows fails
    the run with a `ConnectorError` (counted from the staged parts, before any is read) and
    leaves `path` untouched; otherwise the file is replaced as a whole.
    Output: one element, the number of rows written.
    """

    def __init__(self, path: str, *, sheet: str = "Sheet1", max_rows: int = 100_000) -> None:
        """Args:
        path: the .xlsx file to write (parent folders are created; a re-run replaces it).
        sheet: the name of the one sheet (at most 31 characters, none of `[]:*?/\\`).
        max_rows: the most rows the sheet may hold (at most 1,048,575); more fails the run.
        """
        super().__init__()
        if not isinstance(sheet, str) or not 0 < len(sheet) <= 31 or set(sheet) & set("[]:*?/\\"):
            raise ValueError(
                f"`sheet` must be 1 to 31 characters without any of []:*?/\\, not `{sheet}`"
            )
        check_max_rows(max_rows, EXCEL_MAX_ROWS)
        self.path = path
        self.sheet = sheet
        self.max_rows = max_rows

    def renderer(self) -> Render:
        return _RenderExcel(self.sheet)
