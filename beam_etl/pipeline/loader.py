"""YAML text -> plain Python values with the line of every mapping key and list item.

Variables `${NAME}` and `${NAME:-default}` are replaced in string scalars from built-in values
(`SPEC_DIR`, `OUTPUT_DIR`, `RUN_ID`, `DEMO_DIR`) and environment variables; `$${...}` keeps a
literal `${...}`. Substituted values are remembered so that every message can redact them, and
come back as `Substituted` text, which validation types by the config key's declared type.

A spec is small, so its size is bounded before anything is built from it: at most `MAX_DEPTH`
levels of nesting and `MAX_NODES` values once aliases are expanded; an alias inside the node
it refers to is refused. Each limit is one `SpecError` with the line, found in milliseconds.
"""

import os
import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from beam_etl.core.errors import SpecError

_VARIABLE: Final = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: The deepest nesting of mappings and lists a spec may have.
MAX_DEPTH: Final = 64
#: The most values (scalars, mappings, lists) a spec may hold once aliases are expanded.
MAX_NODES: Final = 100_000


# PyYAML's scanner spends time quadratic in the flow collections opened on one line (`[[[[`):
# such a run is refused before PyYAML sees it.
_FLOW_RUN: Final = re.compile(rf"(?:[\[{{][ \t]*){{{MAX_DEPTH + 1}}}")


class Substituted(str):
    """Text of a scalar that held a variable; typed later by its config key (see validate)."""


class _BoundedLoader(yaml.SafeLoader):
    """Composes nodes as PyYAML does, refusing deep nesting, alias bombs and recursive aliases.

    PyYAML composes an alias as a reference to the anchored node, so a small file can stand
    for a huge (or infinite) document; sizes are counted as if every alias were expanded.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._count = 0
        self._sizes: dict[str, int] = {}  # anchor -> its node's expanded size
        self._open: set[str] = set()  # anchors whose node is being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise SpecError(f"YAML alias `*{event.anchor}` refers to itself", line=line)
            self._grow(self._sizes.get(str(event.anchor), 1), line)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise SpecError(f"The spec nests deeper than {MAX_DEPTH} levels", line=line)
        anchor, before = event.anchor, self._count
        self._grow(1, line)
        if anchor is not None:
            self._open.add(anchor)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)
                self._sizes[anchor] = self._count - before

    def _grow(self, size: int, line: int) -> None:
        self._count += size
        if self._count > MAX_NODES:
            raise SpecError(
                f"The spec holds more than {MAX_NODES:,} values once its YAML aliases are "
                "expanded; is an alias repeated many times over (a YAML bomb)?",
                line=line,
            )


class LineDict(dict):
    """A dict that knows the YAML line of itself (`line`) and of each key (`lines`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.lines: dict[str, int] = {}


class LineList(list):
    """A list that knows the YAML line of itself (`line`) and of each item (`lines`)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.line = 0
        self.lines: list[int] = []


class Loaded:
    """The loaded document and the substituted values (to redact from messages)."""

    def __init__(self, document: Any, substituted: set[str]) -> None:
        self.document = document
        self.substituted = substituted

    def redact(self, text: str) -> str:
        """Return `text` with every substituted environment value replaced by `***`."""
        for value in sorted(self.substituted, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


def load_text(text: str, variables: Mapping[str, str], source: str = "<spec>") -> Loaded:
    """Parse YAML `text`, substituting variables, keeping line numbers.

    Raises:
        SpecError: invalid YAML, or a variable that is neither built in nor set.
    """
    run = _FLOW_RUN.search(text)
    if run is not None:
        line = text.count("\n", 0, run.start()) + 1
        raise SpecError(f"The spec nests deeper than {MAX_DEPTH} levels", line=line)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        converter = _Converter(variables, loader)
        document = converter.convert(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            f"Invalid YAML in `{source}`: {problem}", line=mark.line + 1 if mark else None
        ) from None
    finally:
        loader.dispose()
    return Loaded(document, converter.substituted)


class _Converter:
    """Turns composed nodes into `LineDict`/`LineList`/values, substituting variables."""

    def __init__(self, variables: Mapping[str, str], constructor: yaml.SafeLoader) -> None:
        self.variables = variables
        self.constructor = constructor  # one per load: it caches what it built, by node
        self.substituted: set[str] = set()

    def convert(self, node: yaml.Node) -> Any:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result = LineDict()
            result.line, result.lines = line, {}
            for key_node, value_node in node.value:
                # Keys are names: `on:`, `yes:` or `1:` are text here, not YAML 1.1 bools/ints.
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    raise SpecError(
                        f"Keys must be text, not `{key}`", line=key_node.start_mark.line + 1
                    )
                if key in result:
                    raise SpecError(f"Key `{key}` appears twice", line=key_node.start_mark.line + 1)
                result[key] = self.convert(value_node)
                result.lines[key] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            items = LineList()
            items.line, items.lines = line, []
            for item in node.value:
                items.append(self.convert(item))
                items.lines.append(item.start_mark.line + 1)
            return items
        value = self.constructor.construct_object(node, deep=True)  # type: ignore[arg-type]
        if isinstance(value, str) and "${" in value:
            return self.substitute(value, line)
        return value

    def substitute(self, value: str, line: int) -> str:
        """Return `value` with its variables replaced; `Substituted` if any was."""
        replaced = False

        def replace(match: re.Match) -> str:
            nonlocal replaced
            escaped, name, default = match.group(1), match.group(2), match.group(3)
            if escaped:
                return match.group(0)[1:]
            replaced = True
            if name in self.variables:
                return self.variables[name]
            if name in os.environ:
                found = os.environ[name]
                if len(found) >= 3:
                    self.substituted.add(found)
                return found
            if default is not None:
                return default
            raise SpecError(
                f"Variable `${{{name}}}` is not set; export it or write `${{{name}:-default}}`",
                line=line,
            )

        text = _VARIABLE.sub(replace, value)
        return Substituted(text) if replaced else text
