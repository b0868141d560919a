"""A local runner that chooses like Beam's DirectRunner but never tries the Prism download.

Beam 2.77's `DirectRunner` first downloads the Prism runner binary (which fails offline and,
with no timeout, can hang on a network that drops packets), then falls back. `FnApiRunner`
alone skips Prism but gives multi-process workers no pipeline options. `LocalRunner` makes the
DirectRunner's remaining choice itself: FnApiRunner (with the options passed to workers through
its provision info) when the pipeline allows it, else BundleBasedDirectRunner (TestStream,
processing-time timers, streaming sources).
"""

import logging
from typing import Final

from apache_beam.runners.runner import PipelineRunner

_LOG = logging.getLogger(__name__)

#: Names that select the local runner from `--runner` (DirectRunner included, see `resolve`).
LOCAL_NAMES: Final = ("LocalRunner", "DirectRunner", "SwitchingDirectRunner")


class LocalRunner(PipelineRunner):
    """Run a pipeline on this machine, in process or on `--direct_num_workers` processes."""

    def run_pipeline(self, pipeline, options):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        if _fn_api_runner_can_run(pipeline):
            runner = _fn_api_runner(options)
            _LOG.debug("Running with FnApiRunner")
        else:
            runner = BundleBasedDirectRunner()
            _LOG.debug("Running with BundleBasedDirectRunner")
        return runner.run_pipeline(pipeline, options)


def runs_locally(pipeline) -> bool:
    """Return whether `pipeline` runs on this machine (its workers share its file system)."""
    from apache_beam.runners.direct.direct_runner import (
        BundleBasedDirectRunner,
        SwitchingDirectRunner,
    )
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    local = (LocalRunner, SwitchingDirectRunner, BundleBasedDirectRunner, FnApiRunner)
    return isinstance(getattr(pipeline, "runner", None), local)


def _fn_api_runner(options):
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=provision_info)


def _fn_api_runner_can_run(pipeline) -> bool:
    """Apply the DirectRunner's FnApiRunner checks: no TestStream, no processing-time timers,
    no combiner with deferred side inputs, no streaming Pub/Sub."""
    import itertools

    from apache_beam.internal.util import ArgumentPlaceholder
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import userstate
    from apache_beam.transforms.core import CombineValuesDoFn
    from apache_beam.transforms.timeutil import TimeDomain

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
            if userstate.is_stateful_dofn(dofn):
                _, timers = userstate.get_dofn_specs(dofn)
                if any(timer.time_domain == TimeDomain.REAL_TIME for timer in timers):
                    supported = False

    pipeline.visit(_Visitor())
    return supported


def resolve(runner_name: str | None):
    """Return the runner to use for `--runner`: a `LocalRunner` for local names, else the name.

    `DirectRunner` is taken as the local runner: it makes the same choice without Prism. Ask
    for `PrismRunner` explicitly to use Prism.
    """
    if runner_name is None or runner_name in LOCAL_NAMES:
        return LocalRunner()
    return runner_name
