"""Which steps a run checkpoints and which a resumed run restores; the builder's hooks.

`CheckpointPlan.prepare` decides, before the graph is built:
- the steps to checkpoint (`checkpoint: true`, or every source and step with
  `--checkpoint-all`);
- on resume, the steps restored from a complete checkpoint whose fingerprint matches (the
  others, `stale`, are recomputed and checkpointed again).

While the builder applies the nodes, `builds` says which to apply at all (a node only restored
nodes read is not built, so its source is not read), `restore` replaces a node by its
checkpoint, and `materialise` checkpoints a freshly built one. A node is not checkpointed when
it or anything upstream holds a quality gate or incremental state: restoring it would skip
that gate, or leave the source's state unadvanced (its rows read again next run).
"""

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from beam_etl.checkpoints.fingerprint import fingerprints
from beam_etl.checkpoints.materialise import Materialise, Restore
from beam_etl.checkpoints.store import CheckpointError, RunCheckpoints, checkpoints_root
from beam_etl.deadletter import ERROR
from beam_etl.errors import UsageError
from beam_etl.metrics import output_counter
from beam_etl.spec.model import Node
from beam_etl.spec.registry import SINK
from beam_etl.state import current_state


@dataclass
class CheckpointPlan:
    """What one run checkpoints and restores (see the module docstring)."""

    run: RunCheckpoints
    ordered: list[Node]
    wanted: set[str]
    fingerprints: dict[str, str]
    resumed: bool = False
    restored: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> its marker
    stale: list[str] = field(default_factory=list)
    not_written: list[str] = field(default_factory=list)  # gate or state upstream
    _unsafe: set[str] = field(default_factory=set)
    _mark: tuple[int, int] = (0, 0)

    @classmethod
    def prepare(
        cls,
        plan: Any,
        output_dir: str,
        run_id: str,
        *,
        checkpoint_all: bool = False,
        resume: bool = False,
    ) -> "CheckpointPlan | None":
        """Return the run's checkpoint plan, or None when it neither checkpoints nor resumes.

        Raises:
            UsageError: `resume` and the run has no checkpoints under `output_dir`.
        """
        run = RunCheckpoints(checkpoints_root(output_dir), run_id)
        wanted = {
            node.name
            for node in plan.ordered
            if node.kind != SINK and (checkpoint_all or getattr(node, "checkpoint", False))
        }
        if resume and not run.exists():
            raise UsageError(
                f"Run `{run_id}` has no checkpoints in `{run.root}` "
                "(`python -m beam_etl.run checkpoints list` shows those there)"
            )
        if not wanted and not resume:
            return None
        found = cls(run, plan.ordered, wanted, fingerprints(plan.ordered, plan.transforms))
        found.resumed = resume
        if resume:
            for node in plan.ordered:
                marker = run.marker(node.name) if node.kind != SINK else None
                if marker is None:
                    continue
                if marker.get("fingerprint") == found.fingerprints[node.name]:
                    found.restored[node.name] = marker
                else:
                    found.stale.append(node.name)
        found._prune()
        run.start(plan.spec.name, plan.spec.source)
        for name in found.wanted - set(found.restored):
            shutil.rmtree(run.step_folder(name), ignore_errors=True)  # stale or partial
        return found

    def _prune(self) -> None:
        """Keep as restored only the checkpoints something built reads."""
        needed = self.needed()
        self.restored = {name: m for name, m in self.restored.items() if name in needed}

    def needed(self) -> set[str]:
        """Return the nodes the run applies: sinks and what they read, up to restored nodes."""
        by_name = {node.name: node for node in self.ordered}
        needed: set[str] = set()
        stack = [node.name for node in self.ordered if node.kind == SINK]
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            needed.add(name)
            if name not in self.restored:
                stack.extend(ref.node for ref in by_name[name].inputs)
        return needed

    def builds(self, node: Node) -> bool:
        """Say whether the builder applies `node` (restored or built) at all."""
        state = current_state()
        self._mark = (len(state.proposals), len(state.promotions)) if state else (0, 0)
        return node.name in self.needed()

    def restores(self, node: Node) -> bool:
        return node.name in self.restored

    def restore(self, pipeline: Any, node: Node) -> dict[str, Any]:
        """Apply the reader of `node`'s checkpoint; return its outputs by name."""
        marker = self.restored[node.name]
        return pipeline | node.name >> Restore(self.run.step_folder(node.name), node.name, marker)

    def materialise(self, node: Node, outputs: dict[str, Any], *, gated: bool) -> dict[str, Any]:
        """Checkpoint `node`'s outputs if it is wanted and may be; return what readers read."""
        state = current_state()
        mark = (len(state.proposals), len(state.promotions)) if state else (0, 0)
        upstream = any(ref.node in self._unsafe for ref in node.inputs)
        if gated or mark != self._mark or node.config.get("incremental") or upstream:
            self._unsafe.add(node.name)
        if node.name not in self.wanted or not outputs:
            return outputs
        if node.name in self._unsafe:
            self.not_written.append(node.name)
            return outputs
        folder = self.run.step_folder(node.name)
        fingerprint = self.fingerprints[node.name]
        return outputs | f"{node.name}/Checkpoint" >> Materialise(folder, node.name, fingerprint)

    def resume_line(self) -> str:
        """Return the one line a resumed run prints: what it reuses and what it recomputes."""
        needed = self.needed()
        reused = ", ".join(f"`{name}`" for name in self.restored) or "none"
        redo = [n.name for n in self.ordered if n.name in needed and n.name not in self.restored]
        stale = [name for name in self.stale if name in redo]
        line = f"resuming run {self.run.run_id}: reused checkpoints of {reused}"
        line += f"; recomputing {', '.join(f'`{name}`' for name in redo)}"
        if stale:
            line += f" (changed since checkpointed: {', '.join(f'`{n}`' for n in stale)})"
        return line

    def adjust(self, steps: list[Any]) -> None:
        """Fix the report of restored steps: their rows in are the rows they restored.

        Their upstream did not run (its counts are 0). A restored step whose counts differ
        from what its marker recorded is marked unbalanced, which fails the run.
        """
        for step in steps:
            marker = self.restored.get(step.name)
            if marker is None:
                continue
            recorded = {
                output_counter(name): item["rows"] for name, item in marker["outputs"].items()
            }
            rejected = recorded.pop(output_counter(ERROR), 0)
            step.rows_in = step.rows_out + step.rows_rejected
            step.balanced = step.rows_out == sum(recorded.values()) and (
                step.rows_rejected == rejected
            )

    def warnings(self) -> list[str]:
        """Return lines for the run report (checkpoints reused or not written)."""
        found = []
        if self.resumed:
            found.append(self.resume_line())
        if self.not_written:
            names = ", ".join(f"`{name}`" for name in self.not_written)
            found.append(
                f"checkpoint not written for {names}: it or a step before it holds a quality "
                "gate or incremental state, which a resumed run must not skip"
            )
        return found

    def finish(self, succeeded: bool) -> str:
        """Remove the run's checkpoints after a success; keep them after a failure.

        Returns a hint for the failure message ("" after a success).
        """
        if succeeded:
            self.run.remove()
            return ""
        self.run.failed()
        written = [n for n in os.listdir(self.run.folder) if self.run.marker(n) is not None]
        if not written:
            return ""
        return f"; checkpoints kept: resume with --resume {self.run.run_id}"


__all__ = ["CheckpointError", "CheckpointPlan"]
