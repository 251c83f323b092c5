"""The installer CLI prints what its command returns, in both forms: ``--json`` output of a
real scenario (trust, verify, install, again, status, reconfigure, install over, rollback,
recover, receipt, damage + status --verify + repair, a delta, a ring sync) must stay what it
was when the commands returned dicts (tests/golden/installer_cli.json was recorded from that
code, before installer/commands/results.py took over), and so must the text lines. Key
material is random per run: digests, fingerprints, device ids, times and the temporary
folder are masked; everything else (every key, every other value, exit codes) is compared."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from bundler.assemble.delta import load_base, write_delta
from installer.cli import main
from tests.bundles import KeyDir, default_spec, write_spec
from tests.cli_helpers import bundle

GOLDEN = Path(__file__).resolve().parent / "golden" / "installer_cli.json"
TIME_KEYS = "installed_at|last_sync|at|expires"


def _mask(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "TMP")
    text = re.sub(r'("hostname": )"[^"]*"', r'\1"HOST"', text)  # the machine's own name
    text = re.sub(r"\(" + re.escape(socket.gethostname()) + r"\)", "(HOST)", text)
    text = re.sub(rf'("({TIME_KEYS})": )\d+', r"\1N", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    return re.sub(r"\b[0-9a-f]{12,64}\b", "HEX", text)


def _scenario(tmp: Path, capfd: pytest.CaptureFixture[str], mode: str) -> List[Any]:
    keys = KeyDir(tmp / "keys")
    b = tmp / "b"
    b.mkdir()
    v1, v2, v3 = (write_spec(default_spec(v), keys, b) for v in ("1.0.0", "2.0.0", "3.0.0"))
    delta, _ = write_delta(v3, load_base(v2))
    root = tmp / "root"
    steps: List[Tuple[str, List[object]]] = [
        ("status-empty", ["status"]),
        ("trust", ["trust", keys.root_json]),
        ("trust-again", ["trust", keys.root_json]),
        ("verify", ["verify", v1]),
        ("install-v1", ["install", v1, "--server", "--skip-start"]),
        ("install-v1-again", ["install", v1]),
        ("status", ["status"]),
        ("reconfigure", ["reconfigure", "--exec", "--disable traefik"]),
        ("reconfigure-same", ["reconfigure", "--exec", "--disable traefik"]),
        ("install-v2", ["install", v2]),
        ("rollback", ["rollback"]),
        ("recover", ["recover"]),
        ("install-v2-again", ["install", v2]),
        ("receipt", ["receipt", "--out", tmp / "receipt.json"]),
        ("damage", []),
        ("status-verify", ["status", "--verify"]),
        ("repair", ["install", v2]),
        ("install-delta", ["install", delta]),
        ("missing", ["install", tmp / "nope.tar"]),
    ]
    out: List[Any] = []
    flag = ["--json"] if mode == "json" else []
    for name, args in steps:
        if name == "damage":
            (root / "usr/local/bin/k3s").write_bytes(b"damaged")
            continue
        capfd.readouterr()
        code = main([str(a) for a in args] + ["--root", str(root)] + flag)
        out.append([name, code, _mask(capfd.readouterr().out, tmp)])
    repo = tmp / "rings"
    for args in (["repo", "init", repo, "--keys", keys.path],
                 ["publish", v1, "--repo", repo, "--ring", "canary", "--keys", keys.path]):
        assert bundle(capfd, *map(str, args)).code == 0
    dev = tmp / "dev"
    sync = ["sync", "--source", repo, "--root", dev, "--arch", "amd64", "--health-cmd", "true"]
    for name, args in [("trust-ring", ["trust", repo / "metadata/1.root.json", "--root", dev,
                                       "--ring", "canary"]),
                       ("sync", sync + ["--server", "--skip-start"]),
                       ("sync-again", sync)]:
        capfd.readouterr()
        code = main([str(a) for a in args] + flag)
        out.append([name, code, _mask(capfd.readouterr().out, tmp)])
    return out


@pytest.mark.parametrize("mode", ["json", "text"])
def test_outputs_match_the_recorded_ones(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                         mode: str) -> None:
    got = _scenario(tmp_path, capfd, mode)
    if os.environ.get("REGENERATE_GOLDEN"):
        doc = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        doc[mode] = got
        GOLDEN.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())[mode]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g[2] == w[2], g[0]
