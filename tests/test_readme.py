"""The README's set-up commands are the ones CI runs."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if not line.startswith("#")]


def test_readme_starts_with_the_two_setup_commands():
    demo, tests = _commands()[:2]
    assert demo.endswith("python -m beam_etl.run")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_every_guarantee_names_a_test_that_exists():
    import re

    text = (ROOT / "README.md").read_text()
    section = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(test_\w+)", section))
    assert len(named) >= 10
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    assert named <= defined, f"README names tests that do not exist: {sorted(named - defined)}"


def test_the_catalogue_table_is_the_generated_one():
    """The README's table of every type is derived from the one catalogue, not kept by hand."""
    from beam_etl.core.catalogue import catalogue_table

    text = (ROOT / "README.md").read_text()
    start, end = "<!-- catalogue:start -->\n", "\n<!-- catalogue:end -->"
    assert start in text and end in text
    copy = text[text.index(start) + len(start) : text.index(end)]
    regenerate = "python -m beam_etl.run --list-transforms markdown"
    assert copy == catalogue_table(), f"regenerate the table: {regenerate}"
