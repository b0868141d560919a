"""What the HTML and Markdown reports show beyond `run_report.json`, gathered once per run.

The datasets a run read and wrote, samples of its dead letters per reason and (when the
lineage package is installed) its column lineage are taken from the plan and the run's
outputs, then kept beside the report as `<report>.context.json`, so that
`python -m beam_etl.run report` can render the same pages again later without the spec.
Nothing here prints or keeps a secret: dataset names are built from a few known keys (never a
DSN or password), values substituted from the environment are redacted, and payload fields
whose names look like credentials are masked.
"""

import json
import os
import re
from collections.abc import Callable
from typing import Any, Final

from beam_etl.core.catalogue import SINK, SOURCE
from beam_etl.io.deadletters import WriteToDeadLetters
from beam_etl.lineage import column_lineage

#: Dead letters shown per reason code (every letter is still counted).
SAMPLES_PER_REASON: Final = 5
_PAYLOAD_CHARS: Final = 400
_SECRET_KEY: Final = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential", re.I)
_DATASET_KEYS: Final = ("node", "type", "namespace", "name")
_DATABASES: Final = {"Postgres": ("postgres", 5432), "MySql": ("mysql", 3306)}


def dataset(node: Any) -> dict[str, str]:
    """Return the dataset a source or sink node reads or writes, as namespace and name.

    Files are `file` + absolute path; PostgreSQL `postgres://host:port` + `db.schema.table`;
    MySQL `mysql://host:port` + `db.table`; SQLite `sqlite` + `path:table`.
    """
    config = node.config
    for marker, (scheme, port) in _DATABASES.items():
        if marker in node.type:
            where = f"{config.get('host', '127.0.0.1')}:{config.get('port', port)}"
            if config.get("dsn_env"):
                where = f"${config['dsn_env']}"  # the DSN is a secret: name its variable only
            parts = [config.get("database"), config.get("schema"), config.get("table")]
            if scheme == "postgres" and config.get("table") and not config.get("schema"):
                parts[1] = "public"
            name = ".".join(str(p) for p in parts if p) or "query"
            if config.get("query") and not config.get("table"):
                name = f"{config.get('database') or ''} (query)".strip()
            return {"namespace": f"{scheme}://{where}", "name": name}
    if "Sqlite" in node.type:
        path = os.path.abspath(str(config.get("database", "")))
        return {"namespace": "sqlite", "name": f"{path}:{config.get('table', '')}"}
    if "path" in config:
        return {"namespace": "file", "name": os.path.abspath(str(config["path"]))}
    return {"namespace": node.type, "name": node.name}


def datasets(plan: Any, redact: Callable[[str], str]) -> dict[str, list[dict[str, str]]]:
    """Return the datasets the plan reads (`inputs`) and writes (`outputs`), per node."""
    found: dict[str, list[dict[str, str]]] = {"inputs": [], "outputs": []}
    for node in plan.ordered:
        if node.kind not in (SOURCE, SINK):
            continue
        entry = {k: redact(v) for k, v in dataset(node).items()}
        entry.update(node=node.name, type=node.type)
        found["inputs" if node.kind == SOURCE else "outputs"].append(entry)
    return found


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def dead_letter_samples(
    paths: list[str], run_id: str, redact: Callable[[str], str], per_reason: int
) -> dict[str, Any]:
    """Return the run's dead letters counted per reason, with up to `per_reason` samples each.

    Only letters stamped with `run_id` count: a file left by an earlier run (a failed run
    publishes nothing) is not this run's.
    """
    reasons: dict[str, dict[str, Any]] = {}
    read = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        read.append(path)
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                letter = json.loads(line)
                if letter.get("run_id") != run_id:
                    continue
                entry = reasons.setdefault(letter["reason"], {"count": 0, "samples": []})
                entry["count"] += 1
                if len(entry["samples"]) < per_reason:
                    payload = letter.get("payload")  # raw text of an unparseable record as is
                    if not isinstance(payload, str):
                        payload = json.dumps(_mask(payload), ensure_ascii=False)
                    if len(payload) > _PAYLOAD_CHARS:
                        payload = payload[:_PAYLOAD_CHARS] + "…"
                    entry["samples"].append(
                        {
                            "step": letter.get("step", ""),
                            "origin": redact(str(letter.get("origin", ""))),
                            "message": redact(str(letter.get("message", ""))),
                            "payload": redact(payload),
                        }
                    )
    return {
        "files": read,
        "total": sum(entry["count"] for entry in reasons.values()),
        "reasons": [{"reason": name, **reasons[name]} for name in sorted(reasons)],
    }


def _column_lineage(plan: Any) -> dict[str, Any] | None:
    """Return `beam_etl.lineage.column_lineage(plan)` (an error note if it fails)."""
    try:
        found = column_lineage(plan)
    except Exception as exc:  # an add-on's failure must not fail the run: say so in the report
        return {"error": f"{type(exc).__name__}: {exc}"}
    return found if isinstance(found, dict) else None


def column_rows(lineage: dict[str, Any]) -> list[dict[str, str]]:
    """Return one row per (sink column, origin) of a column lineage, for a table."""
    rows = []
    for column, origins in (lineage.get("columns") or {}).items():
        for origin in origins or [{}]:
            source = f"{origin.get('source', '')}.{origin.get('column', '')}".strip(".")
            rows.append(
                {
                    "column": str(column),
                    "from": source or "(no input column)",
                    "transformation": str(origin.get("transformation", "")),
                    "description": str(origin.get("description", "")),
                }
            )
    return rows


def redacted(value: Any, redact: Callable[[str], str]) -> Any:
    """Return `value` (JSON-like) with `redact` applied to every string in it."""
    if isinstance(value, dict):
        return {k: redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, redact) for v in value]
    return redact(value) if isinstance(value, str) else value


def gather(plan: Any, run_id: str, quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the report's context beyond the JSON report: datasets, dead letters, lineage,
    and the run's `quality` section with values substituted from the environment redacted
    (its examples name files and values)."""

    redact = plan.loaded.redact
    paths = [
        transform.path
        for transform in plan.transforms.values()
        if isinstance(transform, WriteToDeadLetters)
    ]
    lineage = _column_lineage(plan) or {}
    found = lineage.get("datasets") or datasets(plan, redact)
    found = {  # the lineage package's entries carry more (uri, columns): keep what is shown
        direction: [{key: str(entry.get(key, "")) for key in _DATASET_KEYS} for entry in entries]
        for direction, entries in found.items()
        if direction in ("inputs", "outputs")
    }
    return {
        "datasets": redacted(found, redact),
        "dead_letters": dead_letter_samples(paths, run_id, redact, SAMPLES_PER_REASON),
        "column_lineage": redacted(json.loads(json.dumps(column_rows(lineage))), redact),
        "lineage_note": redact(str(lineage.get("error", ""))),
        "quality": redacted(quality, redact),
    }
