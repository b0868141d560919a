"""Whether a pipeline runs on this machine: the question sources, sinks and spills ask of the
runner (its workers then share this machine's file system and temporary folder).

Beam-side only: beam_etl's own `LocalRunner` (in `beam_etl.runner`, above this layer) says so
with the class attribute `RUNS_ON_THIS_MACHINE`, so nothing here imports it.
"""

from typing import Any


def is_local_runner(pipeline: Any) -> bool:
    """Return whether `pipeline` runs on beam_etl's `LocalRunner`."""
    return bool(getattr(getattr(pipeline, "runner", None), "RUNS_ON_THIS_MACHINE", False))


def runs_locally(pipeline: Any) -> bool:
    """Return whether `pipeline` runs on this machine (its workers share its file system)."""
    from apache_beam.runners.direct.direct_runner import (
        BundleBasedDirectRunner,
        SwitchingDirectRunner,
    )
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    if is_local_runner(pipeline):
        return True
    local = (SwitchingDirectRunner, BundleBasedDirectRunner, FnApiRunner)
    return isinstance(getattr(pipeline, "runner", None), local)
