"""Tests for the spec expression language (beam_etl.core.expr)."""

import datetime
import pickle
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from beam_etl.core.errors import ExpressionError
from beam_etl.core.expr import (
    FUNCTIONS,
    MAX_DEPTH,
    compile_checked,
    compile_expression,
    evaluate,
    referenced_columns,
    result_type,
)

BATCH = pa.record_batch(
    {
        "a": pa.array([1, 2, None, 4], pa.int64()),
        "b": pa.array([1.5, None, 2.0, -3.25]),
        "s": pa.array(["x", "Hello", None, " y "]),
        "f": pa.array([True, None, False, True]),
        "d": pa.array([datetime.date(2024, 1, 31), None, datetime.date(2023, 12, 1), None]),
        "order id": pa.array([10, 20, 30, 40], pa.int32()),
        "amount": pa.array([2, 3, 4, 5], pa.int64()),
    }
)

# Every combination of two three-valued booleans.
LOGIC = pa.record_batch(
    {
        "p": pa.array([True, True, True, False, False, False, None, None, None]),
        "q": pa.array([True, False, None, True, False, None, True, False, None]),
    }
)


def run(text: str, batch: pa.RecordBatch = BATCH) -> list:
    return evaluate(compile_expression(text, batch.schema), batch).to_pylist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("2 * 3 % 4", 2),
        ("-2 * 3", -6),
        ("2 - -3", 5),
        ("1 + 2 = 3", True),
        ("not 1 > 2 and false", False),
        ("not (true and false)", True),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("1 < 2 or 1 > 0 and false", True),
    ],
)
def test_precedence_of_constants(text: str, expected: object) -> None:
    assert run(text) == [expected] * BATCH.num_rows


def test_not_binds_looser_than_comparison_and_tighter_than_and() -> None:
    assert run("not a = 1 and f") == [False, None, False, True]
    assert run("not f and a > 1") == [False, None, None, False]


def test_or_binds_looser_than_and() -> None:
    batch = pa.record_batch(
        {"a": [True, False, False], "b": [False, True, True], "c": [False, False, True]}
    )
    assert run("a or b and c", batch) == [True, False, True]
    assert run("(a or b) and c", batch) == [False, False, True]


def test_three_valued_logic_truth_tables() -> None:
    t, f, n = True, False, None
    assert run("p and q", LOGIC) == [t, f, n, f, f, f, n, f, n]
    assert run("p or q", LOGIC) == [t, t, t, t, f, n, t, n, n]
    assert run("not p", LOGIC) == [f, f, f, t, t, t, n, n, n]
    assert run("p and null", LOGIC) == [n, n, n, f, f, f, n, n, n]
    assert run("null or p", LOGIC) == [t, t, t, n, n, n, n, n, n]


def test_comparisons_with_null_give_null() -> None:
    assert run("a > 1") == [False, True, None, True]
    assert run("a = null") == [None] * 4
    assert run("a != 2") == [True, False, None, True]
    assert run("a <> 2") == run("a != 2")
    assert run("a == 2") == run("a = 2") == [False, True, None, False]
    assert run("a <= 2") == [True, True, None, False]
    assert run("a >= 2") == [False, True, None, True]
    assert run("a < 2") == [True, False, None, False]


def test_filters_drop_null_rows() -> None:
    table = pa.Table.from_batches([BATCH])
    assert table.filter(compile_expression("a > 1", BATCH.schema))["a"].to_pylist() == [2, 4]


def test_is_null_and_is_not_null() -> None:
    assert run("a is null") == [False, False, True, False]
    assert run("s IS NOT NULL") == [True, True, False, True]
    assert run("is_null(b)") == [False, True, False, False]
    assert run("is_not_null(b)") == [True, False, True, True]


def test_in_and_not_in() -> None:
    assert run("a in (1, 4, -7)") == [True, False, None, True]
    assert run("a not in (1, 4)") == [False, True, None, False]
    assert run("s in ('x', 'Hello')") == [True, True, None, False]
    assert run("d in (date '2024-01-31')") == [True, None, False, None]


