"""A local runner that chooses like Beam's DirectRunner but never tries the Prism download.

Beam 2.77's `DirectRunner` first downloads the Prism runner binary (which fails offline and,
with no timeout, can hang on a network that drops packets), then falls back. `FnApiRunner`
alone skips Prism but gives multi-process workers no pipeline options. `LocalRunner` makes the
DirectRunner's remaining choice itself: FnApiRunner (with the options passed to workers through
its provision info) when the pipeline allows it, else BundleBasedDirectRunner (TestStream,
processing-time timers, streaming sources).
"""

import difflib
import logging
from typing import ClassVar, Final

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineRunner

from beam_etl.core.errors import UsageError
from beam_etl.core.local import (
    runs_locally,  # noqa: F401  (re-exported: users ask it here)
    shorten_state_sampling,
)
from beam_etl.worker import chosen_workers, start_server, worker_command

_LOG = logging.getLogger(__name__)

#: Names that select the local runner from `--runner` (DirectRunner included, see `resolve`).
LOCAL_NAMES: Final = ("LocalRunner", "DirectRunner", "SwitchingDirectRunner")


class LocalRunner(PipelineRunner):
    """Run a pipeline on this machine, in process or on `--direct_num_workers` processes."""

    #: Read by `beam_etl.core.local`: sources and spills below this layer ask it.
    RUNS_ON_THIS_MACHINE: ClassVar[bool] = True

    def run_pipeline(self, pipeline, options):
        from apache_beam.options.pipeline_options import DirectOptions
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        direct = options.view_as(DirectOptions)
        if direct.direct_num_workers == 0:  # Beam's "as many as cores": choose (see README)
            direct.direct_num_workers = chosen_workers(0)
            if direct.direct_num_workers == 1:
                direct.direct_running_mode = "in_memory"
            _LOG.debug("--direct_num_workers=0: %d worker(s)", direct.direct_num_workers)
        if direct.direct_running_mode == "multi_processing":
            start_server()  # the workers' imports overlap the checks and the planning below
        if _fn_api_runner_can_run(pipeline):
            shorten_state_sampling()  # in-process workers: their bundles end at once
            runner = _fn_api_runner(options)
            _LOG.debug("Running with FnApiRunner")
        else:
            runner = BundleBasedDirectRunner()
            _LOG.debug("Running with BundleBasedDirectRunner")
        return runner.run_pipeline(pipeline, options)


def _fn_api_runner(options):
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms import environments

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return fn_runner.FnApiRunner(provision_info=provision_info)
    # Beam starts its own worker module for multi_processing, which logs at INFO to the
    # terminal and prints tracebacks on Ctrl-C; `beam_etl.worker` runs the same harness with
    # the launcher's log level. FnApiRunner replaces its environment when it sees
    # multi_processing, so the runner is given the environment and told `in_memory` (the
    # workers still receive the user's options through the provision info).
    environment = environments.SubprocessSDKEnvironment.from_command_string(
        # `exec`: Beam runs the command through /bin/sh, which would die of Ctrl-C itself.
        # Each worker is forked from a server that has done Beam's imports (`beam_etl.worker`).
        command_string=worker_command()
    )
    runner = fn_runner.FnApiRunner(default_environment=environment, provision_info=provision_info)
    return _Multiprocess(runner, direct.direct_num_workers)


def launcher_options(flags: list[str]):
    """Return pipeline options parsed from `flags` whose views are made once.

    Beam asks the options for a view (`options.view_as(TypeOptions)`) about twice per applied
    transform, and each view re-parses every flag with a new argparse parser of all option
    classes: ~0.1-0.2 s of a small run. Views share their values, so one per class is the same.
    """
    return _LauncherOptions(flags)


