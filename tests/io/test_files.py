"""Publishing helpers shared by every sink: quality gates and atomic replacement."""

from typing import NamedTuple

import pytest

from beam_etl.core.errors import CheckFailedError
from beam_etl.io._files import check_gates, replacing


class Gate(NamedTuple):
    passed: bool
    message: str


class Result(NamedTuple):  # the shape of a quality check result
    outcome: str
    message: str


def test_gates_fail_on_passed_false_or_a_failed_check_outcome():
    check_gates([Gate(True, "fine"), Result("warned", "ok"), Result("passed", "ok")], "out")
    with pytest.raises(CheckFailedError, match="Nothing published by `db`: 3 rows"):
        check_gates([Gate(False, "3 rows")], "db")
    with pytest.raises(CheckFailedError, match="Nothing published by `db`: duplicates"):
        check_gates([Result("failed", "duplicates")], "db")


def test_replacing_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(str(target)) as temporary:
        with open(temporary, "w") as out:
            out.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with replacing(str(target)) as temporary, open(temporary, "w") as out:
        out.write("new")
    assert target.read_text() == "new"