def test_between() -> None:
    assert run("a between 2 and 4") == [False, True, None, True]
    assert run("a not between 2 and 3 and true") == [True, False, None, True]


def test_arithmetic() -> None:
    assert run("a * 2 + b") == [3.5, None, None, 4.75]
    assert run("a / 2") == [0.5, 1.0, None, 2.0]
    assert result_type("amount / 2", BATCH.schema) == pa.float64()
    assert run("-7 % 3") == [-1] * 4
    assert run("amount % 3") == [2, 0, 1, 2]
    assert run("7.5 % 2") == [1.5] * 4
    assert run("-a") == [-1, -2, None, -4]
    assert run("`order id` + amount") == [12, 23, 34, 45]
    assert result_type("`order id` + amount", BATCH.schema) == pa.int64()


def test_literals_do_not_narrow_arithmetic() -> None:
    batch = pa.record_batch(
        {"i": pa.array([16777217], pa.int32()), "h": pa.array([32767], pa.int16())}
    )
    assert run("i * 1.5", batch) == [25165825.5]
    assert run("h + 1", batch) == [32768]
    assert result_type("h + 1", batch.schema) == pa.int64()
    assert run("i > 1.5", batch) == [True]


def test_arithmetic_is_checked() -> None:
    with pytest.raises(pa.ArrowInvalid, match="overflow"):
        run("9223372036854775807 + a")
    with pytest.raises(pa.ArrowInvalid, match="divide by zero"):
        run("a % 0")


def test_literals() -> None:
    assert run("1.5e1") == [15.0] * 4
    assert run(".5") == [0.5] * 4
    assert run("TRUE") == [True] * 4
    assert run("false") == [False] * 4
    assert run("null") == [None] * 4
    assert run("date '2024-01-31'") == [datetime.date(2024, 1, 31)] * 4
    assert run("timestamp '2024-01-31 12:00:00'") == [datetime.datetime(2024, 1, 31, 12)] * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'tab\there'", "tab\there"),
        (r"'line\nbreak'", "line\nbreak"),
        (r"'back\\slash'", "back\\slash"),
        (r"'\u00e9t\u00e9'", "été"),
        ("'a \"quoted\" word'", 'a "quoted" word'),
    ],
    ids=["single-quote", "double-quote", "tab", "newline", "backslash", "unicode", "other-quote"],
)
def test_string_escapes(text: str, expected: str) -> None:
    assert run(text) == [expected] * 4


def test_backtick_names() -> None:
    batch = pa.record_batch({"order id": [1, 2], "and": [3, 4], "a`b": [5, 6]})
    assert run("`order id` * 10", batch) == [10, 20]
    assert run("`and` + 1", batch) == [4, 5]
    assert run(r"`a\`b`", batch) == [5, 6]


def test_keywords_and_function_names_are_case_insensitive() -> None:
    assert run("a IS NULL Or f AND NOT false") == [True, None, True, True]
    assert run("UPPER(s)") == ["X", "HELLO", None, " Y "]


