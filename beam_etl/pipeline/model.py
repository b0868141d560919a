"""The spec model: named nodes (sources, steps, sinks) with explicit inputs, and their lines.

```yaml
name: orders
sources:
  - name: orders
    type: ReadFromCsv
    config: {path: data/orders.csv}
steps:
  - name: cast
    type: CastColumns
    input: orders            # or `inputs: [a, b]`; `node.error` is a node's dead-letter output
    config: {columns: {amount: float64}}
sinks:
  - name: out
    type: WriteToParquet
    input: cast
    config: {path: out/orders}
```
"""

import re
from dataclasses import dataclass, field
from typing import Any, Final

from beam_etl.core.catalogue import SINK, SOURCE, STEP, did_you_mean
from beam_etl.core.errors import SpecError
from beam_etl.pipeline.loader import LineDict, LineList

SECTIONS: Final = {"sources": SOURCE, "steps": STEP, "sinks": SINK}
TOP_LEVEL_KEYS: Final = ("name", "description", *SECTIONS, "observers", "lineage")
LINEAGE_KEYS: Final = ("file", "url", "namespace", "enabled")
NODE_KEYS: Final = ("name", "type", "config", "input", "inputs", "description", "checkpoint")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class InputRef:
    """A reference to one output of a node: `name` (its main output) or `name.error`."""

    node: str
    output: str
    line: int

    def __str__(self) -> str:
        return self.node if self.output == "output" else f"{self.node}.{self.output}"


@dataclass(frozen=True)
class Node:
    """A source, step or sink of the spec."""

    name: str
    kind: str
    type: str
    config: dict[str, Any]
    inputs: list[InputRef]
    line: int
    type_line: int
    config_lines: dict[str, int] = field(default_factory=dict)
    checkpoint: bool = False  # materialise its outputs for `--resume` (beam_etl.checkpoints)

    def config_line(self, key: str) -> int:
        """Return the line of config key `key`, or the node's line."""
        return self.config_lines.get(key, self.line)


@dataclass(frozen=True)
class Spec:
    """A parsed spec: its name, nodes in file order, and where it came from."""

    name: str
    description: str
    nodes: list[Node]
    source: str
    observers: tuple[tuple[str, int], ...] = ()  # (`module:attribute`, line), see observers
    lineage: dict[str, Any] = field(default_factory=dict)  # see `beam_etl.lineage`

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def parse(document: Any, source: str) -> Spec:
    """Check the spec's shape and return its model (graph checks come in `validate`).

    Raises:
        SpecError: one line naming the step and line of the first problem found.
    """
    if not isinstance(document, LineDict):
        raise SpecError(f"`{source}` must hold a mapping with `sources`, `steps` and `sinks`")
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise SpecError(
                f"Unknown top-level key `{key}`.{did_you_mean(key, TOP_LEVEL_KEYS)} "
                f"Accepted: {', '.join(TOP_LEVEL_KEYS)}",
                line=document.lines[key],
            )
    nodes: list[Node] = []
    seen: dict[str, int] = {}
    for section, kind in SECTIONS.items():
        items = document.get(section) or LineList()
        if not isinstance(items, LineList):
            raise SpecError(f"`{section}` must be a list of nodes", line=document.lines[section])
        for item, line in zip(items, items.lines):
            node = _parse_node(item, line, kind, section)
            if node.name in seen:
                raise SpecError(
                    f"Name `{node.name}` is used twice (first at line {seen[node.name]})",
                    step=node.name,
                    line=node.line,
                )
            seen[node.name] = node.line
            nodes.append(node)
    if not any(n.kind == SOURCE for n in nodes):
        raise SpecError("The spec has no `sources`", line=document.line)
    if not any(n.kind == SINK for n in nodes):
        raise SpecError("The spec has no `sinks`: its results would go nowhere", line=document.line)
    name = document.get("name") or source
    observers = document.get("observers") or LineList()
    if not isinstance(observers, LineList) or not all(isinstance(o, str) for o in observers):
        raise SpecError(
            "`observers` must be a list of `module:attribute` import paths",
            line=document.lines["observers"],
        )
    description = str(document.get("description") or "")
    return Spec(
        str(name),
        description,
        nodes,
        source,
        tuple(zip(observers, observers.lines)),
        lineage=_parse_lineage(document),
    )


