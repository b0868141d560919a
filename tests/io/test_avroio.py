"""ReadFromAvro and WriteToAvro: round trips, type mapping, batches and origins, bad files."""

import datetime
import decimal
import os

import apache_beam as beam
import fastavro
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import NAMESPACE
from beam_etl.io.avroio import ReadFromAvro, WriteToAvro, arrow_schema_of, avro_schema_of
from beam_etl.runner import LocalRunner

UTC = datetime.UTC
BATCH = pa.record_batch(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "small": pa.array([7, None, -7], pa.int32()),
        "name": pa.array(["Zoë ✓", None, "<&>"], pa.string()),
        "amount": pa.array(
            [decimal.Decimal("1.50"), None, decimal.Decimal("-2.25")], pa.decimal128(10, 2)
        ),
        "day": pa.array([datetime.date(2024, 1, 31), None, datetime.date(1969, 12, 31)]),
        "at": pa.array(
            [datetime.datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), None, None],
            pa.timestamp("us", tz="UTC"),
        ),
        "local": pa.array([datetime.datetime(2024, 5, 6, 7, 8, 9), None, None], pa.timestamp("ms")),
        "score": pa.array([0.5, None, float("inf")], pa.float64()),
        "ok": pa.array([True, None, False]),
        "raw": pa.array([b"\x00\xff", None, b""], pa.binary()),
        "tags": pa.array([["a", None], None, []], pa.list_(pa.string())),
        "point": pa.array([{"x": 1.0, "y": "p"}, None, {"x": None, "y": None}]),
        "attrs": pa.array([{"k": 1}, None, {}], pa.map_(pa.string(), pa.int64())),
    }
)


def _run(build):
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    build(p)
    result = p.run()
    result.wait_until_finish()
    return result


def _write_avro(path, schema, records, codec="null"):
    with open(path, "wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec)
    return str(path)


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
def test_round_trip_keeps_rows_types_and_nulls(pipeline, tmp_path, codec):
    path = str(tmp_path / "out" / "rows.avro")
    _run(lambda p: p | beam.Create([with_origin(BATCH, "in.csv", [2, 3, 4])]) | WriteToAvro(path))
    read = ReadFromAvro(path)
    assert read.schema == BATCH.schema
    rows = pipeline | "read" >> read | beam.FlatMap(visible_rows)
    assert_that(rows, equal_to(BATCH.to_pylist()), label="CheckRows")
    pipeline.run().wait_until_finish()
    assert os.listdir(tmp_path / "out") == ["rows.avro"]  # no temporary or staging left


def test_batches_are_bounded_and_origins_are_record_indexes(tmp_path):
    schema = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}
    path = _write_avro(tmp_path / "n.avro", schema, [{"n": i} for i in range(5)])
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    batches = p | "read" >> ReadFromAvro(path, batch_rows=2)
    summary = batches | beam.Map(
        lambda b: (b.column("n").to_pylist(), b.column("__beam_etl_line").to_pylist())
    )
    expected = [([0, 1], [1, 2]), ([2, 3], [3, 4]), ([4], [5])]
    assert_that(summary, equal_to(expected), label="CheckBatches")
    files = batches | beam.FlatMap(lambda b: b.column("__beam_etl_file").to_pylist())
    assert_that(files, equal_to([path] * 5), label="CheckFiles")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query()["counters"]
    read = [c.committed for c in counters if c.key.metric.name == "read:rows_read"]
    assert read == [5]
    assert {c.key.metric.namespace for c in counters} == {NAMESPACE}


def test_glob_reads_every_file(pipeline, tmp_path):
    schema = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}
    _write_avro(tmp_path / "a.avro", schema, [{"n": 1}])
    _write_avro(tmp_path / "b.avro", schema, [{"n": 2}, {"n": 3}], codec="deflate")
    rows = pipeline | ReadFromAvro(str(tmp_path / "*.avro")) | beam.FlatMap(visible_rows)
    assert_that(rows, equal_to([{"n": 1}, {"n": 2}, {"n": 3}]), label="CheckRows")
    pipeline.run().wait_until_finish()


