"""Key directories: init, rotation, chains checked by our verifier and by python-tuf."""

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import List

import pytest
from click.testing import CliRunner
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from bundler import keys
from bundler.cli.keys import keys as keys_group
from bundler.errors import SpecError
from installer.errors import SignatureError
from installer.format import canonjson
from installer.trust import rootmeta

NOW = 1_800_000_000
DAY = 86400
MANIFEST = canonjson.encode({"arch": "arm64", "files": [], "version": "v1.31.4+k3s1"})


def _python_tuf_accepts(chain: List[bytes], now: int) -> int:
    tms = TrustedMetadataSet(chain[0], EnvelopeType.METADATA)
    tms.reference_time = datetime.fromtimestamp(now, UTC)
    for data in chain[1:]:
        tms.update_root(data)
    assert not tms.root.is_expired(tms.reference_time)
    return tms.root.version


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_root_v1_and_private_keys(tmp_path: Path) -> None:
    d = tmp_path / "k"
    report = keys.init_keys(d, root_keys=3, root_threshold=2, targets_keys=2,
                            targets_threshold=2, now=NOW, expires_days=30)
    assert report.root_version == 1
    assert report.expires == "2027-02-14T08:00:00Z"
    assert (d / "root.json").read_bytes() == (d / "roots" / "1.root.json").read_bytes()
    pems = sorted(p.name for p in (d / "keys").glob("*.pem"))
    assert pems == ["root-1.pem", "root-2.pem", "root-3.pem", "snapshot-1.pem",
                    "targets-1.pem", "targets-2.pem", "timestamp-1.pem"]
    for pem in (d / "keys").glob("*.pem"):
        assert _mode(pem) == 0o600, pem
        assert b"BEGIN PRIVATE KEY" in pem.read_bytes()
    assert _mode(d / "keys") == 0o700
    root = rootmeta.load_trusted_root((d / "root.json").read_bytes())
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    assert root.roles["targets"].threshold == 2
    assert report.roles["targets"]["threshold"] == 2


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "k"
    keys.init_keys(d, now=NOW)
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    with pytest.raises(SpecError, match="refusing to overwrite"):
        keys.init_keys(d, now=NOW)
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("kwargs,match", [
    ({"root_keys": 1, "root_threshold": 2}, "threshold must be between 1 and the 1"),
    ({"targets_keys": 0}, "at least one key"),
    ({"expires_days": 0}, "at least 1 day"),
])
def test_init_rejects_bad_counts(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        keys.init_keys(tmp_path / "k", now=NOW, **kwargs)
    assert not (tmp_path / "k").exists()


def test_rotate_targets_then_root_chain_verifies_everywhere(tmp_path: Path) -> None:
    d = tmp_path / "k"
    keys.init_keys(d, root_keys=2, root_threshold=2, now=NOW)
    old_targets = rootmeta.parse_root((d / "root.json").read_bytes()).roles["targets"].keyids
    signed_by_old = keys.sign_manifest(d, MANIFEST)

    r2 = keys.rotate(d, role="targets", new_keys=2, threshold=2, now=NOW + DAY)
    assert r2.root_version == 2 and (d / "keys" / "targets-3.pem").exists()
    r3 = keys.rotate(d, role="root", new_keys=3, threshold=2, now=NOW + 2 * DAY)
    assert r3.root_version == 3

    chain = keys.root_chain(d)
    assert [rootmeta.parse_root(c).version for c in chain] == [1, 2, 3]
    assert chain[-1] == (d / "root.json").read_bytes()
    v3 = rootmeta.parse_root(chain[2])
    assert set(v3.roles["targets"].keyids).isdisjoint(old_targets)
    assert v3.roles["targets"].threshold == 2 and v3.roles["root"].threshold == 2
    assert set(v3.roles["root"].keyids).isdisjoint(
        rootmeta.parse_root(chain[1]).roles["root"].keyids)

    # our verifier and python-tuf both walk 1 -> 2 -> 3
    assert rootmeta.advance_root(chain[0], chain, NOW + 3 * DAY).version == 3
    assert _python_tuf_accepts(chain, NOW + 3 * DAY) == 3

    # a manifest signed with the new targets keys verifies against a device still on v1;
    # the old targets keys no longer count
    signed_by_new = keys.sign_manifest(d, MANIFEST)
    assert len(json.loads(signed_by_new)["signatures"]) == 2
    assert rootmeta.verify_signed_manifest(chain[0], chain, MANIFEST, signatures_doc=signed_by_new,
                                        now=NOW + 3 * DAY).version == 3
    with pytest.raises(SignatureError, match="targets"):
        rootmeta.verify_signed_manifest(chain[0], chain, MANIFEST, signatures_doc=signed_by_old,
                                     now=NOW + 3 * DAY)


def test_rotate_needs_the_old_root_keys(tmp_path: Path) -> None:
    d = tmp_path / "k"
    keys.init_keys(d, root_keys=2, root_threshold=2, now=NOW)
    (d / "keys" / "root-2.pem").rename(tmp_path / "offline-root-2.pem")
    (d / "keys" / "root-1.pem").rename(tmp_path / "offline-root-1.pem")
    with pytest.raises(SpecError, match=r"root role of root v1 needs 2 key\(s\), found 0"):
        keys.rotate(d, role="targets", now=NOW)
    (tmp_path / "offline-root-1.pem").rename(d / "keys" / "root-1.pem")
    staged = keys.rotate(d, role="targets", now=NOW)  # 1 of 2: staged, not root.json
    assert staged.root_version == 1 and staged.staged is not None
    assert not (d / "roots" / "2.root.json").exists()
    (tmp_path / "offline-root-2.pem").rename(d / "keys" / "root-2.pem")
    assert keys.sign_root(d, keys_from=d).root_version == 2


def test_rotate_threshold_above_key_count(tmp_path: Path) -> None:
    d = tmp_path / "k"
    keys.init_keys(d, now=NOW)
    with pytest.raises(SpecError, match="threshold"):
        keys.rotate(d, role="targets", new_keys=1, threshold=2, now=NOW)
    with pytest.raises(SpecError, match="unknown role"):
        keys.rotate(d, role="ring-canary", now=NOW)


def test_encrypted_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "k"
    monkeypatch.setenv("AIRGAP_TEST_PASSPHRASE", "correct horse battery staple")
    keys.init_keys(d, passphrase_env="AIRGAP_TEST_PASSPHRASE", now=NOW)
    for pem in (d / "keys").glob("*.pem"):
        assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem.read_bytes()
        assert _mode(pem) == 0o600
    assert keys.sign_manifest(d, MANIFEST)

    monkeypatch.delenv("AIRGAP_TEST_PASSPHRASE")
    with pytest.raises(SpecError, match="AIRGAP_TEST_PASSPHRASE"):
        keys.sign_manifest(d, MANIFEST)
    with pytest.raises(SpecError, match="AIRGAP_TEST_PASSPHRASE"):
        keys.rotate(d, role="targets", now=NOW)

    monkeypatch.setenv("AIRGAP_TEST_PASSPHRASE", "wrong")
    with pytest.raises(SpecError, match="cannot load private key"):
        keys.sign_manifest(d, MANIFEST)

    monkeypatch.setenv("AIRGAP_TEST_PASSPHRASE", "correct horse battery staple")
    assert keys.rotate(d, role="root", now=NOW).root_version == 2
    assert b"ENCRYPTED" in (d / "keys" / "root-2.pem").read_bytes()
    chain = keys.root_chain(d)
    assert rootmeta.advance_root(chain[0], chain, NOW).version == 2


def test_encrypted_keys_without_configured_variable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "k"
    monkeypatch.setenv("AIRGAP_TEST_PASSPHRASE", "pw")
    keys.init_keys(d, passphrase_env="AIRGAP_TEST_PASSPHRASE", now=NOW)
    (d / keys.KEYRING).write_text('{"passphrase_env": null}\n')
    with pytest.raises(SpecError, match="--passphrase-env"):
        keys.sign_manifest(d, MANIFEST)
    assert keys.sign_manifest(d, MANIFEST, passphrase_env="AIRGAP_TEST_PASSPHRASE")


def test_init_passphrase_variable_must_be_set(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRGAP_UNSET_PASSPHRASE", raising=False)
    with pytest.raises(SpecError, match="AIRGAP_UNSET_PASSPHRASE"):
        keys.init_keys(tmp_path / "k", passphrase_env="AIRGAP_UNSET_PASSPHRASE", now=NOW)


def test_sign_manifest_refuses_non_canonical(tmp_path: Path) -> None:
    keys.init_keys(tmp_path / "k", now=NOW)
    with pytest.raises(SpecError, match="canonical"):
        keys.sign_manifest(tmp_path / "k", b'{"a": 1}')


def test_root_chain_detects_hand_edits(tmp_path: Path) -> None:
    d = tmp_path / "k"
    keys.init_keys(d, now=NOW)
    keys.rotate(d, role="snapshot", now=NOW)
    (d / "roots" / "2.root.json").write_bytes((d / "roots" / "1.root.json").read_bytes())
    with pytest.raises(SpecError, match="differs from root.json"):
        keys.root_chain(d)
    (d / "roots" / "1.root.json").unlink()
    with pytest.raises(SpecError, match="1.root.json does not exist"):
        keys.root_chain(d)


def test_cli_init_and_rotate(tmp_path: Path) -> None:
    d = tmp_path / "k"
    runner = CliRunner()
    result = runner.invoke(keys_group, ["init", str(d), "--root-keys", "2", "--root-threshold",
                                        "2", "--targets-keys", "2", "--expires-days", "90"])
    assert result.exit_code == 0, result.output
    assert f"wrote {d / 'keys' / 'root-1.pem'} (private key, mode 0600)" in result.output
    assert "root.json is version 1" in result.output
    assert "root: threshold 2 of 2 key(s)" in result.output

    result = runner.invoke(keys_group, ["rotate", str(d), "--role", "targets", "--keys", "3",
                                        "--threshold", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stderr carries the unencrypted-keys warning
    assert "NOT encrypted" in result.stderr
    assert report["root_version"] == 2
    assert report["roles"]["targets"]["threshold"] == 2
    assert len(report["roles"]["targets"]["keyids"]) == 3
    assert str(d / "roots" / "2.root.json") in report["written"]

    result = runner.invoke(keys_group, ["init", str(d)])
    assert isinstance(result.exception, SpecError)  # the main CLI maps it to exit code 2
