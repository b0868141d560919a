"""Values from the data never become markup in the reports, and secrets never show."""

import json

import pytest
from chromium_cdp import Chromium

from beam_etl.run import main

SCRIPT = "<script>document.title='pwned'</script>"
IMAGE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A run over data holding markup, a credential column and a path from the environment."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "s3cr3t-folder"
    folder.mkdir()
    (folder / "orders.csv").write_text(
        f"order_id,note,api_token\n1,ok,t1\n{SCRIPT},x,hunter2\n3,{IMAGE},t3\n"
    )
    spec = root / "spec.yaml"
    spec.write_text(
        """\
name: "<b>orders</b> & co"
sources:
  - name: orders
    type: ReadFromCsv
    config: {path: "${ORDERS_FILE}", columns: {order_id: int64}}
steps:
  - name: checks
    type: ValidateRecords
    input: orders
    config:
      checks:
        - {check: regex, column: note, pattern: "^[a-z]+$", severity: warn}
sinks:
  - {name: out, type: WriteToParquet, input: checks, config: {path: "${OUTPUT_DIR}/out"}}
  - name: rejects
    type: WriteToDeadLetters
    inputs: [orders.error, checks.error]
    config: {path: "${OUTPUT_DIR}/rejects.jsonl"}
"""
    )
    output = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORDERS_FILE", str(folder / "orders.csv"))
        assert main(["--pipeline", str(spec), "--output-dir", str(output)]) == 0
    letters = [json.loads(line) for line in (output / "rejects.jsonl").open()]
    assert [(x["reason"], x["payload"]["order_id"]) for x in letters] == [("cast_failed", SCRIPT)]
    return output


def test_markup_in_dead_letters_and_quality_examples_is_shown_as_text(hostile_run, tmp_path):
    page_path = hostile_run / "run_report.html"
    assert SCRIPT not in page_path.read_text()
    with Chromium(str(tmp_path / "profile")) as browser:
        page = browser.open(page_path.as_uri())
        assert page.evaluate("document.title").startswith("<b>orders</b> & co · run ")
        assert page.evaluate("document.querySelectorAll('script, img, b, i').length") == 0
        assert page.evaluate("document.querySelector('h1').firstChild.textContent").startswith(
            "<b>orders</b> & co"
        )
        cells = page.evaluate(
            "[...document.querySelectorAll('table.letters td')].map(td => td.textContent)"
        )
        assert f"Value `{SCRIPT}` in column `order_id` is not a valid int64" in cells
        assert any(SCRIPT in cell and '"api_token": "***"' in cell for cell in cells)
        examples = page.evaluate(
            "[...document.querySelectorAll('#quality td')].map(td => td.textContent)"
        )
        assert any(IMAGE in cell for cell in examples)
        assert page.evaluate("window.__violations") == []
        assert page.requests() == [page_path.as_uri()]


def test_markdown_escapes_markup_and_table_syntax(hostile_run):
    markdown = (hostile_run / "run_report.md").read_text()
    assert "<script" not in markdown and "<img" not in markdown and "<b>" not in markdown
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in markdown
    assert "&lt;img src=x onerror=alert(1)&gt;" in markdown
    assert markdown.startswith("# &lt;b&gt;orders&lt;/b&gt; &amp; co: run `")


def test_secrets_never_show_in_the_reports(hostile_run):
    names = ["run_report.html", "run_report.md", "run_report.context.json", "run_report.json"]
    names += ["run_report.quality.md", "run_report.quality.html"]
    for name in names:
        text = (hostile_run / name).read_text()
        assert "hunter2" not in text, name  # a credential-like payload field is masked
        assert "s3cr3t" not in text, name  # a value substituted from the environment
    markdown = (hostile_run / "run_report.md").read_text()
    assert "| in | orders | ReadFromCsv | file | *** |" in markdown
