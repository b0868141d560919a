"""Bad values and bad specs, one row each: what goes in, which step, and exactly what comes out.

A case is an input file (CSV unless `write` says otherwise) read by a source, one step of a
spec, and what must come out: every dead letter by reason, line and message, and the rows kept.
For a bad spec or a source that must refuse its input, the case gives instead the one-line
error and how many seconds finding it may take. A new class of bad input is one row of `CASES`.

The spec is written as a user would write it and loaded with `load_plan` (so validation,
variables and limits are exercised); its sources and steps then run on beam_etl's LocalRunner.
"""

import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import fastavro
import openpyxl
import pytest
import yaml
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.catalogue import SOURCE, STEP, lookup, outputs_of
from beam_etl.core.errors import BeamEtlError
from beam_etl.pipeline import load_plan

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Case:
    """One bad input and what beam_etl must make of it."""

    data: Any = "id,a\n1,2\n"  # the input: CSV text, or what `write` writes
    read: dict = field(default_factory=dict)  # source config besides `path`
    step: tuple[str, dict] | None = None  # (type, config) of the step under test
    rejects: tuple[tuple[str, int, str], ...] = ()  # every dead letter: reason, line, message re
    kept: list[dict] | int | None = None  # the visible rows out (any order), or their number
    error: str | None = None  # instead: the one-line error (regex), from loading or running
    within: float | None = 1.0  # seconds loading may take before `error` (None: not timed)
    spec: str | None = None  # a whole spec instead of the generated one ({path}, {tmp})
    env: dict[str, str] = field(default_factory=dict)  # environment variables for `${...}`
    source: str = "ReadFromCsv"
    write: Callable[[str, Any], None] | None = None  # writes `data` to the input path
    suffix: str = ".csv"
    outputs: tuple[str, ...] = ("output",)  # the step's outputs besides `error`; `kept`: first


def csv_rows(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


def one_bad_in_1000(bad: str, good: Callable[[int], str]) -> str:
    """1,000 data rows (lines 2 to 1001); row 500 (line 501) is `bad`."""
    return csv_rows("id,a", [bad if i == 500 else good(i) for i in range(1, 1001)])


def write_xlsx(path: str, rows: list[list[Any]]) -> None:
    """Rows of cells; text starting with `=` is a formula, saved without a value (openpyxl)."""
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)


def write_avro(path: str, records: list[dict]) -> None:
    fields = [{"name": name, "type": ["null", "long"]} for name in records[0]]
    schema = {"type": "record", "name": "Row", "fields": fields}
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records)


def deep_spec(expression: str) -> str:
    return (
        GENERATED_HEAD
        + f"""\
steps:
  - name: step
    type: DeriveColumns
    input: src
    config:
      columns: {{r: "{expression}"}}
sinks:
  - name: out
    type: WriteToParquet
    input: step
    config:
      path: "{{tmp}}/o"
"""
    )


GENERATED_HEAD = """\
name: fault
sources:
  - name: src
    type: ReadFromCsv
    config:
      path: "{path}"
"""