def test_logical_types_enums_fixed_and_named_references_map_to_arrow():
    money = {
        "type": "fixed",
        "name": "Money",
        "size": 8,
        "logicalType": "decimal",
        "precision": 18,
        "scale": 4,
    }
    schema = {
        "type": "record",
        "name": "r",
        "namespace": "ns",
        "fields": [
            {"name": "colour", "type": {"type": "enum", "name": "C", "symbols": ["RED"]}},
            {"name": "price", "type": money},
            {"name": "other", "type": ["ns.Money", "null"]},
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "t", "type": {"type": "long", "logicalType": "time-micros"}},
            {"name": "odd", "type": {"type": "long", "logicalType": "unknown-to-us"}},
            {"name": "blob", "type": {"type": "fixed", "name": "F", "size": 2}},
        ],
    }
    assert arrow_schema_of(fastavro.parse_schema(schema)) == pa.schema(
        [
            pa.field("colour", pa.string(), nullable=False),
            pa.field("price", pa.decimal128(18, 4), nullable=False),
            pa.field("other", pa.decimal128(18, 4)),
            pa.field("id", pa.string(), nullable=False),
            pa.field("ms", pa.timestamp("ms", tz="UTC"), nullable=False),
            pa.field("t", pa.time64("us"), nullable=False),
            pa.field("odd", pa.int64(), nullable=False),
            pa.field("blob", pa.binary(2), nullable=False),
        ]
    )


def test_uuid_values_are_read_as_text(pipeline, tmp_path):
    schema = {
        "type": "record",
        "name": "r",
        "fields": [{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}],
    }
    text = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    rows = pipeline | ReadFromAvro(_write_avro(tmp_path / "u.avro", schema, [{"id": text}]))
    assert_that(rows | beam.FlatMap(visible_rows), equal_to([{"id": text}]), label="CheckRows")
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "No file matches", id="missing-file"),
        pytest.param("glob", "No file matches", id="glob-matching-nothing"),
        pytest.param(b"", "Cannot read `.*bad.avro` as Avro", id="empty-file"),
        pytest.param(b"id,name\n1,x\n", "Cannot read `.*bad.avro` as Avro", id="not-avro"),
        pytest.param(
            {"type": "record", "name": "r", "fields": [{"name": "v", "type": ["int", "string"]}]},
            "field `v` is a union of 2 non-null types",
            id="union-without-arrow-equivalent",
        ),
    ],
)
def test_bad_input_is_a_clear_error_at_construction(tmp_path, content, message):
    path = str(tmp_path / "bad.avro")
    if content == "glob":
        path = str(tmp_path / "*.avro")
    elif isinstance(content, bytes):
        (tmp_path / "bad.avro").write_bytes(content)
    elif isinstance(content, dict):
        _write_avro(path, content, [])
    with pytest.raises(ConnectorError, match=message):
        ReadFromAvro(path)


def test_damaged_file_fails_the_run_naming_the_file(tmp_path):
    schema = {"type": "record", "name": "r", "fields": [{"name": "s", "type": "string"}]}
    records = [{"s": f"value {i}" * 20} for i in range(2000)]
    path = _write_avro(tmp_path / "damaged.avro", schema, records, codec="deflate")
    data = bytearray((tmp_path / "damaged.avro").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\x00" * 64
    (tmp_path / "damaged.avro").write_bytes(bytes(data))
    read = ReadFromAvro(path)  # the header is intact
    with pytest.raises(Exception, match=r"Cannot read `.*damaged\.avro`: the Avro data is damaged"):
        _run(lambda p: p | read)


def test_a_later_file_with_another_schema_fails_the_run(tmp_path):
    _write_avro(
        tmp_path / "a.avro",
        {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]},
        [{"n": 1}],
    )
    _write_avro(
        tmp_path / "b.avro",
        {"type": "record", "name": "r", "fields": [{"name": "n", "type": "string"}]},
        [{"n": "x"}],
    )
    read = ReadFromAvro(str(tmp_path / "*.avro"))
    with pytest.raises(Exception, match=r"The schema of `.*b\.avro` .* differs from the first"):
        _run(lambda p: p | read)


def test_schema_evolution_is_one_line_naming_what_changed(tmp_path):
    first = [
        {"name": "id", "type": "long"},
        {"name": "tags", "type": {"type": "map", "values": "int"}},
    ]
    _write_avro(
        tmp_path / "a1.avro",
        {"type": "record", "name": "r", "fields": first},
        [{"id": 1, "tags": {}}],
    )
    second = [*first, {"name": "note", "type": ["null", "string"]}]
    _write_avro(
        tmp_path / "a2.avro",
        {"type": "record", "name": "r", "fields": second},
        [{"id": 2, "tags": {}, "note": None}],
    )
    read = ReadFromAvro(str(tmp_path / "a*.avro"))
    with pytest.raises(ConnectorError) as raised:
        _run(lambda p: p | read)
    message = str(raised.value).split(" [while running")[0]
    assert message == (
        f"The schema of `{tmp_path}/a2.avro` (id: int64 not null, tags: map<string, int32> not "
        "null, note: string) differs from the first file's (id: int64 not null, tags: "
        "map<string, int32> not null): extra `note`; read files of different schemas with "
        "separate sources"
    )


