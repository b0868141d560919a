"""The step contract: declarations are read and checked in one place, and the builder refuses
an output a transform returns without declaring it (it would have been dropped silently)."""

import textwrap

import apache_beam as beam
import pytest

from beam_etl.core.catalogue import Entry, catalogue
from beam_etl.core.contract import SINK, SOURCE, STEP, Sink, Source, Step, declared
from beam_etl.core.errors import SpecError
from beam_etl.pipeline import load_plan
from beam_etl.runner import LocalRunner


def test_every_catalogue_entry_declares_a_valid_contract():
    for entry in catalogue().values():
        factory = entry.load()  # checks the declarations
        found = declared(factory, entry.kind)
        assert all(isinstance(name, str) for name in found.outputs)
        expected = {SOURCE: Source, STEP: Step, SINK: Sink}[entry.kind]
        assert issubclass(factory, beam.PTransform)
        assert isinstance(factory.__new__(factory), expected)  # the Protocol's members


def test_defaults_and_shapes():
    class Plain(beam.PTransform):
        pass

    class Joins(beam.PTransform):
        MULTI_INPUT = True
        CONSERVES_ROWS = False
        SIDE_INPUTS = ("dims",)

    assert declared(Plain, STEP).outputs == ("output",)
    assert declared(Plain, SINK).outputs == ()
    assert declared(Plain, STEP).input_shape == "batches"
    joins = declared(Joins, STEP)
    assert (joins.input_shape, joins.conserves_rows, joins.side_inputs) == (
        "inputs",
        False,
        ("dims",),
    )


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"OUTPUTS": "output"}, "OUTPUTS"),
        ({"OUTPUTS": ("output", 3)}, "OUTPUTS"),
        ({"MULTI_INPUT": True, "TUPLE_INPUT": True}, "both"),
        ({"CONSERVES_ROWS": "yes"}, "CONSERVES_ROWS"),
        ({"SIDE_INPUTS": "dims"}, "SIDE_INPUTS"),
    ],
)
def test_a_wrong_declaration_is_refused_when_the_catalogue_loads_it(
    attributes, message, tmp_path, monkeypatch
):
    name = f"wrong_contract_{message.lower()}"
    module = tmp_path / f"{name}.py"
    body = "".join(f"    {key} = {value!r}\n" for key, value in attributes.items())
    module.write_text("import apache_beam as beam\n\nclass Wrong(beam.PTransform):\n" + body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=message):
        declared(__import__(name).Wrong, STEP)
    with pytest.raises(ImportError, match="declares its contract wrongly"):
        Entry("Wrong", STEP, f"{name}:Wrong").load()


def test_a_source_takes_no_inputs():
    class Odd(beam.PTransform):
        MULTI_INPUT = True

    with pytest.raises(TypeError, match="source"):
        declared(Odd, SOURCE)


def test_an_undeclared_output_is_an_error_when_the_graph_is_built(tmp_path, monkeypatch):
    (tmp_path / "leaky.py").write_text(
        textwrap.dedent(
            """
            import apache_beam as beam
            from beam_etl.core.outputs import WithErrors

            class Leaky(beam.PTransform):
                '''Returns an `error` output without declaring it.'''

                def expand(self, batches):
                    empty = batches.pipeline | beam.Create([])
                    return WithErrors(batches, empty)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        "beam_etl.core.catalogue._BUILTIN",
        {
            **__import__("beam_etl.core.catalogue").core.catalogue._BUILTIN,
            "Leaky": (STEP, "leaky:Leaky"),
        },
    )
    catalogue.cache_clear()
    (tmp_path / "in.csv").write_text("a\n1\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            name: leaky
            sources:
              - name: src
                type: ReadFromCsv
                config: {{path: {tmp_path / "in.csv"}}}
            steps:
              - name: leak
                type: Leaky
                input: src
            sinks:
              - name: out
                type: WriteToCsv
                input: leak
                config: {{path: {tmp_path / "out.csv"}}}
              - name: rejects
                type: WriteToDeadLetters
                input: src.error
                config: {{path: {tmp_path / "rejects.jsonl"}}}
            """
        )
    )
    try:
        plan = load_plan(str(spec), run_id="contract")
        refused = pytest.raises(SpecError, match=r"`Leaky` returned outputs it does not declare")
        with refused, beam.Pipeline(runner=LocalRunner()) as pipeline:
            plan.build(pipeline)
    finally:
        catalogue.cache_clear()


class _Gate:
    def __init__(self, passed: bool) -> None:
        self.passed, self.message = passed, "enough rows" if passed else "too few rows"


@pytest.mark.parametrize("passed", [True, False])
def test_a_sink_takes_its_quality_gates_as_an_input(tmp_path, passed):
    import pyarrow as pa

    from beam_etl.core.contract import Gated
    from beam_etl.core.errors import CheckFailedError
    from beam_etl.io.csvio import WriteToCsv

    target = tmp_path / "out.csv"
    sink = WriteToCsv(str(target))
    assert declared(WriteToCsv, SINK).gated and not hasattr(sink, "gates")

    def run():
        with beam.Pipeline(runner=LocalRunner()) as pipeline:
            rows = pipeline | "Rows" >> beam.Create([pa.RecordBatch.from_pylist([{"a": 1}])])
            gate = pipeline | "Gate" >> beam.Create([_Gate(passed)])
            _ = Gated(rows, gate) | sink

    if passed:
        run()
        assert target.read_text().splitlines() == ['"a"', "1"]  # text quoted, see WriteToCsv
    else:
        with pytest.raises(Exception, match="too few rows") as caught:
            run()
        assert isinstance(caught.value, CheckFailedError) or "CheckFailedError" in str(caught.value)
        assert not target.exists()


def test_only_sinks_take_gates():
    class GatedStep(beam.PTransform):
        GATED = True

    with pytest.raises(TypeError, match="only sinks"):
        declared(GatedStep, STEP)
    assert declared(GatedStep, SINK).gated
