"""Device report signing (installer/trust/devicekey.py): the pure-Python RFC 8032 signer gives
the RFC's vectors and exactly the signatures of ``cryptography``; the device identity
(installer/host/identity.py) is made once, 0600, and shown by ``status --json``."""

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from installer.host import identity
from installer.host.layout import Layout
from installer.trust import devicekey, ed25519
from tests.test_ed25519 import RFC8032

from .bundles import cli


def test_pure_signer_gives_the_rfc8032_vectors() -> None:
    for v in RFC8032:
        seed, msg = bytes.fromhex(v.secret), bytes.fromhex(v.message)
        assert devicekey.public_key_python(seed).hex() == v.public, v.name
        assert devicekey.sign_python(seed, msg).hex() == v.signature, v.name
        assert devicekey.sign(seed, msg, use="cryptography").hex() == v.signature, v.name
        assert devicekey.public_key(seed, use="cryptography").hex() == v.public, v.name


def test_pure_signer_matches_cryptography_on_random_keys() -> None:
    for i in range(40):
        seed, msg = os.urandom(32), os.urandom(i * 7)
        key = Ed25519PrivateKey.from_private_bytes(seed)
        want = key.sign(msg)
        assert devicekey.sign_python(seed, msg) == want
        public = devicekey.public_key(seed)
        assert public == key.public_key().public_bytes_raw()
        for backend in ("python", "cryptography"):
            assert ed25519.verify(public, want, msg, backend=backend)
        assert not ed25519.verify(public, want, msg + b"x", backend="python")


def test_trust_makes_one_private_identity_and_status_shows_it(tmp_path: Path) -> None:
    from .bundles import KeyDir
    kd = KeyDir(tmp_path / "keys")
    root = tmp_path / "dev"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("gw-7\n")
    p = cli("trust", kd.root_json, "--root", root, "--ring", "canary")
    assert p.returncode == 0, p.stderr
    layout = Layout(str(root))
    key = Path(identity.folder(layout)) / "key.seed"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = identity.load(layout)
    assert first is not None
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["device_id"] == first["device_id"] and st["hostname"] == "gw-7"
    assert st["device_id"] == devicekey.fingerprint(bytes.fromhex(first["public_key"]))
    # a second trust (already pinned) keeps the identity
    assert cli("trust", kd.root_json, "--root", root).returncode == 0
    assert identity.load(layout) == first
    os.chmod(key, 0o644)  # a key readable by others is refused, not used
    p = cli("report", "--root", root, "--out", tmp_path / "r.json")
    assert p.returncode == 2 and "readable by others" in p.stderr


def test_reports_are_signed_in_pure_python_without_cryptography(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from installer.trust import devicereport
    seed = os.urandom(32)
    monkeypatch.setitem(devicekey._cryptography, "loaded", None)  # as on a device without it
    assert devicekey.backend() == "python"
    public = devicekey.public_key(seed)
    signed = {"device_id": devicekey.fingerprint(public), "public_key": public.hex(),
              "sequence": 1, "time": 1, "event": "report", "hostname": "h"}
    data = devicereport.seal(signed, seed)
    monkeypatch.undo()
    assert devicereport.open_report(data, backend="cryptography")["hostname"] == "h"
