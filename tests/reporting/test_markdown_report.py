"""The Markdown twin of the run report, and re-rendering a report from its JSON."""

import json
import re

import pytest

from beam_etl.run import main

MERMAID_EDGE = re.compile(r"^  n_(\w+) (-->|-\.->)\|([\d,]+)( rejected)?\| n_(\w+)$", re.M)
HTML_EDGE = re.compile(
    r'<g class="edge \w+" data-from="(\w+)" data-to="(\w+)" data-output="(\w+)" data-rows="(\d+)"'
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "out"
    assert main(["--output-dir", str(output)]) == 0
    return output, json.loads((output / "run_report.json").read_text())


def _table(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def test_markdown_twin_has_the_same_step_counts(demo):
    output, report = demo
    markdown = (output / "run_report.md").read_text()
    rows = _table(markdown, "Steps and timings")
    assert [row[0] for row in rows] == [s["name"] for s in report["steps"]]
    for row, step in zip(rows, report["steps"]):
        assert row[4:10] == [
            f"{step['rows_in']:,}",
            f"{step['rows_out']:,}",
            f"{step['rows_rejected']:,}",
            f"{step['rows_dropped']:,}",
            f"{step['seconds']:.3f}",
            "yes",
        ]
    read = sum(s["rows_in"] for s in report["steps"] if s["kind"] == "source")
    rejected = sum(s["rows_rejected"] for s in report["steps"])
    assert f"rows read **{read:,}**" in markdown and f"rejected **{rejected:,}**" in markdown
    assert markdown.startswith(f"# orders_demo: run `{report['run_id']}` SUCCEEDED\n")


def test_markdown_graph_has_the_same_edge_counts_as_the_html(demo):
    output, _ = demo
    markdown = (output / "run_report.md").read_text()
    in_markdown = {
        (source, target, "error" if arrow == "-.->" else "output", int(rows.replace(",", "")))
        for source, arrow, rows, _, target in MERMAID_EDGE.findall(markdown)
    }
    page = (output / "run_report.html").read_text()
    in_html = {(a, b, c, int(d)) for a, b, c, d in HTML_EDGE.findall(page)}
    assert len(in_markdown) == 16
    assert in_markdown == in_html
    assert ("orders", "dead_letters", "error", 3) in in_markdown


def test_markdown_quality_and_dead_letter_sections(demo):
    output, report = demo
    markdown = (output / "run_report.md").read_text()
    checks = _table(markdown, "Data quality: warned")
    assert [(row[1], row[7]) for row in checks] == [
        (c["check"], c["outcome"]) for c in report["quality"]["checks"]
    ]
    letters = [json.loads(line) for line in (output / "dead_letters.jsonl").open()]
    nulls = sum(1 for letter in letters if letter["reason"] == "null_value")
    assert f"### null_value: {nulls}\n" in markdown
    section = markdown.split("### null_value", 1)[1].split("\n## ", 1)[0]
    assert section.count("| require_customer |") == min(nulls, 5) == 5


def test_report_command_renders_the_same_pages_again(demo, capsys):
    output, _ = demo
    # The run history may have grown since the run (later runs, this run appended last).
    for fmt, history in (("md", "## Run history"), ("html", "<h2>Run history</h2>")):
        page = output / f"run_report.{fmt}"
        written = page.read_text()
        page.unlink()
        assert main(["report", str(output / "run_report.json"), "--format", fmt]) == 0
        assert capsys.readouterr().out == f"{fmt} report: {page}\n"
        again = page.read_text()
        assert history in again
        assert again.split(history)[0] == written.split(history)[0]


def test_report_command_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "other.json").write_text('{"rows": 1}')
    assert main(["report", str(tmp_path / "other.json")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"error: No run report at `{tmp_path / 'missing.json'}`",
        f"error: `{tmp_path / 'other.json'}` is not a beam_etl run report "
        "(no `run_id`, `pipeline`, `status`, `steps`, `elapsed_seconds`)",
    ]
