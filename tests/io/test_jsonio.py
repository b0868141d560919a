"""ReadFromJson / WriteToJson on real files: types, dead letters with lines, compression."""

import bz2
import datetime
import decimal
import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pytest
import zstandard
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.core.errors import ConnectorError
from beam_etl.io.jsonio import ReadFromJson, WriteToJson
from beam_etl.runner import LocalRunner

UTC = datetime.UTC
ROWS = [
    {
        "id": 1,
        "name": "Zoë 🚀",
        "amount": decimal.Decimal("12.50"),
        "day": datetime.date(2024, 1, 31),
        "at": datetime.datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "address": {"city": "Köln", "zip": "50667"},
    },
    {"id": 2, "name": None, "amount": None, "day": None, "at": None, "address": None},
    {
        "id": 3,
        "name": "",
        "amount": decimal.Decimal("-0.01"),
        "day": datetime.date(1999, 12, 31),
        "at": datetime.datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
        "address": {"city": None, "zip": "01234"},
    },
]
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(10, 2)),
        ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("address", pa.struct([("city", pa.string()), ("zip", pa.string())])),
    ]
)


def _run(build):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    build(p)
    return p.run()


def _write(tmp_path, name, **kwargs):
    path = str(tmp_path / name)
    batch = pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA)
    _run(lambda p: p | beam.Create([batch]) | WriteToJson(path, **kwargs)).wait_until_finish()
    return path


def test_reads_lines_and_rejects_bad_ones_with_their_lines(pipeline, write_file):
    path = write_file(
        "in.jsonl",
        b'{"id": 1, "day": "2024-01-31", "tag": "a"}\n'
        b"\n"
        b"not json\n"
        b"[1, 2]\n"
        b'{"id": "x", "day": "2024-01-01", "tag": 7}\n'
        b'{"id": 4, "day": "2024-02-30"}\n'
        b'{"id": 5, "tag": "\xff"}\n'
        b'{"id": 6, "day": null, "tag": "f", "extra": 1}',
    )
    read = ReadFromJson(path, columns={"id": "int64"}, block_size_mb=0.00005)  # several blocks
    assert read.schema == pa.schema(
        [("id", pa.int64()), ("day", pa.date32()), ("tag", pa.string()), ("extra", pa.int64())]
    )
    out = pipeline | "read" >> read
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"id": 1, "day": datetime.date(2024, 1, 31), "tag": "a", "extra": None},
                {"id": 6, "day": None, "tag": "f", "extra": 1},
            ]
        ),
        label="CheckRows",
    )
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to(
            [
                ("read", "malformed_json", 3, "not json"),
                ("read", "malformed_json", 4, "[1, 2]"),
                ("read", "cast_failed", 5, {"id": "x", "day": "2024-01-01", "tag": "7"}),
                (
                    "read",
                    "cast_failed",
                    6,
                    {"id": 4, "day": "2024-02-30", "tag": None, "extra": None},
                ),
                ("read", "invalid_encoding", 7, '{"id": 5, "tag": "\\xff"}'),
            ]
        ),
        label="CheckDeadLetters",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("read:rows_read"))["counters"]
    assert sum(c.committed for c in counters) == 7  # 2 rows + 5 dead letters


def test_dead_letter_messages_name_the_column_and_value(pipeline, write_file):
    path = write_file("m.jsonl", '{"n": 1}\n{"n": "x"}\n{"n": 2\n')
    out = pipeline | "read" >> ReadFromJson(path, columns={"n": "int64"})
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to([{"n": 1}]), label="Rows")
    assert_that(
        out.error | beam.Map(lambda letter: (letter.line, letter.message)),
        equal_to(
            [
                (2, "Value `x` in column `n` is not a valid int64"),
                (3, "Line is not valid JSON: Expecting ',' delimiter at column 8"),
            ]
        ),
        label="Messages",
    )
    pipeline.run().wait_until_finish()


