"""Render a run report as one self-contained HTML page and as Markdown, with Jinja2.

The page needs no network: its CSS and its pictures (the pipeline graph, the history chart)
are inline, it loads no script, font or image, and a Content-Security-Policy forbids it to.
Every value taken from the run (messages, payloads, names) is escaped by the HTML template's
autoescaping, or by the `md` filter in Markdown.
"""

import functools
import json
import os
import sqlite3
from typing import Any, Final

import jinja2

from beam_etl import history
from beam_etl.core.errors import UsageError
from beam_etl.reporting.charts import history_chart
from beam_etl.reporting.graph import layout, parse_ref

FORMATS: Final = ("html", "md")
_DEAD_LETTER_SINK: Final = "WriteToDeadLetters"
_REQUIRED: Final = ("run_id", "pipeline", "status", "steps", "elapsed_seconds")
_OPTIONAL: Final[dict[str, Any]] = {
    "spec": "",
    "started_at": "",
    "ended_at": "",
    "runner": "",
    "error": None,
    "conservation_ok": True,
    "quality": None,
    "published": [],
    "already_published": [],
    "warnings": [],
}
_MD_SPECIAL: Final = str.maketrans(
    {"|": "\\|", "\\": "\\\\", "\n": " ", "\r": " ", "<": "&lt;", ">": "&gt;", "&": "&amp;"}
)


def md(value: Any) -> str:
    """Return `value` as text safe inside a Markdown table cell (no pipes, newlines or tags)."""
    return str("" if value is None else value).translate(_MD_SPECIAL)


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("beam_etl.reporting", "templates"),
        # Compiling both templates costs ~0.2 s, every run; Jinja's per-user cache in the
        # temporary folder keeps the compiled code, keyed by the templates' checksums.
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["md"] = md
    environment.filters["count"] = lambda n: "n/a" if n is None else f"{n:,}"
    environment.filters["mermaid_id"] = lambda name: (
        "n_" + "".join(c if c.isalnum() else "_" for c in name)
    )
    return environment


def paths(report_path: str) -> dict[str, str]:
    """Return where the pages and the saved context of the report at `report_path` go."""
    stem = report_path.removesuffix(".json")
    return {
        "html": f"{stem}.html",
        "md": f"{stem}.md",
        "context": f"{stem}.context.json",
        "quality_html": f"{stem}.quality.html",
    }


def _history(report_path: str, pipeline: str, run_id: str) -> dict[str, Any]:
    try:
        runs = history.load(os.path.dirname(os.path.abspath(report_path)), pipeline, last=20)
    except (OSError, ValueError, sqlite3.Error) as exc:
        return {"runs": [], "chart": None, "note": f"the run history could not be read: {exc}"}
    if not runs:
        return {"runs": [], "chart": None, "note": "no earlier runs recorded"}
    return {"runs": runs, "chart": history_chart(runs, run_id), "note": ""}


def context(report: dict[str, Any], extras: dict[str, Any], report_path: str) -> dict[str, Any]:
    """Return everything the templates show, from the JSON report and the gathered extras."""
    steps = report["steps"]
    dead_letter_sinks = {s["name"] for s in steps if s["type"] == _DEAD_LETTER_SINK}
    slowest = max([s["seconds"] for s in steps] + [0.001])
    quality_html = paths(report_path)["quality_html"]
    lineage_edges = [
        {"from": parse_ref(ref)[0], "output": parse_ref(ref)[1], "to": s["name"]}
        for s in steps
        for ref in s["inputs"]
    ]
    return {
        "r": report,
        "steps": steps,
        "bars": {s["name"]: round(100 * s["seconds"] / slowest, 1) for s in steps},
        "totals": {
            "read": sum(s["rows_in"] for s in steps if s["kind"] == "source"),
            "written": sum(
                s["rows_out"]
                for s in steps
                if s["kind"] == "sink" and s["name"] not in dead_letter_sinks
            ),
            "rejected": sum(s["rows_rejected"] for s in steps),
            "dropped": sum(s["rows_dropped"] for s in steps),
        },
        "graph": layout(steps),
        "quality": extras["quality"] if "quality" in extras else report.get("quality"),
        "quality_html": os.path.basename(quality_html) if os.path.exists(quality_html) else None,
        "dead_letters": extras.get("dead_letters"),
        "datasets": extras.get("datasets"),
        "column_lineage": extras.get("column_lineage") or [],
        "lineage_note": extras.get("lineage_note") or "",
        "lineage_edges": lineage_edges,
        "history": _history(report_path, report["pipeline"], report["run_id"]),
    }


def _load(report_path: str) -> dict[str, Any]:
    try:
        with open(report_path, encoding="utf-8") as stream:
            report = json.load(stream)
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read run report `{report_path}`: {exc}") from None
    missing = [key for key in _REQUIRED if not isinstance(report, dict) or key not in report]
    if missing:
        raise UsageError(
            f"`{report_path}` is not a beam_etl run report (no `{'`, `'.join(missing)}`)"
        )
    for key, default in _OPTIONAL.items():  # reports written before these keys existed
        report.setdefault(key, default)
    return report


def render(report_path: str, fmt: str = "html") -> str:
    """Return the report at `report_path` (and its saved context, if any) as HTML or Markdown."""
    report = _load(report_path)
    extras: dict[str, Any] = {}
    saved = paths(report_path)["context"]
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as stream:
            extras = json.load(stream)
    template = _environment().get_template(f"run_report.{fmt}")
    return template.render(context(report, extras, report_path))


def write_pages(report_path: str, formats: tuple[str, ...] = FORMATS) -> dict[str, str]:
    """Render the report at `report_path` into its pages beside it; return format -> path."""
    written = {}
    for fmt in formats:
        target = paths(report_path)[fmt]
        text = render(report_path, fmt)
        temporary = f"{target}.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, target)
        written[fmt] = target
    return written
