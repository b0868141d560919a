"""ReadFromCsv on real files: types, dead letters with lines, globs, splitting."""

import decimal
import io
import os
import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.core.errors import ConnectorError
from beam_etl.io._csvscan import Syntax
from beam_etl.io.csvio import ReadFromCsv, _PlanRangesFn
from beam_etl.runner import LocalRunner


def test_reads_typed_rows_and_rejects_bad_ones_with_their_lines(pipeline, write_file):
    path = write_file(
        "orders.csv",
        b'id,name,amount\n1,ann,1.5\n2,"bo\nb",2\n3,x\n\n4,dan,abc\n5,\xff\xfe,3\n6,"q""t",\n',
    )
    read = ReadFromCsv(path, columns={"amount": "float64"})
    assert read.schema == pa.schema(
        [("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())]
    )
    out = pipeline | "read" >> read
    rows = out.output | beam.FlatMap(visible_rows)
    letters = out.error | beam.Map(letter_summary)
    assert_that(
        rows,
        equal_to(
            [
                {"id": 1, "name": "ann", "amount": 1.5},
                {"id": 2, "name": "bo\nb", "amount": 2.0},
                {"id": 6, "name": 'q"t', "amount": None},
            ]
        ),
        label="CheckRows",
    )
    assert_that(
        letters,
        equal_to(
            [
                ("read", "malformed_csv", 5, "3,x"),
                ("read", "cast_failed", 7, {"id": "4", "name": "dan", "amount": "abc"}),
                ("read", "invalid_encoding", 8, "5,\\xff\\xfe,3"),
            ]
        ),
        label="CheckDeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_origin_columns_carry_file_and_line(pipeline, write_file):
    path = write_file("a.csv", "x\n1\n\n2\n")
    out = pipeline | "read" >> ReadFromCsv(path)
    origins = out.output | beam.FlatMap(
        lambda b: zip(
            b.column("__beam_etl_file").to_pylist(), b.column("__beam_etl_line").to_pylist()
        )
    )
    assert_that(origins, equal_to([(path, 2), (path, 4)]), label="CheckOrigins")
    assert_that(out.error, equal_to([]), label="CheckNoErrors")
    pipeline.run().wait_until_finish()


def test_glob_reads_every_file_and_checks_headers(pipeline, write_file):
    write_file("in/a.csv", "id,v\n1,a\n2,b\n")
    write_file("in/b.csv", "\ufeffid,v\n3,c\n")  # a BOM is not part of the header
    out = pipeline | "read" >> ReadFromCsv(write_file("in/c.csv", "id,v\n")[:-5] + "*.csv")
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]),
    )
    pipeline.run().wait_until_finish()


def test_header_of_a_later_file_must_match(write_file):
    write_file("h/a.csv", "id,v\n1,a\n")
    write_file("h/b.csv", "id,w\n2,b\n")
    from apache_beam.testing import test_pipeline

    from beam_etl.runner import LocalRunner

    p = test_pipeline.TestPipeline(runner=LocalRunner())
    _ = p | ReadFromCsv(write_file("h/x.txt", "")[:-5] + "*.csv")
    with pytest.raises(Exception, match=r"Header of .*b\.csv"):
        p.run().wait_until_finish()


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        pytest.param(None, {}, "No file matches", id="missing-file"),
        pytest.param("", {}, "is empty: it has no header", id="empty-file"),
        pytest.param(
            "a,b\n",
            {"columns": {"c": "int64"}},
            "`c` in `columns` not in the file",
            id="unknown-declared-column",
        ),
        pytest.param("a,b\n", {"columns": {"a": "intt"}}, "Unknown type `intt`", id="bad-type"),
        pytest.param(
            "a,b\n", {"delimiter": ";;"}, "`delimiter` must be one character", id="bad-delimiter"
        ),
        pytest.param("a,b\n", {"encoding": "nope"}, "Unknown encoding `nope`", id="bad-encoding"),
    ],
)
def test_bad_configuration_is_a_clear_error(write_file, tmp_path, content, kwargs, message):
    path = str(tmp_path / "missing.csv") if content is None else write_file("f.csv", content)
    with pytest.raises((ValueError, ConnectorError), match=message):
        ReadFromCsv(path, **kwargs)