class _LauncherOptions(PipelineOptions):
    """Pipeline options whose `view_as` makes one view per class (see `launcher_options`)."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_beam_etl_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]


class _Multiprocess:
    """Runs a pipeline on an FnApiRunner with subprocess workers of beam_etl's own."""

    def __init__(self, runner, workers: int) -> None:
        self._runner = runner
        self._workers = workers

    def run_pipeline(self, pipeline, options):
        from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

        # Unset options are left out: `from_dictionary` warns once for each (~80 lines).
        given = {k: v for k, v in options.get_all_options().items() if v is not None}
        local = PipelineOptions.from_dictionary(given)
        local.view_as(DirectOptions).direct_running_mode = "in_memory"
        local.view_as(DirectOptions).direct_num_workers = self._workers
        with _quiet("apache_beam.runners.portability.fn_api_runner.fn_runner"):
            return self._runner.run_pipeline(pipeline, local)


class _quiet:
    """Silence one logger inside the block (a warning that does not apply here)."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self._disabled = self._logger.disabled
        self._logger.disabled = True

    def __exit__(self, *exc) -> None:
        self._logger.disabled = self._disabled


def _fn_api_runner_can_run(pipeline) -> bool:
    """Apply the DirectRunner's FnApiRunner checks: no TestStream, no processing-time timers,
    no combiner with deferred side inputs, no streaming Pub/Sub."""
    import itertools

    from apache_beam.internal.util import ArgumentPlaceholder
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.core import CombineValuesDoFn

    supported = True

    class _Visitor(PipelineVisitor):
        def enter_composite_transform(self, applied) -> None:
            nonlocal supported
            if type(applied.transform).__name__ in ("ReadFromPubSub", "WriteToPubSub"):
                supported = False

        def visit_transform(self, applied) -> None:
            nonlocal supported
            transform = applied.transform
            if isinstance(transform, TestStream):
                supported = False
            dofn = getattr(transform, "dofn", None)
            if dofn is None:
                return
            if isinstance(dofn, CombineValuesDoFn):
                args, kwargs = transform.raw_side_inputs
                if any(
                    isinstance(a, ArgumentPlaceholder)
                    for a in itertools.chain(args, kwargs.values())
                ):
                    supported = False
            if _real_time_timers(type(dofn), dofn):
                supported = False

    pipeline.visit(_Visitor())
    return supported


_TIMERS: dict[type, bool] = {}


def _real_time_timers(kind: type, dofn) -> bool:
    """Whether a DoFn class declares processing-time timers (asked once per class: Beam's
    answer inspects the signature of every method)."""
    if kind not in _TIMERS:
        from apache_beam.transforms import userstate
        from apache_beam.transforms.timeutil import TimeDomain

        _, timers = userstate.get_dofn_specs(dofn)
        _TIMERS[kind] = any(timer.time_domain == TimeDomain.REAL_TIME for timer in timers)
    return _TIMERS[kind]


def resolve(runner_name: str | None):
    """Return the runner to use for `--runner`: a `LocalRunner` for local names, else the name.

    `DirectRunner` (and Beam's short name `Direct`) is taken as the local runner: it makes the
    same choice without Prism. Ask for `PrismRunner` explicitly to use Prism. Names are matched
    as Beam matches them (case-insensitive, `Runner` optional).

    Raises:
        UsageError: not a runner Beam knows (with a did-you-mean).
    """
    if runner_name is None:
        return LocalRunner()
    from apache_beam.options.pipeline_options import StandardOptions

    known = {name.lower(): name for name in StandardOptions.KNOWN_RUNNER_NAMES}
    known |= {name.lower(): name for name in LOCAL_NAMES}
    lowered = runner_name.lower()
    name = known.get(lowered) or known.get(lowered + "runner")
    if name is None and "." not in runner_name:  # a dotted name is a PipelineRunner class
        choices = sorted({*StandardOptions.KNOWN_RUNNER_NAMES, "LocalRunner"})
        spellings = {c.lower(): c for c in choices} | {
            c.lower().removesuffix("runner"): c for c in choices
        }
        close = difflib.get_close_matches(lowered, list(spellings), n=1, cutoff=0.6)
        hint = f" Did you mean `{spellings[close[0]]}`?" if close else ""
        raise UsageError(
            f"Unknown runner `{runner_name}`.{hint} Known runners: {', '.join(choices)} "
            "(or the dotted name of a PipelineRunner class)"
        )
    if name in LOCAL_NAMES:
        return LocalRunner()
    return name or runner_name
