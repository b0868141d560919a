"""The worker process of local multi-process runs: Beam's SDK harness, quiet like its launcher.

`LocalRunner` starts `python -m beam_etl.worker` instead of Beam's
`apache_beam.runners.worker.sdk_worker_main` for `--direct_running_mode=multi_processing`: the
same harness, but

- it writes to the terminal only when the launcher runs with `--debug` (the launcher sets
  `BEAM_ETL_DEBUG=1`): a failure inside a step reaches the launcher through Beam's Fn API and
  is reported there in one line, so the worker's own log lines and tracebacks add nothing;
- on Ctrl-C it leaves at once and silently; the launcher reports the interruption. (A worker
  that stayed would keep the launcher waiting for it at exit.)
- its bundles end without waiting for Beam's state sampler (`core.local.shorten_state_sampling`).
"""

import os
import signal
import sys


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
    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
