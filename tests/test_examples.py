"""Every example in examples/ runs, and gives what its comments promise."""

import json
import pathlib
import sqlite3
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from beam_etl.run import main

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("spec", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_spec_runs(spec, tmp_path):
    assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "run_report.json").read_text())
    assert report["status"] == "succeeded"


def test_customers_example_outputs(tmp_path):
    spec = EXAMPLES / "customers_to_sqlite.yaml"
    assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path)]) == 0
    rows = sqlite3.connect(tmp_path / "customers.sqlite").execute(
        "SELECT customer_id, email, grade, score FROM customers ORDER BY customer_id"
    )
    assert rows.fetchall() == [
        (1, "ann@example.com", "A", 81.5),
        (2, "bo@example.com", None, None),
        (3, "dan@example.com", "B", 67.0),
    ]
    letters = (tmp_path / "customers_rejected.jsonl").read_text().splitlines()
    assert [(json.loads(x)["line"], json.loads(x)["reason"]) for x in letters] == [
        (7, "cast_failed"),
        (8, "cast_failed"),
    ]


def test_python_api_example(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "good_customers")
    assert sorted(table.column("customer_id").to_pylist()) == [1, 3, 4]
    assert len((tmp_path / "rejected.jsonl").read_text().splitlines()) == 1


def test_custom_step_example(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_step.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "scores")
    scores = dict(zip(table.column("customer_id").to_pylist(), table.column("score").to_pylist()))
    assert scores == pytest.approx({1: 0.815, 3: 0.67, 4: 0.9225, 5: 0.55})
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").open()]
    assert [(r["step"], r["reason"], r["line"]) for r in rejected] == [
        ("Clean/cast", "cast_failed", 8)
    ]


def test_revenue_example_outputs(tmp_path):
    spec = EXAMPLES / "revenue_by_region.yaml"
    assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path)]) == 0
    table = (tmp_path / "revenue_by_region.md").read_text().splitlines()
    assert table[0] == "| region | orders | revenue | average |"
    regions = sorted(line.split("|")[1].strip() for line in table[2:])
    assert regions == ["Americas", "EU", "Europe (non-EU)"]
    misses = [json.loads(x) for x in (tmp_path / "revenue_rejects.jsonl").open()]
    assert {m["reason"] for m in misses} >= {"lookup_miss", "malformed_csv"}
    assert all("JP" in m["message"] for m in misses if m["reason"] == "lookup_miss")
