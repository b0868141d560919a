"""The output shape of composites that can reject rows."""

from typing import Any, NamedTuple


class WithErrors(NamedTuple):
    """A composite's two outputs: `output` (batches) and `error` (`DeadLetter`s)."""

    output: Any
    error: Any
