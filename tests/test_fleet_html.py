"""`bundle fleet status --html`: one static page, rendered by a real headless Chromium
(Debian's `chromium`, installed by .ci/setup), and what it shows is asserted."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .cli_helpers import bundle
from .fleetreports import sealed


def _fleet(folder: Path, now: int) -> None:
    folder.mkdir()
    rows = [("canary-a", "canary", "2.0.0", "failed"), ("canary-b", "canary", "2.0.0", "passed"),
            ("beta-a", "beta", "1.0.0", "passed"), ("stable-a", "stable", "1.0.0", "passed"),
            ("stable-b", "stable", "1.0.0", "passed")]
    for name, ring, version, gate in rows:
        data = sealed(name, ring=ring, version=version, sequence=1,
                      time=now - (20 * 86400 if name == "stable-b" else 60), gate=gate,
                      output="etcd <not> ready" if gate == "failed" else "")
        (folder / f"{name}.json").write_bytes(data)
    (folder / "junk.json").write_text("[]")


def test_status_html_renders_in_headless_chromium(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (.ci/setup installs it)"
    now = int(time.time())
    reports, repo = tmp_path / "reports", tmp_path / "repo"
    repo.mkdir()
    _fleet(reports, now)
    res = bundle(capsys, "fleet", "enroll", "--reports", str(reports), "--repo", str(repo),
                 "--accept-new")
    assert res.code == 0, res.err
    page = tmp_path / "fleet.html"
    res = bundle(capsys, "fleet", "status", "--reports", str(reports), "--repo", str(repo),
                 "--html", str(page), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["totals"]["rejected_by_reason"]["malformed"] == 1
    html = page.read_text()
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    rings = re.findall(r"data-ring=\"(\w+)\"", dom)
    assert sorted(rings) == ["beta", "canary", "stable"]
    canary = dom[dom.index('data-ring="canary"'):]
    canary = canary[:canary.index("</section>")]
    # versions with device counts; the failing device first in its column
    assert re.search(r"2\.0\.0</span>: <span class=\"count\">2</span>", canary)
    assert canary.index("canary-a") < canary.index("canary-b")
    assert 'class="device failing"' in canary and "etcd &lt;not&gt; ready" in canary
    stable = dom[dom.index('data-ring="stable"'):]
    assert re.search(r"device stale\"[^>]*>.*?stable-b", stable)
    assert re.search(r"id=\"rejected\">1 rejected: malformed 1", dom)
    assert "5 devices, 1 failing, 1 stale" in dom
