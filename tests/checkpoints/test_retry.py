"""Retries with backoff for user functions: `retry:` on MapBatches, MapRows, `@batch_step`,
and the `@recoverable` decorator; exhausted attempts become `retries_exhausted` dead letters."""

import os
import pickle

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.checkpoints import RetriesExhaustedError, RetryPolicy, recoverable, retry
from beam_etl.core import retries as retry_module
from beam_etl.core.batches import with_origin
from beam_etl.core.errors import SpecError
from beam_etl.pipeline import load_plan
from beam_etl.transforms import MapBatches, MapRows, batch_step

BATCH = with_origin(pa.record_batch({"id": [1, 2, 3, 4]}), "in.csv", [2, 3, 4, 5])
PAYLOADS = [{"id": i} for i in (1, 2, 3, 4)]


class Flaky:
    """Raises `error` on its first `failures` calls (per key), counting calls in a file."""

    def __init__(self, folder, failures: int, error: type[BaseException], rows: bool = False):
        self.folder, self.failures, self.error, self.rows = str(folder), failures, error, rows

    def __call__(self, item):
        key = item["id"] if self.rows else "batch"
        path = os.path.join(self.folder, f"calls-{key}")
        with open(path, "a") as out:
            out.write("x")
        with open(path) as calls:
            count = len(calls.read())
        if count <= self.failures:
            raise self.error(f"attempt {count} of {key} failed")
        return item


def _calls(folder, key="batch") -> int:
    path = os.path.join(folder, f"calls-{key}")
    return len(open(path).read()) if os.path.exists(path) else 0


def test_map_batches_retries_transient_failures_then_succeeds(pipeline, tmp_path):
    flaky = Flaky(tmp_path, failures=2, error=ConnectionError)
    policy = {"attempts": 3, "backoff": 0.01, "on": ["ConnectionError", "TimeoutError"]}
    out = pipeline | beam.Create([BATCH]) | "enrich" >> MapBatches(flaky, retry=policy)
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to(PAYLOADS), label="Output")
    assert_that(out.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()
    assert _calls(tmp_path) == 3


def test_map_batches_dead_letters_the_batch_when_retries_run_out(pipeline, tmp_path):
    flaky = Flaky(tmp_path, failures=99, error=TimeoutError)
    policy = {"attempts": 3, "backoff": 0.01, "on": ["TimeoutError"]}
    out = pipeline | beam.Create([BATCH]) | "enrich" >> MapBatches(flaky, retry=policy)
    assert_that(out.output, equal_to([]), label="Output")
    assert_that(
        out.error | beam.Map(lambda letter: (*letter_summary(letter), letter.message)),
        equal_to(
            [
                (
                    "enrich",
                    "retries_exhausted",
                    line,
                    {"id": i},
                    "3 attempt(s) failed; last error: TimeoutError: attempt 3 of batch failed",
                )
                for i, line in zip((1, 2, 3, 4), (2, 3, 4, 5))
            ]
        ),
        label="Errors",
    )
    pipeline.run().wait_until_finish()
    assert _calls(tmp_path) == 3


def test_exceptions_not_named_are_not_retried(pipeline, tmp_path):
    flaky = Flaky(tmp_path, failures=99, error=ValueError)
    out = pipeline | beam.Create([BATCH]) | "enrich" >> MapBatches(flaky, retry={"attempts": 5})
    assert_that(out.output, equal_to([]), label="Output")
    assert_that(
        out.error | beam.Map(lambda letter: (letter.reason, letter.message)),
        equal_to([("function_failed", "ValueError: attempt 1 of batch failed")] * 4),
        label="Errors",
    )
    pipeline.run().wait_until_finish()
    assert _calls(tmp_path) == 1


def test_map_rows_retries_each_row_and_dead_letters_only_the_exhausted_ones(pipeline, tmp_path):
    class RowFlaky(Flaky):
        def __call__(self, row):
            if row["id"] == 4:
                raise KeyError("no such customer")
            if row["id"] == 3:
                self.failures = 99
            return {**super().__call__(row), "ok": True}

    flaky = RowFlaky(tmp_path, failures=1, error=ConnectionError, rows=True)
    policy = {"attempts": 2, "backoff": 0, "on": "ConnectionError"}
    out = pipeline | beam.Create([BATCH]) | "enrich" >> MapRows(flaky, retry=policy)
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "ok": True}, {"id": 2, "ok": True}]),
        label="Output",
    )
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to(
            [
                ("enrich", "retries_exhausted", 4, {"id": 3}),
                ("enrich", "function_failed", 5, {"id": 4}),
            ]
        ),
        label="Errors",
    )
    pipeline.run().wait_until_finish()
    assert [_calls(tmp_path, key) for key in (1, 2, 3, 4)] == [2, 2, 2, 0]


