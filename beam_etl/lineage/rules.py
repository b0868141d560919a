"""One lineage rule per built-in step: which input columns make each output column, and how.

A rule reads the step's own configuration (the same attributes its `expand` uses) and the
schemas of its inputs; it never runs the step. Output schemas come from the step's
`infer_schema` / `infer_schemas`, as in spec validation. A type without a rule here is
reported `unknown`, never guessed.
"""

from collections.abc import Callable
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.catalogue import outputs_of
from beam_etl.core.expr import referenced_columns
from beam_etl.lineage.columns import IDENTITY, Change, Flow, StepLineage, carry, unknown
from beam_etl.pipeline.model import Node

_ERROR: Final = "error"


class _Unanalysable(Exception):
    """A step whose column lineage cannot be told (a user function): the reason."""


def _identity(schema: pa.Schema, index: int = 0) -> dict[str, Change]:
    return {f.name: Change(((index, f.name),)) for f in schema}


def _changed(schema: pa.Schema, changes: dict[str, tuple[str, str]]) -> dict[str, Change]:
    columns = _identity(schema)
    for name, (how, note) in changes.items():
        columns[name] = Change(((0, name),), how, note)
    return columns


def _filtered(schema: pa.Schema, columns: list[str], how: str, note: str) -> StepLineage:
    """Every column as it was; `columns` decide which rows pass."""
    return StepLineage(_identity(schema), [(0, c, how, note) for c in columns], schema)


