"""Every class of spec error is one line naming the step and the YAML line."""

import textwrap

import pytest

from beam_etl.errors import SpecError
from beam_etl.spec import load_plan

GOOD = """\
name: t
sources:
  - name: src
    type: ReadFromCsv
    config:
      path: {csv}
steps:
  - name: cast
    type: CastColumns
    input: src
    config:
      columns: {{v: int64}}
sinks:
  - name: out
    type: WriteToParquet
    input: cast
    config:
      path: {out}
  - name: bad
    type: WriteToDeadLetters
    inputs: [src.error, cast.error]
    config:
      path: {out}/dl.jsonl
"""


@pytest.fixture
def spec_file(tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text("k,v\n1,2\n")

    def write(text: str, replace: tuple[str, str] | None = None) -> str:
        body = GOOD.format(csv=csv, out=tmp_path / "out") if text == "GOOD" else text
        if replace:
            assert replace[0] in body, replace[0]
            body = body.replace(*replace)
        path = tmp_path / "spec.yaml"
        path.write_text(textwrap.dedent(body))
        return str(path)

    return write


def test_the_good_spec_is_valid(spec_file):
    plan = load_plan(spec_file("GOOD"), run_id="r")
    assert [n.name for n in plan.ordered] == ["src", "cast", "out", "bad"]


CASES = [
    (
        "unknown-type",
        ("type: CastColumns", "type: CastColumn"),
        "Unknown transform type `CastColumn`. Did you mean `CastColumns`? (step `cast`, line 9)",
    ),
    (
        "unknown-config-key",
        ("columns: {v: int64}", "colums: {v: int64}"),
        "Unknown config key `colums` for `CastColumns`. Did you mean `columns`? Accepted: "
        "columns (step `cast`, line 12)",
    ),
    (
        "missing-config-key",
        ("      columns: {v: int64}\n", "      {}\n"),
        "Missing config key(s) `columns` for `CastColumns` (step `cast`, line 8)",
    ),
    (
        "misspelled-input",
        ("input: src\n", "input: scr\n"),
        "Unknown input `scr`. Did you mean `src`? (step `cast`, line 10)",
    ),
    (
        "missing-input",
        ("    input: src\n", ""),
        "Missing `input`: name the node(s) this one reads (step `cast`, line 8)",
    ),
    (
        "unknown-output",
        ("inputs: [src.error, cast.error]", "inputs: [src.eror, cast.error]"),
        "`src` has no output `eror` (outputs: output, error) (step `bad`, line 21)",
    ),
    (
        "unconsumed-error-output",
        ("inputs: [src.error, cast.error]", "inputs: [src.error]"),
        "Output `cast.error` is not read by any step or sink; add it to the inputs of a sink "
        "(for example `WriteToDeadLetters`) (step `cast`, line 8)",
    ),
    (
        "sink-as-input",
        ("    input: cast\n    config:\n      path: ", "    input: bad\n    config:\n      path: "),
        "Input `bad` is a sink; sinks have no output to read (step `out`, line 16)",
    ),
    (
        "wrong-section",
        ("type: CastColumns", "type: WriteToSqlite"),
        "`WriteToSqlite` is a sink; list it under `sinks` (step `cast`, line 9)",
    ),
    (
        "duplicate-name",
        ("  - name: bad\n", "  - name: cast\n"),
        "Name `cast` is used twice (first at line 8) (step `cast`, line 19)",
    ),
    (
        "unknown-node-key",
        ("    input: src\n", "    input: src\n    inptus: [x]\n"),
        "Unknown key `inptus`. Did you mean `inputs`? Accepted: name, type, config, input, inputs, "
        "description (step `cast`, line 11)",
    ),
    (
        "unknown-top-level-key",
        ("name: t\n", "name: t\nstpes: []\n"),
        "Unknown top-level key `stpes`. Did you mean `steps`? Accepted: name, description, "
        "sources, steps, sinks (line 2)",
    ),
    (
        "bad-config-value",
        ("columns: {v: int64}", "columns: {v: money}"),
        "Unknown type `money`; use one of",
    ),
    (
        "unknown-column",
        ("columns: {v: int64}", "columns: {w: int64}"),
        "Column(s) `w` not in the input (columns: k, v) (step `cast`, line 12)",
    ),
    (
        "source-with-input",
        ("    type: ReadFromCsv\n", "    type: ReadFromCsv\n    input: cast\n"),
        "A source takes no `input` (step `src`, line 5)",
    ),
    ("invalid-yaml", ("name: t\n", "name: [t\n"), "Invalid YAML in"),
    (
        "unset-variable",
        ("name: t\n", "name: ${NO_SUCH_VARIABLE_X}\n"),
        "Variable `${NO_SUCH_VARIABLE_X}` is not set; export it or write "
        "`${NO_SUCH_VARIABLE_X:-default}` (line 1)",
    ),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_spec_error_message(spec_file, change, message):
    with pytest.raises(SpecError) as caught:
        load_plan(spec_file("GOOD", change), run_id="r")
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(message) if message.endswith(("in", "of")) else text == message


def test_cycle_is_reported_with_its_path(spec_file, tmp_path):
    text = GOOD.format(csv=tmp_path / "in.csv", out=tmp_path / "out")
    text = text.replace("    input: src\n", "    inputs: [src, again]\n")
    text = text.replace(
        "sinks:\n",
        "  - name: again\n    type: CastColumns\n    input: cast\n    config:\n"
        "      columns: {v: int64}\nsinks:\n",
    ).replace("inputs: [src.error, cast.error]", "inputs: [src.error, cast.error, again.error]")
    with pytest.raises(SpecError, match=r"Cycle: cast -> again -> cast \(step `cast`, line 8\)"):
        load_plan(spec_file(text), run_id="r")


def test_expression_errors_name_step_line_and_position(spec_file, tmp_path):
    text = GOOD.format(csv=tmp_path / "in.csv", out=tmp_path / "out").replace(
        "    type: CastColumns\n    input: src\n    config:\n      columns: {v: int64}\n",
        "    type: FilterRows\n    input: src\n    config:\n      where: vv > 1\n",
    )
    with pytest.raises(SpecError) as caught:
        load_plan(spec_file(text), run_id="r")
    assert str(caught.value) == (
        "Unknown column `vv` at position 0 in expression `vv > 1`. Did you mean `v`? "
        "(step `cast`, line 12)"
    )


def test_secret_values_never_appear_in_errors(spec_file, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", "hunter2-secret")
    path = spec_file("GOOD", ("columns: {v: int64}", "columns: {v: '${PG_PASSWORD}'}"))
    with pytest.raises(SpecError) as caught:
        load_plan(path, run_id="r")
    assert "hunter2" not in str(caught.value)
    assert "Unknown type `***`" in str(caught.value)