def _parse_lineage(document: LineDict) -> dict[str, Any]:
    """Return the spec's `lineage:` settings (where OpenLineage events go), checked."""
    settings = document.get("lineage")
    if settings is None:
        return {}
    line = document.lines["lineage"]
    accepted = ", ".join(LINEAGE_KEYS)
    if not isinstance(settings, LineDict):
        raise SpecError(f"`lineage` must be a mapping with keys {accepted}", line=line)
    checked: dict[str, Any] = {}
    for key, value in settings.items():
        at = settings.lines.get(key, line)
        if key not in LINEAGE_KEYS:
            hint = did_you_mean(key, LINEAGE_KEYS)
            raise SpecError(
                f"Unknown key `{key}` in `lineage`.{hint} Accepted: {accepted}", line=at
            )
        if key == "enabled" and str(value).lower() in ("true", "false"):
            checked[key] = str(value).lower() == "true"
        elif key != "enabled" and isinstance(value, str) and value.strip():
            checked[key] = str(value)
        else:
            what = "true or false" if key == "enabled" else "a non-empty text"
            raise SpecError(f"`lineage.{key}` must be {what}", line=at)
    if "url" in checked and not checked["url"].startswith(("http://", "https://")):
        raise SpecError(
            "`lineage.url` must start with http:// or https://", line=settings.lines["url"]
        )
    return checked


def _parse_node(item: Any, line: int, kind: str, section: str) -> Node:
    if not isinstance(item, LineDict):
        raise SpecError(
            f"Each entry of `{section}` must be a mapping with `name` and `type`", line=line
        )
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(
            f"Each node needs a `name` of ASCII letters, digits, `_` or `-`, not `{name}`",
            line=item.lines.get("name", line),
        )
    for key in item:
        if key not in NODE_KEYS:
            raise SpecError(
                f"Unknown key `{key}`.{did_you_mean(key, NODE_KEYS)} Accepted: "
                f"{', '.join(NODE_KEYS)}",
                step=name,
                line=item.lines[key],
            )
    if not isinstance(item.get("type"), str):
        raise SpecError("Missing `type`", step=name, line=line)
    config = item.get("config") or LineDict()
    if not isinstance(config, dict):
        raise SpecError("`config` must be a mapping", step=name, line=item.lines["config"])
    config_lines = dict(getattr(config, "lines", {}))
    checkpoint = item.get("checkpoint", False)
    if not isinstance(checkpoint, bool) or (checkpoint and kind == SINK):
        what = "A sink has no output to checkpoint" if kind == SINK else "must be true or false"
        raise SpecError(f"`checkpoint`: {what}", step=name, line=item.lines.get("checkpoint", line))
    return Node(
        name=name,
        kind=kind,
        type=item["type"],
        config=_plain(config),
        inputs=_parse_inputs(item, name, kind, line),
        line=line,
        type_line=item.lines.get("type", line),
        config_lines=config_lines,
        checkpoint=checkpoint,
    )


def _parse_inputs(item: LineDict, name: str, kind: str, line: int) -> list[InputRef]:
    if "input" in item and "inputs" in item:
        raise SpecError("Give `input` or `inputs`, not both", step=name, line=item.lines["inputs"])
    key = "inputs" if "inputs" in item else "input"
    raw = item.get(key)
    if kind == SOURCE:
        if raw is not None:
            raise SpecError("A source takes no `input`", step=name, line=item.lines[key])
        return []
    if raw is None or raw == []:
        raise SpecError("Missing `input`: name the node(s) this one reads", step=name, line=line)
    values = raw if isinstance(raw, list) else [raw]
    lines = raw.lines if isinstance(raw, LineList) else [item.lines[key]] * len(values)
    refs = []
    for value, at in zip(values, lines):
        if not isinstance(value, str) or not value:
            raise SpecError(f"An input must be a node name, not `{value}`", step=name, line=at)
        node, _, output = value.partition(".")
        refs.append(InputRef(node, output or "output", at))
    return refs


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
