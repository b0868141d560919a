"""Whole-spec validation before anything runs: types, config keys, inputs, cycles, outputs.

Every problem is one `SpecError` naming the step and the YAML line. Validation ends by
constructing every transform, so factory checks (bad values, missing files) are reported the
same way; the constructed transforms are returned for the builder to apply.
"""

import functools
import inspect
import types
import typing
from typing import Any, Final

from beam_etl.core.batches import check_names
from beam_etl.core.catalogue import (
    SINK,
    SOURCE,
    Entry,
    arguments,
    did_you_mean,
    lookup,
    outputs_of,
)
from beam_etl.core.errors import BeamEtlError, ConnectorError, SpecError
from beam_etl.pipeline.loader import Substituted
from beam_etl.pipeline.model import Node, Spec

_KIND_SECTION = {SOURCE: "sources", "step": "steps", SINK: "sinks"}


def check_types(spec: Spec) -> dict[str, tuple[Entry, Any]]:
    """Return `{node: (entry, factory)}`; unknown types and misplaced kinds are errors."""
    found = {}
    for node in spec.nodes:
        try:
            entry = lookup(node.type)
        except KeyError as exc:
            raise SpecError(exc.args[0], step=node.name, line=node.type_line) from None
        if entry.kind not in ("any", node.kind):
            raise SpecError(
                f"`{node.type}` is a {entry.kind}; list it under `{_KIND_SECTION[entry.kind]}`",
                step=node.name,
                line=node.type_line,
            )
        try:
            factory = entry.load()
        except ImportError as exc:
            raise SpecError(str(exc), step=node.name, line=node.type_line) from None
        found[node.name] = (entry, factory)
    return found


def check_config(node: Node, factory: Any) -> None:
    """Unknown config keys (with the accepted list) and missing required keys are errors."""
    accepted, open_ended = arguments(factory)
    names = [a.name for a in accepted]
    for key in node.config:
        if key not in names and not open_ended:
            raise SpecError(
                f"Unknown config key `{key}` for `{node.type}`.{did_you_mean(key, names)} "
                f"Accepted: {', '.join(names) or 'none'}",
                step=node.name,
                line=node.config_line(key),
            )
    missing = [a.name for a in accepted if a.required and a.name not in node.config]
    if missing:
        raise SpecError(
            f"Missing config key(s) {', '.join(f'`{m}`' for m in missing)} for `{node.type}`",
            step=node.name,
            line=node.line,
        )


def check_inputs(spec: Spec, transforms: dict[str, Any]) -> None:
    """Inputs must name existing, non-sink nodes and outputs those nodes have."""
    by_name = {n.name: n for n in spec.nodes}
    for node in spec.nodes:
        for ref in node.inputs:
            target = by_name.get(ref.node)
            if target is None:
                hint = did_you_mean(ref.node, [n for n in by_name if n != node.name])
                raise SpecError(f"Unknown input `{ref}`.{hint}", step=node.name, line=ref.line)
            outputs = outputs_of(transforms[target.name], target.kind)
            if target.kind == SINK and not outputs:
                raise SpecError(
                    f"Input `{ref}` is a sink; sinks have no output to read",
                    step=node.name,
                    line=ref.line,
                )
            if ref.output not in outputs:
                raise SpecError(
                    f"`{target.name}` has no output `{ref.output}` (outputs: {', '.join(outputs)})",
                    step=node.name,
                    line=ref.line,
                )


def topological_order(spec: Spec) -> list[Node]:
    """Return the nodes so that every node comes after its inputs; a cycle is an error."""
    by_name = {n.name: n for n in spec.nodes}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    ordered: list[Node] = []

    def visit(node: Node, path: list[str]) -> None:
        if state.get(node.name) == 2:
            return
        if state.get(node.name) == 1:
            cycle = [*path[path.index(node.name) :], node.name]
            raise SpecError(f"Cycle: {' -> '.join(cycle)}", step=node.name, line=node.line)
        state[node.name] = 1
        for ref in node.inputs:
            visit(by_name[ref.node], [*path, node.name])
        state[node.name] = 2
        ordered.append(node)

    for node in spec.nodes:
        visit(node, [])
    return ordered


def check_consumed(spec: Spec, transforms: dict[str, Any]) -> None:
    """Every output of every source and step must be read by some node."""
    consumed = {(ref.node, ref.output) for node in spec.nodes for ref in node.inputs}
    for node in spec.nodes:
        for output in outputs_of(transforms[node.name], node.kind):
            if (node.name, output) in consumed:
                continue
            if output == "output":
                message = "Output of this node is not read by any step or sink"
            else:
                message = (
                    f"Output `{node.name}.{output}` is not read by any step or sink; add it to "
                    "the inputs of a sink (for example `WriteToDeadLetters`)"
                )
            raise SpecError(message, step=node.name, line=node.line)


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})
_NULL: Final = frozenset({"", "null", "none", "~"})
_NOUNS: Final = {bool: "true or false", int: "an integer", float: "a number"}


