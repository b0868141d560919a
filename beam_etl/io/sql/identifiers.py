"""SQL helpers shared by the database connectors: identifier checks and quoting.

Identifiers from specs are checked against a strict pattern and then quoted; values never go
into SQL text (they travel as parameters or bulk-load data).
"""

import re
from typing import Final

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
LEDGER_TABLE: Final = "_beam_etl_runs"


def check_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` if it is a safe SQL identifier, else raise ValueError naming `what`."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"Invalid {what} `{name}`: use letters, digits and `_` (at most 63, not starting "
            "with a digit)"
        )
    return name


def quote_identifier(name: str, dialect: str = "ansi") -> str:
    """Return `name` checked and quoted for `dialect` (`ansi`/`sqlite`/`postgres` or `mysql`).

    A dotted name (`schema.table`) is checked and quoted part by part.
    """
    quote = "`" if dialect == "mysql" else '"'
    parts = name.split(".") if isinstance(name, str) else [name]
    return ".".join(f"{quote}{check_identifier(part)}{quote}" for part in parts)
