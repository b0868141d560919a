"""Inference from typed files and from database tables and queries (real servers)."""

import datetime
import json
import pathlib
import sys
from decimal import Decimal

import fastavro
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "io"))
from dbfixtures import MY, PG, my, pg, unique_table

from beam_etl.core.errors import ConnectorError
from beam_etl.io.avroio import ReadFromAvro
from beam_etl.io.csvio import ReadFromCsv
from beam_etl.io.excelio import ReadFromExcel
from beam_etl.io.jsonio import ReadFromJson
from beam_etl.io.mysqlio import ReadFromMySql
from beam_etl.io.postgresio import ReadFromPostgres
from beam_etl.run import main
from beam_etl.schema.infer import infer_source_schema, reader_for_path

ROWS = [
    {"id": 1, "name": "a", "day": "2024-01-02", "score": 1.5},
    {"id": 2, "name": None, "day": "2024-01-03", "score": 2.0},
    {"id": 3, "name": "c", "day": "2024-01-04", "score": None},
]


def _fields(schema) -> dict[str, tuple[str, bool]]:
    return {f["name"]: (f["type"], f.get("nullable", True)) for f in schema.to_dict()["fields"]}


def _jsonl(tmp_path) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return str(path)


def test_sample_returns_the_first_rows_without_hidden_columns(tmp_path):
    path = _jsonl(tmp_path)
    sample = ReadFromJson(path).sample(2)
    assert sample.column_names == ["id", "name", "day", "score"]
    assert sample.num_rows == 2 and sample.column("id").to_pylist() == [1, 2]
    assert ReadFromJson(path).sample(None).num_rows == 3
    csv = tmp_path / "a.csv"
    csv.write_text("x,y\n1,a\n2,b\n3,c\n")
    assert ReadFromCsv(str(csv)).sample(2).to_pylist() == [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]
    with pytest.raises(ValueError, match="at least 1 row"):
        ReadFromJson(path).sample(0)


def test_json_types_nullability_and_keys(tmp_path):
    schema = infer_source_schema(reader_for_path(_jsonl(tmp_path)))
    assert _fields(schema) == {
        "id": ("int64", False),
        "name": ("string", True),
        "day": ("date", False),
        "score": ("float64", True),
    }
    assert schema.to_dict()["candidate_keys"] == [["id"], ["day"]]


def test_parquet_avro_and_excel_keep_their_types(tmp_path):
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "price": pa.array([Decimal("1.10"), None, Decimal("3.30")], pa.decimal128(9, 2)),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    schema = infer_source_schema(reader_for_path(str(tmp_path / "t.parquet")))
    assert _fields(schema) == {"id": ("int32", False), "price": ("decimal(9,2)", True)}

    avro_schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "id", "type": "long"}, {"name": "tag", "type": ["null", "string"]}],
    }
    with open(tmp_path / "t.avro", "wb") as out:
        fastavro.writer(out, avro_schema, [{"id": 1, "tag": "x"}, {"id": 2, "tag": None}])
    reader = ReadFromAvro(str(tmp_path / "t.avro"))
    first = infer_source_schema(reader, sample_rows=1)
    assert _fields(first) == {"id": ("int64", False), "tag": ("string", False)}
    assert _fields(infer_source_schema(reader, sample_rows=None))["tag"] == ("string", True)

    book = openpyxl.Workbook()
    book.active.append(["id", "when"])
    book.active.append([1, datetime.datetime(2024, 5, 1, 10, 0)])
    book.active.append([2, None])
    book.save(tmp_path / "t.xlsx")
    schema = infer_source_schema(ReadFromExcel(str(tmp_path / "t.xlsx")))
    assert _fields(schema)["when"][1] is True
    assert schema.to_dict()["candidate_keys"] == [["id"]]


def test_postgres_query_and_table():
    table = unique_table("infer")
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, code text, amount numeric(8,2), at date)")
    try:
        pg(f"INSERT INTO {table} VALUES (1, 'a', 1.50, '2024-01-01'), (2, NULL, 2, '2024-01-01')")
        reader = ReadFromPostgres(table=table, **PG)
        assert _fields(infer_source_schema(reader)) == {
            "id": ("int64", False),
            "code": ("string", True),
            "amount": ("decimal(8,2)", False),
            "at": ("date", False),
        }
        query = ReadFromPostgres(query=f"SELECT id, at FROM {table} WHERE id > 1", **PG)
        schema = infer_source_schema(query)
        assert _fields(schema) == {"id": ("int64", False), "at": ("date", False)}
        assert query.sample(1).num_rows == 1
    finally:
        pg(f"DROP TABLE {table}")


def test_mysql_table_through_the_command_line(capsys):
    table = unique_table("infer")
    my(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20), ok BOOLEAN)")
    try:
        my(f"INSERT INTO {table} VALUES (1, 'a', 1), (2, NULL, 0), (3, 'c', NULL)")
        argv = ["infer-schema", "--source", "mysql", "--database", MY["database"]]
        assert main([*argv, "--table", table, "--format", "json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        fields = {f["name"]: (f["type"], f.get("nullable", True)) for f in printed["fields"]}
        assert fields["id"] == ("int32", False) and fields["name"] == ("string", True)
        assert printed["candidate_keys"] == [["id"]]
        assert ReadFromMySql(table=table, **MY).sample(2).num_rows == 2
    finally:
        my(f"DROP TABLE {table}")


def test_command_line_refusals_are_one_line(tmp_path, capsys):
    assert main(["infer-schema"]) == 2
    assert main(["infer-schema", "x.csv", "--source", "postgres", "--table", "t"]) == 2
    assert main(["infer-schema", "--source", "postgres", "--database", "test"]) == 2
    missing = unique_table("missing")
    assert (
        main(["infer-schema", "--source", "postgres", "--database", "test", "--table", missing])
        == 1
    )
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("error: ")
    empty = infer_source_schema(ReadFromPostgres(query="SELECT 1 AS a WHERE false", **PG))
    assert _fields(empty) == {"a": ("int32", True)}  # no row: types from the catalog
    empty = infer_source_schema(ReadFromMySql(query="SELECT 1.5 AS x FROM DUAL WHERE 0", **MY))
    assert list(_fields(empty)) == ["x"]


def test_dictionary_and_time_columns_of_parquet(tmp_path):
    import datetime as dt

    table = pa.table(
        {
            "cat": pa.array(["a", "b", "a"]).dictionary_encode(),
            "at": pa.array([dt.time(1, 2), None, dt.time(3, 4)], pa.time64("us")),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    schema = infer_source_schema(reader_for_path(str(tmp_path / "t.parquet")))
    assert _fields(schema) == {"cat": ("string", False), "at": ("string", True)}


def test_percent_in_a_partitioned_query_read_as_one_range():
    reader = ReadFromPostgres(
        query="SELECT 1 AS id, 'a%b' AS v", partition_column="id", num_partitions=4, **PG
    )
    assert reader.sample(None).column("v").to_pylist() == ["a%b"]


def test_a_password_never_shows_in_connection_errors(monkeypatch):
    monkeypatch.setenv("BAD_DSN", "postgresql://postgres:s3%zzcret@127.0.0.1/test")
    with pytest.raises(ConnectorError) as info:
        ReadFromPostgres(table="t", dsn_env="BAD_DSN").sample(1)
    assert "zzcret" not in str(info.value) and "***" in str(info.value)
