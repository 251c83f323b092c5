"""A delta install writes the payload once (issue #27 item 3): every member of the full result
goes straight into the install's staging folder, hashed as it is written; no rebuilt bundle
file is staged and then staged again."""

import json
import os
import signal
from pathlib import Path
from typing import Dict

from tests.bundles import cli
from tests.test_delta import AIRGAP, _comparable, _fresh, _header
from tests.test_delta import world as world  # noqa: F401  (the module fixture)


def _bytes_under(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(folder)
               for n in names)


def test_delta_stages_the_payload_once(world: Dict[str, object],  # noqa: F811
                                       tmp_path: Path) -> None:
    root = _fresh(world, tmp_path)
    r = cli("install", world["delta"], "--root", root, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": "after-staging"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    m = _header(world["b"]["2.0.0"]).manifest  # type: ignore[index]
    staged = _bytes_under(root / AIRGAP / "staging")
    # the payload and its envelope once; the old path also held a rebuilt bundle file
    assert m.payload_size <= staged <= m.payload_size + 64 * 1024, (staged, m.payload_size)
    assert len(os.listdir(root / AIRGAP / "staging")) == 1
    assert cli("recover", "--root", root).returncode == 0
    again = cli("install", world["delta"], "--root", root, "--skip-start", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["delta"]["reused_bytes"] > 0
    assert _comparable(root) == _comparable(world["ref"])  # type: ignore[arg-type]


def test_a_damaged_delta_member_is_refused_naming_the_delta(world: Dict[str, object],  # noqa: F811
                                                            tmp_path: Path) -> None:
    root = _fresh(world, tmp_path)
    data = bytearray(Path(str(world["delta"])).read_bytes())
    data[-4096 - 10240] ^= 1  # inside the last carried member's data
    bad = tmp_path / "bad.delta.tar"
    bad.write_bytes(bytes(data))
    before = _comparable(root)
    r = cli("install", bad, "--root", root, "--skip-start")
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "delta member" in r.stderr and "the delta is damaged" in r.stderr, r.stderr
    assert _comparable(root) == before
    assert os.listdir(root / AIRGAP / "staging") == []
