"""Run folders: where a run keeps its pending publishes and the list of its staging folders.

Every run gets `<work dir>/runs/<run id>/` holding `owner.json` (process and host), the
staging folders its sinks use (`staging.json`, written before the pipeline starts) and its
pending publishes. A run that ends, in success or failure, removes its folder and every
staging folder it used. A run that was killed (`kill -9`, a lost machine) cannot: the next run
with the same work dir finds its folder, sees that its process is gone, and removes what it
left (staged parts of database loads in the temp folder, `.beam_etl-staging/` beside file
targets, pending publishes). Nothing a killed run staged was published: publishing happens
after the verdict, from the launching process.
"""

import contextlib
import json
import logging
import os
import socket
from typing import Any

from apache_beam.internal import pickler

from beam_etl.core.publish import discard, discard_folder, remove_tree

_OWNER = "owner.json"
_STAGING = "staging.json"
_REMOVERS = "removers.pickle"
_LOG = logging.getLogger(__name__)


class RunFolders:
    """The run folders under one work dir (`.beam_etl/` beside the run report by default)."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.root = os.path.join(work_dir, "runs")

    def start(self, run_id: str) -> str:
        """Create and return the folder of run `run_id`, owned by this process."""
        folder = os.path.join(self.root, run_id)
        if os.path.isdir(folder):
            discard(os.path.join(folder, "pending"))  # the same run id started again
        os.makedirs(folder, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        _write_json(os.path.join(folder, _OWNER), owner)
        return folder

    def remember_staging(self, folder: str, staging: list[Any]) -> None:
        """Record the staging folders the built graph uses, and the removers of staging kept
        elsewhere (`collecting_staging`), so a killed run's can be removed."""
        folders = sorted({s for s in staging if isinstance(s, str)})
        _write_json(os.path.join(folder, _STAGING), folders)
        _write_removers(
            os.path.join(folder, _REMOVERS), [s for s in staging if not isinstance(s, str)]
        )

    def finish(self, folder: str) -> None:
        """Remove the run's folder, its pending publishes and every staging folder it used."""
        discard(os.path.join(folder, "pending"))
        for staging in _read_json(os.path.join(folder, _STAGING), []):
            discard_folder(staging)
        failed = []
        for remover in _read_removers(os.path.join(folder, _REMOVERS)):
            try:
                remover.remove()
            except Exception as exc:  # a server that is down: the next run tries again
                _LOG.warning("Could not remove %s: %s", remover, exc)
                failed.append(remover)
        if failed:  # keep the run folder (its owner is gone after this) for the next sweep
            _write_removers(os.path.join(folder, _REMOVERS), failed)
            for entry in os.scandir(folder):
                if entry.name in (_REMOVERS, _OWNER):  # the owner: swept once it is gone
                    continue
                if entry.is_dir():
                    remove_tree(entry.path)
                else:
                    os.remove(entry.path)
            return
        remove_tree(folder)
        with contextlib.suppress(OSError):
            os.rmdir(self.root)
            os.rmdir(os.path.dirname(self.root))

    def sweep(self) -> list[str]:
        """Remove what runs killed earlier left behind; return their run ids."""
        if not os.path.isdir(self.root):
            return []
        swept = []
        for run_id in sorted(os.listdir(self.root)):
            folder = os.path.join(self.root, run_id)
            owner = _read_json(os.path.join(folder, _OWNER), {})
            if owner.get("host") == socket.gethostname() and not alive(owner.get("pid")):
                self.finish(folder)
                swept.append(run_id)
        return swept


def alive(pid) -> bool:
    """Whether the process `pid` of this machine still runs."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _write_removers(path: str, removers: list[Any]) -> None:
    """Pickle `removers` to `path`, readable by this user only (they hold connection
    settings, as the run's pending publishes do)."""
    if not removers:
        with contextlib.suppress(OSError):
            os.remove(path)
        return
    temporary = f"{path}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pickler.dumps(removers))
    os.replace(temporary, path)


def _read_removers(path: str) -> list[Any]:
    try:
        with open(path, "rb") as source:
            return list(pickler.loads(source.read()))
    except FileNotFoundError:
        return []
    except Exception as exc:  # written by another version of beam_etl: not ours to run
        _LOG.warning("Could not read %s: %s", path, exc)
        return []


def _write_json(path: str, value) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(value, out)
    os.replace(temporary, path)


def _read_json(path: str, default):
    try:
        with open(path, encoding="utf-8") as source:
            return json.load(source)
    except (OSError, ValueError):
        return default
