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
