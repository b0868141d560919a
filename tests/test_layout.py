"""The package layout rules: no module shadows the standard library; io is a subpackage."""

import pathlib
import sys

import beam_etl

PACKAGE = pathlib.Path(beam_etl.__file__).parent


def test_no_module_shares_a_name_with_the_standard_library():
    clashes = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.stem in sys.stdlib_module_names
    ]
    assert clashes == []


def test_io_and_transforms_are_subpackages_not_top_level():
    import beam_etl.io
    import beam_etl.transforms

    assert beam_etl.io.__name__ == "beam_etl.io"
    assert beam_etl.transforms.__name__ == "beam_etl.transforms"
    assert not (PACKAGE.parent / "io").exists()
