"""Whether a pipeline runs on this machine: the question sources, sinks and spills ask of the
runner (its workers then share this machine's file system and temporary folder); and
`shorten_state_sampling`, which local runs' workers apply.

Beam-side only: beam_etl's own `LocalRunner` (in `beam_etl.runner`, above this layer) says so
with the class attribute `RUNS_ON_THIS_MACHINE`, so nothing here imports it.
"""

from typing import Any, Final


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


#: The longest sleep of Beam's state sampler thread in local runs (Beam's default: 200 ms).
STATE_SAMPLING_MS: Final = 20


def shorten_state_sampling() -> None:
    """Make the state sampler of Beam's SDK harness sleep at most `STATE_SAMPLING_MS`.

    The harness starts a sampler thread for every bundle and joins it when the bundle ends;
    the thread sleeps in steps growing to 200 ms, so every long bundle ended ~100 ms late
    (0.12 s of a 3M-row CSV -> Parquet run, measured). The sampler only times the steps for
    Beam's msec counters; waking every 20 ms costs nothing measurable. Left as it is when
    Beam's default is not the one expected.
    """
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,) == (200,):
        init.__defaults__ = (STATE_SAMPLING_MS,)
