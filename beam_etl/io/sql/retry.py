"""Retries of transient database failures, with errors that never quote a password."""

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from beam_etl.core.config import first_line
from beam_etl.core.errors import ConnectorError
from beam_etl.io.sql.options import DbConfig

_LOG = logging.getLogger(__name__)
T = TypeVar("T")


def with_retries(
    operation: Callable[[], T],
    *,
    config: DbConfig,
    is_transient: Callable[[BaseException], bool],
    what: str,
) -> T:
    """Run `operation`, retrying transient failures with exponential backoff and jitter.

    Raises:
        ConnectorError: a non-transient failure, or a transient one that outlived the retries;
            the message names `what` and the masked connection, never the password.
    """
    for attempt in range(config.retries + 1):
        try:
            return operation()
        except ConnectorError:
            raise
        except Exception as exc:
            message = config.redact(first_line(exc))
            if not is_transient(exc) or attempt == config.retries:
                kind = "after retries " if is_transient(exc) else ""
                # `from None`: a driver's original error may quote a DSN with its password.
                raise ConnectorError(
                    f"{what} failed {kind}on `{config.describe()}`: {type(exc).__name__}: {message}"
                ) from None
            delay = config.retry_delay * (2**attempt) * (1 + random.random() / 2)
            _LOG.warning(
                "%s on `%s` hit a transient error (%s); retry %d of %d in %.1f s",
                what,
                config.describe(),
                message,
                attempt + 1,
                config.retries,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