@batch_step(name="CallService")
def call_service(batch, *, folder: str, failures: int = 1):
    """Fail `failures` times with a ConnectionError, then pass the batch on."""
    return Flaky(folder, failures, ConnectionError)(batch)


def test_batch_step_takes_a_retry_config_key(pipeline, tmp_path):
    from beam_etl.core.catalogue import arguments

    assert [a.name for a in arguments(call_service)[0]] == ["folder", "failures", "retry"]
    step = call_service(folder=str(tmp_path), failures=1, retry={"attempts": 2, "backoff": 0})
    out = pipeline | beam.Create([BATCH]) | "call" >> step
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to(PAYLOADS), label="Output")
    assert_that(out.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()
    assert _calls(tmp_path) == 2


@recoverable(attempts=4, backoff=0, on=[ConnectionResetError])
def decorated(batch):
    """Fail twice, then pass the batch on (calls counted under $RETRY_FOLDER)."""
    return Flaky(os.environ["RETRY_FOLDER"], 2, ConnectionResetError)(batch)


def test_recoverable_decorator_retries_and_pickles_by_reference(pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRY_FOLDER", str(tmp_path))
    assert pickle.loads(pickle.dumps(decorated)) is decorated
    assert decorated.__name__ == "decorated" and decorated.policy.attempts == 4
    out = pipeline | beam.Create([BATCH]) | "enrich" >> MapBatches(decorated)
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to(PAYLOADS), label="Output")
    assert_that(out.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()
    assert _calls(tmp_path) == 3
    assert retry is recoverable


def test_backoff_doubles_between_attempts(monkeypatch, tmp_path):
    waits = []
    monkeypatch.setattr(retry_module.time, "sleep", waits.append)
    policy = RetryPolicy(attempts=4, backoff=0.5, on=(OSError,))
    flaky = Flaky(tmp_path, failures=99, error=ConnectionRefusedError)  # an OSError subclass
    with pytest.raises(RetriesExhaustedError, match="4 attempt") as caught:
        retry_module.call_with_retry(flaky, policy, {"id": 1})
    assert waits == [0.5, 1.0, 2.0]
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (str(again), again.attempts) == (str(caught.value), 4)


@pytest.mark.parametrize(
    "retry_config, message",
    [
        (
            "{attempts: 3, backof: 1}",
            "`retry`: unknown key `backof`; accepted: attempts, backoff, on",
        ),
        ("{attempts: 0}", "`retry`: `attempts` must be at least 1, not 0"),
        ("{on: [NoSuchError]}", "`retry`: `on` names `NoSuchError`, which is not an exception"),
        ("{on: [os.path]}", "`retry`: `on` names `os.path`, which is not an exception type"),
        ("3", "`retry` must be a mapping such as"),
    ],
    ids=["unknown-key", "no-attempts", "unknown-exception", "not-an-exception", "not-a-mapping"],
)
def test_a_bad_retry_config_is_one_spec_error_on_its_line(tmp_path, retry_config, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""name: r
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{tmp_path}/in.csv"}}
steps:
  - name: enrich
    type: MapBatches
    input: src
    config:
      function: "os.path:basename"
      retry: {retry_config}
sinks:
  - name: out
    type: WriteToCsv
    inputs: [enrich, enrich.error, src.error]
    config: {{path: "{tmp_path}/out.csv"}}
"""
    )
    (tmp_path / "in.csv").write_text("id\n1\n")
    with pytest.raises(SpecError) as caught:
        load_plan(str(spec), run_id="r")
    assert message in str(caught.value)
    assert str(caught.value).endswith("(step `enrich`, line 12)")
