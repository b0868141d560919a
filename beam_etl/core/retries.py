"""Retries with exponential backoff for user functions (`MapBatches`, `MapRows`, `@batch_step`).

A user function that calls a remote service may fail for a moment (a dropped connection, a
timeout). With a retry policy it is called again, after `backoff`, `2 * backoff`, `4 * backoff`
... seconds, as long as it raises one of the named exception types and attempts remain. When
they are exhausted the call raises `RetriesExhaustedError` (naming the last error), which the
user-function steps turn into dead letters with reason `retries_exhausted`: never a failed run.
Exceptions of other types are not retried and behave as without a policy (`function_failed`).

This module sits below `beam_etl.transforms` (which uses it) and imports nothing above it.
"""

import builtins
import functools
import importlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from beam_etl.core.deadletter import RETRIES_EXHAUSTED as DEADLETTER_RETRIES_EXHAUSTED
from beam_etl.core.errors import BeamEtlError

#: Reason code of the rows a user function could not process within its retry attempts.
RETRIES_EXHAUSTED: Final = DEADLETTER_RETRIES_EXHAUSTED  # the reason code, defined with the others
DEFAULT_ON: Final = (ConnectionError, TimeoutError)
_KEYS: Final = ("attempts", "backoff", "on")


class RetriesExhaustedError(BeamEtlError):
    """A function still raised a retryable exception after its last attempt."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        self.attempts = attempts
        super().__init__(message)

    def __reduce__(self) -> tuple:  # keep the keyword-only argument through pickling
        return (_rebuild, (str(self), self.attempts))


def _rebuild(message: str, attempts: int) -> RetriesExhaustedError:
    return RetriesExhaustedError(message, attempts=attempts)


def exception_type(name: Any) -> type[BaseException]:
    """Return the exception class named `name`: a built-in name or `module.Class`.

    Raises:
        ValueError: the name does not resolve to an exception class.
    """
    if isinstance(name, type) and issubclass(name, BaseException):
        return name
    text = str(name)
    module_name, _, attribute = text.rpartition(".")
    found: Any = None
    if not module_name:
        found = getattr(builtins, text, None)
    else:
        try:
            found = getattr(importlib.import_module(module_name), attribute, None)
        except ImportError:
            found = None
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(
            f"`retry`: `on` names `{text}`, which is not an exception type; name a built-in "
            "one (`ConnectionError`, `TimeoutError`) or `module.Class`"
        )
    return found


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often to call a function again, how long to wait, and for which exceptions.

    Attributes:
        attempts: calls in all, the first included (1 means no retry).
        backoff: seconds before the second call; each later wait doubles.
        on: the exception types retried (their subclasses too).
    """

    attempts: int = 3
    backoff: float = 0.5
    on: tuple[type[BaseException], ...] = DEFAULT_ON

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"`retry`: `attempts` must be an integer, not `{self.attempts}`")
        if self.attempts < 1:
            raise ValueError(f"`retry`: `attempts` must be at least 1, not {self.attempts}")
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, int | float):
            raise ValueError(f"`retry`: `backoff` must be seconds, not `{self.backoff}`")
        if self.backoff < 0:
            raise ValueError(f"`retry`: `backoff` must not be negative, not {self.backoff}")
        if not self.on:
            raise ValueError("`retry`: `on` must name at least one exception type")
        object.__setattr__(self, "on", tuple(exception_type(kind) for kind in self.on))

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number `attempt` (1-based)."""
        return self.backoff * 2 ** (attempt - 1)

    @classmethod
    def of(cls, value: "RetryPolicy | Mapping[str, Any] | None") -> "RetryPolicy | None":
        """Return the policy a `retry:` config value describes (None: no retries).

        Raises:
            ValueError: unknown keys or bad values, naming `retry` and the key.
        """
        if value is None or isinstance(value, RetryPolicy):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"`retry` must be a mapping such as {{attempts: 3, backoff: 0.5, on: "
                f"[ConnectionError]}}, not `{value}`"
            )
        unknown = [key for key in value if key not in _KEYS]
        if unknown:
            raise ValueError(f"`retry`: unknown key `{unknown[0]}`; accepted: {', '.join(_KEYS)}")
        options = dict(value)
        if "on" in options:
            on = options["on"]
            options["on"] = tuple([on] if isinstance(on, str | type) else on)
        return cls(**options)


def call_with_retry(function: Callable, policy: RetryPolicy, *args: Any, **kwargs: Any) -> Any:
    """Call `function(*args, **kwargs)`, again after a growing pause while it raises `policy.on`.

    Raises:
        RetriesExhaustedError: every attempt raised a retried exception (chained to the last).
        Exception: whatever else the function raised, at once.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return function(*args, **kwargs)
        except policy.on as exc:
            if attempt == policy.attempts:
                raise RetriesExhaustedError(
                    f"{policy.attempts} attempt(s) failed; last error: {type(exc).__name__}: {exc}",
                    attempts=policy.attempts,
                ) from exc
            time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable: attempts is at least 1")


class Recoverable:
    """A function called through a `RetryPolicy` (see `recoverable`); picklable.

    Decorating a module-level function replaces it by this wrapper in its module, so the
    wrapper pickles as a reference to that name (workers import it), otherwise by value.
    """

    def __init__(self, function: Callable, policy: RetryPolicy) -> None:
        self.function = function
        self.policy = policy
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(self.function, self.policy, *args, **kwargs)

    def __reduce__(self) -> tuple:
        module, name = getattr(self, "__module__", None), getattr(self, "__qualname__", "")
        target: Any = sys.modules.get(module or "")
        for part in name.split("."):
            target = getattr(target, part, None)
        if target is self:
            return (_lookup, (module, name))
        return (Recoverable, (self.function, self.policy))


def _lookup(module: str, name: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def recoverable(
    function: Callable | None = None,
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    on: Iterable[type[BaseException] | str] = DEFAULT_ON,
) -> Any:
    """Make a user function retry with exponential backoff on the named exception types.

    Use it on a function given to `MapBatches`, `MapRows` or `@batch_step` (put it under
    `@batch_step`). After `attempts` calls that all raised one of `on`, the call raises
    `RetriesExhaustedError`, and the step sends the batch's (or row's) rows to its `error`
    output with reason `retries_exhausted` and the last error; the run goes on.

    ```python
    @recoverable(attempts=3, backoff=0.5, on=[ConnectionError, TimeoutError])
    def enrich(batch):
        return call_the_service(batch)

    batches | "Enrich" >> MapBatches(enrich)
    ```
    """
    policy = RetryPolicy(attempts=attempts, backoff=backoff, on=tuple(map(exception_type, on)))

    def decorate(target: Callable) -> Recoverable:
        if isinstance(target, Recoverable):
            target = target.function
        return Recoverable(target, policy)

    return decorate(function) if function is not None else decorate


#: The same decorator under the name of the spec key (`retry:`).
retry = recoverable


def with_retry(function: Callable, value: "RetryPolicy | Mapping[str, Any] | None") -> Callable:
    """Return `function` called through the `retry:` policy `value` (as is when None).

    A `retry:` given to a step replaces the policy of a function decorated `@recoverable`.
    """
    policy = RetryPolicy.of(value)
    if policy is None:
        return function
    if isinstance(function, Recoverable):
        return _Overridden(function, policy)
    return Recoverable(function, policy)


class _Overridden:
    """A `@recoverable` function called through another policy (it pickles by reference)."""

    def __init__(self, wrapper: Recoverable, policy: RetryPolicy) -> None:
        self.wrapper = wrapper
        self.policy = policy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(self.wrapper.function, self.policy, *args, **kwargs)
