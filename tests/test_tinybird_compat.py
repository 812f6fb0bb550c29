"""The compatibility table (tests/tinybird_compat.py) is well formed and published.

docs/tinybird-compat.md, and the table in README.md, must equal the render of ``ROWS``
(regenerate with ``python -m tests.tinybird_compat > docs/tinybird-compat.md`` and paste
``python -m tests.tinybird_compat --readme`` into the README), and every "works" row must
name a test pytest collects: a row cannot claim a client action works without its proof.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tinybird_compat import ROWS, Row, render, table

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "tinybird-compat.md"


def test_doc_is_the_render_of_rows() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/tinybird-compat.md is stale: "
        "python -m tests.tinybird_compat > docs/tinybird-compat.md"
    )


def test_readme_shows_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- compat table:")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- end of compat table -->", start)
    assert readme[start:end] == table(), (
        "README.md's compat table is stale: paste python -m tests.tinybird_compat --readme"
    )


def test_rows_are_well_formed() -> None:
    seen: set[tuple[str, str]] = set()
    for row in ROWS:
        assert row.status in ("works", "no"), row
        assert row.client.strip() and row.action.strip() and row.proof.strip(), row
        assert (row.client, row.action) not in seen, f"duplicate row {row}"
        seen.add((row.client, row.action))
        if row.status == "works":
            assert row.proof.startswith("tests/test_") and "::" in row.proof, (
                f"a works row names a pytest node id: {row}"
            )


def test_render_marks_status_and_escapes_cells() -> None:
    text = render(
        [
            Row("c", "a|b", "works", "tests/test_x.py::test_y"),
            Row("c", "d", "no", "needs X"),
        ]
    )
    assert "| c | a\\|b | yes | `tests/test_x.py::test_y` |" in text
    assert "| c | d | no | needs X |" in text


@pytest.mark.slow
def test_every_works_row_names_a_collected_test() -> None:
    ids = sorted({row.proof for row in ROWS if row.status == "works"})
    assert ids
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    collected = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    missing = [i for i in ids if not any(c == i or c.startswith(i + "[") for c in collected)]
    assert not missing, f"works rows without a collected test: {missing}\n{proc.stdout[-3000:]}"
