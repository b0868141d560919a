"""Bad input files for the file readers, one row per class of bad input.

Every row is a file (or a few, read as one glob), the reader and its options, and the one
outcome allowed: the exact number of good rows plus the dead letters (reason, line) that make
up the rest, or one single-line `ConnectorError` matching a pattern. Never a traceback of
another kind, never a row lost without a dead letter: the test also checks that the reader's
`rows_read` counter equals rows plus dead letters. CSV rows are read twice in the same
pipeline, as one range and as many tiny byte ranges, and must give the same outcome.

A new class of bad input is one `Case` added to `CASES`.
"""

import bz2
import gzip
import io
import lzma
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import apache_beam as beam
import pytest
import zstandard
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.core.errors import ConnectorError
from beam_etl.io.csvio import ReadFromCsv
from beam_etl.io.jsonio import ReadFromJson
from beam_etl.runner import LocalRunner

READERS = {"csv": ReadFromCsv, "json": ReadFromJson}
MANY_RANGES = {"split": True, "split_size_mb": 0.00002, "block_size_mb": 0.00002}


@dataclass(frozen=True)
class Case:
    """One bad input and its only acceptable outcome.

    files: `{name: bytes}` (several files are read as one glob `*` in their folder), or bytes
        (or a function making them) for a single file called `name`.
    rows: exact number of good rows; letters: `(reason, line)` of every dead letter.
    error: a pattern the single `ConnectorError` must match (rows and letters are then unused).
    """

    reader: str
    files: bytes | Callable[[], bytes] | dict[str, bytes]
    name: str = "in.csv"
    options: dict = field(default_factory=dict)
    rows: int = 0
    letters: tuple[tuple[str, int], ...] = ()
    error: str | None = None


def csv(text: str) -> bytes:
    return text.encode()


def _random_bytes() -> bytes:
    return random.Random(15).randbytes(20_000)


def _zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("in.csv", data)
    return out.getvalue()


def _huge_field() -> bytes:
    return b'id,text\n1,"' + b"x" * (10 << 20) + b'"\n2,ok\n'


def _over_limit() -> bytes:
    return b"id,text\n1," + b"y" * (2 << 20) + b"\n2,ok\n3,fine\n"


