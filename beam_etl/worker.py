"""The worker process of local multi-process runs: Beam's SDK harness, quiet like its launcher.

`LocalRunner` starts `python -m beam_etl.worker` instead of Beam's
`apache_beam.runners.worker.sdk_worker_main` for `--direct_running_mode=multi_processing`: the
same harness, but

- it writes to the terminal only when the launcher runs with `--debug` (the launcher sets
  `BEAM_ETL_DEBUG=1`): a failure inside a step reaches the launcher through Beam's Fn API and
  is reported there in one line, so the worker's own log lines and tracebacks add nothing;
- on Ctrl-C it leaves at once and silently; the launcher reports the interruption. (A worker
  that stayed would keep the launcher waiting for it at exit.)
- its bundles end without waiting for Beam's state sampler (`core.local.shorten_state_sampling`);
- unless under `--debug`, start-up warnings that do not apply to a local worker are not sent
  to the launcher (which prints its workers' warnings through its `local_job_service`
  logger): no main session was staged (none is: steps are pickled whole), and the launcher's
  DirectRunner-only options are not worker options.
"""

import logging
import os
import signal
import sys

#: (logger, start of the message) of the worker's start-up warnings that do not apply here.
_IRRELEVANT: tuple[tuple[str, str], ...] = (
    ("apache_beam.runners.worker.sdk_worker_main", "No semi_persistent_directory found"),
    ("apache_beam.runners.worker.sdk_worker_main", "No session file found"),
    ("apache_beam.options.pipeline_options", "Discarding unparseable args"),
)


class _Drop(logging.Filter):
    """Drop a logger's records whose message starts with `start`."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self._start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._start)


def _drop_irrelevant_warnings() -> None:
    for name, start in _IRRELEVANT:
        logging.getLogger(name).addFilter(_Drop(start))


def _leave(signum, frame) -> None:
    os._exit(128 + signum)


def main() -> None:
    if os.environ.get("BEAM_ETL_DEBUG") != "1":
        signal.signal(signal.SIGINT, _leave)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)  # Beam logs and gRPC's C core both write to file descriptor 2
        os.close(quiet)
    from apache_beam.runners.worker import sdk_worker_main

    from beam_etl.core.local import shorten_state_sampling  # after the redirect: Beam logs

    shorten_state_sampling()
    if os.environ.get("BEAM_ETL_DEBUG") != "1":
        _drop_irrelevant_warnings()
    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
