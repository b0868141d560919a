"""Routing steps: the union of several inputs with aligned schemas, and a split of one input
into named outputs by conditions."""

from collections.abc import Iterator
from typing import Any, ClassVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import conform_columns
from beam_etl.core.deadletter import ERROR, OUTPUT
from beam_etl.core.errors import DataError
from beam_etl.core.expr import RowFailure, referenced_columns, result_type
from beam_etl.transforms.expressions import _checked, reject_rows
from beam_etl.transforms.relational import _NAME
from beam_etl.transforms.rows import SchemaOf


def unify(_: Any, *schemas: pa.Schema | None) -> pa.Schema | None:
    """Return the schemas unified in input order (permissive type promotion).

    Raises:
        DataError: two inputs hold a column under types that do not unify.
    """
    known = [schema for schema in schemas if schema is not None]
    try:
        return pa.unify_schemas(known, promote_options="permissive") if known else None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"Inputs of the union have incompatible columns: {exc}") from None


def conform(batch: pa.RecordBatch, schema: pa.Schema | None) -> pa.RecordBatch:
    """Return `batch` with `schema`'s columns in its order: missing ones null, others cast."""
    if schema is None:  # only when no input has a batch, so never with a batch in hand
        return batch
    return conform_columns(
        batch,
        schema,
        lambda field, _, exc: f"Column `{field.name}` does not cast to `{field.type}`: {exc}",
    )


class UnionInputs(beam.PTransform):
    """Merge several inputs into one, aligning their schemas.

    The output schema unifies the inputs' schemas in input order (a column missing from an
    input is null there; types are promoted, e.g. int32 and int64 to int64, int64 and float64
    to float64); incompatible types fail the run naming the column. Every row comes out once;
    order is not kept. Takes a dict `{name: pcoll}` (a spec's inputs) or a tuple of inputs.
    """

    MULTI_INPUT: ClassVar[bool] = True
    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def infer_schemas(self, schemas: dict[str, pa.Schema]) -> pa.Schema | None:
        """Return the unified schema; inputs whose columns cannot unify are refused."""
        try:
            return unify(None, *schemas.values())
        except DataError as exc:
            raise ValueError(str(exc)) from None

    def expand(self, inputs):
        pcolls = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        if not pcolls:
            raise ValueError("UnionInputs needs at least one input")
        schemas = [p | f"Schema{i}" >> SchemaOf() for i, p in enumerate(pcolls)]
        unified = (
            pcolls[0].pipeline
            | "Start" >> beam.Create([None])
            | "Unify" >> beam.Map(unify, *[beam.pvalue.AsSingleton(s) for s in schemas])
        )
        return (
            pcolls
            | "Merge" >> beam.Flatten()
            | "Conform" >> beam.Map(conform, beam.pvalue.AsSingleton(unified))
        )


def split_masks(
    conditions: dict[str, str], batch: pa.RecordBatch
) -> tuple[dict[str, np.ndarray], list[RowFailure]]:
    """Return a row mask per condition (the first true condition wins) and `""` for the rest,
    and the rows on which a condition failed before one was true (in none of the masks)."""
    taken = np.zeros(batch.num_rows, dtype=bool)
    failed = np.zeros(batch.num_rows, dtype=bool)
    failures: list[RowFailure] = []
    masks: dict[str, np.ndarray] = {}
    for name, text in conditions.items():
        values, found = _checked(text, batch.schema).evaluate(batch)
        for row, message in found:
            if not (taken[row] or failed[row]):
                failed[row] = True
                failures.append((row, f"Condition `{text}` of output `{name}` failed: {message}"))
        true = pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool) & ~failed
        masks[name] = true & ~taken
        taken |= true
    masks[""] = ~taken & ~failed
    return masks, sorted(failures)


class _SplitFn(beam.DoFn):
    def __init__(self, step: str, conditions: dict[str, str], default: str) -> None:
        self._step, self._conditions, self._default = step, conditions, default

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        masks, failures = split_masks(self._conditions, batch)
        for letter in reject_rows(batch, failures, step=self._step)[1]:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        for name, mask in masks.items():
            part = batch.filter(pa.array(mask)) if mask.any() else None
            if part is not None:  # the default output is the main one
                yield beam.pvalue.TaggedOutput(name, part) if name else part


class SplitRows(beam.PTransform):
    """Send each row to the first output whose condition is true; others to `default`.

    Conditions are boolean expressions of the spec's expression language (null counts as
    false), type-checked when the spec is loaded. Every row leaves through exactly one
    output; order is kept within an output. A batch on which an expression fails at run time
    leaves through `error` (`expression_failed`). Outputs are named by the conditions, plus
    `default` and `error` (instance attribute `OUTPUTS`); in a spec they are read as
    `step.name`, from Python as `result["name"]`.
    """

    OUTPUTS: tuple[str, ...] = ("rest", ERROR)  # set per instance, see __init__

    def __init__(self, conditions: dict[str, str], *, default: str = "rest") -> None:
        """Args:
        conditions: boolean expression by output name, tried in order.
        default: the output of rows no condition holds for.
        """
        super().__init__()
        if not isinstance(conditions, dict) or not conditions:
            raise ValueError("`conditions` must map output names to boolean expressions")
        names = [*conditions, default]
        for name in names:
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name == ERROR:
                raise ValueError(f"Output name `{name}` must be an identifier other than `error`")
        if default in conditions:
            raise ValueError(f"`default` `{default}` is also a condition name")
        for text in conditions.values():
            referenced_columns(str(text))
        self.conditions = {name: str(text) for name, text in conditions.items()}
        self.default = default
        self.OUTPUTS = (*names, ERROR)

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Type-check every condition; every output has the input's schema."""
        for name, text in self.conditions.items():
            found = result_type(text, schema)
            if not pa.types.is_boolean(found) and not pa.types.is_null(found):
                raise ValueError(f"Condition `{name}` must be boolean, not {found}")
        return schema

    def expand(self, batches):
        tags = [*self.conditions, ERROR]
        results = batches | "Split" >> beam.ParDo(
            _SplitFn(self.label, self.conditions, self.default)
        ).with_outputs(*tags, main=self.default)
        return {name: results[name] for name in self.OUTPUTS}
