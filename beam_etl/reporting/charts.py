"""The run history as a small bar chart: one bar per run, its height the run's seconds.

Pure geometry for the templates (which draw and escape it); the history itself comes from
`beam_etl.history.load` when that module is installed.
"""

from dataclasses import dataclass
from typing import Any, Final

CHART_WIDTH: Final = 560
CHART_HEIGHT: Final = 150
_PLOT_TOP: Final = 16
_PLOT_BOTTOM: Final = 22
_AXIS_LEFT: Final = 44
_MAX_SLOT: Final = 40.0


@dataclass
class Bar:
    """One run of the history, drawn as a bar."""

    run_id: str
    status: str
    seconds: float
    rows_read: int
    rows_rejected: int
    current: bool
    x: float
    y: float
    width: float
    height: float


@dataclass
class Chart:
    """The chart's size, its bars and the top of its seconds axis."""

    width: int
    height: int
    bars: list[Bar]
    max_seconds: float
    baseline: float


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def history_chart(runs: list[dict[str, Any]], current_run: str) -> Chart:
    """Return the bars of `runs` (history entries, any order), oldest on the left."""
    ordered = sorted(runs, key=lambda run: str(run.get("started") or ""))
    top = max([_number(run.get("seconds")) for run in ordered] + [0.001])
    plot = CHART_HEIGHT - _PLOT_TOP - _PLOT_BOTTOM
    slot = min(_MAX_SLOT, (CHART_WIDTH - _AXIS_LEFT - 8) / max(len(ordered), 1))
    bars = []
    for index, run in enumerate(ordered):
        seconds = _number(run.get("seconds"))
        height = max(1.0, plot * seconds / top)
        bars.append(
            Bar(
                run_id=str(run.get("run_id", "")),
                status=str(run.get("status", "")),
                seconds=seconds,
                rows_read=int(_number(run.get("rows_read"))),
                rows_rejected=int(_number(run.get("rows_rejected"))),
                current=run.get("run_id") == current_run,
                x=_AXIS_LEFT + index * slot + slot * 0.15,
                y=_PLOT_TOP + plot - height,
                width=max(2.0, slot * 0.7),
                height=height,
            )
        )
    return Chart(CHART_WIDTH, CHART_HEIGHT, bars, top, float(_PLOT_TOP + plot))
