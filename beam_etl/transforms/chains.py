"""Chains of batch processors run as one step, and `@batch_step` to write a processor quickly.

A `Chain` fuses its processors into ONE `ParDo`: each batch goes through every processor in
turn, in memory, with no PCollection between them. That is the original design's
ProcessorChain, and also the fastest way to run several stateless steps. Only batch steps
(subclasses of `BatchStep`, e.g. `CastColumns`, `FilterRows`, `TrimWhitespace`, or made with
`@batch_step`) can be chained; steps that shuffle (dedupe, joins, aggregates) cannot be fused
and stay steps of their own.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.catalogue import STEP, arguments, did_you_mean, lookup
from beam_etl.core.deadletter import ERROR, OUTPUT
from beam_etl.core.errors import BeamEtlError, SpecError
from beam_etl.core.outputs import WithErrors
from beam_etl.core.retries import RetryPolicy, with_retry
from beam_etl.transforms._base import BatchResult, BatchStep, _ApplyFn
from beam_etl.transforms.rows import _apply_batch_function

#: Processors made with `@batch_step` in this process, by name (see `batch_step`).
REGISTERED: dict[str, type[BatchStep]] = {}
_SPEC_KEYS = ("type", "config", "name")


def _from_spec(item: dict[str, Any], index: int) -> tuple[str | None, Any]:
    """Build the processor described by `{type, config, name}` through the catalogue."""
    unknown = [key for key in item if key not in _SPEC_KEYS]
    if unknown or not isinstance(item.get("type"), str):
        raise ValueError(
            f"`steps` item {index + 1} must be a mapping with `type` and optional `config` and "
            f"`name` (found keys: {', '.join(map(str, item))})"
        )
    type_name, config = item["type"], item.get("config") or {}
    try:
        entry = lookup(type_name)
    except KeyError as exc:
        raise ValueError(f"`steps` item {index + 1}: {exc.args[0]}") from None
    if entry.kind not in ("any", STEP):
        raise ValueError(f"`steps` item {index + 1}: `{type_name}` is a {entry.kind}, not a step")
    factory = entry.load()
    accepted = [argument.name for argument in arguments(factory)[0]]
    for key in config:
        if key not in accepted:
            raise ValueError(
                f"`steps` item {index + 1}: unknown config key `{key}` for `{type_name}`."
                f"{did_you_mean(key, accepted)} Accepted: {', '.join(accepted)}"
            )
    try:
        return item.get("name"), factory(**config)
    except (ValueError, TypeError, KeyError, BeamEtlError) as exc:
        message = exc.message if isinstance(exc, SpecError) else str(exc).strip("'\"")
        raise ValueError(f"`steps` item {index + 1} (`{type_name}`): {message}") from None


def _resolve(steps: list[Any]) -> list[tuple[str, BatchStep]]:
    if not isinstance(steps, list | tuple) or not steps:
        raise ValueError("`steps` must list at least one processor")
    resolved: list[tuple[str, BatchStep]] = []
    for index, item in enumerate(steps):
        if isinstance(item, dict):
            name, step = _from_spec(item, index)
        elif isinstance(item, beam.transforms.ptransform._NamedPTransform):  # "name" >> step
            name, step = item.label, item.transform
        else:
            name, step = None, item
        if not isinstance(step, BatchStep):
            raise ValueError(
                f"`steps` item {index + 1} (`{type(step).__name__}`) is not a batch processor; "
                "a chain fuses batch steps only: apply shuffling steps (dedupe, joins, "
                "aggregates) on their own"
            )
        name = str(name or type(step).__name__)
        taken = {existing for existing, _ in resolved}
        unique, number = name, 2
        while unique in taken:
            unique, number = f"{name}_{number}", number + 1
        resolved.append((unique, step))
    return resolved


Function = Callable[[pa.RecordBatch, str], BatchResult]


def _run_chain(functions: list[tuple[str, Function]], batch: pa.RecordBatch, _: str):
    letters, dropped = [], 0
    kept: pa.RecordBatch | None = batch
    for step, function in functions:
        kept, rejected, removed = function(kept, step)
        letters.extend(rejected)
        dropped += removed
        if kept is None or not kept.num_rows:
            return None, letters, dropped
    return kept, letters, dropped


class Chain(beam.PTransform):
    """Run batch processors one after the other as ONE step (one `ParDo`, one pass per batch).

    Each batch goes through the processors in order; the rows a processor rejects leave
    through the chain's single `error` output as they would from that processor, with step
    `<chain>/<processor name>`; rows a processor drops on purpose are counted as dropped by
    the chain. Order of rows kept. The chain's output schema (checked when the spec is
    loaded) is that of its processors in turn.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(self, steps: list[Any]) -> None:
        """Args:
        steps: the processors in order. In a spec, each is `{type, config, name}` (`name`
            is optional and names the processor in dead letters). From Python, also a
            processor instance or `"name" >> processor`.
        """
        super().__init__()
        self.steps = _resolve(steps)

    def infer_schema(self, schema: pa.Schema) -> pa.Schema | None:
        """Return the schema after every processor, or None once one cannot tell."""
        for name, step in self.steps:
            infer = getattr(step, "infer_schema", None)
            if infer is None:
                return None
            try:
                schema = infer(schema)
            except (ValueError, KeyError, BeamEtlError) as exc:
                message = exc.message if isinstance(exc, SpecError) else str(exc).strip("'\"")
                raise ValueError(f"Chain step `{name}`: {message}") from None
        return schema

    def expand(self, batches):
        functions = [(f"{self.label}/{name}", step.batch_function()) for name, step in self.steps]
        results = batches | "Chain" >> beam.ParDo(
            _ApplyFn(self.label, functools.partial(_run_chain, functions))
        ).with_outputs(ERROR, main=OUTPUT)
        return WithErrors(results[OUTPUT], results[ERROR])


