"""Chains of batch processors, and processors written with `@batch_step`."""

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.transforms.chains import REGISTERED, Chain, batch_step
from beam_etl.transforms.cleaning import CastColumns
from beam_etl.transforms.dedupe import DropDuplicates
from beam_etl.transforms.expressions import FilterRows
from beam_etl.transforms.text import TrimWhitespace

BATCH = with_origin(
    pa.record_batch({"id": ["1", "2", "x", "4", " 5 "], "who": [" a ", "b", "c", "d ", "e"]}),
    "in.csv",
    [2, 3, 4, 5, 6],
)


@batch_step(name="ScaleColumn")
def scale_column(batch, *, column: str, factor: int = 2):
    """Multiply a numeric column by a factor.

    Args:
        column: the column to scale.
        factor: the multiplier.
    """
    if factor == 0:
        raise ValueError("factor 0 would erase the column")
    index = batch.schema.get_field_index(column)
    return batch.set_column(index, column, pc.multiply(batch.column(index), factor))


def test_chain_from_spec_items_routes_every_inner_reject_to_one_error_output(pipeline):
    chain = Chain(
        [
            {"type": "CastColumns", "config": {"columns": {"id": "int64"}}, "name": "cast"},
            {"type": "DeriveColumns", "config": {"columns": {"who": "trim(who)"}}},
            {"type": "FilterRows", "config": {"where": "id != 4"}},
            {"type": "FilterRows", "config": {"where": "100 / (id - 5) > 0"}, "name": "ratio"},
        ]
    )
    assert [name for name, _ in chain.steps] == ["cast", "DeriveColumns", "FilterRows", "ratio"]
    out = pipeline | beam.Create([BATCH]) | "clean" >> chain
    assert_that(out.output, equal_to([]), label="Output")
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to(
            [
                ("clean/cast", "cast_failed", 4, {"id": "x", "who": "c"}),
                # Only the row dividing by zero: one bad value costs one row.
                ("clean/ratio", "expression_failed", 6, {"id": 5, "who": "e"}),
            ]
        ),
        label="Errors",
    )
    result = pipeline.run()
    result.wait_until_finish()
    dropped = result.metrics().query()["counters"]
    # id 4 by `id != 4`; ids 1 and 2 by `100 / (id - 5) > 0`.
    assert {m.key.metric.name: m.committed for m in dropped}["clean:rows_dropped"] == 3


def test_chain_of_python_processors_with_a_decorated_step(pipeline):
    chain = Chain(
        [
            "cast" >> CastColumns({"id": "int64"}),
            TrimWhitespace(),
            FilterRows("id > 1"),
            "scale" >> scale_column(column="id", factor=10),
        ]
    )
    out = pipeline | beam.Create([BATCH]) | "clean" >> chain
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 20, "who": "b"}, {"id": 40, "who": "d"}, {"id": 50, "who": "e"}]),
        label="Output",
    )
    assert_that(
        out.error | beam.Map(lambda letter: (letter.step, letter.reason, letter.line)),
        equal_to([("clean/cast", "cast_failed", 4)]),
        label="Errors",
    )
    pipeline.run().wait_until_finish()


def test_decorated_step_alone_rejects_a_batch_its_function_raises_on(pipeline):
    typed = pa.record_batch({"n": [1, 2]})
    out = pipeline | beam.Create([typed]) | "scale" >> scale_column(column="n", factor=0)
    assert_that(out.output, equal_to([]), label="Output")
    assert_that(
        out.error | beam.Map(lambda letter: (letter.reason, letter.message, letter.payload)),
        equal_to(
            [
                ("function_failed", "ValueError: factor 0 would erase the column", {"n": n})
                for n in (1, 2)
            ]
        ),
        label="Errors",
    )
    pipeline.run().wait_until_finish()


def test_decorated_step_is_a_registered_processor_with_config_keys():
    from beam_etl.core.catalogue import arguments

    assert REGISTERED["ScaleColumn"] is scale_column
    found, open_ended = arguments(scale_column)
    assert [(a.name, a.required, a.default, a.doc) for a in found] == [
        ("column", True, None, "the column to scale."),
        ("factor", False, 2, "the multiplier."),
        ("retry", False, None, ""),  # every @batch_step takes a retry policy
    ]
    assert not open_ended
    with pytest.raises(ValueError, match="`ScaleColumn`: got an unexpected keyword argument"):
        scale_column(column="n", size=3)


def test_chain_infers_its_schema_through_every_step():
    chain = Chain([{"type": "CastColumns", "config": {"columns": {"id": "int64"}}}])
    assert str(chain.infer_schema(BATCH.schema).field("id").type) == "int64"
    bad = Chain([{"type": "FilterRows", "config": {"where": "idd > 1"}, "name": "keep"}])
    with pytest.raises(ValueError, match=r"Chain step `keep`: Unknown column `idd`.*Did you mean"):
        bad.infer_schema(BATCH.schema)
    assert Chain([scale_column(column="id")]).infer_schema(BATCH.schema) is None


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        pytest.param([], "at least one processor", id="empty"),
        pytest.param([{"typ": "CastColumns"}], "must be a mapping with `type`", id="no-type"),
        pytest.param([{"type": "CastColumn"}], "Did you mean `CastColumns`", id="unknown-type"),
        pytest.param([{"type": "WriteToParquet"}], "is a sink, not a step", id="sink"),
        pytest.param(
            [{"type": "FilterRows", "config": {"wher": "a"}}],
            "unknown config key `wher` for `FilterRows`. Did you mean `where`",
            id="unknown-key",
        ),
        pytest.param(
            [{"type": "CastColumns", "config": {"columns": {}}}],
            "item 1 \\(`CastColumns`\\): `columns` must map",
            id="bad-config",
        ),
        pytest.param([DropDuplicates(["id"])], "is not a batch processor", id="shuffle"),
    ],
)
def test_bad_chains_are_rejected_at_construction(steps, message):
    with pytest.raises(ValueError, match=message):
        Chain(steps)
