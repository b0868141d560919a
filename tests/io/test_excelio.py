"""ReadFromExcel and WriteToExcel: round trip, type unification, row limit, bad workbooks."""

import datetime
import decimal
import os

import apache_beam as beam
import openpyxl
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.core.errors import ConnectorError
from beam_etl.io.excelio import ReadFromExcel, WriteToExcel, unify_kinds
from beam_etl.runner import LocalRunner

UTC = datetime.UTC
BATCH = pa.record_batch(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(["Zoë ✓", None, "a\nb"], pa.string()),
        "amount": pa.array(
            [decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], pa.decimal128(10, 2)
        ),
        "day": pa.array([datetime.date(2024, 1, 31), None, datetime.date(1900, 3, 1)]),
        "at": pa.array(
            [datetime.datetime(2024, 1, 1, 12, 30, 5, 250000, tzinfo=UTC), None, None],
            pa.timestamp("us", tz="UTC"),
        ),
        "ok": pa.array([True, None, False]),
    }
)


def _run(build):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    build(p)
    p.run().wait_until_finish()


def _workbook(path, sheets):
    """Write {sheet name: rows} to an .xlsx file with openpyxl; return its path."""
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        worksheet = workbook.create_sheet(name)
        for row in rows:
            worksheet.append(row)
    workbook.save(path)
    return str(path)


def test_round_trip_keeps_rows_and_documented_types(pipeline, tmp_path):
    path = str(tmp_path / "out" / "book.xlsx")
    batch = with_origin(BATCH, "in.csv", [2, 3, 4])
    _run(lambda p: p | beam.Create([batch]) | WriteToExcel(path, sheet="Data"))
    read = ReadFromExcel(path, sheet="Data", timezone="UTC")
    # decimals come back as float64 (Excel has no decimals); the rest keeps its type
    expected_schema = BATCH.schema.set(2, pa.field("amount", pa.float64()))
    assert read.schema == expected_schema
    expected = [
        {**row, "amount": None if row["amount"] is None else float(row["amount"])}
        for row in BATCH.to_pylist()
    ]
    rows = pipeline | "read" >> read | beam.FlatMap(visible_rows)
    assert_that(rows, equal_to(expected), label="CheckRows")
    pipeline.run().wait_until_finish()
    assert os.listdir(tmp_path / "out") == ["book.xlsx"]


def test_types_are_unified_per_column_and_rows_keep_excel_row_numbers(pipeline, tmp_path):
    day = datetime.datetime(2024, 1, 31)
    path = _workbook(
        tmp_path / "mixed.xlsx",
        {
            "Notes": [["ignored"]],
            "Data": [
                ["report title"],
                [],
                ["n", "mixed", "when", "empty", "flag"],
                [1, 1, day, None, True],
                [None, None, None, None, None],  # an empty row is skipped
                [2.5, "x", datetime.date(2024, 2, 1), None, False],
            ],
        },
    )
    read = ReadFromExcel(path, sheet="Data", header_row=3)
    assert read.schema == pa.schema(
        [
            ("n", pa.float64()),
            ("mixed", pa.string()),
            ("when", pa.timestamp("us")),
            ("empty", pa.string()),
            ("flag", pa.bool_()),
        ]
    )
    batches = pipeline | "read" >> read
    rows = batches | beam.FlatMap(visible_rows)
    expected = [
        {"n": 1.0, "mixed": "1", "when": day, "empty": None, "flag": True},
        {
            "n": 2.5,
            "mixed": "x",
            "when": datetime.datetime(2024, 2, 1),
            "empty": None,
            "flag": False,
        },
    ]
    assert_that(rows, equal_to(expected), label="CheckRows")
    lines = batches | beam.FlatMap(lambda b: b.column("__beam_etl_line").to_pylist())
    assert_that(lines, equal_to([4, 6]), label="CheckLines")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("kinds", "unified"),
    [
        pytest.param({"int"}, "int", id="int"),
        pytest.param({"int", "float"}, "float", id="int-float"),
        pytest.param({"int", "str"}, "str", id="int-text"),
        pytest.param({"date", "datetime"}, "datetime", id="date-datetime"),
        pytest.param({"bool", "int"}, "str", id="bool-int"),
        pytest.param({"date"}, "date", id="date"),
    ],
)
def test_unify_kinds(kinds, unified):
    assert unify_kinds(kinds) == unified


