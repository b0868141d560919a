"""Packaging for beam_etl.

Also usable as Beam's `--setup_file ./setup.py`, so that cluster workers can import beam_etl.
"""

import pathlib
import re

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"', (_HERE / "beam_etl" / "__init__.py").read_text()
).group(1)

setup(
    name="beam_etl",
    version=_VERSION,
    description="ETL framework on Apache Beam with Arrow record batches between steps",
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["beam_etl", "beam_etl.*"]),
    package_data={
        "beam_etl": ["demo/*.yaml", "demo/*.csv", "py.typed", "interop/provider.yaml"],
        "beam_etl.reporting": ["templates/*.html", "templates/*.md"],
    },
    install_requires=[
        "apache-beam>=2.77,<2.78",
        "pyarrow>=17",
        "pandas<2.4",
        "numpy",
        "PyYAML>=6",
        "jinja2>=3.0,<3.2",  # the HTML and Markdown run reports
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        "mysql": ["PyMySQL>=1.1"],
        "avro": ["fastavro>=1.9"],
        "excel": ["openpyxl>=3.1"],
        "cdc": ["mysql-replication>=1.0.17,<2"],
        "lineage": ["openlineage-python>=1.54,<2"],
        "progress": ["rich>=13"],
        "report": ["jinja2>=3.0,<3.2"],
        "yaml": ["jinja2>=3.0,<3.2", "docstring-parser>=0.15,<1.0", "jsonschema>=4,<5"],
        "test": [
            "pytest>=8",
            "ruff",
            "mypy",
            "types-PyYAML",
            "jinja2>=3.0,<3.2",
            "docstring-parser>=0.15,<1.0",
            "jsonschema>=4,<5",
        ],
    },
    entry_points={"console_scripts": ["beam-etl = beam_etl.run:console_main"]},
)
