"""The README's first command keeps working: the demo runs end to end on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_demo_runs_end_to_end(tmp_path: Path) -> None:
    # PYTHONPATH: the demo's own `python -m bundler` runs (cwd elsewhere) use this tree's code,
    # not whatever copy of the package is installed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "tests.world.demo", "--dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    out = p.stdout
    assert "MISSING from the bundle: 1" in out and "docker.io/library/busybox:1.37" in out
    assert "+ docker.io/library/busybox:1.37 (added by discovery)" in out
    assert "signatures valid (root v1)" in out
    assert "signed for root " in out and "demo-1.0.0-arm64.tar: OK" in out  # sha256sum -c
    assert "NOT encrypted" not in out
    assert "installed: demo 1.0.0 (K3s v1.34.3+k3s1, arm64, server)" in out
    root = tmp_path / "sdcard-root"
    assert (root / "usr/local/bin/k3s").is_file()
    assert [p.name for p in (root / "var/lib/rancher/k3s/agent/images").glob(
        "demo-images-arm64-*.tar")], "the images archive is placed under a content name"
    assert (root / "var/lib/rancher/k3s/server/static/charts/demo-app-0.1.0.tgz").is_file()
    # the demo ends with OTA rings: stable lists nothing until the promotion, then the stable
    # device installs the very bundle canary had (same sha256)
    assert "nothing to install: ring stable lists nothing for arm64 yet" in out
    promoted = out.index("promoted demo-1.0.0-arm64.tar to stable")
    assert out.index("nothing to install: ring stable") < promoted
    assert out.index("installed demo 1.0.0 (ring stable", promoted) > promoted
    status = out[out.rindex("installed: demo 1.0.0"):]
    assert "ring: stable" in status and "last sync:" in status
    assert (tmp_path / "gateway-root/usr/local/bin/k3s").read_bytes() == \
        (root / "usr/local/bin/k3s").read_bytes()
