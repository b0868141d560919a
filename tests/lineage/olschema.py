"""Validate OpenLineage events against the OpenLineage JSON schemas (a test helper).

The `openlineage-python` client (1.54.0, pinned) ships its facet classes generated from the
OpenLineage JSON schemas, and names in every event and facet the exact schema it follows
(`schemaURL`, `_schemaURL`), but not the schema files. The files used here are copied from
the OpenLineage repository (`spec/`, commit 8f02abfb7a25) unchanged; `validate_event` refuses
any event or facet whose schema URL is not one of these files' `$id`, so a client that moves to
another schema version fails here instead of being checked against the wrong one.
"""

import json
import pathlib
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SPEC_DIR = pathlib.Path(__file__).parent / "openlineage_spec"
_SCHEMAS = [json.loads(p.read_text()) for p in sorted(SPEC_DIR.rglob("*.json"))]
IDS = {schema["$id"] for schema in _SCHEMAS}
_REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in _SCHEMAS
)


def _validate(instance: Any, url: str) -> None:
    base = url.partition("#")[0]
    assert base in IDS, f"no schema file with $id {base}"
    Draft202012Validator({"$ref": url}, registry=_REGISTRY).validate(instance)


def _facets(event: dict) -> list[tuple[str, dict]]:
    found = list(event["run"].get("facets", {}).items()) + list(
        event["job"].get("facets", {}).items()
    )
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        for key in ("facets", "inputFacets", "outputFacets"):
            found += list(dataset.get(key, {}).items())
    return found


def validate_event(event: dict) -> list[str]:
    """Validate `event` (a decoded RunEvent) and each of its facets; return the facet names.

    Raises:
        jsonschema.ValidationError, AssertionError: the event or a facet does not conform.
    """
    _validate(event, event["schemaURL"])
    assert event["schemaURL"].endswith("#/$defs/RunEvent")
    names = []
    for name, facet in _facets(event):
        _validate(facet, facet["_schemaURL"])
        names.append(name)
    return names