BILLION_LAUGHS = (
    'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        for previous, name in zip("abcdefgh", "bcdefghi")
    )
)
CASES = [
    # --- expressions: one bad value costs one row ----------------------------------------
    pytest.param(
        Case(
            data=one_bad_in_1000("500,0", lambda i: f"{i},{i % 7 + 1}"),
            step=("DeriveColumns", {"columns": {"r": "id / a"}}),
            rejects=(
                ("expression_failed", 501, r"`id / a` for column `r`.*divide by zero.*`a` = 0"),
            ),
            kept=999,
        ),
        id="derive-divide-by-zero-in-1-row-of-1000",
    ),
    pytest.param(
        Case(
            data=one_bad_in_1000(f"500,{INT64_MAX}", lambda i: f"{i},{i}"),
            read={"columns": {"a": "int64"}},
            step=("DeriveColumns", {"columns": {"b": "a + 1"}}),
            rejects=(("expression_failed", 501, rf"overflow in `\+`.*`a` = {INT64_MAX}"),),
            kept=999,
        ),
        id="derive-int64-overflow-in-1-row-of-1000",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,a", ["1,2", "2,0", "3,-9223372036854775808", "4,5"]),
            read={"columns": {"a": "int64"}},
            step=("DeriveColumns", {"columns": {"m": "id % a", "n": "-a"}}),
            rejects=(
                ("expression_failed", 3, r"column `m`.*divide by zero in `%`"),
                ("expression_failed", 4, r"column `n`.*overflow in `-`"),
            ),
            kept=[{"id": 1, "a": 2, "m": 1, "n": -2}, {"id": 4, "a": 5, "m": 4, "n": -5}],
        ),
        id="derive-remainder-by-zero-and-negated-minimum",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,a", ["1,2", "2,0", "3,4"]),
            step=("DeriveColumns", {"columns": {"r": "if(a = 0, null, id / a)"}}),
            kept=[
                {"id": 1, "a": 2, "r": 0.5},
                {"id": 2, "a": 0, "r": None},
                {"id": 3, "a": 4, "r": 0.75},
            ],
        ),
        id="derive-guarded-division-never-fails",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,s", ["1,7", "2,seven", "3,9"]),
            read={"columns": {"s": "string"}},
            step=("DeriveColumns", {"columns": {"n": "cast(s, 'int64') * 2"}}),
            rejects=(("expression_failed", 3, r"in `cast`.*`s` = 'seven'"),),
            kept=[{"id": 1, "s": "7", "n": 14}, {"id": 3, "s": "9", "n": 18}],
        ),
        id="derive-cast-of-bad-text",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,a", ["1,2", "2,0", "3,1", "4,8"]),
            step=("FilterRows", {"where": "8 / a > 2"}),
            rejects=(("expression_failed", 3, r"Filter `8 / a > 2` failed: divide by zero"),),
            kept=[{"id": 1, "a": 2}, {"id": 3, "a": 1}],
        ),
        id="filter-divide-by-zero",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,a", ["1,2", "2,0", "3,1", "4,8"]),
            step=("SplitRows", {"conditions": {"high": "8 / a > 2"}}),
            outputs=("high", "rest"),
            rejects=(("expression_failed", 3, r"Condition `8 / a > 2` .* divide by zero"),),
            kept=[{"id": 1, "a": 2}, {"id": 3, "a": 1}],
        ),
        id="split-divide-by-zero",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,größe", ["1,2", "2,5"]),
            step=("FilterRows", {"where": "größe * 2 > 5"}),
            kept=[{"id": 2, "größe": 5}],
        ),
        id="expression-unicode-identifier",
    ),
    # --- casts: a value that does not keep its meaning is `cast_failed` ------------------
    pytest.param(
        Case(
            data=csv_rows("id,x", ["1,1.5", "2,abc", "3,7"]),
            read={"columns": {"x": "decimal(10,2)"}},
            rejects=(("cast_failed", 3, r"`abc` in column `x` is not a valid decimal\(10,2\)"),),
            kept=2,
        ),
        id="csv-decimal-not-a-number",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,x", ["1,1.5", "2,123456789.1", "3,99999999.99"]),
            read={"columns": {"x": "decimal(10,2)"}},
            rejects=(("cast_failed", 3, r"`123456789.1` .* not a valid decimal\(10,2\)"),),
            kept=2,
        ),
        id="csv-decimal-precision-overflow",
    ),
    pytest.param(
        Case(
            data='{"id": 1, "x": "1.5"}\n{"id": 2, "x": 123456789.1}\n{"id": 3, "x": "1e10"}\n',
            source="ReadFromJson",
            suffix=".jsonl",
            read={"columns": {"x": "decimal(10,2)"}},
            rejects=(
                ("cast_failed", 2, r"`123456789.1` .* not a valid decimal\(10,2\)"),
                ("cast_failed", 3, r"`1e10`"),
            ),
            kept=1,
        ),
        id="json-decimal-precision-overflow",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,x", ["1,1.5", "2,abc", "3,123456789.1", "4,1.555", "5,99999999.99"]),
            read={"columns": {"x": "string"}},
            step=("CastColumns", {"columns": {"x": "decimal(10,2)"}}),
            rejects=(
                ("cast_failed", 3, r"`abc`"),
                ("cast_failed", 4, r"`123456789.1`"),
                ("cast_failed", 5, r"`1.555`"),
            ),
            kept=2,
        ),
        id="cast-decimal-text-precision-and-scale",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,x", ["1," + "9" * 36 + ".99", "2," + "1" * 40]),
            read={"columns": {"x": "string"}},
            step=("CastColumns", {"columns": {"x": "decimal(38,2)"}}),
            rejects=(("cast_failed", 3, r"not a valid decimal\(38,2\)"),),
            kept=1,
        ),
        id="cast-huge-decimal",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,x", ["1,1.5", "2,NaN", "3,inf", "4,-3"]),
            read={"columns": {"x": "float64"}},
            step=("CastColumns", {"columns": {"x": "int64"}}),
            rejects=(
                ("cast_failed", 2, r"`1.5` .* not a valid int64"),
                ("cast_failed", 3, r"`nan` .* not a valid int64"),
                ("cast_failed", 4, r"`inf` .* not a valid int64"),
            ),
            kept=[{"id": 4, "x": -3}],
        ),
        id="cast-nan-inf-and-fraction-to-int",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,x", ["1,1e400", "2,inf", "3,2.5", "4,1e39"]),
            read={"columns": {"x": "string"}},
            step=("CastColumns", {"columns": {"x": "float32"}}),
            rejects=(
                ("cast_failed", 2, r"`1e400` in column `x` is out of range for float32"),
                ("cast_failed", 5, r"`1e39` .* out of range"),
            ),
            kept=[{"id": 2, "x": float("inf")}, {"id": 3, "x": 2.5}],
        ),
        id="cast-float-overflow-is-not-infinity",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,d", ["1,2024-02-29", "2,2024-02-30", "3,2023-02-29", "4,2024-13-01"]),
            read={"columns": {"d": "date"}},
            rejects=(
                ("cast_failed", 3, r"`2024-02-30` .* not a valid date"),
                ("cast_failed", 4, r"`2023-02-29`"),
                ("cast_failed", 5, r"`2024-13-01`"),
            ),
            kept=1,
        ),
        id="csv-dates-that-do-not-exist",
    ),
    pytest.param(
        Case(
            data=csv_rows(
                "id,t",
                [
                    "1,2024-01-01T10:00:00+02:00",
                    "2,2024-01-01 10:00:00+25:00",
                    "3,2024-01-01 10:00:00 Europe/Berlin",
                    "4,2024-01-01 10:00:00",
                    "5,2024-03-31T02:30:00Z",
                ],
            ),
            read={"columns": {"t": "string"}},
            step=("CastColumns", {"columns": {"t": "timestamp[us, UTC]"}}),
            rejects=(
                ("cast_failed", 3, r"`2024-01-01 10:00:00\+25:00`"),
                ("cast_failed", 4, r"Europe/Berlin"),
                ("cast_failed", 5, r"`2024-01-01 10:00:00` .* timestamp\[us, UTC\]"),  # no zone
            ),
            kept=2,
        ),
        id="cast-timestamps-with-odd-zones",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,n", ["1,", "2,  ", "3, 4 "]),
            read={"columns": {"n": "string"}, "null_values": [""]},
            step=("CastColumns", {"columns": {"n": "int64"}}),
            rejects=(("cast_failed", 3, r"Value `  ` in column `n` is not a valid int64"),),
            kept=[{"id": 1, "n": None}, {"id": 3, "n": 4}],
        ),
        id="cast-empty-is-null-but-blank-is-not-a-number",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,n", ["1,9223372036854775807", "2,9223372036854775808"]),
            read={"columns": {"n": "int64"}},
            rejects=(("cast_failed", 3, r"`9223372036854775808` .* not a valid int64"),),
            kept=1,
        ),
        id="csv-int64-out-of-range",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,b", ["1,true", "2,maybe", "3,0"]),
            read={"columns": {"b": "string"}},
            step=("CastColumns", {"columns": {"b": "bool"}}),
            rejects=(("cast_failed", 3, r"`maybe` .* not a valid bool"),),
            kept=[{"id": 1, "b": True}, {"id": 3, "b": False}],
        ),
        id="cast-bool-from-unknown-word",
    ),
    # --- checks ---------------------------------------------------------------------------
    pytest.param(
        Case(
            data=csv_rows("id,s", ["1," + "a" * 40 + "!", "2," + "a" * 40]),
            step=(
                "ValidateRecords",
                {"checks": [{"check": "regex", "column": "s", "pattern": "(a+)+$"}]},
            ),
            rejects=(("check_failed", 2, r"does not match"),),
            kept=1,
        ),
        id="regex-catastrophic-backtracking-is-linear",  # RE2: no backtracking at all
    ),
    # --- sources never lose a column, nor read a formula as empty ------------------------
    pytest.param(
        Case(
            data=csv_rows("id,__beam_etl_note", ["1,keep me"]),
            error=r"Column `__beam_etl_note` of `.*input.csv` starts with `__beam_etl_`",
        ),
        id="csv-column-with-the-hidden-prefix",
    ),
    pytest.param(
        Case(
            data=[{"id": 1, "__beam_etl_line": 7}],
            source="ReadFromAvro",
            write=write_avro,
            suffix=".avro",
            error=r"Column `__beam_etl_line` of `.*input.avro` starts with `__beam_etl_`",
        ),
        id="avro-field-with-the-hidden-prefix",
    ),
    pytest.param(
        Case(
            data=[["id", "total"], [1, 2], [2, "=A3*2"]],
            source="ReadFromExcel",
            write=write_xlsx,
            suffix=".xlsx",
            error=r"Cell\(s\) B3 of sheet `Sheet` of `.*input.xlsx` hold a formula without a "
            r"saved value",
        ),
        id="excel-formula-without-a-saved-value",
    ),
    # --- specs: limits found at once, one line each ---------------------------------------
    pytest.param(
        Case(spec=BILLION_LAUGHS, error=r"more than 100,000 values .*aliases.* \(line \d+\)$"),
        id="yaml-billion-laughs",
    ),
    pytest.param(
        Case(spec="a: &a [1, *a]\n", error=r"YAML alias `\*a` refers to itself \(line 1\)$"),
        id="yaml-recursive-alias",
    ),
    pytest.param(
        Case(spec="a: " + "[" * 5000 + "]" * 5000 + "\n", error=r"nests deeper than 64 levels"),
        id="yaml-5000-deep",
    ),
    pytest.param(
        Case(spec="a: " + "{ " * 5000 + "}" * 5000 + "\n", error=r"nests deeper than 64 levels"),
        id="yaml-5000-deep-mappings",
    ),
    pytest.param(
        Case(spec="a:\n" + "- " * 5000 + "x\n", error=r"nests deeper than 64 .*\(line 2\)$"),
        id="yaml-5000-deep-block-sequences",
    ),
    pytest.param(
        Case(
            spec=deep_spec("(" * 20_000 + "id" + ")" * 20_000),
            error=r"Too deep at position \d+ in expression `[.(]{3}.{0,70}`: expressions nest "
            r"at most 200 levels \(step `step`, line \d+\)$",
        ),
        id="expression-20000-nested-parentheses",
    ),
    pytest.param(
        Case(spec=deep_spec(" + ".join(["id"] * 5000)), error=r"nest at most 200 levels"),
        id="expression-5000-term-chain",
    ),
    pytest.param(
        Case(
            step=("DropDuplicates", {"columns": ["id"], "buckets": "${BUCKETS:-many}"}),
            error=r"Config key `buckets` takes an integer, but its variable gave `many` "
            r"\(step `step`, line \d+\)",
        ),
        id="variable-not-a-number-for-an-int-key",
    ),
    pytest.param(
        Case(
            data=csv_rows("id,a", ["1,2", "1,3"]),
            read={"split_size_mb": "${SPLIT_MB:-64}"},
            step=("DropDuplicates", {"columns": ["id"], "buckets": "${B}", "spill": "${S}"}),
            env={"B": "3", "S": "false"},
            kept=[{"id": 1, "a": 2}],
        ),
        id="variables-typed-by-their-key",
    ),
    pytest.param(
        Case(
            spec=GENERATED_HEAD.replace("name: src", "name: größe"),
            error=r"Each node needs a `name` of ASCII letters",
        ),
        id="unicode-node-name",
    ),
]


