"""The docs site builds with ``mkdocs build --strict`` (``make docs``): every page is in the nav,
every link between pages and every anchor resolves, every included example exists
(``mkdocs.yml``, docs/contributing-docs.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    assert {"index", "getting-started", "concepts", "testing", "cli", "notifications"} <= pages
    assert (site / "index.html").is_file()
    for page in pages - {"index"}:
        assert (site / page / "index.html").is_file(), f"docs/{page}.md was not built"
    assert (site / "img" / "hop_efficiency.png").stat().st_size > 0  # bench's figure

    # The examples are in the pages, not their include lines.
    concepts = (site / "concepts" / "index.html").read_text()
    assert "list_keys" in concepts and "fetch_page" in concepts
    for page in pages - {"contributing-docs"}:  # (that one shows the notation)
        html = (site / ("" if page == "index" else page) / "index.html").read_text()
        assert "--8&lt;--" not in html and "--8<--" not in html, f"{page}: an include was left"
