"""ReadFromDebeziumJson: Debezium's own JSON events (with and without the Kafka Connect
envelope) into the change-event shape, then ApplyChanges."""

import base64
import datetime as dt
import decimal
import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.io.debezium import ReadFromDebeziumJson
from beam_etl.runner import LocalRunner
from beam_etl.transforms.changes import ApplyChanges

SCHEMA = {
    "type": "struct",
    "fields": [
        {
            "type": "struct",
            "field": "before",
            "optional": True,
            "fields": [
                {"type": "int32", "field": "id"},
                {"type": "string", "field": "name", "optional": True},
                {
                    "type": "bytes",
                    "field": "price",
                    "name": "org.apache.kafka.connect.data.Decimal",
                    "parameters": {"scale": "2"},
                },
                {"type": "int32", "field": "born", "name": "io.debezium.time.Date"},
                {"type": "int64", "field": "seen", "name": "io.debezium.time.MicroTimestamp"},
            ],
        },
        {"type": "struct", "field": "after", "optional": True, "fields": []},
        {"type": "struct", "field": "source", "fields": []},
        {"type": "string", "field": "op"},
    ],
}


def _price(cents: int) -> str:
    return base64.b64encode(cents.to_bytes(4, "big", signed=True)).decode()


def _pg_event(op, row, before=None, lsn=1000, ts_ms=1_767_225_600_000, tx=7) -> str:
    payload = {
        "before": before,
        "after": row,
        "source": {
            "db": "shop",
            "schema": "public",
            "table": "items",
            "lsn": lsn,
            "txId": tx,
            "ts_ms": ts_ms,
        },
        "op": op,
        "ts_ms": ts_ms + 5,
    }
    return json.dumps({"schema": SCHEMA, "payload": payload})


def _row(key: int, name: str, cents: int) -> dict:
    return {"id": key, "name": name, "price": _price(cents), "born": 20000, "seen": 1_000_000}


def test_envelope_events_become_change_batches_and_apply(tmp_path):
    lines = [
        _pg_event("r", _row(1, "one", 100), lsn=100),
        _pg_event("c", _row(2, "two", 250), lsn=200),
        _pg_event("u", _row(2, "two!", 275), before=_row(2, "two", 250), lsn=300),
        _pg_event(
            "d",
            None,
            before={"id": 1, "name": None, "price": None, "born": None, "seen": None},
            lsn=400,
        ),
        "null",  # a Kafka tombstone
        "{not json",
        json.dumps({"payload": {"op": "t", "source": {"schema": "public", "table": "items"}}}),
    ]
    (tmp_path / "0001.json").write_text("\n".join(lines) + "\n")
    pipeline = test_pipeline.TestPipeline(runner=LocalRunner())
    events = pipeline | "Read" >> ReadFromDebeziumJson(str(tmp_path / "*.json"))
    raw = events.output | "Raw" >> beam.FlatMap(lambda b: b.to_pylist())
    assert_that(
        raw
        | "Ops"
        >> beam.Map(
            lambda e: (
                e["id"],
                e["op"],
                e["deleted"],
                e["source_position"],
                e["source_table"],
                e["source_txid"],
            )
        ),
        equal_to(
            [
                (1, "r", False, "0/64", "public.items", 7),
                (2, "c", False, "0/C8", "public.items", 7),
                (2, "u", False, "0/12C", "public.items", 7),
                (1, "d", True, "0/190", "public.items", 7),
            ]
        ),
        label="Events",
    )
    assert_that(
        raw
        | "Typed" >> beam.Filter(lambda e: e["op"] == "u")
        | beam.Map(lambda e: (e["price"], e["born"], e["seen"], e["source_ts"])),
        equal_to(
            [
                (
                    decimal.Decimal("2.75"),
                    dt.date(2024, 10, 4),
                    dt.datetime(1970, 1, 1, 0, 0, 1),
                    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                )
            ]
        ),
        label="Types",
    )
    assert_that(
        events.error | "Reasons" >> beam.Map(lambda letter: (letter.reason, letter.line)),
        equal_to([("malformed_event", 6), ("truncate", 7)]),
        label="Letters",
    )
    net = events.output | "Apply" >> ApplyChanges("id")
    assert_that(
        net.output
        | "Net" >> beam.FlatMap(lambda b: [(r["id"], r["name"], r["op"]) for r in b.to_pylist()]),
        equal_to([(1, None, "d"), (2, "two!", "c")]),
        label="Net",
    )
    pipeline.run()


def test_bare_mysql_events_keep_file_order_and_infer_types(tmp_path):
    def event(op, row, pos, file="mysql-bin.000003"):
        source = {"db": "shop", "table": "users", "file": file, "pos": pos, "ts_ms": 1000 * pos}
        key = "before" if op == "d" else "after"
        return json.dumps({"op": op, key: row, "source": source})

    (tmp_path / "a.json").write_text(
        event("c", {"id": 1, "email": "a@x"}, 4) + "\n" + event("u", {"id": 1, "email": "b@x"}, 9)
    )
    (tmp_path / "b.json").write_text(
        json.dumps([json.loads(event("d", {"id": 1, "email": None}, 3, "mysql-bin.000004"))])
    )
    pipeline = test_pipeline.TestPipeline(runner=LocalRunner())
    events = pipeline | ReadFromDebeziumJson(str(tmp_path / "*.json"))
    assert_that(
        events.output
        | beam.FlatMap(
            lambda b: [
                (r["op"], r["source_position"], r["source_seq"], b.schema.field("id").type)
                for r in b.to_pylist()
            ]
        ),
        equal_to(
            [
                ("c", "mysql-bin.000003:4", 1, pa.int64()),
                ("u", "mysql-bin.000003:9", 2, pa.int64()),
                ("d", "mysql-bin.000004:3", (1 << 32) | 1, pa.int64()),
            ]
        ),
        label="Ordered",
    )
    net = events.output | ApplyChanges("id")
    assert_that(
        net.output | "Net" >> beam.FlatMap(lambda b: [(r["id"], r["op"]) for r in b.to_pylist()]),
        equal_to([]),
        label="InsertedThenDeleted",
    )
    pipeline.run()