def test_a_field_named_like_a_hidden_column_is_refused(tmp_path):
    schema = {
        "type": "record",
        "name": "r",
        "fields": [{"name": "__beam_etl_file", "type": "long"}],
    }
    path = _write_avro(tmp_path / "h.avro", schema, [{"__beam_etl_file": 1}])
    with pytest.raises(
        ConnectorError, match=r"Column `__beam_etl_file` of `.*h\.avro` starts with"
    ):
        ReadFromAvro(path)


def test_writer_unifies_batch_schemas_and_replaces_on_rerun(pipeline, tmp_path):
    path = str(tmp_path / "u.avro")
    one = pa.record_batch({"a": pa.array([1], pa.int64()), "b": pa.array(["x"])})
    other = pa.record_batch({"a": pa.array([2], pa.int64())})
    for _ in range(2):
        _run(lambda p, one=one, other=other: p | beam.Create([one, other]) | WriteToAvro(path))
    with open(path, "rb") as stream:
        assert sorted(fastavro.reader(stream), key=lambda r: r["a"]) == [
            {"a": 1, "b": "x"},
            {"a": 2, "b": None},
        ]


def test_empty_input_writes_a_readable_file_without_records(tmp_path):
    path = str(tmp_path / "empty.avro")
    _run(
        lambda p: (
            p
            | beam.Create([], reshuffle=False).with_output_types(pa.RecordBatch)
            | WriteToAvro(path)
        )
    )
    with open(path, "rb") as stream:
        reader = fastavro.reader(stream)
        assert list(reader) == []
        assert reader.writer_schema["fields"] == []


def test_column_without_avro_name_fails_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.avro"
    path.write_bytes(b"previous")
    batch = pa.record_batch({"order id": pa.array([1])})
    with pytest.raises(Exception, match=r"Column names `order id` are not valid Avro names"):
        _run(lambda p: p | beam.Create([batch]) | WriteToAvro(str(path)))
    assert path.read_bytes() == b"previous"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_avro_schema_of_nested_types_and_nanoseconds():
    schema = pa.schema(
        [
            pa.field("ns", pa.timestamp("ns", tz="Europe/Berlin"), nullable=False),
            pa.field("inner", pa.struct([("inner", pa.struct([("v", pa.uint32())]))])),
        ]
    )
    avro = avro_schema_of(schema)
    assert avro["fields"][0] == {
        "name": "ns",
        "type": {"type": "long", "logicalType": "timestamp-micros"},
    }
    outer = avro["fields"][1]["type"][1]
    assert outer["name"] == "inner"
    assert outer["fields"][0]["type"][1]["name"] == "inner_inner"
    assert outer["fields"][0]["type"][1]["fields"][0]["type"] == ["null", "long"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: WriteToAvro(p, codec="lzo"), "Unknown codec `lzo`", id="codec"),
        pytest.param(
            lambda p: ReadFromAvro(p, batch_rows=0), "`batch_rows` must be", id="batch-rows"
        ),
    ],
)
def test_bad_arguments_are_refused_at_construction(tmp_path, make, message):
    schema = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}
    path = _write_avro(tmp_path / "n.avro", schema, [])
    with pytest.raises(ValueError, match=message):
        make(path)


def test_compression_is_the_key_of_every_file_sink_and_codec_still_works(tmp_path):
    assert WriteToAvro(str(tmp_path / "a.avro"), compression="xz").codec == "xz"
    assert WriteToAvro(str(tmp_path / "a.avro"), codec="bzip2").codec == "bzip2"
    assert WriteToAvro(str(tmp_path / "a.avro")).codec == "deflate"
    with pytest.raises(ValueError, match="Unknown compression `lzo`"):
        WriteToAvro(str(tmp_path / "a.avro"), compression="lzo")
    with pytest.raises(ValueError, match="not both"):
        WriteToAvro(str(tmp_path / "a.avro"), compression="xz", codec="null")
