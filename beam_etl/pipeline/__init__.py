"""YAML pipeline specs: load (with lines and variables), validate, build into a Beam graph."""

import os
from dataclasses import dataclass
from typing import Any

from beam_etl.core.errors import SpecError
from beam_etl.pipeline.builder import build
from beam_etl.pipeline.loader import Loaded, load_text
from beam_etl.pipeline.model import Node, Spec, parse
from beam_etl.pipeline.validate import validate


@dataclass
class Plan:
    """A validated spec, ready to build: nodes in build order and their transforms."""

    spec: Spec
    ordered: list[Node]
    transforms: dict[str, Any]
    loaded: Loaded

    def build(self, pipeline, checks_path: str | None = None, checkpoints: Any = None) -> dict:
        """Apply the plan to `pipeline`; return the named outputs of every node.

        With `checks_path`, quality-check results are written there (JSON Lines); with
        `checkpoints` (a `CheckpointPlan`), steps are checkpointed or restored.
        """
        return build(pipeline, self.ordered, self.transforms, checks_path, checkpoints)


def load_plan(path: str, *, run_id: str, variables: dict[str, str] | None = None) -> Plan:
    """Read, parse and validate the spec at `path`; every problem is one `SpecError`.

    Built-in variables: `SPEC_DIR` (the spec's folder) and `RUN_ID`, plus `variables`.
    Messages never contain values substituted from environment variables.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise SpecError(f"Cannot read spec `{path}`: {exc.strerror}") from None
    names = {"SPEC_DIR": os.path.dirname(os.path.abspath(path)), "RUN_ID": run_id}
    names.update(variables or {})
    loaded = load_text(text, names, source=path)
    try:
        spec = parse(loaded.document, path)
        ordered, transforms = validate(spec, run_id)
    except SpecError as exc:
        raise SpecError(loaded.redact(exc.message), step=exc.step, line=exc.line) from None
    return Plan(spec, ordered, transforms, loaded)


__all__ = ["Plan", "Spec", "load_plan"]
