"""The state store: where incremental sources remember, per pipeline and source, where the last
successful run stopped (a cursor value, the files loaded, the previous snapshot).

State never runs ahead of the data. While a run is built, sources read their state and
*propose* the next one (a cursor's new high mark, the files they list, a snapshot to
promote); workers may add files of their own under the run's folder. The launcher commits the
proposals only after every sink has published (see `beam_etl.core.publish`): a failed or killed
run leaves the state where it was, so the next run reads the same range again, and the sinks'
ledgers and merge modes make that harmless.

The default store is an SQLite file beside the outputs (`<output dir>/.beam_etl/state.sqlite`),
with one row per (pipeline, source) holding a JSON value. Larger state (a snapshot's keys and
row hashes, the row hashes of a cursor's lag window) lives in Parquet files in the folder
beside it, named in that JSON.
"""

import contextlib
import contextvars
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_CURRENT: contextvars.ContextVar["RunState | None"] = contextvars.ContextVar(
    "beam_etl_run_state", default=None
)


class StateStore:
    """An SQLite file of (pipeline, source) -> JSON value, with the folder beside it."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.folder = os.path.splitext(self.path)[0]  # `state/` beside `state.sqlite`

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        connection.execute(
            "CREATE TABLE IF NOT EXISTS state (pipeline TEXT NOT NULL, source TEXT NOT NULL, "
            "value TEXT NOT NULL, run_id TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "PRIMARY KEY (pipeline, source))"
        )
        return connection

    def get(self, pipeline: str, source: str) -> Any:
        """Return the committed state of `source`, None when it has none."""
        if not os.path.exists(self.path):
            return None
        connection = self._connect()
        try:
            row = connection.execute(
                "SELECT value FROM state WHERE pipeline = ? AND source = ?", (pipeline, source)
            ).fetchone()
        finally:
            connection.close()
        return json.loads(row[0]) if row else None

    def entries(self, pipeline: str, source: str | None = None) -> list[dict[str, Any]]:
        """Return every committed state of `pipeline` (or of one source), for `state show`."""
        if not os.path.exists(self.path):
            return []
        connection = self._connect()
        try:
            rows = connection.execute(
                "SELECT source, value, run_id, updated_at FROM state WHERE pipeline = ? "
                "AND (? IS NULL OR source = ?) ORDER BY source",
                (pipeline, source, source),
            ).fetchall()
        finally:
            connection.close()
        return [
            {"source": s, "value": json.loads(v), "run_id": r, "updated_at": u}
            for s, v, r, u in rows
        ]

    def commit(self, pipeline: str, run_id: str, values: dict[str, Any]) -> None:
        """Store every proposed value of one run in one transaction."""
        if not values:
            return
        now = datetime.now(UTC).isoformat()
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            for source, value in values.items():
                connection.execute(
                    "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?)",
                    (pipeline, source, json.dumps(value, sort_keys=True), run_id, now),
                )
            connection.execute("COMMIT")
        finally:
            connection.close()

    def reset(self, pipeline: str, source: str | None = None) -> int:
        """Forget the state of `pipeline` (or of one source): the next run starts over."""
        removed = 0
        if os.path.exists(self.path):
            connection = self._connect()
            try:
                removed = connection.execute(
                    "DELETE FROM state WHERE pipeline = ? AND (? IS NULL OR source = ?)",
                    (pipeline, source, source),
                ).rowcount
            finally:
                connection.close()
        folder = os.path.join(self.folder, _safe(pipeline))
        if source is not None:
            folder = os.path.join(folder, _safe(source))
        shutil.rmtree(folder, ignore_errors=True)
        return removed

    def data_folder(self, pipeline: str, source: str) -> str:
        """Return the folder for the larger state files of `source`."""
        return os.path.join(self.folder, _safe(pipeline), _safe(source))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class RunState:
    """The state a run reads and proposes while its graph is built (see `incremental_state`)."""

    store: StateStore
    pipeline: str
    run_id: str
    proposals: dict[str, Any] = field(default_factory=dict)
    promotions: list[tuple[str, str]] = field(default_factory=list)  # (new folder, current)
    warnings: list[str] = field(default_factory=list)  # for the console and the run report
    confirmations: list[Any] = field(default_factory=list)  # called after the commit

    def get(self, source: str) -> Any:
        return self.store.get(self.pipeline, source)

    def catch_up(self, kept: dict[str, dict[str, Any]]) -> list[str]:
        """Bring this store level with state kept in a target database (`keep_state`, see
        `beam_etl.io.sql.keptstate`), which commits with that sink's load and so wins: a run killed
        after that commit and before this store's has its folders promoted and its values
        committed here now. Return the sources caught up."""
        local = {e["source"]: e["run_id"] for e in self.store.entries(self.pipeline)}
        by_run: dict[str, dict[str, Any]] = {}
        for source, entry in kept.items():
            if local.get(source) == entry["run_id"]:
                continue
            folder = self.store.data_folder(self.pipeline, source)
            suffix = f".next-{entry['run_id']}"
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.endswith(suffix):
                        promote_folder(
                            os.path.join(folder, name),
                            os.path.join(folder, name.removesuffix(suffix)),
                        )
            by_run.setdefault(entry["run_id"], {})[source] = entry["value"]
        for run_id, values in by_run.items():
            self.store.commit(self.pipeline, run_id, values)
        return sorted(s for values in by_run.values() for s in values)

    def propose(self, source: str, value: Any) -> None:
        """Make `value` the state of `source` once the run has published."""
        self.proposals[source] = value

    def warn(self, message: str) -> None:
        """Report `message` with the run (a changed file an incremental source skipped ...)."""
        self.warnings.append(message)

    def promote(self, new: str, current: str) -> None:
        """Replace the folder `current` by `new` once the run has published."""
        self.promotions.append((new, current))

    def after_commit(self, confirm: Any) -> None:
        """Call `confirm()` once the proposals are committed (a CDC source telling the server
        its new position); a failure there becomes a warning, the state stays committed."""
        self.confirmations.append(confirm)

    def commit(self) -> None:
        """Commit the proposals (after every sink published): folders first, then values."""
        for new, current in self.promotions:
            promote_folder(new, current)
        self.store.commit(self.pipeline, self.run_id, self.proposals)
        for confirm in self.confirmations:
            try:
                confirm()
            except Exception as exc:  # the next run confirms again from the committed state
                self.warn(f"Confirming a change log position failed: {exc}")

    def discard(self) -> None:
        """Forget the proposals of a run that failed (folders written for it removed)."""
        for new, _ in self.promotions:
            shutil.rmtree(new, ignore_errors=True)


def promote_folder(new: str, current: str) -> None:
    """Swap `new` in as `current` with renames (a missing `new`: nothing was written)."""
    if not os.path.isdir(new):
        return
    old = f"{current}.old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(current):
        os.replace(current, old)
    os.replace(new, current)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def incremental_state(state: RunState) -> Iterator[RunState]:
    """Make `state` the one that incremental sources built inside the block read and propose."""
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)


def current_state() -> RunState | None:
    """Return the run state of the graph being built, None outside the launcher."""
    return _CURRENT.get()
