"""One exception tree for beam_etl.

Every error a user can cause derives from `BeamEtlError`; the CLI prints such errors as one
line (no traceback) and maps them to exit codes. Extra constructor arguments are keyword-only
with defaults so that every exception pickles (workers send them back to the launcher).
"""


class BeamEtlError(Exception):
    """Root of every error beam_etl raises on purpose."""

    exit_code = 1


class SpecError(BeamEtlError):
    """A pipeline spec is invalid: wrong type, unknown key, bad input reference, cycle ...

    `step` and `line` locate the problem in the YAML file; they are added to the message.
    """

    exit_code = 2

    def __init__(self, message: str, *, step: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.step = step
        self.line = line
        super().__init__(message, step, line)

    def __str__(self) -> str:
        where = []
        if self.step is not None:
            where.append(f"step `{self.step}`")
        if self.line is not None:
            where.append(f"line {self.line}")
        return f"{self.message} ({', '.join(where)})" if where else self.message

    def __reduce__(self):  # keep keyword-only arguments through pickling
        return (_rebuild_spec_error, (type(self), self.message, self.step, self.line))


def _rebuild_spec_error(cls, message, step, line):
    return cls(message, step=step, line=line)


class ExpressionError(SpecError):
    """An expression in a spec cannot be parsed or type-checked.

    `position` is the 0-based character offset of the problem inside the expression text.
    """

    def __init__(
        self,
        message: str,
        *,
        position: int | None = None,
        step: str | None = None,
        line: int | None = None,
    ) -> None:
        self.position = position
        super().__init__(message, step=step, line=line)

    def __reduce__(self):
        return (
            _rebuild_expression_error,
            (type(self), self.message, self.position, self.step, self.line),
        )


def _rebuild_expression_error(cls, message, position, step, line):
    return cls(message, position=position, step=step, line=line)


class ConnectorError(BeamEtlError):
    """A source or sink cannot do its work: missing file, unreadable data, refused connection."""


class DataError(BeamEtlError):
    """The data does not fit the pipeline (a column a step needs is missing, ...)."""


class CheckFailedError(BeamEtlError):
    """A data-quality check with severity `fail` failed: the sinks publish nothing."""


class UsageError(BeamEtlError):
    """The command line is wrong."""

    exit_code = 2


class PipelineFailedError(BeamEtlError):
    """The pipeline ran but failed, or its row counts do not add up."""
