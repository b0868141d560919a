"""Which steps a run checkpoints and which a resumed run restores; the builder's hooks.

`CheckpointPlan.prepare` decides, before the graph is built:
- the steps to checkpoint (`checkpoint: true`, or every source and step with
  `--checkpoint-all`);
- on resume, the steps restored from a complete checkpoint whose fingerprint matches (the
  others, `stale`, are recomputed and checkpointed again).

A step's checkpoint holds its own outputs and the outputs of the steps before it that other
branches read (typically their dead letters, `src.error`): so restoring it replaces its whole
upstream, and a resumed run neither loses nor repeats those rows. When several checkpoints
hold the same output, exactly one restores it; an upstream node that must run anyway (another
branch reads its main output and nothing restores it) provides its outputs itself.

While the builder applies the nodes, `restore_all` reads what is restored, `builds` says which
nodes to apply (a node only restored outputs stand in for is not built, so its source is not
read) and `materialise` checkpoints a freshly built step. A step is not checkpointed when it or
anything upstream holds a quality gate or incremental state: restoring it would skip that gate,
or leave the source's state unadvanced (its rows read again next run).
"""

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from beam_etl.checkpoints.fingerprint import fingerprints
from beam_etl.checkpoints.materialise import Materialise, Restore
from beam_etl.checkpoints.store import RunCheckpoints, checkpoints_root
from beam_etl.core.catalogue import SINK
from beam_etl.core.errors import UsageError
from beam_etl.core.metrics import output_counter
from beam_etl.core.state import current_state
from beam_etl.pipeline.model import Node

Key = tuple[str, str]  # (node, output)