def _text_columns(schema: pa.Schema, columns: list[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return [f.name for f in schema if any(check(f.type) for check in text)]


def _cast(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    changes = {c: ("cast", f"cast to {out.field(c).type}") for c in step.types}
    return StepLineage(_changed(out, changes), [], out)


def _rename(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    columns = _identity(out)
    for old, new in step.mapping.items():
        columns[new] = Change(((0, old),), IDENTITY, f"renamed from {old}")
    return StepLineage(columns, [], out)


def _shape(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    return StepLineage(_identity(out), [], out)


def _text(note: Callable[[Any], str]) -> Callable[[Any, pa.Schema], StepLineage]:
    def rule(step: Any, schema: pa.Schema) -> StepLineage:
        out = step.infer_schema(schema)
        changes = {c: ("text", note(step)) for c in _text_columns(out, step.columns)}
        return StepLineage(_changed(out, changes), [], out)

    return rule


def _fill_nulls(step: Any, schema: pa.Schema) -> StepLineage:
    from beam_etl.transforms.cleaning import fill_plan  # lazy: a run's start-up

    out = step.infer_schema(schema)
    plan = fill_plan(schema, step.values, step.value)
    changes = {c: ("fill", f"nulls filled with {value}") for c, value in plan.items()}
    return StepLineage(_changed(out, changes), [], out)


def _fill_forward(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    changes = {
        c: ("fill", f"nulls filled from the row before by {step.order_by}") for c in step.columns
    }
    indirect = [(0, c, "group_by", "filled within its key") for c in step.by]
    indirect.append((0, step.order_by, "sort", "order of filling"))
    return StepLineage(_changed(out, changes), indirect, out)


def _derive(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    columns = _identity(schema)
    for name, text in step.columns.items():
        inputs: list[tuple[int, str]] = []
        for used in referenced_columns(text):
            inputs += columns[used].inputs if used in columns else []
        columns[name] = Change(tuple(dict.fromkeys(inputs)), "expression", f"{name} = {text}")
    return StepLineage({f.name: columns[f.name] for f in out}, [], out)


def _filter_rows(step: Any, schema: pa.Schema) -> StepLineage:
    step.infer_schema(schema)
    return _filtered(schema, referenced_columns(step.where), "filter", f"where {step.where}")


def _drop_nulls(step: Any, schema: pa.Schema) -> StepLineage:
    step.infer_schema(schema)
    return _filtered(schema, step.columns, "filter", "rows with a null removed")


def _drop_duplicates(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    keys = step.columns or [f.name for f in out]
    lineage = _filtered(out, keys, "filter", "duplicates dropped")
    if step.order_by:
        lineage.indirect.append((0, step.order_by, "sort", "decides which duplicate survives"))
    return lineage


def _validate(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    rejecting = [c for c in step.checks if c.severity == "reject" and c.column]
    indirect = [(0, c.column, "filter", f"check `{c.name}` rejects rows") for c in rejecting]
    return StepLineage(_identity(out), indirect, out)


def _check_unique(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    keys = step.columns if step.reject else []
    return _filtered(out, keys, "filter", "duplicates rejected")


def _checked(step: Any, schema: pa.Schema) -> StepLineage:
    """A dataset check that rejects nothing: every column and row as it was."""
    out = step.infer_schema(schema) if hasattr(step, "infer_schema") else schema
    return StepLineage(_identity(out), [], out)


def _aggregate(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    columns = {c: Change(((0, c),)) for c in step.group_by}
    for name, function, column in step.parsed:
        inputs = ((0, column),) if column else ()
        columns[name] = Change(inputs, "aggregation", f"{function}({column or '*'})")
    grouped = f"grouped by {', '.join(step.group_by)}" if step.group_by else ""
    indirect = [(0, c, "group_by", grouped) for c in step.group_by]
    return StepLineage({f.name: columns[f.name] for f in out}, indirect, out)


def _conform(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    columns = {}
    for f in out:
        if f.name not in schema.names:
            default = step.schema.field(f.name).default
            filled = "null" if default is None else f"its default {default}"
            columns[f.name] = Change((), "conform", f"not in the input: {filled}")
        elif schema.field(f.name).type.equals(f.type):
            columns[f.name] = Change(((0, f.name),))
        else:
            columns[f.name] = Change(((0, f.name),), "conform", f"conformed to {f.type}")
    return StepLineage(columns, [], out)


def _diff(step: Any, schema: pa.Schema) -> StepLineage:
    out = step.infer_schema(schema)
    every = tuple((0, f.name) for f in schema)
    columns = _identity(schema)
    compared = "compared with the previous snapshot"
    columns["op"] = Change(every, "expression", f"change type, {compared}")
    columns["deleted"] = Change(every, "expression", f"deleted, {compared}")
    for name in ("source_ts", "source_name", "source_position"):
        columns[name] = Change((), "expression", "set by the run")
    indirect = [(0, k, "join", "matched with the previous snapshot") for k in step.primary_key]
    return StepLineage({f.name: columns[f.name] for f in out}, indirect, out)


def _apply_changes(step: Any, schema: pa.Schema) -> StepLineage:
    """Each key's net change keeps the latest event's values: columns as they were."""
    out = step.infer_schema(schema)
    lineage = _filtered(out, list(step.primary_key), "group_by", "net change per key")
    if "source_seq" in out.names:
        lineage.indirect.append((0, "source_seq", "sort", "changes applied in commit order"))
    return lineage


def _user_function(step: Any, schema: pa.Schema) -> StepLineage:
    raise _Unanalysable("its columns come from a user function, which is not analysed")


_SINGLE: Final[dict[str, Callable[[Any, pa.Schema], StepLineage]]] = {
    "CastColumns": _cast,
    "RenameColumns": _rename,
    "SelectColumns": _shape,
    "DropColumns": _shape,
    "ReorderColumns": _shape,
    "TrimWhitespace": _text(lambda s: "whitespace trimmed"),
    "ChangeCase": _text(lambda s: f"changed to {s.case} case"),
    "StandardizeNulls": _text(lambda s: "null markers made null"),
    "FillNulls": _fill_nulls,
    "FillForward": _fill_forward,
    "DeriveColumns": _derive,
    "FilterRows": _filter_rows,
    "DropNulls": _drop_nulls,
    "DropDuplicates": _drop_duplicates,
    "ValidateRecords": _validate,
    "CheckUnique": _check_unique,
    "CheckCompleteness": _checked,
    "CheckRowCount": _checked,
    "Aggregate": _aggregate,
    "ConformToSchema": _conform,
    "DiffSnapshots": _diff,
    "ApplyChanges": _apply_changes,
    "MapBatches": _user_function,
    "MapRows": _user_function,
}


def _lookup_join(step: Any, node: Node, schemas: list[pa.Schema]) -> StepLineage:
    names = [str(ref) for ref in node.inputs]
    dim = names.index(step.dimension_name)
    stream = 1 - dim
    columns = _identity(schemas[stream], stream)
    fields = list(schemas[stream])
    keys = {right for _, right in step.pairs}
    added = (
        step.columns
        if step.columns is not None
        else [f.name for f in schemas[dim] if f.name not in keys]
    )
    for column in added:
        name = column
        while name in columns:
            name += step.suffix
        columns[name] = Change(((dim, column),))
        fields.append(schemas[dim].field(column).with_name(name).with_nullable(True))
    note = f"looked up in `{names[dim]}`"
    indirect = [(stream, left, "join", note) for left, _ in step.pairs]
    indirect += [(dim, right, "join", note) for _, right in step.pairs]
    return StepLineage(columns, indirect, pa.schema(fields))


def _join_inputs(step: Any, node: Node, schemas: list[pa.Schema]) -> StepLineage:
    from beam_etl.transforms.relational import join_schema  # lazy: start-up

    out, renamed = join_schema(schemas[0], schemas[1], step.pairs, step.suffix)
    columns = _identity(schemas[0], 0)
    for right, name in renamed.items():
        before = columns[name].inputs if name in columns else ()
        columns[name] = Change((*before, (1, right)))
    note = f"joined ({step.how}) on {', '.join(f'{a} = {b}' for a, b in step.pairs)}"
    indirect = [(0, left, "join", note) for left, _ in step.pairs]
    indirect += [(1, right, "join", note) for _, right in step.pairs]
    return StepLineage({f.name: columns[f.name] for f in out if f.name in columns}, indirect, out)


def _union(step: Any, node: Node, schemas: list[pa.Schema]) -> StepLineage:
    out = step.infer_schemas({str(ref): s for ref, s in zip(node.inputs, schemas)})
    names = (
        out.names if out is not None else list(dict.fromkeys(n for s in schemas for n in s.names))
    )
    columns = {
        name: Change(tuple((i, name) for i, s in enumerate(schemas) if name in s.names))
        for name in names
    }
    return StepLineage(columns, [], out)


_MULTI: Final = {"LookupJoin": _lookup_join, "JoinInputs": _join_inputs, "UnionInputs": _union}


def _type_name(transform: Any) -> str:
    """The built-in type a transform is, or "" for any other class (no rule applies)."""
    cls = type(transform)
    return cls.__name__ if cls.__module__.startswith("beam_etl.") else ""


def step_flows(node: Node, transform: Any, inputs: list[Flow]) -> dict[str, Flow]:
    """Return the flow of each (non-error) output of step `node`.

    Raises:
        ValueError, KeyError, TypeError: the step's configuration does not fit its input
            schema (the caller reports the step as unknown, with the message).
    """
    outputs = [o for o in outputs_of(transform, node.kind) if o != _ERROR]
    lost = next((flow for flow in inputs if flow.columns is None), None)
    if lost is not None:
        return dict.fromkeys(outputs, unknown(lost.unknown or "an input is unknown"))
    schemas = [flow.schema for flow in inputs]
    if any(schema is None for schema in schemas):
        reason = f"the schema reaching `{node.name}` is not known"
        return dict.fromkeys(outputs, unknown(reason))
    known: list[pa.Schema] = [s for s in schemas if s is not None]
    kind = _type_name(transform)
    try:
        if kind in _MULTI:
            return {
                "output": carry(node.name, node.name, inputs, _MULTI[kind](transform, node, known))
            }
        if len(inputs) != 1:
            raise _Unanalysable(
                f"`{node.type}` reads {len(inputs)} inputs and has no rule for that"
            )
        if kind == "Chain":
            return {"output": _chain(node, transform, inputs[0])}
        if kind == "SplitRows":
            return _split(node, transform, inputs[0], known[0])
        rule = _SINGLE.get(kind)
        if rule is None:
            raise _Unanalysable(f"`{node.type}` has no lineage rule")
        return {"output": carry(node.name, node.name, inputs, rule(transform, known[0]))}
    except _Unanalysable as exc:
        return dict.fromkeys(outputs, unknown(f"step `{node.name}`: {exc}"))


def _chain(node: Node, chain: Any, flow: Flow) -> Flow:
    """A chain's processors one after the other, each noted as `chain/processor`."""
    for name, step in chain.steps:
        label = f"{node.name}/{name}"
        rule = _SINGLE.get(_type_name(step))
        if rule is None:
            raise _Unanalysable(f"processor `{label}` ({type(step).__name__}) has no lineage rule")
        if flow.schema is None:
            raise _Unanalysable(f"the schema reaching `{label}` is not known")
        flow = carry(node.name, label, [flow], rule(step, flow.schema))
    return flow


def _split(node: Node, step: Any, flow: Flow, schema: pa.Schema) -> dict[str, Flow]:
    """Each output holds the input's columns; every condition decides where a row goes."""
    step.infer_schema(schema)
    used = list(
        dict.fromkeys(c for text in step.conditions.values() for c in referenced_columns(text))
    )
    routed = ", ".join(f"{name}: {text}" for name, text in step.conditions.items())
    lineage = _filtered(schema, used, "filter", f"routed by {routed}")
    return {
        output: carry(node.name, node.name, [flow], lineage)
        for output in [*step.conditions, step.default]
    }