def test_array_file_gives_element_lines_and_rejects_non_objects(pipeline, write_file):
    path = write_file("a.json", '\ufeff[\n  {"a": 1},\n  "text",\n  {"a": 2,\n   "b": [1]}\n]\n')
    out = pipeline | "read" >> ReadFromJson(path)
    lines = out.output | beam.FlatMap(lambda b: b.column("__beam_etl_line").to_pylist())
    assert_that(lines, equal_to([2, 4]), label="Lines")
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"a": 1, "b": None}, {"a": 2, "b": [1]}]),
        label="Rows",
    )
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to([("read", "malformed_json", 3, '"text"')]),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_flatten_makes_dotted_columns(pipeline, write_file):
    path = write_file("n.jsonl", '{"a": {"b": 1, "c": {"d": "x"}}}\n{"a": null}\n')
    read = ReadFromJson(path, flatten=True)
    assert read.schema.names == ["a.b", "a.c.d"]
    rows = pipeline | "read" >> read
    assert_that(
        rows.output | beam.FlatMap(visible_rows),
        equal_to([{"a.b": 1, "a.c.d": "x"}, {"a.b": None, "a.c.d": None}]),
        label="Rows",
    )
    assert_that(rows.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("name", "file_format", "magic"),
    [
        pytest.param("out.jsonl", "lines", b"{", id="lines"),
        pytest.param("out.json", "array", b"[", id="array"),
        pytest.param("out.jsonl.gz", "lines", b"\x1f\x8b", id="gzip"),
        pytest.param("out.json.bz2", "array", b"BZh", id="bz2"),
        pytest.param("out.jsonl.zst", "lines", b"\x28\xb5\x2f\xfd", id="zstd"),
    ],
)
def test_round_trip_keeps_rows_and_types(pipeline, tmp_path, name, file_format, magic):
    path = _write(tmp_path, name, format=file_format)
    with open(path, "rb") as written:
        assert written.read(len(magic)) == magic
    assert not list(tmp_path.glob("*.tmp"))
    read = ReadFromJson(path, columns={"amount": "decimal(10,2)"})
    assert read.schema == SCHEMA  # dates, zoned timestamps and the struct are inferred
    out = pipeline | "read" >> read
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to(ROWS), label="Rows")
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


def test_written_values_are_iso_text_and_decimal_strings(tmp_path):
    path = _write(tmp_path, "out.jsonl")
    with open(path, encoding="utf-8") as written:
        records = [json.loads(line) for line in written]
    first = next(r for r in records if r["id"] == 1)
    assert first == {
        "id": 1,
        "name": "Zoë 🚀",
        "amount": "12.50",
        "day": "2024-01-31",
        "at": "2024-01-01T12:00:00.123456+00:00",
        "address": {"city": "Köln", "zip": "50667"},
    }
    _write(tmp_path, "out.jsonl")  # a re-run replaces the file
    with open(path, encoding="utf-8") as written:
        assert len(written.readlines()) == 3


