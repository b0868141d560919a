"""beam_etl's transforms inside your own Beam pipeline.

Run: python examples/python_api.py OUTPUT_FOLDER
"""

import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_etl.io.csvio import ReadFromCsv
from beam_etl.io.deadletters import WriteToDeadLetters
from beam_etl.io.parquetio import WriteToParquet
from beam_etl.runner import LocalRunner
from beam_etl.transforms import CastColumns, DropDuplicates, FilterRows

HERE = os.path.dirname(os.path.abspath(__file__))


def main(output: str, beam_args: list[str]) -> None:
    options = PipelineOptions(beam_args)
    with beam.Pipeline(runner=LocalRunner(), options=options) as pipeline:
        read = pipeline | "Read" >> ReadFromCsv(f"{HERE}/data/customers.csv", delimiter=";")
        typed = read.output | "Cast" >> CastColumns({"score": "float64"})
        unique = typed.output | "Dedupe" >> DropDuplicates(["customer_id"])
        good = unique | "Good" >> FilterRows("score >= 60")
        _ = good.output | "Write" >> WriteToParquet(f"{output}/good_customers")
        errors = (read.error, typed.error, good.error)  # a tuple: each is staged where made
        _ = errors | "DeadLetters" >> WriteToDeadLetters(f"{output}/rejected.jsonl")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
