"""The quality section: totals, status, Markdown and escaped HTML."""

from beam_etl.quality.checks import CheckResult
from beam_etl.quality.report import quality_section, render_html, render_markdown

RESULTS = [
    CheckResult(
        "v",
        "regex_email",
        "regex",
        "email",
        "reject",
        4,
        1,
        "rejected",
        ({"value": "<b>|x", "origin": "in.csv:3"},),
    ),
    CheckResult("u", "unique_id", "unique", "id", "warn", 10, 0, "passed"),
]


def test_quality_section_sorts_checks_and_computes_ratios():
    section = quality_section(RESULTS)
    assert section["status"] == "warned"
    assert [(c["check"], c["ratio"], c["outcome"]) for c in section["checks"]] == [
        ("unique_id", 0.0, "passed"),
        ("regex_email", 0.25, "rejected"),
    ]
    failed = RESULTS[1]._replace(outcome="failed", severity="fail")
    assert quality_section([failed])["status"] == "failed"
    assert quality_section([])["status"] == "passed"


def test_markdown_and_html_escape_values():
    section = quality_section(RESULTS)
    markdown = render_markdown(section)
    assert (
        "| v | regex_email | email | reject | 4 | 1 | 25.00% | rejected | <b>\\|x (in.csv:3) |"
        in (markdown)
    )
    html = render_html(section)
    assert "<td>&lt;b&gt;|x (in.csv:3)</td>" in html and "<b>|x" not in html