def _key(text: str) -> Key:
    node, _, output = text.partition(".")
    return node, output


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
    chosen: dict[str, list[str]] = field(default_factory=dict)  # step -> keys it restores
    built: set[str] = field(default_factory=set)
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
            if node.kind != SINK and (checkpoint_all or node.checkpoint)
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
        found._choose()
        run.start(plan.spec.name, plan.spec.source)
        for name in found.wanted - set(found.chosen):
            shutil.rmtree(run.step_folder(name), ignore_errors=True)  # stale or partial
        return found

    def _choose(self) -> None:
        """Decide which nodes are built and which checkpoint restores which output."""
        by_name = {node.name: node for node in self.ordered}
        provider: dict[Key, str] = {}
        for name, marker in self.restored.items():  # in build order: the first one provides
            for text in marker["outputs"]:
                provider.setdefault(_key(text), name)
        built: set[str] = set()
        used: set[Key] = set()
        stack = [node.name for node in self.ordered if node.kind == SINK]
        while stack:
            name = stack.pop()
            if name in built:
                continue
            built.add(name)
            for ref in by_name[name].inputs:
                key = (ref.node, ref.output)
                if key in provider:
                    used.add(key)
                else:
                    stack.append(ref.node)
        chosen: dict[str, list[str]] = {}
        for key in sorted(used):
            if key[0] not in built:  # a node that runs anyway provides its own outputs
                chosen.setdefault(provider[key], []).append(".".join(key))
        self.built, self.chosen = built, chosen

    def restore_all(self, pipeline: Any) -> dict[Key, Any]:
        """Apply the readers of the chosen checkpoints; return the outputs they restore."""
        restored: dict[Key, Any] = {}
        for name, keys in self.chosen.items():
            folder = self.run.step_folder(name)
            marker = self.restored[name]
            found = pipeline | name >> Restore(folder, name, marker, keys)
            restored.update({_key(text): pcoll for text, pcoll in found.items()})
        return restored

    def builds(self, node: Node) -> bool:
        """Say whether the builder applies `node` (not when restored outputs stand in for it)."""
        state = current_state()
        self._mark = (len(state.proposals), len(state.promotions)) if state else (0, 0)
        return node.name in self.built

    def materialise(
        self, node: Node, named: dict[str, Any], outputs: dict[Key, Any], *, gated: bool
    ) -> dict[str, Any]:
        """Checkpoint `node` if it is wanted and may be; return what its readers read.

        `named` are the node's own outputs, `outputs` every output built so far.
        """
        state = current_state()
        mark = (len(state.proposals), len(state.promotions)) if state else (0, 0)
        upstream = any(ref.node in self._unsafe for ref in node.inputs)
        if gated or mark != self._mark or node.config.get("incremental") or upstream:
            self._unsafe.add(node.name)
        if node.name not in self.wanted or not named:
            return named
        if node.name in self._unsafe:
            self.not_written.append(node.name)
            return named
        written = {f"{node.name}.{output}": pcoll for output, pcoll in named.items()}
        for key in self._side_outputs(node.name):
            written[".".join(key)] = outputs[key]
        folder = self.run.step_folder(node.name)
        own = [f"{node.name}.{output}" for output in named]
        read = written | f"{node.name}/Checkpoint" >> Materialise(
            folder, node.name, self.fingerprints[node.name], own
        )
        return {_key(text)[1]: pcoll for text, pcoll in read.items()}

    def _side_outputs(self, name: str) -> list[Key]:
        """Return the outputs of `name`'s upstream that nodes outside that upstream read.

        Not those read by checkpointed steps: their own checkpoints stand in for them (and
        when one is missing on resume, the upstream is recomputed), so a shared upstream's
        data is not copied into every branch's checkpoint.
        """
        by_name = {node.name: node for node in self.ordered}
        upstream: set[str] = set()
        stack = [ref.node for ref in by_name[name].inputs]
        while stack:
            found = stack.pop()
            if found not in upstream:
                upstream.add(found)
                stack.extend(ref.node for ref in by_name[found].inputs)
        closure = upstream | {name}
        return sorted(
            {
                (ref.node, ref.output)
                for node in self.ordered
                if node.name not in closure and node.name not in self.wanted
                for ref in node.inputs
                if ref.node in upstream
            }
        )

    def resume_line(self) -> str:
        """Return the one line a resumed run prints: what it reuses and what it recomputes."""
        reused = ", ".join(f"`{name}`" for name in self.chosen) or "none"
        redo = [node.name for node in self.ordered if node.name in self.built]
        stale = [name for name in self.stale if name in redo]
        line = f"resuming run {self.run.run_id}: reused checkpoints of {reused}"
        line += f"; recomputing {', '.join(f'`{name}`' for name in redo)}"
        if stale:
            line += f" (changed since checkpointed: {', '.join(f'`{n}`' for n in stale)})"
        return line

    def adjust(self, steps: list[Any]) -> None:
        """Fix the report of steps whose outputs were restored instead of computed.

        Their rows in are the rows restored (their upstream did not run: its counts are 0).
        Such a step whose counts differ from what the markers recorded is marked unbalanced,
        which fails the run.
        """
        recorded: dict[str, dict[str, int]] = {}
        for name, keys in self.chosen.items():
            outputs = self.restored[name]["outputs"]
            for text in keys:
                node, output = _key(text)
                what = output_counter(output)
                counts = recorded.setdefault(node, {})
                counts[what] = counts.get(what, 0) + outputs[text]["rows"]
        for step in steps:
            if step.name not in recorded or step.name in self.built:
                continue
            restored = recorded[step.name]
            rejected = restored.pop(output_counter("error"), 0)
            step.rows_in = step.rows_out + step.rows_rejected
            step.balanced = step.rows_out == sum(restored.values()) and (
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

        Returns a hint for the failure message ("" after a success or when none was written).
        """
        if succeeded:
            self.run.remove()
            return ""
        self.run.failed()
        written = [n for n in os.listdir(self.run.folder) if self.run.marker(n) is not None]
        if not written:
            return ""
        return f"; checkpoints kept: resume with --resume {self.run.run_id}"


__all__ = ["CheckpointPlan"]
