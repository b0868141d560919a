"""Configuration values that must never be printed: secrets, and DSNs with passwords."""

import re
from typing import Final

_DSN_PASSWORD: Final = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)")
_KV_PASSWORD: Final = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.I)


class Secret:
    """A string that prints as `***`: in repr, str, f-strings, logs and reports.

    Call `reveal()` where the real value is needed (a driver's connect call), nowhere else.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):
        return (Secret, (self._value,))


def mask_dsn(text: str) -> str:
    """Return `text` with passwords in URLs (`scheme://user:pw@host`) and `password=...` masked."""
    text = _DSN_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    return _KV_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (drivers add context lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
