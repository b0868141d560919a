"""The check that a deferred database publish still does what its trial found (`Published`,
the result of a publish, is `beam_etl.core.publish`'s).

Database sinks stage and publish through the one `StageAndPublish` (`io/_files.py`): each
bundle is staged as Arrow IPC files (hidden origin columns kept, so that a row the database
refuses is reported with its file and line); one publish step, after every bundle has finished,
loads the committed bundles' files into a temporary staging table and applies the write mode
in one transaction. A run that fails before publishing never touches the database, and a
retried bundle's files never reach the publish step.
"""

from beam_etl.core.errors import ConnectorError
from beam_etl.core.publish import Published

__all__ = ["Published", "check_expected"]


def check_expected(result: Published, expect: Published | None, table: str) -> None:
    """Raise `ConnectorError` when a publish would not do what its trial found (someone changed
    `table` between the run's prepare and its publish): then nothing is published."""
    if expect is None or expect.already:
        return
    found = (result.written, sorted(r.origin for r in result.rejects))
    tried = (expect.written, sorted(r.origin for r in expect.rejects))
    if found != tried:
        raise ConnectorError(
            f"`{table}` changed while the run was deciding: it would now take "
            f"{result.written:,} row(s) and refuse {len(result.rejects):,}, where the run's "
            f"trial took {expect.written:,} and refused {len(expect.rejects):,}; nothing was "
            "published to it"
        )
