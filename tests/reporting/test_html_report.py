"""The HTML run report of the demo, opened in a real headless Chromium (DevTools protocol)."""

import json
import subprocess
import sys

import pytest
from chromium_cdp import Chromium

from beam_etl.run import main

NODES = """[...document.querySelectorAll('#graph g.node')].map(g => ({
  step: g.dataset.step, rows_in: +g.dataset.rowsIn, rows_out: +g.dataset.rowsOut,
  rejected: +g.dataset.rejected, text: g.textContent,
  width: g.getBoundingClientRect().width, height: g.getBoundingClientRect().height}))"""
EDGES = """[...document.querySelectorAll('#graph g.edge')].map(g => ({
  from: g.dataset.from, to: g.dataset.to, output: g.dataset.output, rows: g.dataset.rows,
  label: g.querySelector('text').textContent, length: g.querySelector('path').getTotalLength()}))"""
TABLE = """[...document.querySelectorAll('{selector} tbody tr')].map(
  tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim()))"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the bundled demo as a user would; return its output folder and report."""
    output = tmp_path_factory.mktemp("demo") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.run", "--output-dir", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"html report: {output / 'run_report.html'}" in result.stdout.splitlines()
    return output, json.loads((output / "run_report.json").read_text())


@pytest.fixture(scope="module")
def page(demo, tmp_path_factory):
    """The demo's HTML report, loaded in headless Chromium."""
    output, _ = demo
    with Chromium(str(tmp_path_factory.mktemp("chromium") / "profile")) as browser:
        yield browser.open((output / "run_report.html").as_uri())


def expected_edges(steps):
    """(from, to, output, rows) of every input of every step, from the JSON report."""
    by_name = {s["name"]: s for s in steps}
    edges = set()
    for step in steps:
        for ref in step["inputs"]:
            node, _, output = ref.partition(".")
            source = by_name[node]
            rows = source["rows_rejected"] if output == "error" else source["rows_out"]
            edges.add((node, step["name"], output or "output", rows))
    return edges


def test_graph_draws_every_step_with_its_counts(demo, page):
    _, report = demo
    nodes = {node["step"]: node for node in page.evaluate(NODES)}
    assert set(nodes) == {s["name"] for s in report["steps"]}
    for step in report["steps"]:
        node = nodes[step["name"]]
        assert node["width"] > 100 and node["height"] > 40  # laid out and drawn
        assert (node["rows_in"], node["rows_out"], node["rejected"]) == (
            step["rows_in"],
            step["rows_out"],
            step["rows_rejected"],
        )
        assert f"in {step['rows_in']:,} · out {step['rows_out']:,}" in node["text"]
        if step["rows_rejected"]:
            assert f"✕ {step['rows_rejected']:,} rejected" in node["text"]
    assert "in 3,032 · out 3,029" in nodes["orders"]["text"]  # the demo's CSV: 3,032 records


def test_graph_edges_carry_the_rows_that_went_along_them(demo, page):
    output, report = demo
    edges = page.evaluate(EDGES)
    drawn = {(e["from"], e["to"], e["output"], int(e["rows"])) for e in edges}
    assert len(edges) == len(drawn) == 16  # 9 main edges and 7 dead-letter edges
    assert drawn == expected_edges(report["steps"])
    assert all(e["length"] > 10 for e in edges)
    assert all(e["label"] == f"{int(e['rows']):,}" for e in edges)
    letters = (output / "dead_letters.jsonl").read_text().splitlines()
    into_dead_letters = sum(rows for _, to, _, rows in drawn if to == "dead_letters")
    assert into_dead_letters == len(letters) == 20


def test_counts_timings_and_quality_table_render(demo, page):
    _, report = demo
    totals = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-total]')]"
        ".map(e => [e.dataset.total, e.textContent]))"
    )
    assert totals["read"] == f"{report['steps'][0]['rows_in']:,}"
    assert totals["rejected"] == f"{sum(s['rows_rejected'] for s in report['steps']):,}"
    rows = page.evaluate(TABLE.format(selector="#steps"))
    assert [row[0] for row in rows] == [s["name"] for s in report["steps"]]
    for row, step in zip(rows, report["steps"]):
        assert row[4:9] == [
            f"{step['rows_in']:,}",
            f"{step['rows_out']:,}",
            f"{step['rows_rejected']:,}",
            f"{step['rows_dropped']:,}",
            f"{step['seconds']:.3f}",
        ]
    quality = page.evaluate(TABLE.format(selector="#quality"))
    checks = report["quality"]["checks"]
    assert [(r[1], r[5], r[7]) for r in quality] == [
        (c["check"], f"{c['rows_failed']:,}", c["outcome"]) for c in checks
    ]
    assert ("regex_customer_email", "warned") in {(r[1], r[7]) for r in quality}
    assert page.evaluate("document.querySelector('#quality').getBoundingClientRect().height") > 50
    assert page.evaluate("document.querySelector('#status').textContent") == "succeeded"
    bars = page.evaluate(
        "[...document.querySelectorAll('#history svg rect')].map(r => "
        "[r.dataset.run, r.classList.contains('current'), r.getBoundingClientRect().height])"
    )
    assert len(bars) == 1 and bars[0][:2] == [report["run_id"], True] and bars[0][2] > 10


