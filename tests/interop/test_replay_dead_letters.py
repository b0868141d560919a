"""Replay of dead letters: a run with 60 cast failures, a fix in the spec, a replay -> the target
equals a run without defects; rerunning the replay changes nothing."""

import json
import os
import sqlite3
from decimal import Decimal

import pytest
from dbfixtures import pg, unique_table

from beam_etl.core.errors import UsageError
from beam_etl.replay import read_letters, replay, replay_run_id, select
from beam_etl.run import main

ROWS = 1000
# Amounts with 9 or 10 integer digits: too wide for decimal(10,2), half of them for
# decimal(11,2), all fine in decimal(12,2).
BAD = 60


def _write_csv(path) -> None:
    lines = ["order_id,customer,amount,day"]
    for i in range(1, ROWS + 1):
        wide = i % 16 == 0 and i <= 16 * BAD
        base = 1_000_000_000 if i % 32 == 0 else 100_000_000
        amount = f"{base + i * 7919}.{i % 100:02d}" if wide else f"{i * 37 % 99_999}.{i % 100:02d}"
        lines.append(f"{i},c{i % 37},{amount},2024-01-{1 + i % 28:02d}")
    path.write_text("\n".join(lines) + "\n")


SOURCE_SPEC = """\
name: orders
sources:
  - name: orders
    type: ReadFromCsv
    config:
      path: ${{SPEC_DIR}}/orders.csv
      columns: {{amount: "{amount}", day: date}}
sinks:
  - name: db
    type: WriteToPostgres
    input: orders
    config: {{table: {table}, mode: append, host: 127.0.0.1, database: test, user: postgres}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, db.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects.jsonl"}}
"""

STEP_SPEC = """\
name: orders_steps
sources:
  - name: orders
    type: ReadFromCsv
    config: {{path: "${{SPEC_DIR}}/orders.csv", columns: {{amount: string, day: date}}}}
steps:
  - name: cast
    type: CastColumns
    input: orders
    config: {{columns: {{amount: "{amount}"}}}}
  - name: check
    type: ValidateRecords
    input: cast
    config:
      checks: [{{check: range, column: amount, min: 0}}]
sinks:
  - name: db
    type: WriteToSqlite
    input: check
    config: {{database: "${{OUTPUT_DIR}}/orders.sqlite", table: orders, mode: append}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, cast.error, check.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects.jsonl"}}
"""


def _spec(folder, name: str, template: str, **values) -> str:
    path = folder / name
    path.write_text(template.format(**values))
    return str(path)


def _pg_rows(table: str) -> list[tuple]:
    return pg(f"SELECT order_id, customer, amount, day FROM {table} ORDER BY order_id")


def _letters(path) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture
def tables():
    """The target and the reference table; the database holds 12 digits, the spec declared 10."""
    names = [unique_table("replay"), unique_table("clean")]
    for name in names:
        pg(f"CREATE TABLE {name} (order_id bigint, customer text, amount numeric(12,2), day date)")
    yield names
    for name in names:
        pg(f"DROP TABLE IF EXISTS {name}")


def test_replay_into_the_source_loads_exactly_the_rejected_rows_once(tmp_path, tables, capsys):
    target, clean = tables
    _write_csv(tmp_path / "orders.csv")
    out = tmp_path / "out"
    broken = _spec(tmp_path, "broken.yaml", SOURCE_SPEC, amount="decimal(10,2)", table=target)
    fixed = _spec(tmp_path, "fixed.yaml", SOURCE_SPEC, amount="decimal(12,2)", table=target)
    assert main(["--pipeline", broken, "--output-dir", str(out)]) == 0
    letters = _letters(out / "rejects.jsonl")
    assert len(letters) == BAD and {x["reason"] for x in letters} == {"cast_failed"}
    assert len(_pg_rows(target)) == ROWS - BAD

    replay_args = ["--pipeline", fixed, "--dead-letters", str(out / "rejects.jsonl")]
    replay_args += ["--reason", "cast_failed", "--output-dir", str(out)]
    assert replay(replay_args) == 0
    printed = capsys.readouterr().out
    assert f"replayed {BAD} dead letter(s) of `orders` into `orders`" in printed

    # The run without defects, into a table of its own, is the reference.
    reference = _spec(tmp_path, "clean.yaml", SOURCE_SPEC, amount="decimal(12,2)", table=clean)
    assert main(["--pipeline", reference, "--output-dir", str(tmp_path / "clean")]) == 0
    assert _pg_rows(target) == _pg_rows(clean)
    assert len(_pg_rows(target)) == ROWS
    report = json.loads((out / "replay_report.json").read_text())
    assert report["status"] == "succeeded" and report["published"] == ["db", "rejects"]
    assert [(s["name"], s["rows_in"], s["rows_out"]) for s in report["steps"][:2]] == [
        ("orders", BAD, BAD),
        ("db", BAD, BAD),
    ]
    # Rerunning changes nothing: the letters are known as replayed ...
    assert replay(replay_args) == 0
    assert "nothing to replay" in capsys.readouterr().out
    # ... and without that memory, the run id is the same and the ledger makes it a no-op.
    os.remove(out / ".beam_etl" / "state.sqlite")
    assert replay(replay_args) == 0
    assert "already published" in capsys.readouterr().out
    assert _pg_rows(target) == _pg_rows(clean)
    assert (
        pg(
            f"SELECT count(*) FROM _beam_etl_runs WHERE target = 'public.{target}' OR "
            f"target = '{target}'"
        )[0][0]
        == 2
    )


