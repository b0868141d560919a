"""The servers `scripts/services.sh up` brings up: reachable, and configured for bulk loads and CDC.

Every database test needs them; these fail (never skip) with a message naming the script.
"""

import pathlib
import subprocess

from dbfixtures import my, my_connect, pg, pg_connect

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_postgresql_is_reachable():
    connection = pg_connect()
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    connection.close()


def test_mariadb_is_reachable():
    connection = my_connect()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    connection.close()


def test_postgresql_is_configured_for_logical_replication():
    assert pg("SHOW wal_level") == [("logical",)]
    assert int(pg("SHOW max_replication_slots")[0][0]) >= 10
    assert int(pg("SHOW max_wal_senders")[0][0]) >= 10


def test_mariadb_writes_a_row_based_binlog_and_accepts_local_infile():
    assert my("SHOW VARIABLES LIKE 'log_bin'") == [("log_bin", "ON")]
    assert my("SHOW VARIABLES LIKE 'binlog_format'") == [("binlog_format", "ROW")]
    assert my("SHOW VARIABLES LIKE 'binlog_row_image'") == [("binlog_row_image", "FULL")]
    # column names in the row events, for the binlog reader (`ReadFromMySqlChanges`)
    assert my("SHOW VARIABLES LIKE 'binlog_row_metadata'") == [("binlog_row_metadata", "FULL")]
    assert my("SHOW VARIABLES LIKE 'local_infile'") == [("local_infile", "ON")]
    assert int(my("SELECT @@server_id")[0][0]) > 0


def test_services_script_reports_every_service_up():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL: up on 127.0.0.1:5432, wal_level=logical" in result.stdout
    assert "MariaDB: up on 127.0.0.1:3306" in result.stdout


def test_a_second_up_changes_nothing():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh"), "up", "postgres", "mariadb"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installing" not in result.stdout
    assert "restarting" not in result.stdout
    assert "starting" not in result.stdout


def test_an_unreachable_server_fails_the_test_naming_the_script():
    import pytest

    with pytest.raises(pytest.fail.Exception, match=r"scripts/services\.sh up"):
        pg_connect(port=1, connect_timeout=2)
    with pytest.raises(pytest.fail.Exception, match=r"scripts/services\.sh up"):
        my_connect(port=1, connect_timeout=2)