FUNCTION_CASES = [
    ("lower(s)", ["x", "hello", None, " y "]),
    ("upper(s)", ["X", "HELLO", None, " Y "]),
    ("trim(s)", ["x", "Hello", None, "y"]),
    ("length(s)", [1, 5, None, 3]),
    ("starts_with(s, 'He')", [False, True, None, False]),
    ("ends_with(s, 'lo')", [False, True, None, False]),
    ("contains(s, 'ell')", [False, True, None, False]),
    ("replace(s, 'l', 'L')", ["x", "HeLLo", None, " y "]),
    ("substr(s, 2, 3)", ["", "ell", None, "y "]),
    ("substr(s, 2)", ["", "ello", None, "y "]),
    ("concat(s, '!', 'x')", ["x!x", "Hello!x", None, " y !x"]),
    ("coalesce(a, amount, 0)", [1, 2, 4, 4]),
    ("abs(b)", [1.5, None, 2.0, 3.25]),
    ("round(b)", [2.0, None, 2.0, -3.0]),
    ("round(2.5 * amount, 0)", [5.0, 8.0, 10.0, 13.0]),
    ("round(b, 1)", [1.5, None, 2.0, -3.3]),
    ("floor(b)", [1.0, None, 2.0, -4.0]),
    ("ceil(b)", [2.0, None, 2.0, -3.0]),
    ("year(d)", [2024, None, 2023, None]),
    ("month(d)", [1, None, 12, None]),
    ("day(d)", [31, None, 1, None]),
    ("is_null(s)", [False, False, True, False]),
    ("is_not_null(s)", [True, True, False, True]),
    ("if(f, a, -1)", [1, None, -1, 4]),
    ("if(a > 1, 'big', 'small')", ["small", "big", None, "big"]),
    ("cast(a, 'string')", ["1", "2", None, "4"]),
    ("cast(s, 'bool')", None),
    ("cast('2024-02-29', 'date')", [datetime.date(2024, 2, 29)] * 4),
    ("cast(amount, 'float64') / 4", [0.5, 0.75, 1.0, 1.25]),
]


@pytest.mark.parametrize(("text", "expected"), FUNCTION_CASES, ids=[c[0] for c in FUNCTION_CASES])
def test_functions(text: str, expected: list | None) -> None:
    if expected is None:  # compiles, but the data cannot be converted
        with pytest.raises(pa.ArrowInvalid):
            run(text)
    else:
        assert run(text) == expected


def test_every_function_is_tested_and_documented() -> None:
    assert {text.split("(")[0] for text, _ in FUNCTION_CASES} == set(FUNCTIONS)
    for name, function in FUNCTIONS.items():
        assert function.name == name
        assert function.signature.startswith(f"{name}(")
        assert function.doc
        assert "\n" not in function.doc
    assert (FUNCTIONS["substr"].min_args, FUNCTIONS["substr"].max_args) == (2, 3)
    assert (FUNCTIONS["concat"].min_args, FUNCTIONS["concat"].max_args) == (1, None)


SYNTAX, TYPE, ARITY = "Syntax error", "Type error", "Wrong number of arguments"
# (id, text, position, head, tail): the message is "<head> at position <position> in expression
# `<text>`<tail>".
REJECTIONS = [
    ("syntax-error", "a + * b", 4, SYNTAX, ": unexpected `*`"),
    ("missing-parenthesis", "a > (1", 6, SYNTAX, ": unexpected end of expression, expected `)`"),
    ("unexpected-end", "a +", 3, SYNTAX, ": unexpected end of expression"),
    ("empty", "", 0, SYNTAX, ": unexpected end of expression"),
    ("unterminated-string", "s = 'abc", 4, SYNTAX, ": unterminated string"),
    ("unterminated-name", "`order id + 1", 0, SYNTAX, ": unterminated name"),
    ("invalid-escape", r"s = 'a\qb'", 6, SYNTAX, r": invalid escape `\q`"),
    ("unexpected-character", "a # 2", 2, SYNTAX, ": unexpected character `#`"),
    ("chained-comparison", "a < 1 < 2", 6, SYNTAX, ": unexpected `<`: comparisons do not chain"),
    ("not-without-in", "a not 1", 6, SYNTAX, ": unexpected `1`, expected `in` or `between`"),
    ("non-literal-in-list", "a in (b)", 6, SYNTAX, ": `in` lists hold only non-null literals"),
    ("null-in-list", "a in (1, null)", 9, SYNTAX, ": `in` lists hold only non-null literals"),
    ("bad-date", "d > date '2024-02-30'", 9, SYNTAX, ": invalid date `2024-02-30`"),
    (
        "int-too-big",
        "a + 9223372036854775808",
        4,
        SYNTAX,
        ": integer `9223372036854775808` is out of range for int64",
    ),
    ("unknown-column", "zzz > 1", 0, "Unknown column `zzz`", ""),
    (
        "unknown-column-did-you-mean",
        "amount * amout",
        9,
        "Unknown column `amout`",
        ". Did you mean `amount`?",
    ),
    ("unknown-function", "lowr(s)", 0, "Unknown function `lowr`", ". Did you mean `lower`?"),
    (
        "wrong-arity",
        "2 * replace(s, 'a')",
        4,
        ARITY,
        ": `replace` takes 3 arguments, got 2",
    ),
    (
        "wrong-arity-optional",
        "round()",
        0,
        ARITY,
        ": `round` takes 1 to 2 arguments, got 0",
    ),
    ("type-error-string-plus-int", "s + 1", 2, TYPE, ": cannot apply `+` to string and int64"),
    ("type-error-function", "upper(a)", 0, TYPE, ": cannot apply `upper` to int64"),
    ("type-error-comparison", "d > 'x'", 2, TYPE, ": cannot apply `>` to date and string"),
    (
        "non-boolean-and-operand",
        "f and a",
        6,
        TYPE,
        ": operand of `and` must be boolean, got int64",
    ),
    ("non-boolean-or-operand", "b or f", 0, TYPE, ": operand of `or` must be boolean, got float64"),
    ("non-boolean-not-operand", "not s", 4, TYPE, ": operand of `not` must be boolean, got string"),
    (
        "non-boolean-if-condition",
        "if(a, 1, 2)",
        3,
        TYPE,
        ": argument 1 of `if` must be boolean, got int64",
    ),
    ("in-list-type", "s in (1, 2)", 6, TYPE, ": cannot compare string with int64"),
    (
        "non-literal-pattern",
        "contains(s, s)",
        12,
        TYPE,
        ": argument 2 of `contains` must be a string literal",
    ),
    (
        "bad-substr-start",
        "substr(s, 0)",
        10,
        "Invalid argument",
        ": `substr` needs start >= 1 and length >= 0",
    ),
    ("unknown-cast-type", "cast(a, 'int65')", 8, "Unknown type `int65`", ": `cast` takes "),
]


