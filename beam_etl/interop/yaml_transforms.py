"""beam_etl's sources, steps and sinks as Beam YAML transforms (the provider's targets).

`provider.yaml` names every catalogue type as `beam_etl.interop.yaml_transforms.<Type>`; the
classes are made on first use from the catalogue (`__getattr__` below), so each takes exactly
the config keys of its beam_etl factory, plus:

- `error_handling: {output: NAME}`: rejected rows leave through output `NAME` as rows of
  `ErrorRow` (the dead-letter record: step, reason, message, origin, source, line, key, the
  payload as JSON text, run id). Without it a rejected row fails the pipeline, as in Beam
  YAML's own transforms.
- `output_columns: {column: type}`: the output schema of a step that cannot say it (a user
  function, a lookup join), needed to make its rows.

Inputs are schema'd rows, made batches with `ToBatches`; rows that a beam_etl transform made
are not converted back: its batches are used, hidden origin columns included, so dead letters
of the next beam_etl step still name file and line (rows that went through one of Beam's own
transforms do not). Outputs are rows again (`ToRows`; made even when only beam_etl
transforms read them). Main outputs keep beam_etl's names (`output`, a split's routes).
"""

import json
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.batches import dumps_safe, visible_schema
from beam_etl.core.catalogue import SOURCE, arguments, catalogue, did_you_mean, outputs_of
from beam_etl.core.contract import declared
from beam_etl.core.datatypes import parse_type
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import DataError
from beam_etl.interop.bridge import ToBatches, ToRows

#: Wrapper config keys of every type, besides the factory's own.
EXTRA_KEYS = ("error_handling", "output_columns")
_BATCHES = "_beam_etl_batches"  # attribute of a rows PCollection: the batches it was made from


class ErrorRow(NamedTuple):
    """A rejected row as Beam YAML's error outputs carry it (the dead-letter record)."""

    step: str
    reason: str
    message: str
    origin: str
    source: str | None
    line: int | None
    key: str | None
    payload: str | None  # the original row (or raw text) as JSON text
    run_id: str


beam.coders.registry.register_coder(ErrorRow, beam.coders.RowCoder)


def error_row(letter: DeadLetter) -> ErrorRow:
    """Return the dead letter as an `ErrorRow`."""
    payload = None if letter.payload is None else dumps_safe(letter.payload)
    return ErrorRow(
        letter.step,
        letter.reason,
        letter.message,
        letter.origin,
        letter.source,
        letter.line,
        letter.key,
        payload,
        letter.run_id,
    )


def dead_letter(row: Any) -> DeadLetter:
    """Return the dead letter an `ErrorRow` (or any row with its fields) stands for."""
    payload = getattr(row, "payload", None)
    return DeadLetter(
        step=str(row.step),
        reason=str(row.reason),
        message=str(row.message),
        source=getattr(row, "source", None),
        line=getattr(row, "line", None),
        key=getattr(row, "key", None),
        payload=json.loads(payload) if isinstance(payload, str) else payload,
        run_id=str(getattr(row, "run_id", "") or ""),
    )


class _RaiseOnRejectFn(beam.DoFn):
    """Fails the pipeline on the first rejected row of a step without `error_handling`."""

    def __init__(self, step: str) -> None:
        self._step = step

    def process(self, letter: DeadLetter) -> Iterator[Any]:
        raise DataError(
            f"Step `{self._step}` rejected a row ({letter.reason} at {letter.origin}: "
            f"{letter.message}); add `error_handling: {{output: errors}}` to its config to "
            "route rejected rows to an output"
        )
        yield  # a generator, as Beam expects of `process`


