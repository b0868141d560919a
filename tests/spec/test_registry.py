"""Third-party types through the `beam_etl.transforms` entry-point group, and the report's
conservation check catching a transform that loses rows."""

import json
import sys
import textwrap

import pytest

from beam_etl.core import catalogue as registry
from beam_etl.run import main

PLUGIN = '''
from typing import Any, NamedTuple

import apache_beam as beam


class Gate(NamedTuple):
    passed: bool
    message: str


class Checked(NamedTuple):
    output: Any
    gate: Any


class RequireRows(beam.PTransform):
    """Pass batches through; the gate fails when fewer than `minimum` rows arrive."""

    def __init__(self, minimum: int) -> None:
        super().__init__()
        self.minimum = minimum

    def expand(self, batches):
        count = batches | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
        gate = count | beam.Map(
            lambda n, low: Gate(n >= low, f"{n} rows, fewer than {low}"), self.minimum
        )
        return Checked(batches, gate)


class LoseRows(beam.PTransform):
    """Keep only the first batch's first row (a buggy third-party step)."""

    def __init__(self, keep: int = 1) -> None:
        super().__init__()
        self.keep = keep

    def expand(self, batches):
        return batches | beam.Map(lambda batch: batch.slice(0, self.keep))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A real installed distribution (a .dist-info on sys.path) declaring an entry point."""
    site = tmp_path / "site"
    (site / "acme_steps-1.0.dist-info").mkdir(parents=True)
    (site / "acme_steps-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-steps\nVersion: 1.0\n"
    )
    (site / "acme_steps-1.0.dist-info" / "entry_points.txt").write_text(
        "[beam_etl.transforms]\nLoseRows = acme_steps:LoseRows\n"
        "RequireRows = acme_steps:RequireRows\n"
    )
    (site / "acme_steps.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    registry.catalogue.cache_clear()
    yield
    registry.catalogue.cache_clear()
    sys.modules.pop("acme_steps", None)


def test_entry_point_types_are_listed_with_their_arguments(plugin, capsys):
    assert registry.lookup("LoseRows").target == "acme_steps:LoseRows"
    assert main(["--list-transforms"]) == 0
    out = capsys.readouterr().out
    assert "LoseRows (any)" in out
    assert "keep (default: 1)" in out


def test_a_step_that_loses_rows_fails_the_run(plugin, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("a\n1\n2\n3\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        textwrap.dedent(f"""\
        sources:
          - {{name: src, type: ReadFromCsv, config: {{path: "{tmp_path}/in.csv"}}}}
        steps:
          - {{name: lose, type: LoseRows, input: src}}
        sinks:
          - {{name: out, type: WriteToSqlite, input: lose,
             config: {{database: "{tmp_path}/w.sqlite", table: t}}}}
          - {{name: dl, type: WriteToDeadLetters, input: src.error,
             config: {{path: "{tmp_path}/dl.jsonl"}}}}
        """)
    )
    assert main(["--pipeline", str(spec), "--output-dir", str(tmp_path)]) == 1
    assert "error: Row counts do not add up: lose" in capsys.readouterr().err
    report = json.loads((tmp_path / "run_report.json").read_text())
    lose = next(step for step in report["steps"] if step["name"] == "lose")
    assert (lose["rows_in"], lose["rows_out"], lose["balanced"]) == (3, 1, False)
    assert report["status"] == "failed"


def _gated_spec(tmp_path, minimum: int) -> str:
    (tmp_path / "in.csv").write_text("a\n1\n2\n3\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        textwrap.dedent(f"""\
        sources:
          - {{name: src, type: ReadFromCsv, config: {{path: "{tmp_path}/in.csv"}}}}
        steps:
          - {{name: enough, type: RequireRows, input: src, config: {{minimum: {minimum}}}}}
        sinks:
          - {{name: out, type: WriteToSqlite, input: enough,
             config: {{database: "{tmp_path}/w.sqlite", table: t}}}}
          - {{name: dl, type: WriteToDeadLetters, input: src.error,
             config: {{path: "{tmp_path}/dl.jsonl"}}}}
        """)
    )
    return str(spec)


def test_a_failed_gate_stops_publishing_and_fails_the_run(plugin, tmp_path, capsys):
    import sqlite3

    spec = _gated_spec(tmp_path, minimum=1)
    assert main(["--pipeline", spec, "--output-dir", str(tmp_path), "--run-id", "ok"]) == 0
    spec = _gated_spec(tmp_path, minimum=5)
    assert main(["--pipeline", spec, "--output-dir", str(tmp_path), "--run-id", "no"]) == 1
    err = capsys.readouterr().err
    assert "error: A quality check failed: 3 rows, fewer than 5; nothing was published" in err
    runs = sqlite3.connect(tmp_path / "w.sqlite").execute("SELECT run_id FROM _beam_etl_runs")
    assert runs.fetchall() == [("ok",)]  # the failed run published nothing
