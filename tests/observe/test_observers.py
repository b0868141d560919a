"""Observers: from Python and from a spec they see the four events with the run's counts; one
that raises leaves the run alone; one that cannot be imported is one spec error line."""

import logging
import os

import pytest

from beam_etl import observers
from beam_etl.cli import execute
from beam_etl.core import tally
from beam_etl.core.errors import SpecError
from beam_etl.pipeline import load_plan
from beam_etl.run import main

CSV = "id,amount\n1,10\n2,x\n3,30\n4,40\n"
STEPS = ["orders", "cast", "out", "rejects"]

SPEC = """\
name: observed
{observers}sources:
  - name: orders
    type: ReadFromCsv
    config: {{path: "${{SPEC_DIR}}/orders.csv", columns: {{amount: string}}}}
steps:
  - name: cast
    type: CastColumns
    input: orders
    config: {{columns: {{amount: float64}}}}
sinks:
  - name: out
    type: WriteToCsv
    input: cast
    config: {{path: "${{OUTPUT_DIR}}/out.csv"}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, cast.error]
    config: {{path: "${{OUTPUT_DIR}}/rejects.jsonl"}}
"""

HOOKS = '''\
EVENTS = []


class Recorder:
    """Records every event it sees (a class: the spec instantiates it)."""

    def run_started(self, info):
        EVENTS.append(("class", "run_started", info))

    def step_progress(self, progress):
        EVENTS.append(("class", "step_progress", progress))

    def step_finished(self, step):
        EVENTS.append(("class", "step_finished", step))

    def run_finished(self, summary):
        EVENTS.append(("class", "run_finished", summary))


def on_event(event, payload):
    EVENTS.append(("function", event, payload))
'''


class Recorder(observers.Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def run_started(self, info):
        self.events.append(("run_started", info))

    def step_progress(self, progress):
        self.events.append(("step_progress", progress))

    def step_finished(self, step):
        self.events.append(("step_finished", step))

    def run_finished(self, summary):
        self.events.append(("run_finished", summary))


class Failing(observers.Observer):
    name = "failing"

    def run_started(self, info):
        raise RuntimeError("slack is down")

    def step_progress(self, progress):
        raise RuntimeError("slack is down")

    def step_finished(self, step):
        raise ValueError("no such channel")

    def run_finished(self, summary):
        raise ConnectionError("refused")


def _spec(tmp_path, observers_block: str = "") -> str:
    (tmp_path / "orders.csv").write_text(CSV)
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(observers=observers_block))
    return str(path)


def _execute(tmp_path, spec: str, **kwargs):
    output = tmp_path / "out"
    plan = load_plan(spec, run_id="r1", variables={"OUTPUT_DIR": str(output)})
    return execute(plan, [], "r1", str(output / "run_report.json"), **kwargs)


def _check_events(events: list[tuple[str, object]], spec: str) -> None:
    """The four events in order, with counts that agree with the run's."""
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("run_started") == kinds.count("run_finished") == 1
    assert kinds.count("step_progress") >= 1
    assert kinds[-1 - len(STEPS) : -1] == ["step_finished"] * len(STEPS)

    info = events[0][1]
    assert info.pipeline == "observed" and info.run_id == "r1"
    assert [name for name, _, _ in info.steps] == STEPS
    assert info.source_bytes == {"orders": os.path.getsize(os.path.dirname(spec) + "/orders.csv")}
    assert len(info.fingerprint) == 64

    progress = [payload for kind, payload in events if kind == "step_progress"]
    last = progress[-1]  # after the pipeline ended: every bundle's counts
    assert last.steps["orders"]["rows_out"] == 4
    assert last.steps["cast"] == {"rows_out": 3, "rows_rejected": 1}
    assert last.dead_letters == 1
    (source,) = last.sources
    assert (source.name, source.rows, source.total_bytes) == ("orders", 4, len(CSV))
    assert source.bytes == len(CSV) and source.percent == 100.0
    seen = [p.sources[0].rows for p in progress]
    assert seen == sorted(seen)  # counts never go back

    finished = {payload.name: payload for kind, payload in events if kind == "step_finished"}
    assert (finished["cast"].rows_in, finished["cast"].rows_out) == (4, 3)
    assert finished["cast"].rows_rejected == 1
    summary = events[-1][1]
    assert (summary.status, summary.error) == ("succeeded", None)
    assert (summary.rows_read, summary.rows_written, summary.rows_rejected) == (4, 4, 1)
    assert summary.fingerprint == info.fingerprint
    assert 10 < summary.peak_rss_mb < 10_000
    assert summary.seconds > 0 and summary.finished_at >= summary.started_at


