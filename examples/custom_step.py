"""A processor of your own in a few lines, with `@batch_step`, used in a Beam pipeline.

Run: python examples/custom_step.py OUTPUT_FOLDER
"""

import os
import sys

import apache_beam as beam
import pyarrow.compute as pc

from beam_etl.io import ReadFromCsv, WriteToDeadLetters, WriteToParquet
from beam_etl.runner import LocalRunner
from beam_etl.transforms import CastColumns, Chain, FilterRows, batch_step

HERE = os.path.dirname(os.path.abspath(__file__))


@batch_step(name="ScaleColumn")
def scale_column(batch, *, column: str, factor: float = 2.0):
    """Multiply a numeric column by a factor.

    Args:
        column: the column to scale.
        factor: the multiplier.
    """
    index = batch.schema.get_field_index(column)
    return batch.set_column(index, column, pc.multiply(batch.column(index), factor))


def main(output: str) -> None:
    clean = Chain(
        [
            "cast" >> CastColumns({"score": "float64"}),
            "scored" >> FilterRows("score is not null"),
            "percent" >> scale_column(column="score", factor=0.01),
        ]
    )
    with beam.Pipeline(runner=LocalRunner()) as pipeline:
        read = pipeline | "Read" >> ReadFromCsv(f"{HERE}/data/customers.csv", delimiter=";")
        cleaned = read.output | "Clean" >> clean
        _ = cleaned.output | "Write" >> WriteToParquet(f"{output}/scores")
        errors = (read.error, cleaned.error)
        _ = errors | "DeadLetters" >> WriteToDeadLetters(f"{output}/rejected.jsonl")


if __name__ == "__main__":
    main(sys.argv[1])