class BeamEtlTransform(beam.PTransform):
    """Apply one beam_etl catalogue type to Beam YAML's inputs; subclasses set `TYPE`."""

    TYPE: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        entry = catalogue()[self.TYPE]
        factory = entry.load()
        self._error_handling = _error_output(config.pop("error_handling", None))
        columns = config.pop("output_columns", None)
        self._output_schema = _schema_of_columns(columns) if columns is not None else None
        _check_keys(self.TYPE, factory, config)
        self.transform = factory(**config)
        if self._error_handling and ERROR not in outputs_of(self.transform, self.KIND):
            raise ValueError(
                f"`{self.TYPE}` rejects no rows (it has no error output); remove `error_handling`"
            )

    def expand(self, pvalue):
        batches = self._inputs(pvalue)
        applied = batches | self.label >> self.transform
        outputs = _named(applied, self.transform, self.KIND)
        if self.TYPE == "WriteToDeadLetters":
            return {}
        result: dict[str, Any] = {}
        for name, pcoll in outputs.items():
            if name == ERROR:
                errors = self._errors(pcoll)
                if errors is not None:
                    result[self._error_handling or ERROR] = errors
                continue
            rows = pcoll | f"{name}/ToRows" >> ToRows(schema=self._schema_for(batches))
            setattr(rows, _BATCHES, pcoll)
            result[name] = rows
        return result

    def _inputs(self, pvalue: Any) -> Any:
        if isinstance(pvalue, beam.pvalue.PBegin):
            return pvalue
        convert = _letters if self.TYPE == "WriteToDeadLetters" else _batches
        if isinstance(pvalue, beam.PCollection):
            return convert(pvalue, "Input")
        converted = {name: convert(pcoll, f"Input[{name}]") for name, pcoll in pvalue.items()}
        shape = declared(self.transform, self.KIND).input_shape
        if shape == "inputs":
            return converted
        if shape == "tuple" or len(converted) == 1:
            values = tuple(converted.values())
            return values if len(values) > 1 else values[0]
        return tuple(converted.values()) | "MergeInputs" >> beam.Flatten()

    def _errors(self, letters: beam.PCollection) -> beam.PCollection | None:
        if self._error_handling is None:
            _ = letters | "FailOnReject" >> beam.ParDo(_RaiseOnRejectFn(self.label))
            return None
        return letters | "ErrorRows" >> beam.Map(error_row).with_output_types(ErrorRow)

    def _schema_for(self, batches: Any) -> pa.Schema:
        if self._output_schema is not None:
            return self._output_schema
        found = _output_schema(self.transform, batches)
        if found is None:
            raise ValueError(
                f"`{self.TYPE}` cannot tell the columns it outputs here; declare them with "
                "`output_columns: {column: type, ...}`"
            )
        return visible_schema(found)


def _error_output(error_handling: Any) -> str | None:
    if error_handling is None:
        return None
    if not isinstance(error_handling, dict) or not isinstance(error_handling.get("output"), str):
        raise ValueError("`error_handling` must be a mapping with `output: NAME`")
    return error_handling["output"]


def _schema_of_columns(columns: Any) -> pa.Schema:
    if not isinstance(columns, dict) or not columns:
        raise ValueError("`output_columns` must map column names to types")
    return pa.schema([(str(name), parse_type(kind)) for name, kind in columns.items()])


def _check_keys(name: str, factory: Any, config: dict[str, Any]) -> None:
    accepted, open_ended = arguments(factory)
    names = [a.name for a in accepted]
    for key in config:
        if key not in names and not open_ended:
            raise ValueError(
                f"Unknown config key `{key}` for `{name}`.{did_you_mean(key, names)} "
                f"Accepted: {', '.join([*names, *EXTRA_KEYS])}"
            )
    missing = [a.name for a in accepted if a.required and a.name not in config]
    if missing:
        raise ValueError(f"Missing config key(s) {', '.join(f'`{m}`' for m in missing)}")


def _batches(rows: beam.PCollection, label: str) -> beam.PCollection:
    made_from = getattr(rows, _BATCHES, None)
    if made_from is not None:  # rows of a beam_etl transform: use its batches as they are
        return made_from
    return rows | f"{label}/ToBatches" >> ToBatches()