@pytest.mark.parametrize(
    ("text", "position", "head", "tail"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_rejections(text: str, position: int, head: str, tail: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, BATCH.schema)
    message = str(caught.value)
    assert message.startswith(f"{head} at position {position} in expression `{text}`{tail}")
    assert "\n" not in message
    assert caught.value.position == position


def test_errors_pickle_with_their_position() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("a +", BATCH.schema)
    clone = pickle.loads(pickle.dumps(caught.value))
    assert (str(clone), clone.position) == (str(caught.value), 3)


def test_result_type() -> None:
    schema = BATCH.schema
    assert result_type("a > 1 and f", schema) == pa.bool_()
    assert result_type("a + 1", schema) == pa.int64()
    assert result_type("`order id` * 1.5", schema) == pa.float64()
    assert result_type("concat(s, 'x')", schema) == pa.string()
    assert result_type("cast(a, 'int8')", schema) == pa.int8()
    assert result_type("year(d)", schema) == pa.int64()


def test_referenced_columns() -> None:
    assert referenced_columns(
        "price * amount > 10 and lower(`order id`) in ('a') or price > 0"
    ) == [
        "price",
        "amount",
        "order id",
    ]
    assert referenced_columns("1 + 2") == []
    with pytest.raises(ExpressionError, match="unexpected end"):
        referenced_columns("a and")


def test_evaluate_broadcasts_constants_and_keeps_length() -> None:
    assert evaluate(compile_expression("42", BATCH.schema), BATCH).to_pylist() == [42] * 4
    empty = BATCH.slice(0, 0)
    result = evaluate(compile_expression("a * 2 > 1", BATCH.schema), empty)
    assert (len(result), result.type) == (0, pa.bool_())
    no_columns = pa.RecordBatch.from_pydict({"x": [1, 2, 3]}).select([])
    assert (
        evaluate(compile_expression("'k'", no_columns.schema), no_columns).to_pylist() == ["k"] * 3
    )


def test_evaluate_matches_pyarrow_compute_on_a_large_batch() -> None:
    n = 200_000
    batch = pa.record_batch(
        {
            "a": pa.array(range(n)),
            "b": pa.array([i % 7 * 0.5 for i in range(n)]),
            "s": pa.array([None if i % 5 == 0 else "x" for i in range(n)]),
        }
    )
    expression = compile_expression("a * 2 + b > 10 and s is not null", batch.schema)
    expected = pc.and_kleene(
        pc.greater(pc.add(pc.multiply(batch["a"], 2), batch["b"]), 10), pc.is_valid(batch["s"])
    )
    result = evaluate(expression, batch)
    assert isinstance(result, pa.Array)
    assert result.equals(expected)


def test_untyped_null_takes_the_type_of_its_sibling() -> None:
    assert run("concat(s, null)") == [None] * 4
    assert run("coalesce(null, a)") == [1, 2, None, 4]
    assert run("if(null, 1, 2)") == [None] * 4
    assert run("null is null") == [True] * 4


def test_compiled_expressions_pickle() -> None:
    # Beam ships compiled expressions to workers inside DoFns.
    expression = compile_expression("a in (1, 2) and contains(s, 'l') or a / 2 > 1", BATCH.schema)
    clone = pickle.loads(pickle.dumps(expression))
    assert evaluate(clone, BATCH).to_pylist() == [False, True, None, True]


FAILING = pa.record_batch(
    {
        "id": pa.array([7, 8, 9, 10, 11], pa.int64()),
        "a": pa.array([1, 0, 2, None, 0], pa.int64()),
        "big": pa.array([1, 2, 2**63 - 1, 4, 5], pa.int64()),
        "s": pa.array(["1", "2", "x", "4", "5"]),
    }
)


@pytest.mark.parametrize(
    ("text", "values", "failures"),
    [
        pytest.param(
            "id / a",
            [7.0, None, 4.5, None, None],
            [
                (1, "divide by zero in `/` at position 3 with `id` = 8, `a` = 0"),
                (4, "divide by zero in `/` at position 3 with `id` = 11, `a` = 0"),
            ],
            id="divide-by-zero-rows-only",
        ),
        pytest.param(
            "big + 1",
            [2, 3, None, 5, 6],
            [(2, "overflow in `+` at position 4 with `big` = 9223372036854775807")],
            id="overflow-found-by-bisection",
        ),
        pytest.param(
            "id % a + big * 2",
            [2, None, None, None, None],
            [
                (1, "divide by zero in `%` at position 3 with `id` = 8, `a` = 0"),
                (2, "overflow in `*` at position 13 with `big` = 9223372036854775807"),
                (4, "divide by zero in `%` at position 3 with `id` = 11, `a` = 0"),
            ],
            id="first-failure-of-a-row-is-reported",
        ),
        pytest.param(
            "cast(s, 'int64') + 1",
            [2, 3, None, 5, 6],
            [
                (
                    2,
                    "Failed to parse string: 'x' as a scalar of type int64 in `cast` at "
                    "position 0 with `s` = 'x'",
                )
            ],
            id="bad-cast-in-an-expression",
        ),
        pytest.param(
            "if(a = 0, -1.0, id / a)",
            [7.0, -1.0, 4.5, None, -1.0],
            [],
            id="branch-not-taken-does-not-fail",
        ),
        pytest.param(
            "if(a = 0, id / a, 0.0)",
            [0.0, None, 0.0, None, None],
            [
                (1, "divide by zero in `/` at position 13 with `id` = 8, `a` = 0"),
                (4, "divide by zero in `/` at position 13 with `id` = 11, `a` = 0"),
            ],
            id="branch-taken-fails",
        ),
        pytest.param(
            "id / 0",
            [None] * 5,
            [
                (row, "divide by zero in `/` at position 3 with `id` = " + str(row + 7))
                for row in range(5)
            ],
            id="constant-divisor-zero",
        ),
    ],
)
def test_only_the_failing_rows_fail(text: str, values: list, failures: list) -> None:
    found_values, found = compile_checked(text, FAILING.schema).evaluate(FAILING)
    assert found_values.to_pylist() == values
    assert found == failures


def test_a_batch_that_does_not_fail_is_evaluated_once(monkeypatch) -> None:
    import beam_etl.core.expr as expr

    def slow_path(*_):
        raise AssertionError("the row-by-row path must not run when nothing fails")

    monkeypatch.setattr(expr, "_rows_failing", slow_path)
    values, failures = compile_checked("id * 2 + a", FAILING.schema).evaluate(FAILING)
    assert (len(values), failures) == (5, [])


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("(" * 20_000 + "a" + ")" * 20_000, id="20000-parentheses"),
        pytest.param("not " * 20_000 + "f", id="20000-nots"),
        pytest.param("- " * 20_000 + "a", id="20000-minus-signs"),
        pytest.param("abs(" * 20_000 + "a" + ")" * 20_000, id="20000-nested-calls"),
        pytest.param(" + ".join(["a"] * 20_000), id="20000-term-chain"),
        pytest.param("a > 0" + " and a > 1" * 200_000, id="2-million-characters"),
    ],
)
def test_too_deep_expressions_are_refused_at_once_in_one_short_line(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, BATCH.schema)
    assert time.perf_counter() - started < 1
    message = str(caught.value)
    assert re.fullmatch(
        r"Too deep at position \d+ in expression `.{1,70}`: expressions nest "
        r"at most 200 levels",
        message,
    ), message


