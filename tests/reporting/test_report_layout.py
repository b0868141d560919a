"""The graph's layered layout, edge counts of routed outputs, and the run-history chart."""

import json
import re
import shutil

import pytest

from beam_etl.reporting import render
from beam_etl.reporting.charts import history_chart
from beam_etl.reporting.graph import NODE_HEIGHT, NODE_WIDTH, edge_rows, layout
from beam_etl.run import main

HTML_EDGE = re.compile(r'data-from="(\w+)" data-to="(\w+)" data-output="(\w+)" data-rows="(\d*)"')
HISTORY_BAR = re.compile(r'<rect class="(\w+)( current)?" data-run="([^"]+)"')


def _step(name, kind, inputs, rows_in, rows_out, rejected=0):
    return {
        "name": name,
        "kind": kind,
        "type": "T",
        "inputs": inputs,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_rejected": rejected,
        "rows_dropped": 0,
        "seconds": 0.0,
        "balanced": True,
    }


DIAMOND = [
    _step("src", "source", [], 10, 9, 1),
    _step("left", "step", ["src"], 9, 9),
    _step("right", "step", ["src"], 9, 8, 1),
    _step("join", "step", ["left", "right"], 17, 17),
    _step("out", "sink", ["join"], 17, 17),
    _step("letters", "sink", ["src.error", "right.error"], 2, 2),
]


def test_layout_puts_inputs_above_and_boxes_apart():
    picture = layout(DIAMOND)
    boxes = {box.step["name"]: box for box in picture.boxes}
    assert [boxes[n].layer for n in ("src", "left", "right", "join", "out")] == [0, 1, 1, 2, 3]
    assert boxes["letters"].layer == 2  # one below its deepest input, `right`
    for a in boxes.values():
        assert a.x >= 0 and a.x + NODE_WIDTH <= picture.width
        assert a.y >= 0 and a.y + NODE_HEIGHT <= picture.height
        for b in boxes.values():
            if a is not b and a.layer == b.layer:
                assert abs(a.x - b.x) >= NODE_WIDTH  # no overlap within a layer
    # a node fed only by dead-letter outputs sits right of the main flow of its layer
    assert boxes["letters"].x > boxes["join"].x
    drawn = {(e.source, e.target, e.output, e.rows) for e in picture.edges}
    assert drawn == {
        ("src", "left", "output", 9),
        ("src", "right", "output", 9),
        ("left", "join", "output", 9),
        ("right", "join", "output", 8),
        ("join", "out", "output", 17),
        ("src", "letters", "error", 1),
        ("right", "letters", "error", 1),
    }


def test_edge_rows_of_a_router_read_through_several_outputs():
    steps = [
        _step("src", "source", [], 10, 10),
        _step("split", "step", ["src"], 10, 10),
        _step("a", "sink", ["split.big"], 4, 4),
        _step("b", "step", ["split.rest", "src"], 16, 16),
    ]
    rows = edge_rows(steps)
    assert rows["split", "big", "a"] == 4  # the target reads nothing else: its rows in
    assert rows["split", "rest", "b"] is None  # the report cannot tell: drawn as n/a
    assert rows["src", "output", "b"] == 10


def test_history_chart_orders_runs_and_scales_bars():
    runs = [
        {"run_id": "r2", "status": "failed", "started": "2026-01-02", "seconds": 2.0},
        {"run_id": "r1", "status": "succeeded", "started": "2026-01-01", "seconds": 4.0},
        {"run_id": "r3", "status": "succeeded", "started": "2026-01-03", "seconds": 1.0},
    ]
    chart = history_chart(runs, current_run="r3")
    assert [bar.run_id for bar in chart.bars] == ["r1", "r2", "r3"]
    assert [bar.current for bar in chart.bars] == [False, False, True]
    tallest, middle, low = (bar.height for bar in chart.bars)
    assert tallest == pytest.approx(2 * middle) == pytest.approx(4 * low)
    assert all(bar.y + bar.height == pytest.approx(chart.baseline) for bar in chart.bars)
    assert chart.bars[0].x < chart.bars[1].x < chart.bars[2].x < chart.width


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """A run that routes rows to two sinks through named outputs, run twice in one folder."""
    root = tmp_path_factory.mktemp("routed")
    data = root / "amounts.csv"
    data.write_text("id,amount\n" + "".join(f"{i},{i * 7 % 50}\n" for i in range(40)))
    spec = root / "spec.yaml"
    spec.write_text(
        f"""\
name: routed
sources:
  - {{name: src, type: ReadFromCsv, config: {{path: "{data}"}}}}
steps:
  - {{name: split, type: SplitRows, input: src, config: {{conditions: {{big: "amount > 30"}}}}}}
sinks:
  - {{name: big, type: WriteToParquet, input: split.big, config: {{path: "${{OUTPUT_DIR}}/b"}}}}
  - {{name: rest, type: WriteToParquet, input: split.rest, config: {{path: "${{OUTPUT_DIR}}/r"}}}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, split.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""
    )
    output = root / "out"
    for _ in range(2):
        assert main(["--pipeline", str(spec), "--output-dir", str(output)]) == 0
    return output


def test_routed_outputs_are_labelled_with_their_rows(routed):
    report = json.loads((routed / "run_report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    edges = {
        (a, b, c): d for a, b, c, d in HTML_EDGE.findall((routed / "run_report.html").read_text())
    }
    assert edges[("split", "big", "big")] == str(steps["big"]["rows_in"])
    assert edges[("split", "rest", "rest")] == str(steps["rest"]["rows_in"])
    assert steps["big"]["rows_in"] + steps["rest"]["rows_in"] == steps["split"]["rows_out"] == 40
    assert 0 < steps["big"]["rows_in"] < 40


def test_history_chart_shows_both_runs_this_one_outlined(routed):
    report = json.loads((routed / "run_report.json").read_text())
    bars = HISTORY_BAR.findall((routed / "run_report.html").read_text())
    assert len(bars) == 2
    assert [status for status, _, _ in bars] == ["ok", "ok"]
    assert [(run, bool(current)) for _, current, run in bars][-1] == (report["run_id"], True)
    markdown = (routed / "run_report.md").read_text()
    history = markdown.split("## Run history", 1)[1]
    assert history.count("| succeeded |") == 2
    assert f"| {report['run_id']} (this run) | succeeded |" in history


def test_report_renders_without_history(routed, tmp_path):
    for name in ("run_report.json", "run_report.context.json"):
        shutil.copy(routed / name, tmp_path / name)  # a folder without .beam_etl/history
    page = render(str(tmp_path / "run_report.json"), "html")
    assert "no earlier runs recorded" in page
    assert "data-run=" not in page
    assert 'class="node' in page  # the rest renders as before


def test_a_minimal_report_without_its_context_still_renders(routed, tmp_path):
    report = json.loads((routed / "run_report.json").read_text())
    keep = ("run_id", "pipeline", "status", "steps", "elapsed_seconds")
    (tmp_path / "old.json").write_text(json.dumps({key: report[key] for key in keep}))
    page = render(str(tmp_path / "old.json"), "html")
    assert "No dead-letter samples were gathered for this report." in page
    assert "The datasets of this run were not recorded." in page
    assert page.count('<g class="node') == len(report["steps"])
    markdown = render(str(tmp_path / "old.json"), "md")
    assert f"| split | step | SplitRows | src | {report['steps'][1]['rows_in']} |" in markdown