def test_dead_letter_samples_are_capped_per_reason(demo, page):
    output, _ = demo
    letters = [json.loads(line) for line in (output / "dead_letters.jsonl").open()]
    per_reason = {}
    for letter in letters:
        per_reason[letter["reason"]] = per_reason.get(letter["reason"], 0) + 1
    shown = page.evaluate(
        "[...document.querySelectorAll('table.letters')].map(t => "
        "[t.dataset.reason, t.querySelectorAll('tbody tr').length])"
    )
    assert dict(shown) == {reason: min(count, 5) for reason, count in per_reason.items()}
    headings = page.evaluate(
        "[...document.querySelectorAll('#dead-letters h3')].map(h => h.textContent)"
    )
    assert sorted(headings) == sorted(f"{r} · {n}" for r, n in per_reason.items())
    datasets = page.evaluate(TABLE.format(selector="#datasets"))
    assert datasets[0][:4] == ["in", "orders", "ReadFromCsv", "file"]
    assert datasets[0][4].endswith("orders.csv")
    assert {row[1] for row in datasets if row[0] == "out"} == {
        "orders_parquet",
        "orders_sqlite",
        "dead_letters",
    }


def test_no_request_leaves_the_page(demo, page):
    output, _ = demo
    assert page.requests() == [(output / "run_report.html").as_uri()]
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0
    assert page.evaluate("window.__violations") == []  # nothing even tried (CSP would block it)
    assert page.evaluate("document.scripts.length") == 0


def _failing_spec(tmp_path):
    data = tmp_path / "orders.csv"
    data.write_text("order_id,amount\n1,10\n2,20\n2,30\nx,40\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""\
name: duplicate_orders
sources:
  - name: orders
    type: ReadFromCsv
    config: {{path: "{data}", columns: {{order_id: int64}}}}
steps:
  - name: unique
    type: CheckUnique
    input: orders
    config: {{columns: [order_id], severity: fail}}
sinks:
  - {{name: out, type: WriteToParquet, input: unique, config: {{path: "${{OUTPUT_DIR}}/out"}}}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, unique.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects.jsonl"}}
"""
    )
    return str(spec)


def test_failed_run_report_renders_with_its_error(tmp_path, capsys):
    output = tmp_path / "out"
    code = main(["--pipeline", _failing_spec(tmp_path), "--output-dir", str(output)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: A quality check failed")
    assert f"html report: {output / 'run_report.html'}" in err
    report = json.loads((output / "run_report.json").read_text())
    assert report["status"] == "failed"
    with Chromium(str(tmp_path / "profile")) as browser:
        page = browser.open((output / "run_report.html").as_uri())
        assert page.evaluate("document.querySelector('#status').textContent") == "failed"
        assert page.evaluate("document.querySelector('#error').textContent") == report["error"]
        assert "unique_order_id" in page.evaluate("document.querySelector('#error').textContent")
        nodes = page.evaluate(NODES)
        assert {n["step"]: n["rejected"] for n in nodes} == {
            s["name"]: s["rows_rejected"] for s in report["steps"]
        }
        assert nodes[0]["rejected"] == 1  # `x` is no int64
        quality = page.evaluate(TABLE.format(selector="#quality"))
        assert [(r[1], r[7]) for r in quality] == [("unique_order_id", "failed")]
        written = page.evaluate(
            "document.querySelector('[data-total=written]').parentElement.textContent"
        )
        assert "rows staged, none published" in written
        note = page.evaluate("document.querySelector('#dead-letters').textContent")
        assert "A failed run publishes nothing" in note
        assert page.requests() == [(output / "run_report.html").as_uri()]
    assert not (output / "rejects.jsonl").exists()


def test_the_request_recorder_sees_a_request_leaving_a_page(tmp_path):
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    with Chromium(str(tmp_path / "profile")) as browser:
        page = browser.open(leaky.as_uri())
        assert page.requests() == [leaky.as_uri(), "http://127.0.0.1:9/pixel.png"]


def test_missing_chromium_fails_naming_the_setup_script(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on it
    with pytest.raises(pytest.fail.Exception, match=r"scripts/services\.sh up chromium"):
        Chromium(str(tmp_path / "profile"))
