"""Spec fingerprints: a step's changes everywhere upstream, never downstream."""

import linecache
import os
import time

from beam_etl.checkpoints.fingerprint import code_identity, file_identity, fingerprints
from beam_etl.core.retries import with_retry
from beam_etl.pipeline import load_plan

SPEC = """name: f
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{folder}/*.csv"}}
steps:
  - name: cast
    type: CastColumns
    input: src
    config: {{columns: {{id: {id_type}}}}}
  - name: chained
    type: Chain
    input: cast
    config:
      steps:
        - {{type: MapBatches, config: {{function: "fpfns:{function}"}}}}
  - name: keep
    type: FilterRows
    input: chained
    config: {{where: "{where}"}}
sinks:
  - name: out
    type: WriteToCsv
    inputs: [keep, src.error, cast.error, chained.error, keep.error]
    config: {{path: "{folder}/out/result.csv"}}
"""


def _prints(tmp_path, **changes) -> dict[str, str]:
    values = {"id_type": "int64", "function": "same", "where": "id > 0", **changes}
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(folder=tmp_path, **values))
    plan = load_plan(str(spec), run_id="r")
    return fingerprints(plan.ordered, plan.transforms)


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [name for name in before if before[name] != after[name]]


def test_a_change_invalidates_the_step_and_everything_after_it(tmp_path, monkeypatch):
    (tmp_path / "fpfns.py").write_text(
        "def same(b):\n    return b\n\n\ndef other(b):\n    return b\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "a.csv").write_text("id\n1\n")
    before = _prints(tmp_path)
    assert _prints(tmp_path) == before  # deterministic
    assert _changed(before, _prints(tmp_path, where="id > 1")) == ["keep", "out"]
    assert _changed(before, _prints(tmp_path, id_type="int32")) == [
        "cast",
        "chained",
        "keep",
        "out",
    ]
    assert _changed(before, _prints(tmp_path, function="other")) == ["chained", "keep", "out"]
    # A chained user function counts by its code: the same name with another body changes it.
    (tmp_path / "fpfns.py").write_text("def same(b):\n    return b.slice(0)\n")
    linecache.checkcache()
    assert _changed(before, _prints(tmp_path)) == ["chained", "keep", "out"]
    (tmp_path / "fpfns.py").write_text("def same(b):\n    return b\n")
    linecache.checkcache()
    assert _prints(tmp_path) == before
    (tmp_path / "b.csv").write_text("id\n2\n")  # the glob matches one more file
    assert _changed(before, _prints(tmp_path)) == ["src", "cast", "chained", "keep", "out"]


def test_file_identity_is_path_size_and_modification_time(tmp_path):
    data = tmp_path / "a.csv"
    data.write_text("id\n1\n")
    first = file_identity(str(data))
    assert first == [[str(data), 5, os.stat(data).st_mtime_ns]]
    os.utime(data, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert file_identity(str(data)) != first
    assert file_identity(str(tmp_path / "missing.csv")) == [
        [str(tmp_path / "missing.csv"), None, None]
    ]


def _function(batch):
    return batch


def test_code_identity_sees_through_retry_wrappers():
    plain = code_identity(_function)
    assert plain is not None and len(plain) == 64
    assert code_identity(with_retry(_function, {"attempts": 2})) == plain
    assert code_identity(len).endswith(":len")  # no source: the qualified name
