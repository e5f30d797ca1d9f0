"""The demo README's experiment results are the published reports' own: every table quoted under a
`<!-- report: ..., figure: ... -->` marker is one that `readme_tables` makes from that report, and the
figure beside it was drawn from the same report (its PNG carries the digest of what it plots)."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from rpo.demo.experiments import figure_digest, readme_tables, verdict
from rpo.eval.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "src" / "demo" / "README.md"
RESULTS = ROOT / "src" / "demo" / "results"
MARKER = re.compile(r"^<!-- report: (\S+), figure: (\S+) -->$", re.MULTILINE)


def quoted_sections() -> list[tuple[str, str, str]]:
    """(report path, figure path, the README text from the marker to the next marker or heading)."""
    text = README.read_text()
    marks = list(MARKER.finditer(text))
    sections = []
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        body = text[mark.end():end]
        heading = re.search(r"^#{1,4} ", body, re.MULTILINE)
        sections.append((mark.group(1), mark.group(2), body[: heading.start()] if heading else body))
    return sections


def tables_in(text: str) -> list[str]:
    """Each Markdown table in the text: a run of lines that start with `|`."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def test_every_published_report_is_quoted_once():
    cited = [report for report, _, _ in quoted_sections()]
    published = sorted(str(path.relative_to(ROOT)) for path in RESULTS.glob("*.json"))
    assert published, "src/demo/results holds no report"
    assert sorted(cited) == published


@pytest.mark.parametrize("report_path, figure_path, section",
                         [pytest.param(*quoted, id=Path(quoted[0]).stem) for quoted in quoted_sections()])
def test_readme_tables_and_figure_are_the_reports(report_path, figure_path, section):
    report = json.loads((ROOT / report_path).read_text())
    made = readme_tables(report).strip().split("\n\n")
    quoted = tables_in(section)
    assert made[0] in quoted and made[1] in quoted, "the arm and claim tables must be quoted"
    for table in quoted:
        assert table in made, f"a table under {report_path} is not one the report makes:\n{table}"
    for claim in report["claims"]:  # the verdicts printed are the intervals' own
        assert claim["verdicts"] == {m: verdict(claim["difference"][m]["ci95"]) for m in METRICS}
    assert f"](../../{figure_path})" in section
    with Image.open(ROOT / figure_path) as png:
        assert png.text["Description"] == f"figure_data sha256 {figure_digest(report)}"
    assert all(not Path(entry["base"]).is_absolute() for entry in report["shared"].values())