def test_glob_reads_every_workbook_with_types_unified_across_files(pipeline, tmp_path):
    _workbook(tmp_path / "a.xlsx", {"S": [["v"], [1]]})
    _workbook(tmp_path / "b.xlsx", {"S": [["v"], [0.5]]})
    read = ReadFromExcel(str(tmp_path / "*.xlsx"))
    assert read.schema == pa.schema([("v", pa.float64())])
    rows = pipeline | read | beam.FlatMap(visible_rows)
    assert_that(rows, equal_to([{"v": 1.0}, {"v": 0.5}]), label="CheckRows")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("sheets", "kwargs", "message"),
    [
        pytest.param(None, {}, "No file matches", id="missing-file"),
        pytest.param("glob", {}, "No file matches", id="glob-matching-nothing"),
        pytest.param(b"not a zip", {}, "Cannot read `.*book.xlsx` as an Excel", id="not-excel"),
        pytest.param(
            {"A": [["x"]], "B": [["y"]]},
            {"sheet": "C"},
            "has no sheet `C`; its sheets are `A`, `B`",
            id="unknown-sheet-name",
        ),
        pytest.param({"A": [["x"]]}, {"sheet": 3}, "has no sheet `3`", id="sheet-index"),
        pytest.param({"Sheet": []}, {}, "Row 1 of sheet `Sheet` .* has no header", id="empty"),
        pytest.param(
            {"S": [["a", None, "c"]]}, {}, "Header cell B1 of sheet `S`", id="empty-header-cell"
        ),
        pytest.param({"S": [["a", "a"]]}, {}, "repeats a", id="duplicate-header"),
        pytest.param({"S": [["a"]]}, {"timezone": "Mars/Base"}, "Unknown time zone", id="tz"),
        pytest.param({"S": [["a"]]}, {"header_row": 0}, "`header_row` must be", id="header-row"),
        pytest.param(
            {"S": [["a", "b"], [1, "=A2*2"], [2, "=A3*2"]]},
            {},
            r"Cell\(s\) B2, B3 of sheet `S` of `.*book.xlsx` hold a formula without a saved "
            "value .* open and save the file in Excel or LibreOffice",
            id="formulas-without-saved-values",
        ),
        pytest.param(
            {"S": [["a"], *([f"=ROW()*{i}"] for i in range(6))]},
            {},
            r"Cell\(s\) A2, A3, A4 and 3 more of sheet `S`",
            id="many-formulas-without-saved-values",
        ),
        pytest.param(
            {"S": [["id", "__beam_etl_note"], [1, "x"]]},
            {},
            "Column `__beam_etl_note` of `.*book.xlsx` starts with `__beam_etl_`, which "
            "beam_etl reserves",
            id="hidden-column-name",
        ),
    ],
)
def test_bad_input_is_a_clear_error_at_construction(tmp_path, sheets, kwargs, message):
    path = tmp_path / "book.xlsx"
    if sheets == "glob":
        path = tmp_path / "*.xlsx"
    elif isinstance(sheets, bytes):
        path.write_bytes(sheets)
    elif sheets is not None:
        _workbook(path, sheets)
    with pytest.raises((ConnectorError, ValueError), match=message):
        ReadFromExcel(str(path), **kwargs)


def test_input_over_max_rows_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "big.xlsx"
    with pytest.raises(Exception) as raised:
        _run(lambda p: p | beam.Create([BATCH, BATCH]) | WriteToExcel(str(path), max_rows=5))
    assert (
        "`WriteToExcel` holds at most 5 rows (`max_rows`); the input has 6: write Parquet "
        "or CSV instead" in str(raised.value)
    )
    assert os.listdir(tmp_path) == []  # neither the file nor staging is left


def test_rerun_replaces_the_workbook(tmp_path):
    path = str(tmp_path / "book.xlsx")
    for batch in (BATCH, BATCH.slice(0, 1)):
        _run(lambda p, batch=batch: p | beam.Create([batch]) | WriteToExcel(path))
    workbook = openpyxl.load_workbook(path, read_only=True)
    assert workbook.sheetnames == ["Sheet1"]
    assert [row[0] for row in workbook["Sheet1"].iter_rows(values_only=True)] == ["id", 1]
    workbook.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"sheet": "a/b"}, "`sheet` must be 1 to 31 characters", id="sheet-char"),
        pytest.param({"sheet": "x" * 32}, "`sheet` must be 1 to 31 characters", id="sheet-long"),
        pytest.param({"max_rows": 0}, "`max_rows` must be a positive", id="max-rows-zero"),
        pytest.param({"max_rows": 2_000_000}, "at most 1,048,575", id="max-rows-above-excel"),
    ],
)
def test_writer_refuses_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        WriteToExcel(str(tmp_path / "x.xlsx"), **kwargs)


def _save_formula_values(path, values: dict[str, str]) -> None:
    """Give formulas of the first sheet saved values (`{"B2": "2"}`), as Excel does on save."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    for cell, value in values.items():
        kind = ' t="str"' if not value else ""
        sheet = re.sub(
            rf'<c r="{cell}"([^>]*)><f>([^<]*)</f><v ?/>',
            rf'<c r="{cell}"\1{kind}><f>\2</f><v>{value}</v>',
            sheet,
        )
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def test_formulas_read_as_their_saved_values(pipeline, tmp_path):
    path = _workbook(tmp_path / "book.xlsx", {"S": [["a", "b", "c"], [1, "=A2*2", '=""']]})
    _save_formula_values(path, {"B2": "2", "C2": ""})
    read = pipeline | ReadFromExcel(path)
    assert_that(read | beam.FlatMap(visible_rows), equal_to([{"a": 1, "b": 2, "c": None}]))
    pipeline.run().wait_until_finish()
