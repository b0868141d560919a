"""Row-level checks (ValidateRecords): both outputs asserted exactly, nulls against every check."""

import datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.core.errors import DataError
from beam_etl.quality.checks import parse_check
from beam_etl.quality.validate import ValidateRecords
from beam_etl.transforms.rows import load_function

D = datetime.date
BATCH = with_origin(
    pa.record_batch(
        {
            "x": pa.array([5, None, 11, 0, float("nan")], pa.float64()),
            "day": pa.array([D(2024, 1, 1), None, D(2019, 12, 31), D(2024, 6, 1), None]),
            "email": ["a@b.io", None, "nope", "c@d.io", "@x"],
            "c": ["red", None, "blue", "pink", "red"],
        }
    ),
    "in.csv",
    [2, 3, 4, 5, 6],
)


def is_even_x(batch):
    """A custom check: True where `x` is even (null where `x` is null)."""
    values = batch.column("x").to_pylist()
    return pa.array([None if v is None or v != v else int(v) % 2 == 0 for v in values])


def broken_check(batch):
    """A custom check that raises."""
    raise RuntimeError("boom")


CASES = {
    "not_null": (
        {"check": "not_null", "column": "x"},
        [3, 6],
        ["not_null_x: `x` is null"] * 2,
    ),
    "range_inclusive": (
        {"check": "range", "column": "x", "min": 0, "max": 10},
        [4],
        ["range_x: `x` = `11.0` is not in [0, 10]"],
    ),
    "range_exclusive": (
        {"check": "range", "column": "x", "min": 0, "max": 11, "inclusive": False},
        [4, 5],
        ["range_x: `x` = `11.0` is not in (0, 11)", "range_x: `x` = `0.0` is not in (0, 11)"],
    ),
    "range_dates_min_only": (
        {"check": "range", "column": "day", "min": "2020-01-01", "inclusive": [True, False]},
        [4],
        ["range_day: `day` = `2019-12-31` is not in [2020-01-01, inf)"],
    ),
    "range_strings": (
        {"check": "range", "column": "c", "min": "b", "max": "p"},
        [2, 5, 6],
        [
            "range_c: `c` = `red` is not in [b, p]",
            "range_c: `c` = `pink` is not in [b, p]",
            "range_c: `c` = `red` is not in [b, p]",
        ],
    ),
    "regex_search": (
        {"check": "regex", "column": "email", "pattern": "[a-z]@[a-z]"},
        [4, 6],
        [
            "regex_email: `email` = `nope` does not match `[a-z]@[a-z]`",
            "regex_email: `email` = `@x` does not match `[a-z]@[a-z]`",
        ],
    ),
    "regex_full_match": (
        {"check": "regex", "column": "c", "pattern": "re", "full_match": True},
        [2, 4, 5, 6],
        [
            "regex_c: `c` = `red` does not match `re`",
            "regex_c: `c` = `blue` does not match `re`",
            "regex_c: `c` = `pink` does not match `re`",
            "regex_c: `c` = `red` does not match `re`",
        ],
    ),
    "allowed_values": (
        {"check": "allowed_values", "column": "c", "values": ["red", "blue"]},
        [5],
        ["allowed_values_c: `c` = `pink` is not one of red, blue"],
    ),
    "length": (
        {"check": "length", "column": "email", "min": 3, "max": 5},
        [2, 5, 6],
        [
            "length_email: length of `email` = `a@b.io` is not in [3, 5]",
            "length_email: length of `email` = `c@d.io` is not in [3, 5]",
            "length_email: length of `email` = `@x` is not in [3, 5]",
        ],
    ),
    "custom": (
        {
            "check": "custom",
            "name": "even",
            "function": f"{__name__}:is_even_x",
            "description": "x must be even",
        },
        [2, 4],
        ["even: x must be even"] * 2,
    ),
    "custom_raises": (
        {"check": "custom", "name": "broken", "function": f"{__name__}:broken_check"},
        [2, 3, 4, 5, 6],
        ["broken: custom check failed"] * 5,
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_check_rejects_exactly_its_failures_and_passes_nulls(pipeline, case):
    config, lines, messages = CASES[case]
    out = pipeline | beam.Create([BATCH]) | "v" >> ValidateRecords([config])
    kept = [line for line in [2, 3, 4, 5, 6] if line not in lines]
    assert_that(
        out.output | beam.FlatMap(lambda b: b.column("__beam_etl_line").to_pylist()),
        equal_to(kept),
        label="Valid",
    )
    assert_that(
        out.error | beam.Map(lambda d: (d.step, d.reason, d.line, d.message)),
        equal_to([("v", "check_failed", li, m) for li, m in zip(lines, messages)]),
        label="Invalid",
    )
    pipeline.run().wait_until_finish()


def test_a_rejected_row_carries_every_rule_it_failed_and_warn_rows_go_on(pipeline):
    checks = [
        {"check": "range", "column": "x", "max": 10},
        {"check": "regex", "column": "email", "pattern": "[^@]+@[^@]+", "full_match": True},
        {"check": "allowed_values", "column": "c", "values": ["red"], "severity": "warn"},
    ]
    transform = ValidateRecords(checks)
    out = pipeline | beam.Create([BATCH]) | "v" >> transform
    assert_that(
        out.output | beam.FlatMap(visible_rows) | beam.Map(lambda r: r["email"]),
        equal_to(["a@b.io", None, "c@d.io"]),
        label="Valid",
    )
    assert_that(
        out.error | beam.Map(lambda d: (d.line, d.message, d.payload["email"])),
        equal_to(
            [
                (
                    4,
                    "range_x: `x` = `11.0` is not in [-inf, 10]; "
                    "regex_email: `email` = `nope` does not match `[^@]+@[^@]+`; "
                    "allowed_values_c (warn): `c` = `blue` is not one of red",
                    "nope",
                ),
                (6, "regex_email: `email` = `@x` does not match `[^@]+@[^@]+`", "@x"),
            ]
        ),
        label="Invalid",
    )
    assert_that(
        transform.results
        | beam.Map(lambda r: (r.check, r.rows_evaluated, r.rows_failed, r.outcome, r.examples)),
        equal_to(
            [
                ("range_x", 5, 1, "rejected", ({"origin": "in.csv:4", "value": 11.0},)),
                (
                    "regex_email",
                    5,
                    2,
                    "rejected",
                    (
                        {"origin": "in.csv:4", "value": "nope"},
                        {"origin": "in.csv:6", "value": "@x"},
                    ),
                ),
                (
                    "allowed_values_c",
                    5,
                    2,
                    "warned",
                    (
                        {"origin": "in.csv:4", "value": "blue"},
                        {"origin": "in.csv:5", "value": "pink"},
                    ),
                ),
            ]
        ),
        label="Results",
    )
    result = pipeline.run()
    result.wait_until_finish()
    from beam_etl.report import counters

    found = counters(result)
    assert (found["v:regex_email.rows_evaluated"], found["v:regex_email.rows_failed"]) == (5, 2)


def test_results_exist_for_an_empty_input(pipeline):
    transform = ValidateRecords([{"check": "not_null", "column": "x"}])
    _ = pipeline | beam.Create([]) | "v" >> transform
    assert_that(
        transform.results | beam.Map(lambda r: (r.check, r.rows_evaluated, r.outcome)),
        equal_to([("not_null_x", 0, "passed")]),
        label="Results",
    )
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"check": "between", "column": "x"}, "needs `check:`"),
        ({"check": "range", "column": "x"}, "needs `min` or `max`"),
        ({"check": "range", "column": "x", "min": 1, "low": 2}, "Unknown key(s) `low`"),
        ({"check": "regex", "column": "x", "pattern": "(("}, "Invalid `pattern`"),
        ({"check": "not_null", "column": "x", "severity": "fail"}, "`severity` must be"),
        ({"check": "custom", "function": "json:loads"}, "needs `name`"),
        ({"check": "custom", "name": "c", "function": "no_such_mod:f"}, "Cannot import"),
        ({"check": "not_null", "column": "x", "name": "a b"}, "may hold only"),
    ],
    ids=[
        "unknown-check",
        "range-no-bounds",
        "unknown-key",
        "bad-regex",
        "bad-severity",
        "custom-no-name",
        "custom-bad-ref",
        "bad-name",
    ],
)
def test_bad_check_configs_are_refused_at_construction(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ValidateRecords([config])


def test_duplicate_check_names_are_refused():
    with pytest.raises(ValueError, match="used twice"):
        ValidateRecords([{"check": "not_null", "column": "x"}] * 2)


def test_a_range_bound_of_the_wrong_type_is_a_data_error():
    check = parse_check({"check": "range", "column": "day", "min": "soon"}, load_function)
    with pytest.raises(DataError, match="cannot evaluate column `day`"):
        check.failed(BATCH)


def test_checks_are_vectorized_masks():
    check = parse_check({"check": "not_null", "column": "x"}, load_function)
    assert check.failed(BATCH).tolist() == [False, True, False, False, True]
    assert isinstance(check.failed(BATCH), np.ndarray)