def test_expressions_as_deep_as_the_limit_compile_and_isolate_failures() -> None:
    deep = "(" * (MAX_DEPTH - 3) + "id / a" + ")" * (MAX_DEPTH - 3)
    chain = " + ".join(["a"] * (MAX_DEPTH - 2)) + " + id / a"
    for text in (deep, chain):
        _, failures = compile_checked(text, FAILING.schema).evaluate(FAILING)
        assert [row for row, _ in failures] == [1, 4]


def test_identifiers_may_use_letters_of_any_script() -> None:
    batch = pa.record_batch({"größe": [1, 2], "prix_€": [3, 4]})
    assert run("größe * 10 + `prix_€`", batch) == [13, 24]
    assert referenced_columns("Größe > 1 and größe < 2") == ["Größe", "größe"]


@pytest.mark.parametrize(
    ("text", "kind", "a", "b"),
    [
        ("a + b", pa.int64(), [2**62, 2**62, -(2**62), 1], [2**62, 2**62 - 1, -(2**62) - 1, 1]),
        ("a - b", pa.int64(), [-(2**62), 2**62, 0, -1], [2**62 + 1, -(2**62), -(2**63), 2**63 - 1]),
        ("a * b", pa.int64(), [2**32, 2**31, -1, 3], [2**31, 2**32, -(2**63), -(2**61)]),
        ("-a", pa.int64(), [-(2**63), 1, 2**63 - 1, -5], [0, 0, 0, 0]),
        ("abs(a)", pa.int32(), [-(2**31), 1, -7, 2**31 - 1], [0, 0, 0, 0]),
        ("a + b", pa.int8(), [100, -100, 27, 127], [27, -29, 100, 1]),
        ("a - b", pa.uint16(), [0, 5, 65535, 1], [1, 5, 0, 2]),
    ],
)
def test_integer_overflows_are_found_exactly_without_bisection(monkeypatch, text, kind, a, b):
    import beam_etl.core.expr as expr

    batch = pa.record_batch({"a": pa.array(a, kind), "b": pa.array(b, kind)})
    limits = np.iinfo(kind.to_pandas_dtype())
    exact = {"a + b": int.__add__, "a - b": int.__sub__, "a * b": int.__mul__}.get(
        text, lambda x, _: abs(x)
    )
    expected = [
        row for row, pair in enumerate(zip(a, b)) if not limits.min <= exact(*pair) <= limits.max
    ]
    assert 0 < len(expected) < len(a)
    monkeypatch.setattr(expr, "_failing_rows", lambda *_: pytest.fail("bisection used"))
    _, failures = compile_checked(text, batch.schema).evaluate(batch)
    assert [row for row, _ in failures] == expected
    assert all(" overflow in " in f" {message}" for _, message in failures)