def test_header_only_file_gives_no_rows_and_no_errors(pipeline, write_file):
    out = pipeline | ReadFromCsv(write_file("h.csv", "a,b\n"), columns={"a": "int64"})
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to([]), label="NoRows")
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


def test_gzip_file_is_read_whole(pipeline, tmp_path):
    import gzip

    path = tmp_path / "big.csv.gz"
    with gzip.open(path, "wt") as out:
        out.write("id,v\n" + "".join(f"{i},v{i}\n" for i in range(50_000)))
    out = pipeline | ReadFromCsv(str(path), split_size_mb=0.01)
    count = out.output | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
    assert_that(count, equal_to([50_000]))
    pipeline.run().wait_until_finish()


def test_byte_range_splits_read_every_row_exactly_once(pipeline, tmp_path):
    """A few MB cut into many ranges; quoted newlines sit near every boundary."""
    rng = random.Random(3)
    lines = ["id,text,n"]
    for i in range(60_000):
        text = '"multi\nline, ""quoted"""' if rng.random() < 0.3 else f"plain{i}"
        lines.append(f"{i},{text},{rng.randint(0, 9)}")
    path = tmp_path / "split.csv"
    path.write_text("\n".join(lines) + "\n")
    read = ReadFromCsv(str(path), split_size_mb=0.05, block_size_mb=0.02, split=True)
    out = pipeline | read
    ids = out.output | beam.FlatMap(lambda b: b.column("id").to_pylist())
    first_lines = out.output | beam.FlatMap(
        lambda b: zip(b.column("id").to_pylist(), b.column("__beam_etl_line").to_pylist())
    )
    expected_lines, line = [], 2
    for i in range(60_000):
        expected_lines.append((i, line))
        line += lines[i + 1].count("\n") + 1
    assert_that(ids, equal_to(list(range(60_000))), label="EveryRowOnce")
    assert_that(first_lines, equal_to(expected_lines), label="LinesExact")
    assert_that(out.error, equal_to([]), label="NoErrors")
    assert path.stat().st_size > 1_000_000
    ranges = list(
        _PlanRangesFn(int(0.05 * 2**20), Syntax(ord(","))).process((str(path), path.stat().st_size))
    )
    assert len(ranges) > 20  # the file really is read in many ranges
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_truncated_compressed_file_fails_naming_the_file(tmp_path, suffix):
    import bz2
    import gzip

    import zstandard
    from apache_beam.testing import test_pipeline

    from beam_etl.runner import LocalRunner

    data = ("id,v\n" + "".join(f"{i},value{i}\n" for i in range(20_000))).encode()
    compress = {
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".zst": zstandard.ZstdCompressor().compress,
    }[suffix]
    packed = compress(data)
    path = tmp_path / f"cut.csv{suffix}"
    path.write_bytes(packed[: len(packed) // 2])
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    with pytest.raises(Exception, match=r"cut\.csv.* is not a valid"):
        # small files fail when the sample is read, large ones when the rest is
        _ = p | ReadFromCsv(str(path), columns={"id": "int64", "v": "string"})
        p.run().wait_until_finish()


@pytest.mark.parametrize("block_size_mb", [0.00001, 16])
def test_a_dead_letter_after_an_escaped_line_end_names_its_physical_line(
    pipeline, write_file, block_size_mb
):
    path = write_file("esc_lines.csv", "id,text\n1,a\\\nb\n2,x,y\n3,c\n")
    out = pipeline | "read" >> ReadFromCsv(path, escape_char="\\", block_size_mb=block_size_mb)
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "text": "a\nb"}, {"id": 3, "text": "c"}]),
        label="Rows",
    )
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to([("read", "malformed_csv", 4, "2,x,y")]),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_escape_character_inside_quotes(pipeline, write_file):
    path = write_file(
        "esc.csv", 'id,text\n1,"say \\"hi\\", then\nleave"\n2,"back\\\\slash"\n3,x,y\n4,plain\n'
    )
    out = pipeline | "read" >> ReadFromCsv(path, escape_char="\\", block_size_mb=0.00002)
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"id": 1, "text": 'say "hi", then\nleave'},
                {"id": 2, "text": "back\\slash"},
                {"id": 4, "text": "plain"},
            ]
        ),
        label="Rows",
    )
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to([("read", "malformed_csv", 5, "3,x,y")]),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_type_change_further_down_is_a_dead_letter_with_its_line(pipeline, write_file):
    rows = "".join(f"{i},{i * 10}\n" for i in range(1, 200))
    path = write_file("drift.csv", "id,n\n" + rows + "200,n/a\n201,2010\n")
    read = ReadFromCsv(path, infer_bytes=200)  # the sample sees numbers only
    assert str(read.schema.field("n").type) == "int64"
    out = pipeline | "read" >> read
    count = out.output | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
    assert_that(count, equal_to([200]), label="Rows")
    assert_that(
        out.error | beam.Map(lambda d: (d.reason, d.line, d.message)),
        equal_to([("cast_failed", 201, "Value `n/a` in column `n` is not a valid int64")]),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_latin1_file_with_semicolons(pipeline, write_file):
    path = write_file("l1.csv", "name;city\nJürgen;Köln\nZoë;Besançon\n".encode("latin-1"))
    out = pipeline | "read" >> ReadFromCsv(path, delimiter=";", encoding="latin-1")
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"name": "Jürgen", "city": "Köln"}, {"name": "Zoë", "city": "Besançon"}]),
        label="Rows",
    )
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