def _call_step(
    cls: Any,
    config: dict[str, Any],
    batch: pa.RecordBatch,
    step: str,
    retry: RetryPolicy | None = None,
):
    function = with_retry(functools.partial(cls.function, **config), retry)
    return _apply_batch_function(function, batch, step)


def _step_class(function: Callable, name: str) -> type[BatchStep]:
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"`{function.__name__}` must take the batch as its first argument")
    config_signature = signature.replace(parameters=parameters[1:])
    # `retry` is the step's own key (a retry policy), unless the function takes one itself.
    own_retry = "retry" not in signature.parameters

    def __init__(self, **config: Any) -> None:
        BatchStep.__init__(self)
        self.retry = RetryPolicy.of(config.pop("retry", None)) if own_retry else None
        try:
            config_signature.bind(**config)
        except TypeError as exc:
            raise ValueError(f"`{name}`: {exc}") from None
        self.config = config

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    extra = parameters[1:]
    if own_retry:
        retry = inspect.Parameter("retry", inspect.Parameter.KEYWORD_ONLY, default=None)
        variadic = [p for p in extra if p.kind == inspect.Parameter.VAR_KEYWORD]
        extra = [p for p in extra if p.kind != inspect.Parameter.VAR_KEYWORD] + [retry, *variadic]
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *extra]
    )
    __init__.__doc__ = function.__doc__

    def batch_function(self):
        return functools.partial(_call_step, type(self), self.config, retry=self.retry)

    namespace = {
        "__init__": __init__,
        "batch_function": batch_function,
        "function": staticmethod(function),
        "__doc__": function.__doc__,
        "__module__": function.__module__,
        "__qualname__": function.__qualname__,  # so that workers import it by reference
    }
    return type(name, (BatchStep,), namespace)


def batch_step(function: Callable | None = None, *, name: str | None = None) -> Any:
    """Turn `function(batch, **config) -> batch` into a processor class (a `BatchStep`).

    The class takes the function's keyword arguments as its config (so they are a spec's
    config keys; an `Args:` section in the function's docstring documents them), and behaves
    like `MapBatches`: the batch it receives includes the origin columns (keep them), the
    function may return a `RecordBatch`, a `Table` or None, removed rows are counted as
    dropped, and a batch on which the function raises leaves through `error`
    (`function_failed`). Config key `retry` (`{attempts, backoff, on}`) retries the named
    exceptions with backoff; a batch whose attempts run out leaves as `retries_exhausted`.
    The class replaces the function under its name in its module, and is listed in
    `REGISTERED` under `name` (the function's name by default).

    ```python
    @batch_step(name="ScaleColumn")
    def scale_column(batch, *, column: str, factor: float = 2.0):
        index = batch.schema.get_field_index(column)
        return batch.set_column(index, column, pc.multiply(batch.column(index), factor))

    batches | "Scale" >> scale_column(column="amount", factor=100)
    ```
    """

    def decorate(target: Callable) -> type[BatchStep]:
        step = _step_class(target, name or target.__name__)
        REGISTERED[step.__name__] = step
        return step

    return decorate(function) if function is not None else decorate
