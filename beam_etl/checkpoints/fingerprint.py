"""Spec fingerprints: what a step's output depends on, as one sha256 per node.

A node's fingerprint hashes its kind, type and normalized config, the fingerprints of the
nodes it reads (so a change anywhere upstream changes it), for a file source the identity of
every file it matches (absolute path, size, modification time), and for a user function the
text of its source code where Python can find it. Two runs with equal fingerprints for a step
compute the same output from the same input; a checkpoint is reused only then.

Not covered (documented): the contents of a database table (a database source is identified by
its config only), and functions whose source Python cannot read.
"""

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_etl.pipeline.model import Node


def fingerprints(ordered: list[Node], transforms: dict[str, Any]) -> dict[str, str]:
    """Return `{node: sha256 hex}` for nodes in build order (inputs before readers)."""
    found: dict[str, str] = {}
    for node in ordered:
        transform = transforms[node.name]
        identity = {
            "kind": node.kind,
            "type": node.type,
            "config": node.config,
            "inputs": [[str(ref), found[ref.node]] for ref in node.inputs],
            "files": [] if node.inputs else file_identity(getattr(transform, "path", None)),
            "code": [code_identity(function) for function in _functions(transform)],
        }
        text = json.dumps(identity, sort_keys=True, default=str, ensure_ascii=False)
        found[node.name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return found


def file_identity(path: Any) -> list[list[Any]]:
    """Return `[path, size, mtime]` of every file `path` (a path, glob or list) matches."""
    patterns = [path] if isinstance(path, str) else list(path) if isinstance(path, list) else []
    identity: list[list[Any]] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        local = "://" not in pattern
        full = os.path.abspath(pattern) if local else pattern
        try:
            matched = FileSystems.match([full])[0].metadata_list
        except Exception:  # nothing matches (or cannot be listed): the identity says so
            identity.append([full, None, None])
            continue
        for meta in sorted(matched, key=lambda m: m.path):
            mtime = os.stat(meta.path).st_mtime_ns if local else meta.last_updated_in_seconds
            identity.append([meta.path, meta.size_in_bytes, mtime])
        if not matched:
            identity.append([full, None, None])
    return identity


def _functions(transform: Any) -> list[Callable]:
    """Return the user functions a transform applies (a chain's processors' too)."""
    found = [getattr(transform, "function", None)]
    for item in getattr(transform, "steps", None) or []:  # a `Chain`: (name, processor)
        if isinstance(item, tuple) and len(item) == 2:
            found.append(getattr(item[1], "function", None))
    return [function for function in found if callable(function)]


def code_identity(function: Callable | None) -> str | None:
    """Return the sha256 of a user function's source (its qualified name if unreadable)."""
    if function is None or not callable(function):
        return None
    for _ in range(5):  # unwrap retry wrappers and partials to the user's function
        inner = getattr(function, "function", None) or getattr(function, "func", None)
        wrapper = getattr(function, "wrapper", None)
        if wrapper is not None:
            inner = wrapper.function
        if inner is None:
            break
        function = inner
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        name = getattr(function, "__qualname__", type(function).__qualname__)
        return f"{getattr(function, '__module__', '?')}:{name}"
    return hashlib.sha256(source.encode("utf-8")).hexdigest()
