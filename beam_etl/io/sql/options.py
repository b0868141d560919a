"""Typed settings of the database connectors: where to connect (passwords and DSNs print as
`***`), and what a sink does (mode, keys, drift policy, what to do with refused rows).
"""

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from beam_etl.core.config import Secret, mask_dsn
from beam_etl.io.sql.identifiers import check_identifier

MODES: Final = ("append", "replace", "merge", "insert_only", "scd2")
DRIFT_POLICIES: Final = ("evolve", "freeze", "discard_columns")
ON_REJECT: Final = ("dead_letter", "fail")


_KV_SECRET: Final = re.compile(r"\bpassword\s*=\s*(?P<pw>'[^']*'|\S+)", re.I)


@dataclass(frozen=True, kw_only=True)
class DbConfig:
    """Where and how to connect; the password and any DSN print as `***`."""

    dialect: str
    host: str = "127.0.0.1"
    port: int = 0
    database: str = ""
    user: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    dsn: Secret | None = None
    connect_timeout: float = 10.0
    statement_timeout: float | None = None
    retries: int = 3
    retry_delay: float = 0.5

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0:
            raise ValueError(f"`connect_timeout` must be positive, not `{self.connect_timeout}`")
        if self.statement_timeout is not None and self.statement_timeout <= 0:
            raise ValueError(
                f"`statement_timeout` must be positive, not `{self.statement_timeout}`"
            )
        if self.retries < 0:
            raise ValueError(f"`retries` must be zero or more, not `{self.retries}`")

    def describe(self) -> str:
        """Return where this connects to, with any password masked."""
        if self.dsn is not None:
            return self.redact(self.dsn.reveal())
        if self.dialect == "sqlite":
            return f"sqlite:{self.database}"
        return f"{self.dialect}://{self.user}@{self.host}:{self.port}/{self.database}"

    def redact(self, text: str) -> str:
        """Return `text` (a driver's message, a DSN) with every form of the password masked:
        URL and `password=` patterns, and the literal password wherever it appears."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return mask_dsn(text)

    def _secrets(self) -> list[str]:
        found = [self.password.reveal()]
        if self.dsn is not None:
            dsn = self.dsn.reveal()
            userinfo = urllib.parse.urlsplit(dsn).netloc.rpartition("@")[0] if "://" in dsn else ""
            if ":" in userinfo:
                raw = userinfo.partition(":")[2]
                found += [raw, urllib.parse.unquote(raw)]
            for match in _KV_SECRET.finditer(dsn):
                found.append(match.group("pw").strip("'"))
        # Longest first; one- or two-character values would mask ordinary text.
        return sorted({value for value in found if len(value) > 2}, key=len, reverse=True)


def make_config(
    dialect: str,
    dsn: str | None,
    dsn_env: str | None,
    host: str,
    port: int,
    database: str | None,
    user: str,
    password_env: str | None,
    connect_timeout: float,
    statement_timeout: float | None,
) -> DbConfig:
    """Return the connection settings, reading the password or DSN from the environment now.

    Raises:
        ValueError: neither a DSN nor a database is given, or a named variable is unset.
    """
    secret_dsn = Secret(dsn) if dsn else None
    if dsn_env:
        if dsn_env not in os.environ:
            raise ValueError(f"Environment variable `{dsn_env}` (dsn_env) is not set")
        secret_dsn = Secret(os.environ[dsn_env])
    if secret_dsn is None and not database:
        raise ValueError("Give `dsn`, `dsn_env` or `database` to say where to connect")
    password = Secret(os.environ.get(password_env, "")) if password_env else Secret("")
    return DbConfig(
        dialect=dialect,
        host=host,
        port=port,
        database=database or "",
        user=user,
        password=password,
        dsn=secret_dsn,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
    )


def check_write_args(
    table: str,
    mode: str,
    primary_key: list[str] | str | None,
    hard_delete_column: str | None,
    dedup_sort: str | None,
    schema_drift: str,
    on_reject: str,
) -> list[str]:
    """Validate a database sink's arguments; return the primary key as a list.

    Raises:
        ValueError: an argument is invalid (named, with its value).
    """
    check_identifier(table.split(".")[-1], "table name")
    for name, value, allowed in (
        ("mode", mode, MODES),
        ("schema_drift", schema_drift, DRIFT_POLICIES),
        ("on_reject", on_reject, ON_REJECT),
    ):
        if value not in allowed:
            raise ValueError(f"Unknown {name} `{value}`; use one of {', '.join(allowed)}")
    keys = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
    for key in keys:
        check_identifier(key, "primary_key column")
    if mode in ("merge", "insert_only", "scd2") and not keys:
        raise ValueError(f"mode `{mode}` needs `primary_key`")
    for name, column in (("hard_delete_column", hard_delete_column), ("dedup_sort", dedup_sort)):
        if column is not None:
            check_identifier(column, name)
            if mode not in ("merge", "scd2"):
                raise ValueError(f"`{name}` applies to mode `merge` only (or `scd2`), not `{mode}`")
    return keys


@dataclass(frozen=True, kw_only=True)
class SinkOptions:
    """What a database sink does, validated once at construction (see `check_write_args`).

    `keys` is the primary key; `hard_delete` and `dedup_sort` are column names; `step` is the
    sink's label (dead letters and metrics name it); `load_method` is MySQL's bulk load choice.
    """

    mode: str = "append"
    keys: tuple[str, ...] = ()
    hard_delete: str | None = None
    dedup_sort: str | None = None
    create_table: bool = True
    drift: str = "evolve"
    on_reject: str = "dead_letter"
    run_id: str = ""
    keep_state: bool = False
    step: str = ""
    load_method: str = "auto"

    @classmethod
    def create(
        cls,
        table: str,
        mode: str,
        primary_key: list[str] | str | None,
        hard_delete_column: str | None,
        dedup_sort: str | None,
        create_table: bool,
        schema_drift: str,
        on_reject: str,
        run_id: str,
        keep_state: bool,
        load_method: str = "auto",
    ) -> "SinkOptions":
        """Return a sink's options from its arguments, validated (see `check_write_args`).

        Raises:
            ValueError: an argument is invalid (named, with its value).
        """
        keys = check_write_args(
            table, mode, primary_key, hard_delete_column, dedup_sort, schema_drift, on_reject
        )
        return cls(
            mode=mode,
            keys=tuple(keys),
            hard_delete=hard_delete_column,
            dedup_sort=dedup_sort,
            create_table=create_table,
            drift=schema_drift,
            on_reject=on_reject,
            run_id=run_id,
            keep_state=bool(keep_state),
            load_method=load_method,
        )

    @classmethod
    def of(cls, settings: "SinkOptions | Mapping[str, Any]") -> "SinkOptions":
        """Return `settings` as options: a mapping with these field names is converted (the
        keys `trial` and `expect` of a publish call are not options and are ignored)."""
        if isinstance(settings, SinkOptions):
            return settings
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in settings.items() if k in known}
        if "keys" in values:
            values["keys"] = tuple(values["keys"] or ())
        return cls(**values)

    def settings(self) -> dict[str, Any]:
        """Return the options as a plain dict (field name: value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
