"""The one catalogue: every connector and step by name, loaded lazily.

Built-in types are listed here as `"module:attr"` strings, so listing or validating a spec
imports only what it uses. Everything that lists connectors is derived from this table: the
spec types (`beam_etl.pipeline`), `beam_etl.io.__all__` and `beam_etl.transforms.__all__`
(with the Python-only names of `PYTHON_ONLY`), `--list-transforms`, and the reader
`infer-schema` picks for a file (by the `extensions` of a source). Third-party packages add
types through the entry-point group `beam_etl.transforms` (`name = "package.module:Factory"`).
Config keys in a spec are exactly the factory's keyword arguments, read from its signature.
"""

import difflib
import importlib
import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from beam_etl.core.contract import SINK, SOURCE, STEP, declared

ENTRY_POINT_GROUP: Final = "beam_etl.transforms"


@dataclass(frozen=True)
class Entry:
    """One catalogue entry: the type name, its kind and where its factory lives."""

    name: str
    kind: str  # source, step or sink; "any" for third-party entries
    target: str
    extensions: tuple[str, ...] = ()  # file name endings a file source reads

    @property
    def module(self) -> str:
        """The module the factory lives in."""
        return self.target.partition(":")[0]

    def load(self) -> Any:
        """Import and return the factory.

        Raises:
            ImportError: the module or attribute cannot be imported (with an install hint).
        """
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(
                f"Type `{self.name}` needs `{module_name}`, which cannot be imported ({exc}); "
                "install the missing package"
            ) from exc
        factory = getattr(module, attribute)
        try:  # checked once, where the catalogue hands the factory out
            declared(factory, self.kind)
        except TypeError as exc:
            raise ImportError(f"Type `{self.name}` declares its contract wrongly: {exc}") from None
        return factory


