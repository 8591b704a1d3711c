"""``RUN/report.html`` opened in a real headless Chromium: its tables and images render.

Chromium runs with ``--dump-dom`` on a copy of the report with a small script appended that, on the page's
load event, records what the browser actually rendered (tables with rows, images decoded to a non-zero
size) in a ``<pre id="rendered">`` element; the test reads that element back from the dumped DOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")

PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const tables = [...document.querySelectorAll("table")];
  const out = {
    images: imgs.length,
    images_decoded: imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0).length,
    tables: tables.length,
    tables_with_rows: tables.filter(t => t.querySelectorAll("tbody tr").length > 0 && t.offsetHeight > 0).length,
    sections: [...document.querySelectorAll("h2")].map(h => h.textContent),
    page_height: document.body.scrollHeight,
  };
  const pre = document.createElement("pre");
  pre.id = "rendered";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    # a machine where the Debian package cannot be installed (no root, no apt) must not fail the whole suite:
    # the skip names what is missing and .ci/run prints a warning when its install step fails
    pytest.skip(f"no chromium binary on PATH (tried {', '.join(CANDIDATES)}); `apt-get install -y chromium`")


def _render(html_file: Path, tmp: Path) -> dict:
    browser = _chromium()
    probe = tmp / "probe.html"
    probe.write_text(html_file.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})
    found = re.search(r'<pre id="rendered">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium did not run the probe (exit {proc.returncode}): {proc.stderr[-800:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_report_renders_tables_and_images_in_chromium(tiny_pipeline_run: Path, tmp_path: Path) -> None:
    """Every table of the report renders with rows and every inlined PNG decodes to a visible image."""
    rendered = _render(tiny_pipeline_run / "report.html", tmp_path)
    assert rendered["tables"] >= 5 and rendered["tables_with_rows"] == rendered["tables"], rendered
    assert rendered["images"] >= 2 and rendered["images_decoded"] == rendered["images"], rendered
    for title in ("Dataset", "Semantic IDs", "Training", "Quality", "Reward model", "Alignment", "Example"):
        assert any(title in s for s in rendered["sections"]), f"no rendered section {title!r}: {rendered['sections']}"