def _spec(case: Case, path: str, tmp: str) -> str:
    if case.spec is not None:
        return case.spec.replace("{path}", path).replace("{tmp}", tmp)
    source_outputs = outputs_of(lookup(case.source).load(), SOURCE)
    last, errors = "src", [f"src.{o}" for o in source_outputs if o != "output"]
    document: dict[str, Any] = {
        "name": "fault",
        "sources": [{"name": "src", "type": case.source, "config": {"path": path, **case.read}}],
    }
    if case.step is not None:
        kind, config = case.step
        document["steps"] = [{"name": "step", "type": kind, "input": "src", "config": config}]
        last = "step"
        errors += [f"step.{o}" for o in outputs_of(lookup(kind).load(), STEP) if o != "output"]
    document["sinks"] = [
        {
            "name": f"out_{output}",
            "type": "WriteToParquet",
            "input": last if output == "output" else f"{last}.{output}",
            "config": {"path": f"{tmp}/{output}"},
        }
        for output in case.outputs
    ]
    if errors:
        dead = {"path": f"{tmp}/dl.jsonl"}
        document["sinks"].append(
            {"name": "dead", "type": "WriteToDeadLetters", "inputs": errors, "config": dead}
        )
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def _apply(pipeline, plan) -> dict[tuple[str, str], Any]:
    """Apply the plan's sources and steps (not its sinks); return every named output."""
    outputs: dict[tuple[str, str], Any] = {}
    for node in plan.ordered:
        if node.kind == "sink":
            continue
        transform = plan.transforms[node.name]
        start = outputs[(node.inputs[0].node, node.inputs[0].output)] if node.inputs else pipeline
        result = start | node.name >> transform
        named = result._asdict() if hasattr(result, "_asdict") else result
        named = named if isinstance(named, dict) else {"output": result}
        outputs.update(((node.name, k), v) for k, v in named.items() if v is not None)
    return outputs