def _scalar_types(annotation: Any, default: Any) -> set[Any]:
    """The plain types a config key accepts: from its annotation, else from its default."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return {Any}
        return {type(default)}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {arg for arg in typing.get_args(annotation)}
    return {annotation}


def _typed_value(value: Substituted, accepted: set[Any], key: str, node: Node) -> Any:
    """Return the text of a variable as the type `key` takes (text stays text)."""
    numeric = accepted & {bool, int, float}
    if not numeric or str in accepted or Any in accepted:
        return str(value)
    text = value.strip()
    if type(None) in accepted and text.lower() in _NULL:
        return None
    if bool in accepted and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    for kind in (int, float):
        if kind in accepted:
            try:
                return kind(text)
            except ValueError:
                pass
    expected = " or ".join(_NOUNS[kind] for kind in (bool, int, float) if kind in numeric)
    raise SpecError(
        f"Config key `{key}` takes {expected}, but its variable gave `{value}`",
        step=node.name,
        line=node.config_line(key),
    )


def _plain_text(value: Any) -> Any:
    if isinstance(value, Substituted):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_text(v) for v in value]
    return value


def typed_config(node: Node, factory: Any) -> dict[str, Any]:
    """Return the node's config with text from variables typed by each key's declared type.

    `split_size_mb: ${SPLIT_MB:-64}` gives the int 64 when the factory's `split_size_mb` is
    annotated `int` (or defaults to an int); a key that also accepts text keeps the text.

    Raises:
        SpecError: a variable's text is not a value of the key's type (naming key and line).
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    config = {}
    for key, value in node.config.items():
        parameter = parameters.get(key)
        if isinstance(value, Substituted) and parameter is not None:
            accepted = _scalar_types(parameter.annotation, parameter.default)
            config[key] = _typed_value(value, accepted, key, node)
        else:
            config[key] = _plain_text(value)
    return config


def construct(node: Node, factory: Any, run_id: str) -> Any:
    """Build the node's transform from its config; factory errors become SpecErrors."""
    config = typed_config(node, factory)
    try:
        accepts_run_id = "run_id" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepts_run_id = False
    if accepts_run_id and "run_id" not in config:
        config["run_id"] = run_id
    try:
        return factory(**config)
    except (ValueError, TypeError, KeyError, BeamEtlError) as exc:
        message = exc.message if isinstance(exc, SpecError) else str(exc).strip("'\"")
        key = next((k for k in node.config if f"`{k}`" in message), None)
        line = node.config_line(key) if key else node.line
        raise SpecError(message, step=node.name, line=line) from exc


def check_schemas(ordered: list[Node], transforms: dict[str, Any]) -> dict[str, Any]:
    """Propagate schemas from sources through steps that can say their output schema.

    This is where expressions are type-checked and column names checked, at load time. A
    step after one whose schema is unknown (a user function, several inputs) is not checked.
    """
    schemas: dict[str, Any] = {}
    for node in ordered:
        transform = transforms[node.name]
        if not node.inputs:
            schemas[node.name] = _source_schema(node, transform)
            continue
        known = [schemas.get(ref.node) for ref in node.inputs if ref.output == "output"]
        complete = len(known) == len(node.inputs) and None not in known
        infer_one = getattr(transform, "infer_schema", None)
        infer_many = getattr(transform, "infer_schemas", None)
        infer: Any = None
        if len(node.inputs) > 1 and infer_many is not None and complete:
            infer = functools.partial(infer_many, {str(r): schemas[r.node] for r in node.inputs})
        elif len(node.inputs) == 1 and complete and infer_one is not None:
            infer = functools.partial(infer_one, known[0])
        if infer is None:
            schemas[node.name] = None
            continue
        try:
            schemas[node.name] = infer()
        except (ValueError, KeyError, BeamEtlError) as exc:
            message = exc.message if isinstance(exc, SpecError) else str(exc).strip("'\"")
            key = next((k for k in node.config if f"`{k}`" in message), None)
            line = node.config_line(key) if key else node.config_line(_first_key(node))
            raise SpecError(message, step=node.name, line=line) from exc
    return schemas


def _source_schema(node: Node, transform: Any) -> Any:
    """A source's schema, if it knows one; a column named like a hidden one is an error."""
    schema = getattr(transform, "schema", None)
    if schema is not None:
        path = getattr(transform, "path", None)
        try:
            check_names(schema.names, path if isinstance(path, str) else node.name)
        except ConnectorError as exc:
            raise SpecError(str(exc), step=node.name, line=node.line) from None
    return schema


def _first_key(node: Node) -> str:
    return next(iter(node.config), "")


def validate(spec: Spec, run_id: str) -> tuple[list[Node], dict[str, Any]]:
    """Validate the whole spec; return the nodes in build order and their transforms.

    Transforms are built before the graph checks because a transform's outputs may depend
    on its configuration (a split step names its outputs).
    """
    factories = check_types(spec)
    for node in spec.nodes:
        check_config(node, factories[node.name][1])
    transforms = {
        node.name: construct(node, factories[node.name][1], run_id) for node in spec.nodes
    }
    check_inputs(spec, transforms)
    ordered = topological_order(spec)
    check_consumed(spec, transforms)
    check_schemas(ordered, transforms)
    return ordered, transforms