_BUILTIN: Final[dict[str, tuple]] = {
    "ReadFromCsv": (SOURCE, "beam_etl.io.csvio:ReadFromCsv", (".csv", ".tsv", ".txt")),
    "WriteToCsv": (SINK, "beam_etl.io.csvio:WriteToCsv"),
    "WriteToParquet": (SINK, "beam_etl.io.parquetio:WriteToParquet"),
    "WriteToSqlite": (SINK, "beam_etl.io.sqliteio:WriteToSqlite"),
    "WriteToDeadLetters": (SINK, "beam_etl.io.deadletters:WriteToDeadLetters"),
    "ReadFromJson": (SOURCE, "beam_etl.io.jsonio:ReadFromJson", (".json", ".jsonl", ".ndjson")),
    "WriteToJson": (SINK, "beam_etl.io.jsonio:WriteToJson"),
    "ReadFromParquet": (SOURCE, "beam_etl.io.parquetio:ReadFromParquet", (".parquet", ".pq")),
    "ReadFromPostgres": (SOURCE, "beam_etl.io.postgresio:ReadFromPostgres"),
    "WriteToPostgres": (SINK, "beam_etl.io.postgresio:WriteToPostgres"),
    "ReadFromMySql": (SOURCE, "beam_etl.io.mysqlio:ReadFromMySql"),
    "ReadFromSqlite": (SOURCE, "beam_etl.io.sqliteio:ReadFromSqlite"),
    "WriteToMySql": (SINK, "beam_etl.io.mysqlio:WriteToMySql"),
    "ReadFromPostgresChanges": (SOURCE, "beam_etl.io.pgcdc:ReadFromPostgresChanges"),
    "ReadFromDebeziumJson": (SOURCE, "beam_etl.io.debezium:ReadFromDebeziumJson"),
    "ApplyChanges": (STEP, "beam_etl.transforms.changes:ApplyChanges"),
    "ReadFromMySqlChanges": (SOURCE, "beam_etl.io.mysqlcdc:ReadFromMySqlChanges"),
    "ReadFromAvro": (SOURCE, "beam_etl.io.avroio:ReadFromAvro", (".avro",)),
    "WriteToAvro": (SINK, "beam_etl.io.avroio:WriteToAvro"),
    "ReadFromExcel": (SOURCE, "beam_etl.io.excelio:ReadFromExcel", (".xlsx", ".xlsm")),
    "WriteToExcel": (SINK, "beam_etl.io.excelio:WriteToExcel"),
    "WriteToHtml": (SINK, "beam_etl.io.htmlio:WriteToHtml"),
    "WriteToMarkdown": (SINK, "beam_etl.io.htmlio:WriteToMarkdown"),
    "CastColumns": (STEP, "beam_etl.transforms.cleaning:CastColumns"),
    "DropNulls": (STEP, "beam_etl.transforms.cleaning:DropNulls"),
    "SelectColumns": (STEP, "beam_etl.transforms.cleaning:SelectColumns"),
    "RenameColumns": (STEP, "beam_etl.transforms.cleaning:RenameColumns"),
    "FilterRows": (STEP, "beam_etl.transforms.expressions:FilterRows"),
    "DeriveColumns": (STEP, "beam_etl.transforms.expressions:DeriveColumns"),
    "DropDuplicates": (STEP, "beam_etl.transforms.dedupe:DropDuplicates"),
    "DiffSnapshots": (STEP, "beam_etl.transforms.diff:DiffSnapshots"),
    "MapBatches": (STEP, "beam_etl.transforms.rows:MapBatches"),
    "MapRows": (STEP, "beam_etl.transforms.rows:MapRows"),
    "FillNulls": (STEP, "beam_etl.transforms.cleaning:FillNulls"),
    "FillForward": (STEP, "beam_etl.transforms.fill:FillForward"),
    "TrimWhitespace": (STEP, "beam_etl.transforms.text:TrimWhitespace"),
    "ChangeCase": (STEP, "beam_etl.transforms.text:ChangeCase"),
    "StandardizeNulls": (STEP, "beam_etl.transforms.text:StandardizeNulls"),
    "DropColumns": (STEP, "beam_etl.transforms.cleaning:DropColumns"),
    "ReorderColumns": (STEP, "beam_etl.transforms.cleaning:ReorderColumns"),
    "LookupJoin": (STEP, "beam_etl.transforms.relational:LookupJoin"),
    "JoinInputs": (STEP, "beam_etl.transforms.relational:JoinInputs"),
    "Aggregate": (STEP, "beam_etl.transforms.aggregate:Aggregate"),
    "UnionInputs": (STEP, "beam_etl.transforms.routing:UnionInputs"),
    "SplitRows": (STEP, "beam_etl.transforms.routing:SplitRows"),
    "Chain": (STEP, "beam_etl.transforms.chains:Chain"),
    "ConformToSchema": (STEP, "beam_etl.schema.conform:ConformToSchema"),
    "ValidateRecords": (STEP, "beam_etl.quality.validate:ValidateRecords"),
    "CheckUnique": (STEP, "beam_etl.quality.dataset:CheckUnique"),
    "CheckRowCount": (STEP, "beam_etl.quality.dataset:CheckRowCount"),
    "CheckCompleteness": (STEP, "beam_etl.quality.dataset:CheckCompleteness"),
    "CheckRejectedShare": (SINK, "beam_etl.quality.dataset:CheckRejectedShare"),
}

#: Names `beam_etl.io` and `beam_etl.transforms` export for Python users that are no spec
#: types (helpers, result and input shapes, decorators): name -> (package, "module:attr").
PYTHON_ONLY: Final = {
    "parquet_history": ("io", "beam_etl.io.parquetio:parquet_history"),
    "Gated": ("io", "beam_etl.core.contract:Gated"),  # a sink's input shape, with the sinks
    "Deduplicated": ("transforms", "beam_etl.transforms.dedupe:Deduplicated"),
    "RowsToBatches": ("transforms", "beam_etl.transforms.rows:RowsToBatches"),
    "SchemaOf": ("transforms", "beam_etl.transforms.rows:SchemaOf"),
    "ToKeyedRows": ("transforms", "beam_etl.transforms.rows:ToKeyedRows"),
    "batch_step": ("transforms", "beam_etl.transforms.chains:batch_step"),
    "WithErrors": ("transforms", "beam_etl.core.outputs:WithErrors"),
}
#: Where the spec types each public package exports live: `beam_etl.io` the connectors,
#: `beam_etl.transforms` every processor, the quality checks and schema steps included.
_EXPORTED_FROM: Final = {
    "io": ("beam_etl.io.",),
    "transforms": ("beam_etl.transforms.", "beam_etl.quality.", "beam_etl.schema."),
}


