"""Third-party types through the `beam_etl.transforms` entry-point group, and the report's
conservation check catching a transform that loses rows."""

import json
import sys
import textwrap

import pytest

from beam_etl.run import main
from beam_etl.spec import registry

PLUGIN = '''
import apache_beam as beam


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