def test_a_repeated_header_name_still_gives_dead_letters(pipeline, write_file):
    from beam_etl.transforms.cleaning import CastColumns

    path = write_file("dup.csv", "a,a,b\n1,2,x\n3,4,5\n")
    read = pipeline | ReadFromCsv(path)
    cast = read.output | CastColumns({"b": "int64"})
    assert_that(
        cast.error | beam.Map(lambda d: (d.reason, d.line, d.payload)),
        equal_to([("cast_failed", 2, {"a": 2, "b": "x"})]),
    )
    pipeline.run().wait_until_finish()


def _line_ends(text: bytes) -> int:
    return text.count(b"\n") + text.count(b"\r") - text.count(b"\r\n")


def _random_csv(rng: random.Random) -> tuple[bytes, list[tuple[int, bool]], int | None]:
    """CSV text built record by record, so that where each record starts is known: quoted
    fields with every line end inside, stray quotes, `\\n`, `\\r\\n` and lone `\\r` line ends,
    a few ragged rows. Returns (text, [(line, well formed)], line of an unclosed quote)."""
    plain = [b"x", b"", b'12" pizza', b"a b", b'7"', b"NULL"]
    quoted = [b'"q"', b'"multi\nline"', b'"cr\r\nlf"', b'"lone\rcr"', b'"say ""hi"""', b'""']
    quoted += [b'"a"b"c', b'"NULL"']
    parts, records, line = [b"a,b,c\n"], [], 2
    for _ in range(rng.randint(5, 40)):
        count = 3 if rng.random() > 0.1 else rng.choice([2, 4])
        text = b",".join(rng.choice(plain + quoted) for _ in range(count))
        text += rng.choice([b"\n", b"\r\n", b"\r"])
        records.append((line, count == 3))
        line += _line_ends(text)
        parts.append(text)
    unclosed = None
    if rng.random() < 0.3:
        unclosed = line
        parts.append(b'9,"never closed\n' + b"1,2,3\n")
    return b"".join(parts), records, unclosed