def test_an_observer_given_to_execute_sees_the_four_events_with_the_counts(tmp_path):
    recorder = Recorder()
    report = _execute(tmp_path, _spec(tmp_path), observers=[recorder])
    assert report.status == "succeeded"
    _check_events(recorder.events, str(tmp_path / "spec.yaml"))


def test_a_registered_observer_sees_every_later_run(tmp_path):
    recorder = observers.register(Recorder())
    try:
        _execute(tmp_path, _spec(tmp_path))
    finally:
        observers.unregister(recorder)
    _check_events(recorder.events, str(tmp_path / "spec.yaml"))
    assert recorder not in observers.registered()


def test_observers_named_in_a_spec_are_imported_from_beside_it(tmp_path):
    (tmp_path / "obs_hooks_spec.py").write_text(HOOKS)
    block = 'observers: ["obs_hooks_spec:Recorder", "obs_hooks_spec:on_event"]\n'
    spec = _spec(tmp_path, block)
    _execute(tmp_path, spec)
    import obs_hooks_spec  # imported by the run from the spec's folder

    for origin in ("class", "function"):
        events = [(kind, payload) for who, kind, payload in obs_hooks_spec.EVENTS if who == origin]
        _check_events(events, spec)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_xyz:hook", "Cannot load observer `no_such_module_xyz:hook`: "),
        ("os.path:no_such_hook", "module `os.path` has no attribute `no_such_hook`"),
        ("os.path", "Observer `os.path` must look like `module:attribute`"),
        ("os:sep", "is not an observer"),
    ],
    ids=["missing-module", "missing-attribute", "no-colon", "not-an-observer"],
)
def test_an_observer_that_cannot_be_loaded_is_one_line_with_the_spec_line(
    tmp_path, capsys, reference, message
):
    spec = _spec(tmp_path, f'observers:\n  - "{reference}"\n')
    code = main(["--pipeline", spec, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith("error: ") and message in line and line.endswith("(line 3)")
    assert not (tmp_path / "out" / "out.csv").exists()


def test_observers_must_be_a_list_of_import_paths(tmp_path):
    spec = _spec(tmp_path, "observers: 3\n")
    with pytest.raises(SpecError, match=r"`observers` must be a list .* \(line 2\)"):
        load_plan(spec, run_id="r1", variables={"OUTPUT_DIR": str(tmp_path)})


def test_an_observer_that_raises_does_not_fail_the_run(tmp_path, caplog):
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="beam_etl.observers"):
        report = _execute(tmp_path, _spec(tmp_path), observers=[Failing(), recorder])
    assert report.status == "succeeded"
    assert (tmp_path / "out" / "out.csv").read_text().count("\n") == 4  # header + 3 rows
    _check_events(recorder.events, str(tmp_path / "spec.yaml"))  # the others still called
    warnings = [r.getMessage() for r in caplog.records if r.name == "beam_etl.observers"]
    assert len(warnings) == 4  # one per event, however often it is called
    assert all(w.startswith("observer `failing` failed in ") for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert "failed in step_progress (the run goes on): RuntimeError: slack is down" in " ".join(
        warnings
    )


def test_a_function_observer_gets_every_event_by_name(tmp_path):
    seen: list[str] = []
    hook = observers.register(lambda event, payload: seen.append(event))
    try:
        _execute(tmp_path, _spec(tmp_path))
    finally:
        observers.unregister(hook)
    assert seen[0] == "run_started" and seen[-1] == "run_finished"
    assert seen.count("step_finished") == len(STEPS)


def test_the_fingerprint_ignores_layout_and_run_id_but_not_config(tmp_path):
    spec = _spec(tmp_path)
    names = {"OUTPUT_DIR": str(tmp_path)}
    first = observers.fingerprint(
        load_plan(spec, run_id="run-aaaa-1", variables=names).spec, "run-aaaa-1"
    )
    text = (tmp_path / "spec.yaml").read_text()
    (tmp_path / "spec.yaml").write_text(
        "# a comment\n" + text.replace("name: observed", "name:   observed")
    )
    assert (
        observers.fingerprint(
            load_plan(spec, run_id="run-bbbb-2", variables=names).spec, "run-bbbb-2"
        )
        == first
    )
    with_id = text.replace("rejects.jsonl", "rejects-${RUN_ID}.jsonl")
    (tmp_path / "spec.yaml").write_text(with_id)
    second = observers.fingerprint(
        load_plan(spec, run_id="run-aaaa-1", variables=names).spec, "run-aaaa-1"
    )
    assert second != first  # another file name
    again = load_plan(spec, run_id="run-bbbb-2", variables=names).spec
    assert observers.fingerprint(again, "run-bbbb-2") == second  # the same spec, another run
    (tmp_path / "spec.yaml").write_text(text.replace("float64", "float32"))
    assert (
        observers.fingerprint(
            load_plan(spec, run_id="run-aaaa-1", variables=names).spec, "run-aaaa-1"
        )
        != first
    )


def test_reporting_without_a_watching_launcher_is_a_no_op(monkeypatch):
    monkeypatch.delenv(tally.CHANNEL_ENV, raising=False)
    tally.report("step", "rows_out", 5)
    tally.flush()
    # a launcher that is gone: the datagram goes nowhere, the caller never sees an error
    monkeypatch.setenv(tally.CHANNEL_ENV, "127.0.0.1:9/gone")
    for _ in range(3):
        tally.report("step", "rows_out", 5)
        tally.flush()
    monkeypatch.setenv(tally.CHANNEL_ENV, "not an address")
    tally.report("step", "rows_out", 5)


def test_the_channel_adds_up_the_tallies_of_every_process(monkeypatch):
    channel = tally.Channel()
    try:
        monkeypatch.setenv(tally.CHANNEL_ENV, channel.address)
        tally.report("orders", "rows_out", 10)
        tally.report("orders", "rows_out", 5)
        tally.flush()
        channel.poll(0.5)
        assert channel.totals() == {("orders", "rows_out"): 15}
        foreign = b'{"token": "other", "pid": 1, "counts": {"orders\\u001frows_out": 99}}'
        port = int(channel.address.split(":")[1].split("/")[0])
        tally._TALLY._socket.sendto(foreign, ("127.0.0.1", port))
        channel.poll(0.2)
        assert channel.totals() == {("orders", "rows_out"): 15}  # another run's datagram
    finally:
        channel.close()


def test_workers_report_only_when_an_observer_wants_progress(tmp_path, monkeypatch):
    monkeypatch.delenv(tally.CHANNEL_ENV, raising=False)
    plan = load_plan(_spec(tmp_path), run_id="r1", variables={"OUTPUT_DIR": str(tmp_path)})

    class Finished(observers.Observer):
        def run_finished(self, summary):
            pass

    quiet = observers.Watch(plan, "r1", str(tmp_path), [Finished()])
    quiet.start()
    assert tally.CHANNEL_ENV not in os.environ  # workers send nothing
    quiet.close()
    watched = observers.Watch(plan, "r1", str(tmp_path), [Recorder()])
    watched.start()
    assert os.environ[tally.CHANNEL_ENV].startswith("127.0.0.1:")
    watched.close()
    assert tally.CHANNEL_ENV not in os.environ  # put back as it was


def test_an_observer_whose_import_or_constructor_fails_is_one_spec_line(tmp_path, capsys):
    (tmp_path / "obs_broken_import.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "obs_broken_init.py").write_text(
        "class Hook:\n    def __init__(self):\n        raise RuntimeError('no token\\nmore')\n"
    )
    cases = [
        ("obs_broken_import:hook", "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
        ("obs_broken_init:Hook", "RuntimeError: no token"),
    ]
    for reference, message in cases:
        spec = _spec(tmp_path, f'observers: ["{reference}"]\n')
        assert main(["--pipeline", spec, "--output-dir", str(tmp_path / "out")]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line == f"error: Cannot load observer `{reference}`: {message} (line 2)"
