"""What every subcommand of the command line shares: the bundled demo, the default output
folder, the argument parser whose errors are one line, and `--set NAME=VALUE` variables.

It sits below `run` (the entry point) and the subcommands (`cli`, `history`, `replay`,
`checkpoints.command`, `lineage.command`), so none of them imports the entry point.
"""

import argparse
import os

from beam_etl.core.errors import UsageError

DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
DEMO_SPEC = os.path.join(DEMO_DIR, "pipeline.yaml")
DEFAULT_OUTPUT_DIR = "beam_etl_output"


class UsageParser(argparse.ArgumentParser):
    """An argument parser whose errors are one `UsageError` line (exit code 2)."""

    def error(self, message: str):  # one line and exit code 2, like every usage error
        raise UsageError(f"{message} (see --help)")


def variables(assignments: list[str]) -> dict[str, str]:
    """Return `--set NAME=VALUE` assignments as a mapping (one `UsageError` for a bad one)."""
    found = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"`--set {item}` must look like NAME=VALUE")
        found[name] = value
    return found