def _expected(name: str, data: bytes, records, unclosed) -> tuple[list, list]:
    """Rows (file, line, a, b, c) and dead letters (file, reason, line) pyarrow's own parse
    of the well-formed records implies."""
    end = data.index(b'9,"never closed') if unclosed else len(data)
    table = pacsv.read_csv(
        io.BytesIO(data[:end]),
        parse_options=pacsv.ParseOptions(
            newlines_in_values=True, invalid_row_handler=lambda r: "skip"
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys("abc", pa.string()),
            null_values=["", "NULL", "null", "\\N"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    good = [line for line, ok in records if ok]
    assert table.num_rows == len(good)
    rows = [(name, line, *row.values()) for line, row in zip(good, table.to_pylist())]
    letters = [(name, "malformed_csv", line) for line, ok in records if not ok]
    letters += [(name, "malformed_csv", unclosed)] if unclosed else []
    return rows, letters


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"split": False}, id="one-range"),
        pytest.param(
            {"split": True, "split_size_mb": 0.0002, "block_size_mb": 0.0001}, id="many-ranges"
        ),
    ],
)
def test_random_csv_rows_and_dead_letters_add_up_however_split(tmp_path, options):
    """Stray quotes, quoted line ends and `\\r` line ends: every record ends once in the output
    or the dead letters, at its line, as pyarrow parses the whole file, in any number of
    ranges (issue 4: 6 rows became 12 `malformed_csv` halves)."""
    rng = random.Random(4)
    expected_rows, expected_letters = [], []
    for index in range(12):
        data, records, unclosed = _random_csv(rng)
        (tmp_path / f"r{index:02d}.csv").write_bytes(data)
        rows, letters = _expected(f"r{index:02d}.csv", data, records, unclosed)
        expected_rows += rows
        expected_letters += letters
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    read = ReadFromCsv(str(tmp_path / "*.csv"), columns=dict.fromkeys("abc", "string"), **options)
    out = p | "read" >> read
    rows = out.output | beam.FlatMap(
        lambda b: [
            (os.path.basename(f), line, *row.values())
            for f, line, row in zip(
                b.column("__beam_etl_file").to_pylist(),
                b.column("__beam_etl_line").to_pylist(),
                visible_rows(b),
            )
        ]
    )
    letters = out.error | beam.Map(lambda d: (os.path.basename(d.source), d.reason, d.line))
    assert_that(rows, equal_to(expected_rows), label="Rows")
    assert_that(letters, equal_to(expected_letters), label="DeadLetters")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("read:rows_read"))["counters"]
    assert sum(c.committed for c in counters) == len(expected_rows) + len(expected_letters)


