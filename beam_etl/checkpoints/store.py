"""Where checkpoints live, their completion markers, and listing and cleaning them.

Layout under an output dir (local file system: checkpoint parts are written and read with
plain file operations):

```
<output dir>/.beam_etl/checkpoints/<run id>/run.json           pipeline, spec, owner, status
<output dir>/.beam_etl/checkpoints/<run id>/<step>/<output>/*  parts (Arrow IPC / pickled)
<output dir>/.beam_etl/checkpoints/<run id>/<step>/_COMPLETE.json   the marker, written last
```
A step's checkpoint exists only once its marker does; the marker is written atomically (a
temporary file renamed into place) after every part of every output of the step, and lists
exactly the parts to read (a retried bundle's abandoned parts are not listed).
"""

import contextlib
import json
import os
import re
import shutil
import socket
import time
from datetime import UTC, datetime
from typing import Any, Final

from beam_etl.core.errors import BeamEtlError
from beam_etl.runs import alive

MARKER: Final = "_COMPLETE.json"
RUN_FILE: Final = "run.json"
RUNNING: Final = "running"
FAILED: Final = "failed"
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CheckpointError(BeamEtlError):
    """A checkpoint cannot be written or read back as recorded, or none can be resumed."""


def checkpoints_root(output_dir: str) -> str:
    """Return the folder holding every run's checkpoints for `output_dir`."""
    return os.path.join(os.path.abspath(output_dir), ".beam_etl", "checkpoints")


def write_json(path: str, value: Any) -> None:
    """Write `value` as JSON to `path` atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(value, out, indent=1, sort_keys=True)
    os.replace(temporary, path)


def read_json(path: str) -> Any:
    """Return the JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as source:
            return json.load(source)
    except (OSError, ValueError):
        return None


class RunCheckpoints:
    """The checkpoint folder of one run."""

    def __init__(self, root: str, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.folder = os.path.join(root, run_id)

    def step_folder(self, step: str) -> str:
        return os.path.join(self.folder, step)

    def marker(self, step: str) -> dict[str, Any] | None:
        """Return the completion marker of `step`, None when its checkpoint is not complete."""
        found = read_json(os.path.join(self.step_folder(step), MARKER))
        return found if isinstance(found, dict) else None

    def exists(self) -> bool:
        return os.path.isdir(self.folder)

    def start(self, pipeline: str, spec: str) -> None:
        """Record (or re-record, on resume) that this process runs the run now."""
        info = read_json(os.path.join(self.folder, RUN_FILE)) or {}
        info.update(
            pipeline=pipeline,
            spec=os.path.abspath(spec),
            status=RUNNING,
            pid=os.getpid(),
            host=socket.gethostname(),
            updated_at=time.time(),
        )
        info.setdefault("created_at", info["updated_at"])
        write_json(os.path.join(self.folder, RUN_FILE), info)

    def failed(self) -> None:
        """Mark the run failed: its checkpoints stay for `--resume`."""
        info = read_json(os.path.join(self.folder, RUN_FILE)) or {}
        info.update(status=FAILED, updated_at=time.time())
        write_json(os.path.join(self.folder, RUN_FILE), info)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        for folder in (self.root, os.path.dirname(self.root)):
            try:
                os.rmdir(folder)
            except OSError:
                break


def _alive(info: dict[str, Any]) -> bool:
    if info.get("host") != socket.gethostname():
        return info.get("status") == RUNNING  # another machine's run: assume it still runs
    return alive(info.get("pid"))


def _size(folder: str) -> int:
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.path.getsize(os.path.join(parent, name))
    return total


def list_runs(root: str, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Return the runs with checkpoints under `root`, oldest first, optionally of one pipeline.

    Each entry: run_id, pipeline, spec, status (`running`, `failed`, or `killed` when its
    process is gone), updated_at (seconds since the epoch), steps (complete checkpoints),
    incomplete (step folders without a marker), bytes.
    """
    if not os.path.isdir(root):
        return []
    runs = []
    for run_id in sorted(os.listdir(root)):
        folder = os.path.join(root, run_id)
        if not os.path.isdir(folder):
            continue
        info = read_json(os.path.join(folder, RUN_FILE)) or {}
        if pipeline is not None and info.get("pipeline") != pipeline:
            continue
        status = info.get("status", "unknown")
        if status == RUNNING and not _alive(info):
            status = "killed"
        steps = sorted(
            name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))
        )
        complete = [name for name in steps if os.path.exists(os.path.join(folder, name, MARKER))]
        updated = info.get("updated_at") or os.path.getmtime(folder)
        runs.append(
            {
                "run_id": run_id,
                "pipeline": info.get("pipeline", "?"),
                "spec": info.get("spec", "?"),
                "status": status,
                "updated_at": updated,
                "steps": complete,
                "incomplete": [name for name in steps if name not in complete],
                "bytes": _size(folder),
            }
        )
    return sorted(runs, key=lambda run: (run["updated_at"], run["run_id"]))


def latest_run(root: str, spec: str | None = None) -> str | None:
    """Return the id of the most recent run with checkpoints (of spec file `spec`, if given)."""
    runs = list_runs(root)
    if spec is not None:
        runs = [run for run in runs if run["spec"] == os.path.abspath(spec)]
    return runs[-1]["run_id"] if runs else None


def parse_age(text: str) -> float:
    """Return the seconds in an age such as `7d`, `12h`, `30m`, `90s`, `2w`.

    Raises:
        ValueError: the text is not a number followed by one of s, m, h, d, w.
    """
    found = _AGE.fullmatch(text.strip())
    if not found:
        raise ValueError(f"`--older-than` takes an age such as 7d, 12h, 30m, not `{text}`")
    return float(found.group(1)) * _UNITS[found.group(2)]


def clean_runs(
    root: str, *, older_than: float | None = None, pipeline: str | None = None
) -> tuple[list[str], list[str]]:
    """Remove the checkpoints of runs not updated for `older_than` seconds (all if None).

    A run whose process still runs is never removed. Returns (removed, kept running) run ids.
    """
    now = time.time()
    removed, running = [], []
    for run in list_runs(root, pipeline):
        if older_than is not None and now - run["updated_at"] < older_than:
            continue
        if run["status"] == RUNNING:
            running.append(run["run_id"])
            continue
        RunCheckpoints(root, run["run_id"]).remove()
        removed.append(run["run_id"])
    return removed, running


def describe_runs(runs: list[dict[str, Any]]) -> str:
    """Return the lines `checkpoints list` prints."""
    if not runs:
        return ""
    lines = []
    for run in runs:
        when = datetime.fromtimestamp(run["updated_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        steps = ", ".join(run["steps"]) or "none"
        partial = f"; incomplete: {', '.join(run['incomplete'])}" if run["incomplete"] else ""
        lines.append(
            f"{run['run_id']}  {run['pipeline']}  {run['status']}  {when}  "
            f"{run['bytes'] / 1e6:.1f} MB  checkpoints: {steps}{partial}"
        )
    return "\n".join(lines)