def test_replay_into_a_step_keeps_the_origin_of_rows_that_fail_again(tmp_path):
    _write_csv(tmp_path / "orders.csv")
    out = tmp_path / "out"
    broken = _spec(tmp_path, "broken.yaml", STEP_SPEC, amount="decimal(10,2)")
    assert main(["--pipeline", broken, "--output-dir", str(out)]) == 0
    letters = _letters(out / "rejects.jsonl")
    assert len(letters) == BAD and {x["step"] for x in letters} == {"cast"}

    # A fix that is not enough for every row: 11 digits hold only some of the wide amounts.
    half = _spec(tmp_path, "half.yaml", STEP_SPEC, amount="decimal(11,2)")
    assert (
        replay(
            [
                "--pipeline",
                half,
                "--dead-letters",
                str(out / "rejects.jsonl"),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    with open(half, "rb") as spec_text:
        run_id = replay_run_id(spec_text.read(), "cast", read_letters(str(out / "rejects.jsonl")))
    again = out / f"rejects.{run_id}.jsonl"
    failed_again = _letters(again)
    assert len(failed_again) == BAD // 2
    original_lines = {x["line"]: x["payload"] for x in letters}
    for letter in failed_again:  # the rows keep the file and line they came from
        assert letter["step"] == "cast" and letter["run_id"] == run_id
        assert letter["source"] == str(tmp_path / "orders.csv")
        assert original_lines[letter["line"]] == letter["payload"]
    assert len(_letters(out / "rejects.jsonl")) == BAD  # the original file is left as it was

    fixed = _spec(tmp_path, "fixed.yaml", STEP_SPEC, amount="decimal(12,2)")
    assert (
        replay(["--pipeline", fixed, "--dead-letters", str(again), "--output-dir", str(out)]) == 0
    )
    assert (
        replay(
            [
                "--pipeline",
                fixed,
                "--dead-letters",
                str(out / "rejects.jsonl"),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )  # already replayed: nothing happens

    clean = tmp_path / "clean"
    assert main(["--pipeline", fixed, "--output-dir", str(clean)]) == 0
    query = "SELECT order_id, customer, amount, day FROM orders ORDER BY order_id"
    loaded = sqlite3.connect(out / "orders.sqlite").execute(query).fetchall()
    assert loaded == sqlite3.connect(clean / "orders.sqlite").execute(query).fetchall()
    assert len(loaded) == ROWS
    assert Decimal(str(loaded[15][2])) >= 100_000_000


def _step_run(tmp_path):
    _write_csv(tmp_path / "orders.csv")
    out = tmp_path / "out"
    broken = _spec(tmp_path, "broken.yaml", STEP_SPEC, amount="decimal(10,2)")
    assert main(["--pipeline", broken, "--output-dir", str(out)]) == 0
    return broken, out / "rejects.jsonl", out


def test_a_sink_that_replaces_its_target_is_refused_unless_skipped(tmp_path):
    spec, letters, out = _step_run(tmp_path)
    with open(spec, encoding="utf-8") as original:
        text = original.read().replace("mode: append", "mode: replace")
    replacing = _spec(tmp_path, "replacing.yaml", "{text}", text=text)
    args = ["--pipeline", replacing, "--dead-letters", str(letters), "--output-dir", str(out)]
    with pytest.raises(UsageError, match=r"Sink `db` cannot take a replay \(mode `replace`\)"):
        replay(args)
    assert replay([*args, "--skip-sink", "db", "--dry-run"]) == 0


def test_a_database_sink_that_replaces_its_table_is_refused(tmp_path, tables):
    """A replay into `WriteToPostgres(mode: replace)` would leave only the replayed rows."""
    target, _ = tables
    _write_csv(tmp_path / "orders.csv")
    out = tmp_path / "out"
    text = SOURCE_SPEC.replace("mode: append", "mode: replace")
    spec = _spec(tmp_path, "spec.yaml", text, amount="decimal(12,2)", table=target)
    pg(f"CREATE TABLE IF NOT EXISTS {target} (order_id bigint)")
    (out).mkdir()
    letters = out / "rejects.jsonl"
    letters.write_text(
        json.dumps(
            {
                "run_id": "r",
                "step": "db",
                "reason": "db_constraint",
                "message": "m",
                "origin": "orders.csv:2",
                "source": str(tmp_path / "orders.csv"),
                "line": 2,
                "key": None,
                "payload": {"order_id": 1, "customer": "a", "amount": "1.00", "day": "2024-01-01"},
            }
        )
        + "\n"
    )
    args = ["--pipeline", spec, "--dead-letters", str(letters), "--output-dir", str(out)]
    with pytest.raises(UsageError, match=r"Sink `db` cannot take a replay \(mode `replace`\)"):
        replay([*args, "--step", "db"])


def test_letters_of_several_steps_need_a_choice(tmp_path):
    spec, letters, out = _step_run(tmp_path)
    with open(letters, "a", encoding="utf-8") as more:
        more.write(
            json.dumps(
                {
                    "run_id": "r",
                    "step": "check",
                    "reason": "check_failed",
                    "message": "m",
                    "origin": "?",
                    "source": None,
                    "line": None,
                    "key": None,
                    "payload": {"order_id": 1},
                }
            )
            + "\n"
        )
    args = ["--pipeline", spec, "--dead-letters", str(letters), "--output-dir", str(out)]
    with pytest.raises(UsageError, match=r"several steps: `cast` \(60\), `check` \(1\)"):
        replay(args)
    assert len(select(read_letters(str(letters)), [], "cast")) == BAD


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--into", "nowhere"], "The spec has no step `nowhere`"),
        (["--skip-sink", "rejectz"], "--skip-sink `rejectz` is not a sink the replay reaches"),
    ],
    ids=["unknown_target", "unknown_sink"],
)
def test_bad_replay_arguments_are_one_line_errors(tmp_path, extra, message):
    spec, letters, out = _step_run(tmp_path)
    with pytest.raises(UsageError, match=message):
        replay(
            ["--pipeline", spec, "--dead-letters", str(letters), "--output-dir", str(out), *extra]
        )


def test_a_file_that_is_not_dead_letters_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(UsageError, match=r"Line 1 of .* is not a dead letter"):
        read_letters(str(path))


def test_the_command_line_runs_a_replay(tmp_path):
    spec, letters, out = _step_run(tmp_path)
    args = ["replay", "--pipeline", spec, "--dead-letters", str(letters), "--output-dir", str(out)]
    assert main([*args, "--dry-run"]) == 0


def test_rows_a_database_refused_are_replayed_into_the_sink_after_the_check_is_relaxed(
    tmp_path, tables
):
    target, _ = tables
    pg(f"ALTER TABLE {target} ADD CONSTRAINT small CHECK (amount < 100000000)")
    _write_csv(tmp_path / "orders.csv")
    out = tmp_path / "out"
    spec = _spec(tmp_path, "spec.yaml", SOURCE_SPEC, amount="decimal(12,2)", table=target)
    assert main(["--pipeline", spec, "--output-dir", str(out)]) == 0
    letters = _letters(out / "rejects.jsonl")
    assert {(x["step"], x["reason"]) for x in letters} == {("db", "db_constraint")}
    assert len(letters) == BAD and len(_pg_rows(target)) == ROWS - BAD

    pg(f"ALTER TABLE {target} DROP CONSTRAINT small")
    args = ["--pipeline", spec, "--dead-letters", str(out / "rejects.jsonl")]
    assert replay([*args, "--step", "db", "--output-dir", str(out)]) == 0
    assert replay([*args, "--step", "db", "--output-dir", str(out)]) == 0
    rows = _pg_rows(target)
    assert len(rows) == ROWS and len({row[0] for row in rows}) == ROWS


def test_unparseable_records_are_left_out_with_a_note(tmp_path, capsys):
    spec, letters, out = _step_run(tmp_path)
    with open(letters, "a", encoding="utf-8") as more:
        more.write(
            json.dumps(
                {
                    "run_id": "r",
                    "step": "cast",
                    "reason": "malformed_csv",
                    "message": "m",
                    "origin": "x.csv:9",
                    "source": "x.csv",
                    "line": 9,
                    "key": None,
                    "payload": "1,2,3,4,5",
                }
            )
            + "\n"
        )
    args = ["--pipeline", spec, "--dead-letters", str(letters), "--output-dir", str(out)]
    assert replay([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "1 chosen dead letter(s) hold raw text, not a row" in printed
    assert f"would replay {BAD} dead letter(s) of `cast` into `cast`" in printed