def _truncated_gzip(data: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        packed = gzip.compress(data)
        return packed[: len(packed) // 2]

    return make


DEEP = b"[" * 10_000 + b"]" * 10_000
PLAIN = "id,v\n1,a\n2,b\n"
GOOD_JSON = b'{"id": 1}\n{"id": 2}\n'
INT_ID = {"columns": {"id": "int64"}}

CASES = [
    # CSV: empty and header-only files
    pytest.param(
        Case("csv", b"", error=r"in\.csv` is empty: it has no header line"), id="csv-empty"
    ),
    pytest.param(
        Case("csv", b"\n\r\n\n", error=r"is empty: it has no header"), id="csv-blank-lines-only"
    ),
    pytest.param(
        Case("csv", b"", options={"header": False, "column_names": ["a"]}),
        id="csv-empty-no-header",
    ),
    pytest.param(Case("csv", csv("id,v\n")), id="csv-header-only"),
    pytest.param(Case("csv", csv("id,v")), id="csv-header-only-no-line-end"),
    pytest.param(Case("csv", csv("id,v\n\n\r\n\n")), id="csv-header-and-blank-lines"),
    # CSV: structure
    pytest.param(
        Case("csv", csv("a,a,b\n1,2,x\n3,4,5\n"), rows=2), id="csv-duplicate-header-names"
    ),
    pytest.param(
        Case(
            "csv",
            csv("id,v\n1,a\n2\n3,c,extra\n4,d\n,\n"),
            rows=3,
            letters=(("malformed_csv", 3), ("malformed_csv", 4)),
        ),
        id="csv-ragged-rows",
    ),
    pytest.param(
        Case("csv", csv("id,v,\n1,a,\n2,b,\n"), rows=2), id="csv-trailing-delimiter-everywhere"
    ),
    pytest.param(
        Case(
            "csv",
            csv("id,v\n1,a,\n2,b\n"),
            rows=1,
            letters=(("malformed_csv", 2),),
        ),
        id="csv-trailing-delimiter-on-a-row",
    ),
    pytest.param(
        Case("csv", csv("id,v\n1,a\n   \n2,b\n"), rows=2, letters=(("malformed_csv", 3),)),
        id="csv-whitespace-only-line",
    ),
    pytest.param(
        Case(
            "csv",
            csv("id,v\n1,a\nid,v\n2,b\n"),
            options=INT_ID,
            rows=2,
            letters=(("cast_failed", 3),),
        ),
        id="csv-header-repeated-mid-file",
    ),
    pytest.param(
        Case(
            "csv", {"a.csv": csv(PLAIN), "b.csv": csv("id,w\n3,c\n")}, error=r"Header of .*b\.csv"
        ),
        id="csv-glob-with-another-header",
    ),
    # CSV: line ends and quoting
    pytest.param(Case("csv", b"\xef\xbb\xbfid,v\n1,a\n", rows=1), id="csv-utf8-bom"),
    pytest.param(Case("csv", csv("id,v\r\n1,a\r\n2,b\r\n"), rows=2), id="csv-crlf"),
    pytest.param(Case("csv", csv("id,v\r1,a\r2,b\r"), rows=2), id="csv-lone-cr"),
    pytest.param(
        Case("csv", csv('id,v\n1,"a\r\nb"\r2,c\r\n3,"d\re"\n4,f'), rows=4), id="csv-mixed-line-ends"
    ),
    pytest.param(
        Case("csv", csv('id,v,n\n100,12" pizza,100\n2,"multi\nline",2\n3,c,3\n'), rows=3),
        id="csv-stray-quote-then-quoted-newline",
    ),
    pytest.param(
        Case("csv", csv('id,v\n1,"a"b"c\n2,"say ""hi"""\n'), rows=2), id="csv-quote-after-closing"
    ),
    pytest.param(
        Case(
            "csv", csv('id,v\n1,a\n2,"never closed\n3,c\n'), rows=1, letters=(("malformed_csv", 3),)
        ),
        id="csv-unclosed-quote",
    ),
    pytest.param(
        Case(
            "csv", csv('id,v\n1,"a\n2,b"\n3,"c\n4,d\n5,e'), rows=1, letters=(("malformed_csv", 4),)
        ),
        id="csv-unclosed-quote-no-line-end",
    ),
    # CSV: size
    pytest.param(Case("csv", _huge_field, options=INT_ID, rows=2), id="csv-10-mb-field"),
    pytest.param(
        Case(
            "csv",
            _over_limit,
            options={"max_record_mb": 1, **INT_ID},
            rows=2,
            letters=(("malformed_csv", 2),),
        ),
        id="csv-record-over-max-record-mb",
    ),
    # CSV: bytes
    pytest.param(
        Case("csv", b"id,v\n1,a\x00b\n2,b\n", rows=1, letters=(("invalid_encoding", 2),)),
        id="csv-nul-byte-in-a-field",
    ),
    pytest.param(
        Case("csv", b"id,v,n\n1,a,1\n2,\xff\n3,c,3\n", rows=2, letters=(("invalid_encoding", 3),)),
        id="csv-short-row-with-invalid-utf8",
    ),
    pytest.param(
        Case("csv", b"id,v\n1,a\n2,\xff\xfe\n3,c\n", rows=2, letters=(("invalid_encoding", 3),)),
        id="csv-invalid-utf8-mid-file",
    ),
    pytest.param(
        Case("csv", "id,v\n1,Köln\n".encode("latin-1"), rows=0, letters=(("invalid_encoding", 2),)),
        id="csv-latin1-read-as-utf8",
    ),
    pytest.param(
        Case(
            "csv",
            PLAIN.encode("utf-16"),
            error=r"in\.csv` is UTF-16 text .* set `encoding: utf-16`",
        ),
        id="csv-utf16-bom",
    ),
    pytest.param(
        Case(
            "csv",
            PLAIN.encode("utf-16-le"),
            error=r"without a byte-order mark .*`encoding: utf-16-le`",
        ),
        id="csv-utf16-no-bom",
    ),
    pytest.param(
        Case("csv", PLAIN.encode("utf-32"), error=r"UTF-32 text .*`encoding: utf-32`"),
        id="csv-utf32",
    ),
    pytest.param(
        Case("csv", PLAIN.encode("utf-16"), options={"encoding": "utf-16"}, rows=2),
        id="csv-utf16-declared",
    ),
    pytest.param(
        Case(
            "csv",
            gzip.compress(csv(PLAIN)),
            error=r"in\.csv` holds gzip-compressed data, but its name does not say so: add `\.gz`",
        ),
        id="csv-gzip-named-csv",
    ),
    pytest.param(
        Case("csv", bz2.compress(csv(PLAIN)), error=r"holds bzip2-compressed data.*add `\.bz2`"),
        id="csv-bz2-named-csv",
    ),
    pytest.param(
        Case(
            "csv",
            zstandard.ZstdCompressor().compress(csv(PLAIN)),
            error=r"holds zstd-compressed data",
        ),
        id="csv-zstd-named-csv",
    ),
    pytest.param(
        Case("csv", lzma.compress(csv(PLAIN)), error=r"holds xz-compressed data.*add `\.xz`"),
        id="csv-xz-named-csv",
    ),
    pytest.param(
        Case("csv", _zip(csv(PLAIN)), error=r"holds zip-compressed data.*extract it first"),
        id="csv-zip-named-csv",
    ),
    pytest.param(
        Case(
            "csv",
            _random_bytes,
            error=r"in\.csv` holds binary data \(\d+ control bytes in its first 4096\), not CSV",
        ),
        id="csv-binary-garbage",
    ),
    pytest.param(
        Case(
            "csv",
            _truncated_gzip(b"id,v\n" + b"".join(b"%d,v%d\n" % (i, i) for i in range(20_000))),
            name="in.csv.gz",
            error=r"in\.csv\.gz` is not a valid gzip file",
        ),
        id="csv-truncated-gzip",
    ),
    pytest.param(
        Case(
            "csv", gzip.compress(PLAIN.encode("utf-16")), name="in.csv.gz", error=r"is UTF-16 text"
        ),
        id="csv-gzip-of-utf16",
    ),
    pytest.param(
        Case(
            "csv",
            {"a.csv": csv(PLAIN), "b.csv": gzip.compress(csv(PLAIN))},
            error=r"b\.csv` holds gzip-compressed data",
        ),
        id="csv-glob-second-file-gzip",
    ),
    # CSV: values
    pytest.param(
        Case(
            "csv",
            csv("id,n\n" + "".join(f"{i},{i}\n" for i in range(1, 60)) + "60,n/a\n"),
            options={"infer_bytes": 100},
            rows=59,
            letters=(("cast_failed", 61),),
        ),
        id="csv-type-drift-after-the-sample",
    ),
    pytest.param(
        Case(
            "csv",
            csv('id,n\n1,""\n2,\n'),
            options={"columns": {"n": "int64"}},
            rows=1,
            letters=(("cast_failed", 2),),
        ),
        id="csv-quoted-empty-in-a-number-column",
    ),
    pytest.param(
        Case(
            "csv",
            csv('id,n\n1,""\n2,\n'),
            options={"columns": {"n": "int64"}, "quoted_nulls": True},
            rows=2,
        ),
        id="csv-quoted-empty-with-quoted-nulls",
    ),
    pytest.param(
        Case("csv", csv("id,n\n1,9223372036854775808\n2,1\n"), rows=2),
        id="csv-integer-beyond-int64",
    ),
    # JSON
    pytest.param(
        Case("json", b"", name="in.jsonl", error=r"No JSON object in `.*in\.jsonl`"),
        id="json-empty",
    ),
    pytest.param(
        Case("json", b"\n \n", name="in.jsonl", options=INT_ID), id="json-blank-with-columns"
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1,}\n{"id": 2}\n',
            name="in.jsonl",
            rows=1,
            letters=(("malformed_json", 1),),
        ),
        id="json-trailing-comma-in-object",
    ),
    pytest.param(
        Case(
            "json",
            b'[{"id": 1},\n{"id": 2},\n]',
            name="in.json",
            error=r"in\.json` is not a valid JSON array: Expecting value \(line 3\)",
        ),
        id="json-array-trailing-comma",
    ),
    pytest.param(
        Case(
            "json",
            b'42\n{"id": 1}\n"text"\n',
            name="in.jsonl",
            rows=1,
            letters=(("malformed_json", 1), ("malformed_json", 3)),
        ),
        id="json-top-level-scalars",
    ),
    pytest.param(
        Case("json", b"42\n", name="in.json", error=r"No JSON object in"), id="json-only-a-scalar"
    ),
    pytest.param(
        Case("json", b'{\n  "id": 1\n}\n', name="in.json", error=r"No JSON object in"),
        id="json-pretty-printed-object",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1}\n{"id": 2, "a": ' + DEEP + b"}\n",
            name="in.jsonl",
            options={"columns": {"id": "int64", "a": "string"}},
            rows=1,
            letters=(("malformed_json", 2),),
        ),
        id="json-nested-10000-deep-line",
    ),
    pytest.param(
        Case(
            "json",
            b'[{"id": 1}, {"a": ' + DEEP + b"}]",
            name="in.json",
            error=r"an element nests arrays or objects too deeply",
        ),
        id="json-nested-10000-deep-array",
    ),
    pytest.param(
        Case("json", b"\xef\xbb\xbf" + GOOD_JSON, name="in.jsonl", rows=2), id="json-utf8-bom"
    ),
    pytest.param(
        Case("json", b'{"id": 1}\r\n{"id": 2}\r\n', name="in.jsonl", rows=2), id="json-crlf"
    ),
    pytest.param(
        Case(
            "json",
            GOOD_JSON.decode().encode("utf-16"),
            name="in.jsonl",
            error=r"is UTF-16 text .* JSON reads UTF-8 only",
        ),
        id="json-utf16",
    ),
    pytest.param(
        Case(
            "json",
            gzip.compress(GOOD_JSON),
            name="in.jsonl",
            error=r"holds gzip-compressed data.*add `\.gz`",
        ),
        id="json-gzip-named-jsonl",
    ),
    pytest.param(
        Case("json", _random_bytes, name="in.jsonl", error=r"holds binary data .*, not JSON text"),
        id="json-binary-garbage",
    ),
    pytest.param(
        Case(
            "json",
            _truncated_gzip(b"".join(b'{"id": %d}\n' % i for i in range(20_000))),
            name="in.jsonl.gz",
            options=INT_ID,
            error=r"in\.jsonl\.gz` is not a valid gzip file",
        ),
        id="json-truncated-gzip",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1}\n{"id": "\xff"}\n{"id": 3}\n',
            name="in.jsonl",
            options={"columns": {"id": "string"}},
            rows=2,
            letters=(("invalid_encoding", 2),),
        ),
        id="json-invalid-utf8-mid-file",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1, "v": "a\x00b"}\n{"id": 2, "v": "c"}\n',
            name="in.jsonl",
            rows=1,
            letters=(("malformed_json", 1),),
        ),
        id="json-raw-nul-in-a-string",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1, "v": 1.5}\n{"id": 2, "v": NaN}\n{"id": 3, "v": -Infinity}\n',
            name="in.jsonl",
            rows=3,
        ),
        id="json-nan-and-infinity-are-floats",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1, "v": 1.5}\n{"id": 2, "v": NaN}\nnot json\n',
            name="in.jsonl",
            rows=2,
            letters=(("malformed_json", 3),),
        ),
        id="json-nan-read-line-by-line",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1}{"id": 2}\n{"id": 3}\n',
            name="in.jsonl",
            rows=1,
            letters=(("malformed_json", 1),),
        ),
        id="json-two-objects-on-a-line",
    ),
    pytest.param(
        Case(
            "json",
            b'{"id": 1}\n{"id": 2, "v": "cut',
            name="in.jsonl",
            rows=1,
            letters=(("malformed_json", 2),),
        ),
        id="json-truncated-last-line",
    ),
    pytest.param(
        Case("json", b'{"id": 1}\n{"id": 9223372036854775808}\n', name="in.jsonl", rows=2),
        id="json-integer-beyond-int64",
    ),
    pytest.param(
        Case(
            "json",
            lambda: b'{"id": 1, "t": "' + b"x" * (3 << 20) + b'"}\n{"id": 2, "t": "y"}\n',
            name="in.jsonl",
            options={"columns": {"id": "int64", "t": "string"}},
            rows=2,
        ),
        id="json-3-mb-line",
    ),
    pytest.param(
        Case(
            "json",
            lambda: b'{"id": 1, "t": "' + b"x" * (3 << 20) + b'"}\n',
            name="in.jsonl",
            error=r"No JSON object in `.*` to infer the columns from \(in its first 1,048,576 "
            r"bytes: `infer_bytes`\)",
        ),
        id="json-first-object-longer-than-the-sample",
    ),
]


