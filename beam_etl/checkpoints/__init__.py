"""Checkpoints, resume, and retries for user functions.

- `checkpoint: true` on a source or step (or `--checkpoint-all`) materialises its outputs once
  under `<output dir>/.beam_etl/checkpoints/<run id>/<step>/` with a completion marker;
  `--resume RUN_ID` rebuilds the run from every complete checkpoint whose spec fingerprint
  still matches (see `plan`, `materialise`, `fingerprint`, `store`).
- `recoverable` / `retry` and the `retry:` key of user-function steps: retries with
  exponential backoff, then dead letters (`retries_exhausted`) (see `retries`).

Only the retry part is imported eagerly: the user-function transforms use it, and the rest
of this package sits above them (it wires checkpoints into the spec builder).
"""

from beam_etl.core.retries import (
    RETRIES_EXHAUSTED,
    RetriesExhaustedError,
    RetryPolicy,
    recoverable,
    retry,
)

__all__ = ["RETRIES_EXHAUSTED", "RetriesExhaustedError", "RetryPolicy", "recoverable", "retry"]
