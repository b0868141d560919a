"""YAML text -> plain Python values with the line of every mapping key and list item.

Variables `${NAME}` and `${NAME:-default}` are replaced in string scalars from built-in values
(`SPEC_DIR`, `OUTPUT_DIR`, `RUN_ID`, `DEMO_DIR`) and environment variables; `$${...}` keeps a
literal `${...}`. Substituted values are remembered so that every message can redact them.
"""

import os
import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from beam_etl.errors import SpecError

_VARIABLE: Final = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            f"Invalid YAML in `{source}`: {problem}", line=mark.line + 1 if mark else None
        ) from None
    substituted: set[str] = set()
    document = _convert(node, variables, substituted) if node is not None else None
    return Loaded(document, substituted)


def _convert(node: yaml.Node, variables: Mapping[str, str], substituted: set[str]) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = LineDict()
        result.line, result.lines = line, {}
        for key_node, value_node in node.value:
            # Keys are names: `on:`, `yes:` or `1:` are text here, not YAML 1.1 booleans/ints.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise SpecError(
                    f"Keys must be text, not `{key}`", line=key_node.start_mark.line + 1
                )
            if key in result:
                raise SpecError(f"Key `{key}` appears twice", line=key_node.start_mark.line + 1)
            result[key] = _convert(value_node, variables, substituted)
            result.lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        items = LineList()
        items.line, items.lines = line, []
        for item in node.value:
            items.append(_convert(item, variables, substituted))
            items.lines.append(item.start_mark.line + 1)
        return items
    value = _scalar(node)
    if isinstance(value, str) and "${" in value:
        return _substitute(value, variables, substituted, line)
    return value


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader(".").construct_object(node, deep=True)  # type: ignore[arg-type]


def _substitute(value: str, variables: Mapping[str, str], substituted: set[str], line: int) -> str:
    def replace(match: re.Match) -> str:
        escaped, name, default = match.group(1), match.group(2), match.group(3)
        if escaped:
            return match.group(0)[1:]
        if name in variables:
            return variables[name]
        if name in os.environ:
            found = os.environ[name]
            if len(found) >= 3:
                substituted.add(found)
            return found
        if default is not None:
            return default
        raise SpecError(
            f"Variable `${{{name}}}` is not set; export it or write `${{{name}:-default}}`",
            line=line,
        )

    return _VARIABLE.sub(replace, value)