def _truncated_gzip(tmp_path):
    data = gzip.compress(b"".join(b'{"a": %d}\n' % i for i in range(5000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "ok.jsonl").write_text('{"a": 1}\n')
    return str(tmp_path / "*.jsonl*"), "cut.jsonl.gz` is not a valid gzip file"


def _truncated_zstd(tmp_path):
    data = zstandard.ZstdCompressor().compress(b'{"a": 1}\n' * 5000)
    (tmp_path / "cut.jsonl.zst").write_bytes(data[: len(data) // 2])
    return str(tmp_path / "cut.jsonl.zst"), "cut.jsonl.zst` is not a valid zstd file"


def _truncated_bz2(tmp_path):
    data = bz2.compress(b'{"a": 1}\n' * 5000)
    (tmp_path / "ok.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "z.jsonl.bz2").write_bytes(data[: len(data) // 2])
    return str(tmp_path / "*"), "z.jsonl.bz2` is not a valid bzip2 file"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_truncated_gzip, id="truncated-gzip"),
        pytest.param(_truncated_zstd, id="truncated-zstd"),
        pytest.param(_truncated_bz2, id="truncated-bz2"),
    ],
)
def test_truncated_compressed_file_fails_the_run_naming_it(tmp_path, make):
    pattern, message = make(tmp_path)
    with pytest.raises(Exception, match=message):
        _run(lambda p: p | ReadFromJson(pattern, columns={"a": "int64"})).wait_until_finish()


@pytest.mark.parametrize(
    ("content", "kwargs", "error", "message"),
    [
        pytest.param(None, {}, ConnectorError, "No file matches", id="glob-matches-nothing"),
        pytest.param("", {}, ConnectorError, r"No JSON object in `.*f\.json`", id="empty-file"),
        pytest.param("[1, 2]", {}, ConnectorError, "No JSON object in", id="array-of-numbers"),
        pytest.param(
            '[{"a": 1} {"a": 2}]',
            {},
            ConnectorError,
            r"f\.json` is not a valid JSON array: expecting `,` or `]` \(line 1\)",
            id="broken-array",
        ),
        pytest.param('{"a": 1}', {"format": "xml"}, ValueError, "Unknown format", id="bad-format"),
        pytest.param('{"a": 1}', {"columns": {"a": "intt"}}, ValueError, "Unknown type `intt`"),
    ],
)
def test_bad_input_is_a_clear_error(write_file, tmp_path, content, kwargs, error, message):
    path = str(tmp_path / "*.json") if content is None else write_file("f.json", content)
    with pytest.raises(error, match=message):
        ReadFromJson(path, **kwargs)


def test_empty_file_with_declared_columns_gives_nothing(pipeline, write_file):
    out = pipeline | ReadFromJson(write_file("e.jsonl", "\n \n"), columns={"a": "int64"})
    assert_that(out.output, equal_to([]), label="NoRows")
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"format": "csv"}, "Unknown format `csv`", id="format"),
        pytest.param({"compression": "lzo"}, "Unknown compression `lzo`", id="compression"),
    ],
)
def test_write_rejects_bad_configuration(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        WriteToJson(str(tmp_path / "x.json"), **kwargs)


DEEP = "[" * 10_000 + "]" * 10_000


def test_deeply_nested_line_is_a_dead_letter_not_a_traceback(pipeline, write_file):
    """Issue 16: JSON nested 10,000 deep raised RecursionError. Where a key of the schema holds
    the depth the line is `malformed_json`; under a key not in the schema it is ignored, as
    pyarrow's fast path ignores it."""
    path = write_file(
        "deep.jsonl", f'{{"id": 1, "a": [1]}}\n{{"id": 2, "a": {DEEP}}}\n{{"id": 3, "b": {DEEP}}}\n'
    )
    out = pipeline | "read" >> ReadFromJson(path, block_size_mb=0.00001)
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "a": [1]}, {"id": 3, "a": None}]),
        label="Rows",
    )
    assert_that(
        out.error | beam.Map(lambda d: (d.reason, d.line, d.message, d.payload[:18])),
        equal_to(
            [
                (
                    "malformed_json",
                    2,
                    "Line nests arrays or objects too deeply to read (Python's limit is about "
                    "1,000 levels)",
                    '{"id": 2, "a": [[[',
                )
            ]
        ),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_deeply_nested_array_document_is_one_clear_error(write_file):
    path = write_file("deep.json", f'[{{"id": 1}},\n {{"id": 2, "a": {DEEP}}}]')
    with pytest.raises(
        ConnectorError,
        match=r"deep\.json` is not a valid JSON array: an element nests arrays or objects too "
        r"deeply to read .* \(line 2\)",
    ):
        ReadFromJson(path)


def test_integers_beyond_int64_are_never_rounded(pipeline, write_file):
    """Issue 11: `9223372036854775808` was inferred float64."""
    path = write_file(
        "big.jsonl",
        '{"fits": 9223372036854775807, "beyond": 9223372036854775808, "mixed": 1.5, '
        '"declared": 9223372036854775808}\n'
        f'{{"fits": 1, "beyond": -9223372036854775809, "mixed": {"9" * 20}, "declared": 1}}\n',
    )
    read = ReadFromJson(path, columns={"declared": "float64"})
    assert read.schema == pa.schema(
        [
            ("fits", pa.int64()),
            ("beyond", pa.decimal128(38, 0)),
            ("mixed", pa.string()),
            ("declared", pa.float64()),  # declared types keep their behaviour
        ]
    )
    out = pipeline | "read" >> read
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to(
            [
                {
                    "fits": 9223372036854775807,
                    "beyond": decimal.Decimal("9223372036854775808"),
                    "mixed": "1.5",
                    "declared": 9.223372036854776e18,
                },
                {
                    "fits": 1,
                    "beyond": decimal.Decimal("-9223372036854775809"),
                    "mixed": "9" * 20,
                    "declared": 1.0,
                },
            ]
        ),
        label="Rows",
    )
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


def test_a_line_longer_than_pyarrows_block_is_read(pipeline, write_file):
    """A 3 MB line was a `malformed_json` dead letter (`straddling object`)."""
    path = write_file(
        "long.jsonl", '{"a": 1, "t": "x"}\n{"a": 2, "t": "' + "y" * (3 << 20) + '"}\n'
    )
    out = pipeline | "read" >> ReadFromJson(path)
    assert_that(
        out.output | beam.FlatMap(lambda b: [(r["a"], len(r["t"])) for r in visible_rows(b)]),
        equal_to([(1, 1), (2, 3 << 20)]),
        label="Rows",
    )
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()
