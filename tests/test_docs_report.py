"""The benchmark's page and the bundle pages' benchmark lines are what ``--report`` makes of the committed results."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.benchmark.report import regenerate

REPO = Path(__file__).resolve().parents[1]


def test_docs_are_generated_from_the_committed_results(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "label_efficiency.md"
    page.parent.mkdir()
    shutil.copy(REPO / "docs" / "label_efficiency.md", page)
    bundle_pages = []
    for source in sorted(REPO.glob("bundles/*/docs/README.md")):
        copy = tmp_path / source.relative_to(REPO)
        copy.parent.mkdir(parents=True)
        shutil.copy(source, copy)
        bundle_pages.append(copy)
    regenerate(REPO / "results", page, tmp_path / "docs", bundle_pages=bundle_pages)
    stale = [p for p in [page, *bundle_pages] if p.read_text() != (REPO / p.relative_to(tmp_path)).read_text()]
    assert not stale, (
        f"{[str(p.relative_to(tmp_path)) for p in stale]} differ from what the committed results give; run "
        "python benchmarks/label_efficiency.py --report and commit the result."
    )
    assert {p.name for p in (tmp_path / "docs").glob("label_efficiency_*.png")} == {
        f"label_efficiency_{p.parent.name}.png" for p in (REPO / "results").glob("*/runs.jsonl.gz")
    }
