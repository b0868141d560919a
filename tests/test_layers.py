"""The layers of beam_etl import one way: a module imports only from the layers below its own
(and from its own unit), never upwards and never across to a sibling unit of its layer.

Imports are read with `ast` from every module of the package, at module level and inside
functions alike (a function-local import is no way around the rule), `if TYPE_CHECKING:`
blocks included. A function-local import of another unit is allowed only with a comment on
it saying why (an optional dependency, the start-up cost of the command line).
"""

import ast
import pathlib

import beam_etl

PACKAGE = pathlib.Path(beam_etl.__file__).parent

#: Bottom to top. A unit is a package or a module; a module belongs to the longest unit its
#: dotted name starts with. Units of one layer do not import one another.
LAYERS: list[list[str]] = [
    ["beam_etl"],  # the package itself: `__version__`
    ["beam_etl.core"],  # errors, batches, types, casting, expressions, dead letters, catalogue
    ["beam_etl.keyed"],  # bucketing and spilling by key
    ["beam_etl.io"],  # sources and sinks
    ["beam_etl.transforms"],  # processors
    ["beam_etl.quality"],  # row and dataset checks
    ["beam_etl.schema"],  # schema model, conformance, inference
    ["beam_etl.pipeline"],  # YAML spec -> Beam graph
    ["beam_etl.worker"],  # the local worker process and its fork server
    # the services of a run
    [
        "beam_etl.usage",
        "beam_etl.runner",
        "beam_etl.clusters",
        "beam_etl.observers",
        "beam_etl.runs",
        "beam_etl.report",
        "beam_etl.interop",
    ],
    ["beam_etl.progress", "beam_etl.history", "beam_etl.lineage", "beam_etl.checkpoints"],
    ["beam_etl.reporting"],
    ["beam_etl.cli"],  # running a spec: verdict, publish, report
    ["beam_etl.replay"],  # runs a cut of a spec through `cli`
    ["beam_etl.run"],  # the entry point `python -m beam_etl.run`
]
_RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in _RANK:
            return candidate
    raise AssertionError(f"module `{module}` belongs to no layer: add it to LAYERS")


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(module: str, path: pathlib.Path, modules: frozenset[str] = frozenset()):
    """Yield `(imported module, line, inside a function, source line)` of beam_etl imports."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            local.update(id(inner) for inner in ast.walk(node))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            # `from beam_etl import cli` imports the module `beam_etl.cli`
            names = [
                f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == "beam_etl" or name.startswith("beam_etl."):
                statement = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                yield name, node.lineno, id(node) in local, statement


def _says_why(statement: str) -> bool:
    """Whether the statement carries a comment that gives a reason (not only a linter's or a
    type checker's directive)."""
    for comment in (line.partition("#")[2] for line in statement.splitlines() if "#" in line):
        words = comment.split("#")[0].strip()
        if words and not words.startswith(("type:", "noqa", "pragma")):
            return True
    return False


def test_every_module_belongs_to_a_layer():
    for module in _modules():
        _unit(module)


def test_imports_run_one_way_only():
    wrong = []
    found = _modules()
    for module, path in sorted(found.items()):
        unit = _unit(module)
        for target, line, _, _ in _imports(module, path, frozenset(found)):
            other = _unit(target)
            if other != unit and _RANK[other] >= _RANK[unit]:
                way = "across" if _RANK[other] == _RANK[unit] else "upwards"
                wrong.append(f"{module}:{line} imports {target} ({way})")
    assert wrong == []


def test_function_local_imports_of_other_units_say_why():
    silent = []
    found = _modules()
    for module, path in sorted(found.items()):
        unit = _unit(module)
        for target, line, local, text in _imports(module, path, frozenset(found)):
            if local and _unit(target) != unit and not _says_why(text):
                silent.append(f"{module}:{line} {text.strip()}")
    assert silent == []


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check is not vacuous: an io module importing the pipeline package is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from beam_etl.pipeline import load_plan\n"
        "def g():\n    from beam_etl import cli  # type: ignore[attr-defined]\n"
    )
    found = list(_imports("beam_etl.io.probe", probe, frozenset(_modules())))
    assert [target for target, *_ in found] == ["beam_etl.pipeline", "beam_etl.cli"]
    assert all(_RANK[_unit(target)] > _RANK[_unit("beam_etl.io.probe")] for target, *_ in found)
    assert not _says_why(found[1][3])  # a type checker's directive is no reason
