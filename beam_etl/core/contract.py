"""The step contract: what a source, a step and a sink declare, and the one place that reads it.

Every catalogue entry is a Beam `PTransform` class that declares, at class level:

- `OUTPUTS`: the named outputs `expand` returns (a NamedTuple such as `WithErrors(output,
  error)`, a dict, a `DoOutputsTuple`, or one PCollection = `output`). Default: `("output",)`
  for sources and steps, `()` for sinks (a sink's own result is its completion, no output).
  A transform whose outputs depend on its config (`SplitRows` routes) sets `OUTPUTS` on the
  instance in `__init__`. One name is reserved and need not be declared: `gate`, a quality
  gate (a PCollection of check results) the builder takes and hands to every sink, which
  publishes only if all gates pass. `HIDDEN_OUTPUTS` names outputs `expand` returns for its
  Python shape's sake that a spec cannot read (`DropDuplicates`' `error`, always empty).
- the input shape: one PCollection of batches (default), `MULTI_INPUT = True` for
  `{input_ref: pcoll}` (joins, unions), or `TUPLE_INPUT = True` for a tuple of inputs not
  flattened (the dead-letter sink);
- `SIDE_INPUTS`: the names of inputs read as side inputs (`LookupJoin`'s dimension);
- `CONSERVES_ROWS` (default True): whether every row in ends in an output or a dead letter
  (False for aggregations and joins; the run report's conservation check reads it).
- `GATED` (sinks): the sink takes quality gates as an input of its `expand`: `Gated(rows,
  gates)`, `gates` a PCollection of check results, publishing nothing if any failed. The spec
  builder hands every gated sink the gates of the run that way; from Python, give
  `Gated(rows, check.gate)`. A sink reads its input with `ungated`.

`declared(factory, kind)` reads and checks these once per class (`Entry.load` calls it, so a
third-party transform with a wrong declaration fails when a spec names it); the spec builder,
validation, lineage, the report and replay all read `declared`, never the attributes.
`undeclared_outputs` is the builder's check that `expand` returned nothing it did not declare
(an undeclared output would be dropped silently: it is a load-time error instead).

The Protocols say the same for type checkers and for authors of new connectors.
"""

from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, Protocol, runtime_checkable

SOURCE: Final = "source"
STEP: Final = "step"
SINK: Final = "sink"
GATE: Final = "gate"  # the reserved output of quality gates
_FLAGS: Final = ("MULTI_INPUT", "TUPLE_INPUT", "CONSERVES_ROWS", "GATED")


@runtime_checkable
class Source(Protocol):
    """A source: applied to the pipeline (`pipeline | source`), returns its `OUTPUTS`."""

    OUTPUTS: ClassVar[tuple[str, ...]]

    def expand(self, pbegin: Any) -> Any: ...


@runtime_checkable
class Step(Protocol):
    """A step: applied to its input (see the input shape flags), returns its `OUTPUTS`."""

    OUTPUTS: ClassVar[tuple[str, ...]]

    def expand(self, pcoll: Any) -> Any: ...


@runtime_checkable
class Sink(Protocol):
    """A sink: stages what it receives and publishes after the run's verdict."""

    def expand(self, pcoll: Any) -> Any: ...


@dataclass(frozen=True)
class Declared:
    """What a transform declares (see the module docstring)."""

    outputs: tuple[str, ...]
    multi_input: bool = False
    tuple_input: bool = False
    side_inputs: tuple[str, ...] = ()
    conserves_rows: bool = True
    hidden: tuple[str, ...] = ()
    gated: bool = False

    @property
    def input_shape(self) -> str:
        """`inputs` (a dict by input ref), `tuple` or `batches` (one PCollection)."""
        return "inputs" if self.multi_input else "tuple" if self.tuple_input else "batches"


def declared(transform: Any, kind: str) -> Declared:
    """Return the declarations of `transform` (a factory or an instance) of kind `kind`.

    Raises:
        TypeError: a declaration has the wrong type or the flags contradict each other.
    """
    default: tuple[str, ...] = () if kind == SINK else ("output",)
    name = getattr(transform, "__name__", type(transform).__name__)
    outputs = getattr(transform, "OUTPUTS", default)
    if not isinstance(outputs, tuple | list) or not all(isinstance(o, str) for o in outputs):
        raise TypeError(f"`{name}.OUTPUTS` must be a tuple of output names, not {outputs!r}")
    side = _names(transform, "SIDE_INPUTS", name)
    hidden = _names(transform, "HIDDEN_OUTPUTS", name)
    flags = {flag: getattr(transform, flag, flag == "CONSERVES_ROWS") for flag in _FLAGS}
    if flags["GATED"] and kind != SINK:
        raise TypeError(f"`{name}` declares GATED: only sinks take quality gates")
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"`{name}.{flag}` must be True or False, not {value!r}")
    if flags["MULTI_INPUT"] and flags["TUPLE_INPUT"]:
        raise TypeError(f"`{name}` declares both MULTI_INPUT and TUPLE_INPUT: choose one")
    if kind == SOURCE and (flags["MULTI_INPUT"] or flags["TUPLE_INPUT"] or side):
        raise TypeError(f"`{name}` is a source: it takes no inputs")
    return Declared(
        tuple(outputs),
        flags["MULTI_INPUT"],
        flags["TUPLE_INPUT"],
        tuple(side),
        flags["CONSERVES_ROWS"],
        hidden,
        flags["GATED"],
    )


def _names(transform: Any, attribute: str, name: str) -> tuple[str, ...]:
    found = getattr(transform, attribute, ())
    if not isinstance(found, tuple | list) or not all(isinstance(s, str) for s in found):
        raise TypeError(f"`{name}.{attribute}` must be a tuple of names, not {found!r}")
    return tuple(found)


def undeclared_outputs(named: dict[str, Any], declaration: Declared, kind: str) -> list[str]:
    """Return the output names `expand` returned beyond those declared (a sink's plain
    result, named `output` here, is its completion signal, not an output)."""
    known = {*declaration.outputs, *declaration.hidden, GATE}
    extra = [name for name in named if name not in known]
    return [name for name in extra if not (kind == SINK and name == "output")]


class Gated(NamedTuple):
    """The input of a gated sink: its `rows` and the quality `gates` (one PCollection of
    check results: objects with `passed` / `outcome` and `message`) that must all pass before
    it publishes anything."""

    rows: Any
    gates: Any


def ungated(pvalue: Any) -> tuple[Any, tuple]:
    """Return a gated sink's input as `(rows, gates)`: `gates` a tuple of PCollections, empty
    when the sink was applied to its rows alone."""
    if isinstance(pvalue, Gated):
        return pvalue.rows, (pvalue.gates,)
    return pvalue, ()
