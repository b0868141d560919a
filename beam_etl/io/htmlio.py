"""HTML and Markdown table export: one small, human-readable document per sink.

Both are whole-document sinks (see `_documents`): the input is staged per bundle, counted, and
rendered to one file at the end, or refused when it has more than `max_rows` rows.
"""

import html
import os
import re
from collections.abc import Iterator
from typing import IO, Final

import pyarrow as pa

from beam_etl.io._documents import Render, WriteDocument, cell_text, check_max_rows, is_numeric

_PAGE_HEAD: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
table {{ border-collapse: collapse; font-family: sans-serif; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f3f3f3; text-align: left; }}
td.num {{ text-align: right; }}
td {{ white-space: pre-wrap; }}
</style>
</head>
<body>
"""
# Characters GitHub-flavoured Markdown would read as syntax (or raw HTML) inside a cell.
_MARKDOWN_SPECIAL: Final = re.compile(r"([\\`*_\[\]<>|&~])")
_NEWLINE: Final = re.compile(r"\r\n|\r|\n")


def _rows(batches: Iterator[pa.RecordBatch]) -> Iterator[list]:
    for batch in batches:
        yield from zip(*(column.to_pylist() for column in batch.columns))


class _RenderHtml:
    def __init__(self, title: str) -> None:
        self.title = title

    def __call__(self, path: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
        escape = html.escape
        numeric = [is_numeric(field.type) for field in schema]
        with open(path, "w", encoding="utf-8") as out:
            out.write(_PAGE_HEAD.format(title=escape(self.title)))
            out.write(f"<h1>{escape(self.title)}</h1>\n<table>\n<thead>\n<tr>")
            out.write("".join(f"<th>{escape(field.name)}</th>" for field in schema))
            out.write("</tr>\n</thead>\n<tbody>\n")
            for row in _rows(batches):
                cells = (
                    f'<td class="num">{escape(cell_text(value))}</td>'
                    if is_number
                    else f"<td>{escape(cell_text(value))}</td>"
                    for value, is_number in zip(row, numeric)
                )
                out.write(f"<tr>{''.join(cells)}</tr>\n")
            out.write("</tbody>\n</table>\n</body>\n</html>\n")


def markdown_cell(text: str) -> str:
    """Return `text` safe inside a GitHub-flavoured Markdown table cell.

    Markdown syntax characters (`|` included) are backslash-escaped so they show as typed, and
    line breaks become `<br>` (a table row is one line).
    """
    return _NEWLINE.sub("<br>", _MARKDOWN_SPECIAL.sub(r"\\\1", text))


def _markdown_line(cells: list[str], out: IO[str]) -> None:
    out.write(f"| {' | '.join(cells)} |\n")


class _RenderMarkdown:
    def __call__(self, path: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
        with open(path, "w", encoding="utf-8") as out:
            if not schema.names:
                return  # a table needs at least one column: no input, empty file
            _markdown_line([markdown_cell(name) for name in schema.names], out)
            _markdown_line(["---:" if is_numeric(f.type) else "---" for f in schema], out)
            for row in _rows(batches):
                _markdown_line([markdown_cell(cell_text(value)) for value in row], out)


class WriteToHtml(WriteDocument):
    """Write the input as one table in a standalone HTML page, published atomically at the end.

    Every header and cell is HTML-escaped (`<`, `>`, `&`, quotes); nulls are empty cells;
    dates and times are ISO 8601, binary is base64, lists and structs are JSON. Row order is
    the order batches arrive in (not guaranteed across bundles). Hidden origin columns are
    dropped. The page is written to a temporary name and renamed into place once every bundle
    has finished; an input of more than `max_rows` rows fails the run with a `ConnectorError`
    (counted from the staged parts, before any is read) and leaves `path` untouched.
    Output: one element, the number of rows written.
    """

    def __init__(self, path: str, *, title: str | None = None, max_rows: int = 10_000) -> None:
        """Args:
        path: the HTML file to write (parent folders are created; a re-run replaces it).
        title: the page title and heading; the file name without extension when not given.
        max_rows: the most rows the page may hold; a larger input fails the run.
        """
        super().__init__()
        check_max_rows(max_rows)
        self.path = path
        self.title = title if title is not None else os.path.splitext(os.path.basename(path))[0]
        self.max_rows = max_rows

    def renderer(self) -> Render:
        return _RenderHtml(self.title)


class WriteToMarkdown(WriteDocument):
    """Write the input as one GitHub-flavoured Markdown table, published atomically at the end.

    Cells are escaped so they show as typed: `|` and other Markdown syntax characters get a
    backslash, line breaks become `<br>`; nulls are empty cells; numeric columns are aligned
    right. Values are shown as in `WriteToHtml`. An input with no rows gives an empty file
    (its columns are unknown). An input of more than `max_rows` rows fails the run with a
    `ConnectorError` and leaves `path` untouched.
    Output: one element, the number of rows written.
    """

    def __init__(self, path: str, *, max_rows: int = 10_000) -> None:
        """Args:
        path: the Markdown file to write (parent folders are created; a re-run replaces it).
        max_rows: the most rows the table may hold; a larger input fails the run.
        """
        super().__init__()
        check_max_rows(max_rows)
        self.path = path
        self.max_rows = max_rows

    def renderer(self) -> Render:
        return _RenderMarkdown()
