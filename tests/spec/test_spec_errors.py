"""Every class of spec error is one line naming the step and the YAML line."""

import re
import textwrap

import pytest

from beam_etl.core.errors import SpecError
from beam_etl.pipeline import load_plan

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
        "description, checkpoint (step `cast`, line 11)",
    ),
    (
        "unknown-top-level-key",
        ("name: t\n", "name: t\nstpes: []\n"),
        "Unknown top-level key `stpes`. Did you mean `steps`? Accepted: name, description, "
        "sources, steps, sinks, observers, lineage (line 2)",
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


MULTI = """\
name: multi
sources:
  - {{name: a, type: ReadFromCsv, config: {{path: "{a}"}}}}
  - {{name: b, type: ReadFromCsv, config: {{path: "{b}"}}}}
steps:
  - name: joined
    type: {step}
    inputs: [a, b]
    config: {config}
sinks:
  - {{name: out, type: WriteToParquet, input: joined, config: {{path: "{out}"}}}}
  - {{name: dl, type: WriteToDeadLetters, inputs: {errors}, config: {{path: "{out}.jsonl"}}}}
"""


@pytest.mark.parametrize(
    ("step", "config", "message"),
    [
        ("JoinInputs", "{on: [nope]}", "nope"),
        ("JoinInputs", "{on: {k: missing}}", "missing"),
        ("LookupJoin", "{dimension: b, on: [k], columns: [absent]}", "absent"),
        ("UnionInputs", "{}", "incompatible"),
    ],
    ids=["join-left-key", "join-right-key", "lookup-column", "union-types"],
)
def test_steps_with_several_inputs_are_checked_at_load_time(tmp_path, step, config, message):
    (tmp_path / "a.csv").write_text("k,v\n1,2\n")
    (tmp_path / "b.csv").write_text("k,w,v\n1,x,2024-01-01\n")
    errors = "[a.error, b.error" + (", joined.error]" if step == "LookupJoin" else "]")
    text = MULTI.format(
        a=tmp_path / "a.csv",
        b=tmp_path / "b.csv",
        out=tmp_path / "out",
        step=step,
        config=config,
        errors=errors,
    )
    (tmp_path / "spec.yaml").write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        load_plan(str(tmp_path / "spec.yaml"), run_id="r")
    # The step and its line: the config line when the message names a key, else the step's.
    assert re.search(r"step `joined`, line (6|9)\)", str(info.value))


def test_a_valid_join_gives_its_schema_to_the_next_step(tmp_path):
    (tmp_path / "a.csv").write_text("k,v\n1,2\n")
    (tmp_path / "b.csv").write_text("k,w\n1,x\n")
    text = (
        MULTI.format(
            a=tmp_path / "a.csv",
            b=tmp_path / "b.csv",
            out=tmp_path / "out",
            step="JoinInputs",
            config="{on: [k]}",
            errors="[a.error, b.error, f.error]",
        )
        .replace(
            "sinks:",
            '  - {name: f, type: FilterRows, input: joined, config: {where: "w2 > 1"}}\nsinks:',
        )
        .replace("WriteToParquet, input: joined", "WriteToParquet, input: f")
    )
    (tmp_path / "spec.yaml").write_text(text)
    with pytest.raises(SpecError, match="w2"):
        load_plan(str(tmp_path / "spec.yaml"), run_id="r")


TYPED = """\
name: typed
sources:
  - name: src
    type: ReadFromCsv
    config:
      path: {csv}
      split_size_mb: ${{SPLIT_MB:-64}}
      split: "${{SPLIT:-true}}"
steps:
  - name: dedupe
    type: DropDuplicates
    input: src
    config:
      columns: ["${{KEY:-k}}"]
      buckets: "${{NP:-4}}"
      spill: ${{SPILL:-}}
      order_by: ${{ORDER:-v}}
      spill_dir: ${{OUT}}/spill-${{NP:-4}}
sinks:
  - {{name: out, type: WriteToParquet, input: dedupe, config: {{path: "{out}"}}}}
  - {{name: dl, type: WriteToDeadLetters, inputs: [src.error], config: {{path: "{out}.jsonl"}}}}
"""


def _typed_spec(tmp_path) -> str:
    (tmp_path / "in.csv").write_text("k,v,7\n1,2,3\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(TYPED.format(csv=tmp_path / "in.csv", out=tmp_path / "out"))
    return str(spec)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {},
            {"size": 64.0, "split": True, "buckets": 4, "spill": None, "order_by": "v"},
            id="defaults",
        ),
        pytest.param(
            {"SPLIT_MB": "0.5", "SPLIT": "no", "NP": "12", "SPILL": "TRUE", "ORDER": "7"},
            {"size": 0.5, "split": False, "buckets": 12, "spill": True, "order_by": "7"},
            id="from-the-environment",
        ),
    ],
)
def test_variables_are_typed_by_the_declared_type_of_their_key(
    tmp_path, monkeypatch, env, expected
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plan = load_plan(_typed_spec(tmp_path), run_id="r", variables={"OUT": str(tmp_path)})
    source, dedupe = plan.transforms["src"], plan.transforms["dedupe"]
    assert {
        "size": source._split_bytes / (1 << 20),
        "split": source.split,
        "buckets": dedupe.buckets,
        "spill": dedupe.spill,
        "order_by": dedupe.order_by,
    } == expected
    assert (type(dedupe.buckets), type(dedupe.order_by)) == (int, str)  # `str | None`: text
    assert dedupe.columns == ["k"] and type(dedupe.columns[0]) is str
    assert dedupe.spill_dir == f"{tmp_path}/spill-{expected['buckets']}"  # partly: text


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NP", "4x", r"Config key `buckets` takes an integer, but its variable gave `4x` "),
        # Values of 3 characters or more from the environment are never shown (secrets).
        ("SPLIT_MB", "64MB", r"Config key `split_size_mb` takes a number, but its variable gave "),
        ("SPLIT", "maybe", r"Config key `split` takes true or false, but its variable gave `\*"),
        ("SPILL", "2", r"Config key `spill` takes true or false, but its variable gave `2`"),
    ],
)
def test_a_variable_of_the_wrong_type_is_one_line_naming_key_and_line(
    tmp_path, monkeypatch, variable, value, message
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SpecError) as caught:
        load_plan(_typed_spec(tmp_path), run_id="r", variables={"OUT": str(tmp_path)})
    line = next(i for i, text in enumerate(TYPED.splitlines(), 1) if "{" + variable + ":" in text)
    assert re.match(message + r".*\(step `\w+`, line " + str(line) + r"\)$", str(caught.value))


def test_a_source_column_named_like_a_hidden_one_is_refused_at_load(tmp_path):
    (tmp_path / "in.csv").write_text("k,__beam_etl_file\n1,2\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.format(csv=tmp_path / "in.csv", out=tmp_path / "out"))
    with pytest.raises(SpecError) as caught:
        load_plan(str(spec), run_id="r")
    assert str(caught.value) == (
        f"Column `__beam_etl_file` of `{tmp_path}/in.csv` starts with `__beam_etl_`, which "
        "beam_etl reserves for its hidden columns (no output keeps them); rename it in the "
        "source (its header, field name or query alias) (step `src`, line 3)"
    )
