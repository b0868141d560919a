"""The quality section of the run report, from check results, as a dict, Markdown and HTML."""

import html
from collections.abc import Iterable
from typing import Any

from beam_etl.core.batches import json_safe
from beam_etl.quality.checks import CheckResult

_COLUMNS = (
    "step",
    "check",
    "column",
    "severity",
    "rows evaluated",
    "rows failed",
    "ratio",
    "outcome",
    "examples",
)


def quality_section(results: Iterable[CheckResult], examples: int = 3) -> dict[str, Any]:
    """Return the report's quality section: one entry per check (sorted), and the totals.

    `status` is `failed` when a check failed the run, `warned` when a check warned or rejected
    rows, else `passed`.
    """
    checks = []
    for r in sorted(results, key=lambda r: (r.step, r.check)):
        checks.append(
            {
                "step": r.step,
                "check": r.check,
                "kind": r.kind,
                "column": r.column,
                "severity": r.severity,
                "rows_evaluated": r.rows_evaluated,
                "rows_failed": r.rows_failed,
                "ratio": round(r.ratio, 6),
                "outcome": r.outcome,
                "examples": [json_safe(e) for e in r.examples[:examples]],
                "message": r.message,
            }
        )
    outcomes = {c["outcome"] for c in checks}
    status = (
        "failed"
        if "failed" in outcomes
        else ("warned" if outcomes & {"warned", "rejected"} else "passed")
    )
    return {"status": status, "checks": checks}


def _cells(check: dict[str, Any]) -> list[str]:
    shown = ", ".join(f"{e.get('value')!s} ({e.get('origin')})" for e in check["examples"])
    return [
        check["step"],
        check["check"],
        check["column"] or "",
        check["severity"],
        f"{check['rows_evaluated']:,}",
        f"{check['rows_failed']:,}",
        f"{check['ratio']:.2%}",
        check["outcome"],
        shown,
    ]


def render_markdown(section: dict[str, Any]) -> str:
    """Return the quality section as a Markdown table (pipes and newlines in values escaped)."""

    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [
        f"## Data quality: {section['status']}",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += [
        "| " + " | ".join(cell(c) for c in _cells(check)) + " |" for check in section["checks"]
    ]
    return "\n".join(lines) + "\n"


def render_html(section: dict[str, Any]) -> str:
    """Return the quality section as a standalone HTML table; every value is escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    rows = "".join(
        f'<tr class="{html.escape(check["outcome"])}">'
        + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(check))
        + "</tr>"
        for check in section["checks"]
    )
    return (
        f"<section><h2>Data quality: {html.escape(section['status'])}</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>\n"
    )
