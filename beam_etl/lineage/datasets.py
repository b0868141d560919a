"""Sources and sinks as OpenLineage datasets: a namespace and a name, never a password.

Naming follows OpenLineage's conventions: files are namespace `file` with the absolute path
as name; PostgreSQL is `postgres://host:port` with `database.schema.table`; MySQL is
`mysql://host:port` with `database.table`; SQLite is `sqlite` with `path#table`. A node whose
type names no place (a custom source or sink) is `beam_etl` with `pipeline.node`.
"""

import hashlib
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

from beam_etl.pipeline.model import Node

_KEY_VALUE: Final = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_DEFAULT_PORTS: Final = {"postgres": 5432, "mysql": 3306}


@dataclass(frozen=True)
class Dataset:
    """One source or sink of the spec, as OpenLineage names it."""

    node: str
    kind: str  # "source" or "sink"
    namespace: str
    name: str

    @property
    def uri(self) -> str:
        """Return namespace and name as one address (`file:///data/orders.csv`,
        `postgres://db:5432/shop.public.orders`, `sqlite:/data/x.db#t`)."""
        if self.namespace == "file":
            return "file://" + self.name
        if "://" in self.namespace:
            return f"{self.namespace}/{self.name}"
        return f"{self.namespace}:{self.name}"


def dataset_of(node: Node, transform: Any, pipeline: str) -> Dataset:
    """Return the dataset a source or sink reads or writes, named from its configuration."""
    config = getattr(transform, "config", None)
    dialect = getattr(config, "dialect", None)
    if dialect in _DEFAULT_PORTS:
        namespace, name = _database(config, dialect, transform)
    elif hasattr(transform, "database") and hasattr(transform, "table"):
        namespace, name = "sqlite", f"{_absolute(transform.database)}#{transform.table}"
    elif isinstance(getattr(transform, "path", None), str):
        namespace, name = "file", _absolute(transform.path)
    else:
        namespace, name = "beam_etl", f"{pipeline}.{node.name}"
    return Dataset(node.name, node.kind, namespace, name)


def _absolute(path: str) -> str:
    if "://" in path:  # already a URI (a remote file system): keep it, without any password
        parts = urllib.parse.urlsplit(path)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=host))
    return os.path.abspath(path)


def _database(config: Any, dialect: str, transform: Any) -> tuple[str, str]:
    """Namespace `dialect://host:port` and name `db[.schema].table`, from the settings or
    the DSN (read for host, port and database only: its password never leaves here)."""
    host, port, database = config.host, config.port or _DEFAULT_PORTS[dialect], config.database
    if config.dsn is not None:
        found = _dsn_parts(config.dsn.reveal())
        host = found.get("host") or host
        port = int(found.get("port") or port)
        database = found.get("dbname") or database
    table = getattr(transform, "source", None) or getattr(transform, "table", "")
    if table == "query":  # a query names no table: name it by its text's digest
        digest = hashlib.sha256(str(getattr(transform, "query", "")).encode()).hexdigest()
        table = f"query_{digest[:12]}"
    parts = str(table).split(".")
    if dialect == "postgres" and len(parts) == 1:
        parts = ["public", *parts]
    return f"{dialect}://{host}:{port}", ".".join([database, *parts])


def _dsn_parts(dsn: str) -> dict[str, str]:
    """Return host, port and dbname of a URL or `key=value` DSN (nothing else is kept)."""
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        return {
            "host": parts.hostname or "",
            "port": str(parts.port or ""),
            "dbname": urllib.parse.unquote(parts.path.lstrip("/")),
        }
    found = {key.lower(): value.strip("'") for key, value in _KEY_VALUE.findall(dsn)}
    return {key: found.get(key, "") for key in ("host", "port", "dbname")}
