"""FillForward: previous value within a key, across batches, in the stated order."""

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.transforms.fill import FillForward, fill_forward

# Readings of two sensors spread over two files; `t` orders them within a sensor.
FIRST = with_origin(
    pa.record_batch(
        {
            "sensor": ["a", "b", "a", None],
            "t": [3, 1, 1, 1],
            "v": [None, 5.0, 1.0, 9.0],
            "unit": ["C", None, None, "F"],
        }
    ),
    "x.csv",
    [2, 3, 4, 5],
)
SECOND = with_origin(
    pa.record_batch(
        {
            "sensor": ["b", "a", "b", None],
            "t": [2, 2, 0, 2],
            "v": [None, None, None, None],
            "unit": [None, "K", "X", None],
        }
    ),
    "y.csv",
    [2, 3, 4, 5],
)


def test_fills_within_each_key_in_order_across_batches(pipeline):
    out = (
        pipeline
        | beam.Create([SECOND, FIRST])
        | FillForward(["v", "unit"], by=["sensor"], order_by="t")
    )
    assert_that(
        out | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"sensor": "a", "t": 1, "v": 1.0, "unit": None},  # first of `a`: nothing to take
                {"sensor": "a", "t": 2, "v": 1.0, "unit": "K"},
                {"sensor": "a", "t": 3, "v": 1.0, "unit": "C"},
                {"sensor": "b", "t": 0, "v": None, "unit": "X"},
                {"sensor": "b", "t": 1, "v": 5.0, "unit": "X"},
                {"sensor": "b", "t": 2, "v": 5.0, "unit": "X"},
                {"sensor": None, "t": 1, "v": 9.0, "unit": "F"},  # null keys form one key
                {"sensor": None, "t": 2, "v": 9.0, "unit": "F"},
            ]
        ),
    )
    pipeline.run().wait_until_finish()


def test_values_never_cross_keys():
    table = pa.table({"k": [1, 2, 2], "t": [1, 1, 2], "v": [7, None, None]})
    assert fill_forward(table, ["v"], ["k"], "t").column("v").to_pylist() == [7, None, None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"columns": [], "by": ["k"], "order_by": "t"}, "`columns`", id="no-columns"),
        pytest.param({"columns": ["v"], "by": [], "order_by": "t"}, "`by`", id="no-key"),
        pytest.param({"columns": ["k"], "by": ["k"], "order_by": "t"}, "both filled", id="overlap"),
        pytest.param({"columns": ["v"], "by": ["k"], "order_by": ""}, "`order_by`", id="no-order"),
    ],
)
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FillForward(**kwargs)
