"""The local runner: no Prism, options reach multi-process workers, DirectRunner maps to it."""

import subprocess
import sys

from beam_etl.core.local import STATE_SAMPLING_MS
from beam_etl.runner import LocalRunner, resolve

CHECK = """
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_etl.runner import LocalRunner


class GreetingOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_value_provider_argument("--greeting", default="unset")


class EchoFn(beam.DoFn):
    def __init__(self, greeting):
        self.greeting = greeting

    def process(self, element):
        from apache_beam.runners.worker import statesampler

        period = statesampler.StateSampler.__init__.__defaults__[0]
        yield f"{self.greeting.get()} {os.getpid()} {period}"


options = PipelineOptions(sys.argv[2:])
with beam.Pipeline(runner=LocalRunner(), options=options) as p:
    greeting = options.view_as(GreetingOptions).greeting
    _ = (p | beam.Create(list(range(20))) | beam.ParDo(EchoFn(greeting))
         | beam.io.WriteToText(sys.argv[1], shard_name_template=""))
assert "apache_beam.runners.portability.prism_runner" not in sys.modules, "Prism was loaded"
print(os.getpid())
"""


def test_options_reach_worker_processes_and_prism_is_never_loaded(tmp_path):
    out = tmp_path / "echo.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHECK,
            str(out),
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
            "--greeting=hello",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    launcher = result.stdout.strip()
    lines = out.read_text().splitlines()
    assert len(lines) == 20
    assert {line.split()[0] for line in lines} == {"hello"}
    assert launcher not in {line.split()[1] for line in lines}  # ran in worker processes
    # bundles end without waiting up to 200 ms for Beam's state sampler thread
    assert {line.split()[2] for line in lines} == {str(STATE_SAMPLING_MS)}


def test_in_process_runs_shorten_the_state_sampling(tmp_path):
    import apache_beam as beam
    from apache_beam.runners.worker import statesampler

    with beam.Pipeline(runner=LocalRunner()) as p:
        _ = p | beam.Create([1]) | beam.Map(lambda x: x)
    assert statesampler.StateSampler.__init__.__defaults__ == (STATE_SAMPLING_MS,)


def test_direct_runner_names_resolve_to_the_local_runner():
    assert isinstance(resolve(None), LocalRunner)
    assert isinstance(resolve("DirectRunner"), LocalRunner)
    assert resolve("PortableRunner") == "PortableRunner"
    assert resolve("FlinkRunner") == "FlinkRunner"


API_SCRIPT = """
import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_etl.runner import LocalRunner

logging.basicConfig(level=logging.WARNING)
with beam.Pipeline(runner=LocalRunner(), options=PipelineOptions(sys.argv[2:])) as p:
    _ = (p | beam.Create(list(range(4))) | beam.Map(str)
         | beam.io.WriteToText(sys.argv[1], shard_name_template=""))
"""


def test_a_python_api_run_on_two_workers_logs_what_one_worker_logs(tmp_path):
    """A user's script logging warnings sees no more lines from 2 worker processes than from 1
    (before: ~80 `Not setting flag with value None` lines and the workers' start-up warnings)."""
    printed = []
    for flags in ([], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]):
        out = tmp_path / f"out{len(flags)}.txt"
        result = subprocess.run(
            [sys.executable, "-c", API_SCRIPT, str(out), *flags],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert sorted(out.read_text().split()) == ["0", "1", "2", "3"]
        printed.append(result.stderr.splitlines())
    assert printed[1] == printed[0], printed[1]
