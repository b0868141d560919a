"""WriteToHtml and WriteToMarkdown: escaping, nulls, unified schemas, row limit, atomicity."""

import datetime
import decimal
import os
from html.parser import HTMLParser

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline

from beam_etl.core.batches import with_origin
from beam_etl.io.htmlio import WriteToHtml, WriteToMarkdown, markdown_cell
from beam_etl.runner import LocalRunner

NASTY = pa.record_batch(
    {
        "id": pa.array([1, 2], pa.int64()),
        "text": pa.array(["<script>alert('x')</script>", 'fish & chips | "q"\nline 2']),
        "amount": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
        "day": pa.array([datetime.date(2024, 1, 31), None]),
    }
)


def _run(build):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    build(p)
    p.run().wait_until_finish()


class _Cells(HTMLParser):
    """Collects the text of every th/td, as a browser would show it."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("th", "td"):
            self.rows[-1].append("")
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in in ("th", "td"):
            self.rows[-1][-1] += data
        elif self._in == "title":
            self.title += data


def test_html_escapes_every_cell_and_shows_nulls_as_empty(tmp_path):
    path = tmp_path / "report.html"
    batch = with_origin(NASTY, "in.csv", [2, 3])
    _run(lambda p: p | beam.Create([batch]) | WriteToHtml(str(path), title="R&D <2024>"))
    page = path.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "fish &amp; chips | &quot;q&quot;\nline 2" in page
    assert '<td class="num"></td><td></td></tr>' in page  # nulls: empty cells
    parsed = _Cells()
    parsed.feed(page)
    assert parsed.title == "R&D <2024>"
    assert parsed.rows == [
        ["id", "text", "amount", "day"],
        ["1", "<script>alert('x')</script>", "1.50", "2024-01-31"],
        ["2", 'fish & chips | "q"\nline 2', "", ""],
    ]


def test_markdown_escapes_pipes_and_newlines(tmp_path):
    path = tmp_path / "out" / "table.md"
    _run(lambda p: p | beam.Create([NASTY]) | WriteToMarkdown(str(path)))
    assert path.read_text(encoding="utf-8") == (
        "| id | text | amount | day |\n"
        "| ---: | --- | ---: | --- |\n"
        "| 1 | \\<script\\>alert('x')\\</script\\> | 1.50 | 2024-01-31 |\n"
        '| 2 | fish \\& chips \\| "q"<br>line 2 |  |  |\n'
    )
    assert os.listdir(tmp_path / "out") == ["table.md"]


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        pytest.param("a|b", "a\\|b", id="pipe"),
        pytest.param("a\\|b", "a\\\\\\|b", id="backslash-before-pipe"),
        pytest.param("1\r\n2\r3", "1<br>2<br>3", id="newlines"),
        pytest.param("*x* _y_ `z` ~w~ [l]", "\\*x\\* \\_y\\_ \\`z\\` \\~w\\~ \\[l\\]", id="syntax"),
        pytest.param("plain Zoë", "plain Zoë", id="plain"),
    ],
)
def test_markdown_cell(text, cell):
    assert markdown_cell(text) == cell


def test_batches_of_different_schemas_share_one_header(tmp_path):
    path = tmp_path / "t.md"
    one = pa.record_batch({"a": pa.array([1], pa.int64())})
    other = pa.record_batch({"a": pa.array([2], pa.int64()), "b": pa.array(["x"])})
    _run(lambda p: p | beam.Create([one, other], reshuffle=False) | WriteToMarkdown(str(path)))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["| a | b |", "| ---: | --- |"]
    assert sorted(lines[2:]) == ["| 1 |  |", "| 2 | x |"]


@pytest.mark.parametrize(
    ("sink", "name"),
    [
        pytest.param(WriteToHtml, "WriteToHtml", id="html"),
        pytest.param(WriteToMarkdown, "WriteToMarkdown", id="markdown"),
    ],
)
def test_input_over_max_rows_is_refused_and_the_previous_file_kept(tmp_path, sink, name):
    path = tmp_path / "doc"
    path.write_text("previous")
    with pytest.raises(Exception) as raised:
        _run(lambda p: p | beam.Create([NASTY, NASTY]) | sink(str(path), max_rows=3))
    assert f"`{name}` holds at most 3 rows (`max_rows`); the input has 4" in str(raised.value)
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["doc"]


def test_empty_input_writes_an_empty_table(tmp_path):
    html_path, md_path = tmp_path / "e.html", tmp_path / "e.md"

    def build(p):
        batches = p | beam.Create([]).with_output_types(pa.RecordBatch)
        _ = batches | "Html" >> WriteToHtml(str(html_path))
        _ = batches | "Markdown" >> WriteToMarkdown(str(md_path))

    _run(build)
    parsed = _Cells()
    parsed.feed(html_path.read_text(encoding="utf-8"))
    assert (parsed.title, parsed.rows) == ("e", [[]])
    assert md_path.read_text() == ""


@pytest.mark.parametrize("max_rows", [0, -1, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_max_rows_must_be_a_positive_integer(tmp_path, max_rows):
    with pytest.raises(ValueError, match="`max_rows` must be a positive integer"):
        WriteToHtml(str(tmp_path / "x.html"), max_rows=max_rows)