def _letters_match(expected: tuple[tuple[str, int, str], ...]) -> Callable[[list], None]:
    def check(actual: list) -> None:
        got, want = sorted(actual), sorted(expected)
        assert [(r, n) for r, n, _ in got] == [(r, n) for r, n, _ in want], got
        for (_, _, message), (_, _, pattern) in zip(got, want):
            assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"

    return check


def _run(pipeline, plan, case: Case) -> None:
    outputs = _apply(pipeline, plan)
    last = "step" if case.step is not None else "src"
    errors = tuple(pcoll for (_, name), pcoll in outputs.items() if name == "error")
    letters = errors | "AllErrors" >> beam.Flatten()
    summary = letters | "Summary" >> beam.Map(lambda d: (d.reason, d.line, d.message))
    assert_that(summary, _letters_match(case.rejects), label="DeadLetters")
    rows = outputs[(last, case.outputs[0])] | "Rows" >> beam.FlatMap(visible_rows)
    if isinstance(case.kept, int):
        count = rows | "Count" >> beam.combiners.Count.Globally()
        assert_that(count, equal_to([case.kept]), label="Kept")
    elif case.kept is not None:
        assert_that(rows, equal_to(case.kept), label="Kept")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("case", CASES)
def test_bad_value(case: Case, pipeline, tmp_path, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    path = str(tmp_path / f"input{case.suffix}")
    if case.write is not None:
        case.write(path, case.data)
    else:
        (tmp_path / f"input{case.suffix}").write_text(case.data, encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(_spec(case, path, str(tmp_path))), encoding="utf-8")
    if case.error is None:
        _run(pipeline, load_plan(str(spec), run_id="fault"), case)
        return
    started = time.perf_counter()
    with pytest.raises(BeamEtlError) as raised:
        plan = load_plan(str(spec), run_id="fault")
        started = None  # the error comes from running: only loading is timed
        _run(pipeline, plan, case)
    if case.within is not None and started is not None:
        assert time.perf_counter() - started < case.within
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(case.error, message), message