@pytest.mark.parametrize("split", [False, True], ids=["one-range", "many-ranges"])
def test_stray_quote_before_a_quoted_line_end_and_lone_cr_lose_nothing(write_file, split):
    """The probe of issue 4, exactly."""
    stray = write_file(
        "stray.csv", 'id,name,n\n100,12" pizza,100\n2,b,2\n3,"multi\nline",3\n4,d,4\n'
    )
    lone_cr = write_file("cr.csv", 'id,name,n\r1,a,1\r2,"x\ry",2\r3,c,3\r')
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    options = {"split": split, "split_size_mb": 0.00001, "block_size_mb": 0.00001}
    for label, path in (("stray", stray), ("cr", lone_cr)):
        out = p | label >> ReadFromCsv(path, **options)
        assert_that(
            out.output
            | f"{label}Rows"
            >> beam.FlatMap(
                lambda b: zip(visible_rows(b), b.column("__beam_etl_line").to_pylist())
            ),
            equal_to(
                {
                    "stray": [
                        ({"id": 100, "name": '12" pizza', "n": 100}, 2),
                        ({"id": 2, "name": "b", "n": 2}, 3),
                        ({"id": 3, "name": "multi\nline", "n": 3}, 4),
                        ({"id": 4, "name": "d", "n": 4}, 6),
                    ],
                    "cr": [
                        ({"id": 1, "name": "a", "n": 1}, 2),
                        ({"id": 2, "name": "x\ry", "n": 2}, 3),
                        ({"id": 3, "name": "c", "n": 3}, 5),
                    ],
                }[label]
            ),
            label=f"{label}CheckRows",
        )
        assert_that(out.error, equal_to([]), label=f"{label}NoDeadLetters")
    p.run().wait_until_finish()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="default-blocks"),
        pytest.param({"block_size_mb": 0.5}, id="small-blocks"),
        pytest.param({"split": True, "split_size_mb": 1, "block_size_mb": 1}, id="ranges"),
    ],
)
def test_a_10_mb_field_is_read_whatever_the_block_size(pipeline, tmp_path, options):
    """Issue 9: a field longer than pyarrow's parse block failed the whole run."""
    big = "x" * (10 << 20)
    path = tmp_path / "big.csv"
    path.write_text(f'id,text\n1,"{big}"\n2,small\n3,{big}\n')
    read = ReadFromCsv(str(path), columns={"id": "int64"}, **options)  # the sample is the header
    out = pipeline | "read" >> read
    rows = out.output | beam.FlatMap(
        lambda b: zip(
            b.column("id").to_pylist(),
            [len(text) for text in b.column("text").to_pylist()],
            b.column("__beam_etl_line").to_pylist(),
        )
    )
    assert_that(rows, equal_to([(1, 10 << 20, 2), (2, 5, 3), (3, 10 << 20, 4)]), label="Rows")
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("block_size_mb", [16, 0.25], ids=["record-in-one-block", "skipped"])
def test_a_record_over_max_record_mb_is_one_dead_letter(pipeline, tmp_path, block_size_mb):
    path = tmp_path / "huge.csv"
    path.write_text(f'id,text\n1,"{"y" * (2 << 20)}"\n2,ok\n3,"never closed\n4,lost\n')
    read = ReadFromCsv(
        str(path), columns={"id": "int64"}, max_record_mb=1, block_size_mb=block_size_mb
    )
    out = pipeline | "read" >> read
    assert_that(
        out.output | beam.FlatMap(visible_rows), equal_to([{"id": 2, "text": "ok"}]), label="Rows"
    )
    assert_that(
        out.error
        | beam.Map(lambda d: (d.reason, d.line, d.message, d.payload[:8], len(d.payload))),
        equal_to(
            [
                (
                    "malformed_csv",
                    2,
                    "Record of 2.0 MiB is longer than the limit of 1 MiB (`max_record_mb`; an "
                    "unclosed quote makes one record of the rest of the file)",
                    '1,"yyyyy',
                    1027,
                ),
                (
                    "malformed_csv",
                    4,
                    "Quoted field never closed: the record from line 4 runs to the end",
                    '3,"never',
                    23,
                ),
            ]
        ),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()


def test_integers_beyond_int64_are_never_rounded(pipeline, write_file):
    """Issue 11: `9223372036854775808` was inferred float64 and read as 9.223372036854776e18."""
    path = write_file(
        "big.csv",
        "fits,beyond,negative,huge,mixed,declared\n"
        "9223372036854775807,9223372036854775808,1,1,1.5,9223372036854775808\n"
        f"1,2,-9223372036854775809,{'9' * 39},99999999999999999999,1\n",
    )
    read = ReadFromCsv(path, columns={"declared": "float64"})
    assert read.schema == pa.schema(
        [
            ("fits", pa.int64()),
            ("beyond", pa.decimal128(38, 0)),
            ("negative", pa.decimal128(38, 0)),
            ("huge", pa.string()),
            ("mixed", pa.decimal128(38, 1)),
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
                    "negative": decimal.Decimal(1),
                    "huge": "1",
                    "mixed": decimal.Decimal("1.5"),
                    "declared": 9.223372036854776e18,
                },
                {
                    "fits": 1,
                    "beyond": decimal.Decimal(2),
                    "negative": decimal.Decimal("-9223372036854775809"),
                    "huge": "9" * 39,
                    "mixed": decimal.Decimal("99999999999999999999.0"),
                    "declared": 1.0,
                },
            ]
        ),
        label="Rows",
    )
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