def _write(tmp_path, case: Case) -> str:
    files = case.files if isinstance(case.files, dict) else {case.name: case.files}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data() if callable(data) else data)
    return str(tmp_path / ("*" if isinstance(case.files, dict) else case.name))


def _fails_with_one_line(case: Case, build: Callable[[], object]) -> None:
    with pytest.raises(ConnectorError, match=case.error) as caught:
        build()
    assert "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("case", CASES)
def test_bad_file(tmp_path, case: Case):
    path = _write(tmp_path, case)
    reader = READERS[case.reader]
    variants = {"read": case.options}
    if case.reader == "csv":
        variants["ranges"] = case.options | MANY_RANGES
    if case.error:
        _fails_with_one_line(case, lambda: _run(path, reader, variants))
        return
    expected = sorted(case.letters)
    result = _run(path, reader, variants, case.rows, expected)
    for label in variants:
        query = MetricsFilter().with_name(f"{label}:rows_read")
        counted = sum(c.committed for c in result.metrics().query(query)["counters"])
        assert counted == case.rows + len(expected), label


def _run(path: str, reader, variants: dict, rows: int = 0, letters: list | None = None):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    for label, options in variants.items():
        out = p | label >> reader(path, **options)
        count = (
            out.output
            | f"{label}Rows" >> beam.Map(lambda b: b.num_rows)
            | f"{label}Sum" >> beam.CombineGlobally(sum)
        )
        assert_that(count, equal_to([rows]), label=f"{label}CheckRows")
        found = out.error | f"{label}Letters" >> beam.Map(lambda d: (d.reason, d.line))
        assert_that(found, equal_to(letters or []), label=f"{label}CheckDeadLetters")
    result = p.run()
    result.wait_until_finish()
    return result


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_tail_after_good_rows_adds_up(tmp_path, seed):
    """Random bytes after 400 good rows: the good rows are kept, every other record is a dead
    letter or a row, and the counts add up, in one range and in many."""
    rng = random.Random(seed)
    good = "id,name,n\n" + "".join(f"{i},x{i},{i}.5\n" for i in range(400))
    tail = bytes(rng.choice(b'ab,"\r\n\x00\xff\xc3') for _ in range(20_000)) + rng.randbytes(5000)
    path = tmp_path / "tail.csv"
    path.write_bytes(good.encode() + tail)
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    variants = {"read": INT_ID, "ranges": {**INT_ID, **MANY_RANGES, "block_size_mb": 0.001}}
    for label, options in variants.items():
        out = p | label >> ReadFromCsv(str(path), **options)
        ids = out.output | f"{label}Ids" >> beam.FlatMap(lambda b: b.column("id").to_pylist())
        kept = ids | f"{label}Good" >> beam.Filter(lambda i: i is not None and 0 <= i < 400)
        assert_that(kept, equal_to(list(range(400))), label=f"{label}CheckGoodRows")
        rows = out.output | f"{label}Rows" >> beam.Map(lambda b: b.num_rows)
        letters = out.error | f"{label}Letters" >> beam.Map(lambda d: 1)
        total = (rows, letters) | f"{label}Flatten" >> beam.Flatten()
        _ = (
            total
            | f"{label}Sum" >> beam.CombineGlobally(sum)
            | f"{label}Record" >> beam.Map(_record_total, str(tmp_path / f"{label}.total"))
        )
    result = p.run()
    result.wait_until_finish()
    for label in variants:
        counters = result.metrics().query(MetricsFilter().with_name(f"{label}:rows_read"))
        read = sum(c.committed for c in counters["counters"])
        assert read == int((tmp_path / f"{label}.total").read_text()) > 400, label


def _record_total(total: int, path: str) -> None:
    with open(path, "w") as out:
        out.write(str(total))