def exports(package: str) -> dict[str, str]:
    """Return the names public package `package` (`io` or `transforms`) exports, with the
    module each is imported from on first use."""
    prefixes = _EXPORTED_FROM[package]
    found = {n: entry[1] for n, entry in _BUILTIN.items() if entry[1].startswith(prefixes)}
    found |= {n: target for n, (owner, target) in PYTHON_ONLY.items() if owner == package}
    return {name: target.partition(":")[0] for name, target in sorted(found.items())}


def reader_for(path: str) -> Entry | None:
    """Return the file source whose `extensions` end `path` (case-insensitive), or None."""
    lowered = path.lower()
    for entry in catalogue().values():
        if entry.extensions and lowered.endswith(entry.extensions):
            return entry
    return None


@cache
def catalogue() -> dict[str, Entry]:
    """Return every known type: built-ins, then entry points (which cannot shadow them)."""
    from importlib.metadata import entry_points  # ~25 ms: only when a type is looked up

    entries = {name: Entry(name, *entry) for name, entry in _BUILTIN.items()}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        entries.setdefault(point.name, Entry(point.name, "any", point.value))
    return entries


def lookup(name: str) -> Entry:
    """Return the entry for `name`.

    Raises:
        KeyError: unknown name; the message suggests the closest known one.
    """
    entries = catalogue()
    if name in entries:
        return entries[name]
    raise KeyError(f"Unknown transform type `{name}`.{did_you_mean(name, entries)}")


def did_you_mean(name: str, candidates) -> str:
    """Return ` Did you mean `x`?` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    if not close:
        lowered = {str(c).lower(): c for c in candidates}
        close = [lowered[str(name).lower()]] if str(name).lower() in lowered else []
    return f" Did you mean `{close[0]}`?" if close else ""


@dataclass(frozen=True)
class Argument:
    """A factory's keyword argument as a spec config key."""

    name: str
    required: bool
    default: Any
    doc: str


def arguments(factory: Any) -> tuple[list[Argument], bool]:
    """Return the factory's config keys and whether it also accepts any other key (`**kw`)."""
    signature = inspect.signature(factory)
    docs = _argument_docs(factory)
    found, open_ended = [], False
    for parameter in signature.parameters.values():
        if parameter.kind == parameter.VAR_KEYWORD:
            open_ended = True
        elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            required = parameter.default is parameter.empty
            default = None if required else parameter.default
            found.append(Argument(parameter.name, required, default, docs.get(parameter.name, "")))
    return found, open_ended


def _argument_docs(factory: Any) -> dict[str, str]:
    """Read `name: text` lines from the `Args:` section of the factory's `__init__` docstring."""
    doc = inspect.getdoc(getattr(factory, "__init__", factory)) or ""
    docs: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        stripped = line.strip()
        head, sep, rest = stripped.partition(":")
        if sep and head.isidentifier() and " " not in head:
            current = head
            docs[current] = rest.strip()
        elif current and stripped and stripped != "Args":
            docs[current] += " " + stripped
    return docs


def summary(factory: Any) -> str:
    """Return the first line of the factory's docstring."""
    return (inspect.getdoc(factory) or "").splitlines()[0] if inspect.getdoc(factory) else ""


def outputs_of(transform: Any, kind: str) -> tuple[str, ...]:
    """Return the named outputs a spec may reference on a node (a factory or an instance):
    its declared `OUTPUTS` (see `beam_etl.core.contract`)."""
    return declared(transform, kind).outputs


def catalogue_table() -> str:
    """Return the built-in types as the README's Markdown table (`--list-transforms
    markdown` prints it; a test keeps the README's copy equal): type, kind, module, declared
    outputs and config keys (required ones in bold)."""
    lines = [
        "| type | kind | module | outputs | config keys (**required**) |",
        "|---|---|---|---|---|",
    ]
    order = {SOURCE: 0, STEP: 1, SINK: 2}
    for name, (kind, target, *_) in sorted(_BUILTIN.items(), key=lambda i: (order[i[1][0]], i[0])):
        factory = Entry(name, kind, target).load()
        outputs = ", ".join(declared(factory, kind).outputs) or "—"
        keys = [
            f"**{argument.name}**" if argument.required else argument.name
            for argument in arguments(factory)[0]
            if argument.name != "run_id"
        ]
        module = target.partition(":")[0].removeprefix("beam_etl.")
        lines.append(f"| `{name}` | {kind} | `{module}` | {outputs} | {', '.join(keys)} |")
    return "\n".join(lines)