UTF16_TEXT = 'id,name\n1,Zoë\n2,"a,b"\n'


@pytest.mark.parametrize(
    ("data", "message", "encoding"),
    [
        pytest.param(
            UTF16_TEXT.encode("utf-16"),
            r"`.*u\.csv` is UTF-16 text \(it starts with a UTF-16 byte-order mark\), not "
            r"`utf-8`: set `encoding: utf-16`",
            "utf-16",
            id="utf-16-bom",
        ),
        pytest.param(
            UTF16_TEXT.encode("utf-16-be"),
            r"UTF-16 text without a byte-order mark \(utf-16-be\), not `utf-8`: set "
            r"`encoding: utf-16-be`",
            "utf-16-be",
            id="utf-16-be-no-bom",
        ),
        pytest.param(
            UTF16_TEXT.encode("utf-32"),
            r"UTF-32 text .*: set `encoding: utf-32`",
            "utf-32",
            id="utf-32-bom",
        ),
    ],
)
def test_utf16_is_refused_as_utf8_and_read_when_declared(
    pipeline, write_file, data, message, encoding
):
    """Issue 12: UTF-16 read as UTF-8 loaded NUL-laced garbage with exit 0."""
    path = write_file("u.csv", data)
    with pytest.raises(ConnectorError, match=message):
        ReadFromCsv(path)
    out = pipeline | "read" >> ReadFromCsv(path, encoding=encoding, split=True, split_size_mb=1e-5)
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "name": "Zoë"}, {"id": 2, "name": "a,b"}]),
        label="Rows",
    )
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


def test_a_later_utf16_file_of_a_glob_fails_the_run_naming_it(write_file):
    write_file("g/a.csv", "id,name\n1,x\n")
    write_file("g/b.csv", UTF16_TEXT.encode("utf-16"))
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    _ = p | ReadFromCsv(write_file("g/c.txt", "")[:-5] + "*.csv")
    with pytest.raises(Exception, match=r"b\.csv` is UTF-16 text .* set `encoding: utf-16`"):
        p.run().wait_until_finish()


def test_utf8_bom_is_skipped_without_a_header(pipeline, write_file):
    path = write_file("bom.csv", "\ufeff1,x\n2,y\n")
    out = pipeline | "read" >> ReadFromCsv(path, header=False, column_names=["id", "v"])
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "v": "x"}, {"id": 2, "v": "y"}]),
        label="Rows",
    )
    assert_that(out.error, equal_to([]), label="NoErrors")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("quoted_nulls", "expected"),
    [
        pytest.param(
            False,
            [("", "NULL", None, None, 1), (None, None, None, None, None)],
            id="quoted-values-are-values",
        ),
        pytest.param(
            True,
            [(None, None, None, None, 1), (None, None, None, None, None)],
            id="quoted-nulls",
        ),
    ],
)
def test_quoted_empty_and_quoted_null_are_values_unless_asked(
    pipeline, write_file, quoted_nulls, expected
):
    """Issue 14: `""` and `"NULL"` both became null; no setting kept them apart."""
    path = write_file("q.csv", 'a,b,c,d,n\n"","NULL",,NULL,1\n,,NULL,,""\n')
    read = ReadFromCsv(path, columns={"n": "int64"}, quoted_nulls=quoted_nulls)
    out = pipeline | "read" >> read
    assert_that(
        out.output | beam.FlatMap(lambda b: [tuple(r.values()) for r in visible_rows(b)]),
        equal_to(expected if quoted_nulls else expected[:1]),
        label="Rows",
    )
    assert_that(
        out.error | beam.Map(lambda d: (d.reason, d.line, d.message)),
        equal_to(
            []
            if quoted_nulls
            else [("cast_failed", 3, "Value `` in column `n` is not a valid int64")]
        ),
        label="DeadLetters",
    )
    pipeline.run().wait_until_finish()
