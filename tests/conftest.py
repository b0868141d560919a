"""Shared fixtures: a Prism-free test pipeline and small file helpers."""

import os

import pytest
from apache_beam.testing import test_pipeline

from beam_etl.runner import LocalRunner


@pytest.fixture
def pipeline():
    """A TestPipeline on beam_etl's local runner (Beam's default would try Prism first)."""
    return test_pipeline.TestPipeline(runner=LocalRunner())


@pytest.fixture
def write_file(tmp_path):
    """Write bytes or text to a file under tmp_path and return its path."""

    def write(name: str, content: bytes | str) -> str:
        path = tmp_path / name
        os.makedirs(path.parent, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        return str(path)

    return write


def visible_rows(batch):
    """The rows of a batch without hidden origin columns (for assertions)."""
    from beam_etl.core.batches import visible

    return visible(batch).to_pylist()


def letter_summary(letter):
    """(step, reason, line, payload) of a dead letter, for exact assertions."""
    return (letter.step, letter.reason, letter.line, letter.payload)