def _letters(rows: beam.PCollection, label: str) -> beam.PCollection:
    return rows | f"{label}/ToDeadLetters" >> beam.Map(dead_letter).with_output_types(DeadLetter)


def _named(result: Any, transform: Any, kind: str) -> dict[str, Any]:
    declared = outputs_of(transform, kind)
    if hasattr(result, "_fields"):
        named = dict(zip(result._fields, result))
    elif isinstance(result, dict):
        named = dict(result)
    elif isinstance(result, beam.pvalue.DoOutputsTuple):
        named = {tag: result[tag] for tag in result._tags} | {OUTPUT: result[None]}
    elif isinstance(result, beam.PCollection):
        named = {OUTPUT: result}
    else:
        named = {}
    return {name: pcoll for name, pcoll in named.items() if name in declared}


def _output_schema(transform: Any, batches: Any) -> pa.Schema | None:
    """The schema of the transform's main output, as it declares it, or None."""
    from beam_etl.interop.bridge import schema_of

    if isinstance(batches, beam.pvalue.PBegin):
        schema = getattr(transform, "schema", None)
        if isinstance(schema, pa.Schema):
            return schema
        sample = getattr(transform, "sample", None)
        return sample(1).schema if callable(sample) else None
    if isinstance(batches, beam.PCollection):
        infer = getattr(transform, "infer_schema", None)
        return _attempt(infer, schema_of, batches) if callable(infer) else None
    infer_many = getattr(transform, "infer_schemas", None)
    if not callable(infer_many):
        return None
    items = batches.items() if isinstance(batches, dict) else enumerate(batches)
    try:
        schemas = {str(name): schema_of(pcoll) for name, pcoll in items}
        return infer_many(schemas)
    except (ValueError, KeyError, DataError):
        return None


def _attempt(infer: Any, schema_of: Any, batches: beam.PCollection) -> pa.Schema | None:
    try:
        return infer(schema_of(batches))
    except (ValueError, KeyError, DataError):
        return None


def transform_class(name: str) -> type[BeamEtlTransform]:
    """Return the Beam YAML transform class of catalogue type `name`.

    Its `__init__` shows the factory's keyword arguments (plus `EXTRA_KEYS`), and its
    docstring is the factory's, so Beam YAML documents and checks it like its own.

    Raises:
        KeyError: `name` is not a catalogue type.
    """
    if name in _CLASSES:
        return _CLASSES[name]
    entry = catalogue()[name]
    factory = entry.load()
    cls = type(
        name,
        (BeamEtlTransform,),
        {
            "TYPE": name,
            "KIND": entry.kind,
            "__doc__": factory.__doc__,
            "__module__": __name__,
            "__qualname__": name,
            "_yaml_requires_inputs": entry.kind != SOURCE,
        },
    )
    setattr(cls, "__init__", _init_with_signature(factory))  # noqa: B010 (a class made here)
    _CLASSES[name] = cls
    return cls


def _init_with_signature(factory: Any) -> Any:
    import inspect

    def __init__(self, **config: Any) -> None:
        BeamEtlTransform.__init__(self, **config)

    accepted, _ = arguments(factory)
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for argument in accepted:
        default = inspect.Parameter.empty if argument.required else argument.default
        parameters.append(
            inspect.Parameter(argument.name, inspect.Parameter.KEYWORD_ONLY, default=default)
        )
    for key in EXTRA_KEYS:
        parameters.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None))
    __init__.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    __init__.__doc__ = getattr(factory.__init__, "__doc__", None)
    return __init__


_CLASSES: dict[str, type[BeamEtlTransform]] = {}


def __getattr__(name: str) -> Any:
    if name in catalogue():
        return transform_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BeamEtlTransform", "ErrorRow", "dead_letter", "error_row", "transform_class"]
