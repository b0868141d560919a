"""Run reports a person can read: one self-contained HTML page and its Markdown twin.

`write_run_reports(report_path, plan)` is called by every run, successful or failed, once
`run_report.json` is written; `render(report_path, fmt)` renders a report again later
(`python -m beam_etl.run report run_report.json --format md`).
"""

import json
import os
from typing import Any

from beam_etl.reporting.gather import gather
from beam_etl.reporting.render import FORMATS, paths, render, write_pages


def write_run_reports(report_path: str, plan: Any, run_id: str) -> dict[str, str]:
    """Write `<report>.html` and `<report>.md` (and the context they need) beside the report.

    Returns:
        format -> path of every page written.
    """
    with open(report_path, encoding="utf-8") as stream:
        report = json.load(stream)
    saved = paths(report_path)["context"]
    temporary = f"{saved}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(gather(plan, run_id, report.get("quality")), out, indent=1, ensure_ascii=False)
    os.replace(temporary, saved)
    return write_pages(report_path)


__all__ = ["FORMATS", "paths", "render", "write_pages", "write_run_reports"]
