"""One validation on write and read (issue 9): every manifest name is either refused when the
spec is locked (naming the file and what to rename) or built into a bundle that the installer
installs; never built and then refused by devices.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bundler.errors import SpecError
from bundler.lock.resolve import local_files
from bundler.spec.spec import load_spec
from installer.errors import InstallerError
from installer.format import bundlefmt
from tests.bundles import KeyDir, cli, default_spec, manifest_for, write_spec
from tests.cli_helpers import bundle
from tests.test_spec_paths import POD, _spec, _write

# (file name, accepted?)
NAMES: list[tuple[str, bool]] = [
    ("plain.yaml", True),
    ("UPPER.YAML", True),
    ("a+b_c-1.0.yml", True),
    ("x" * 196 + ".yaml", True),            # 201 characters: the longest a member may have
    ("x" * 197 + ".yaml", False),           # 202
    ("my app.yaml", False),                 # a space
    ("tab\tname.yaml", False),
    ("café.yaml", False),                   # Unicode (NFC/NFD forms differ across systems)
    ("name\u200b.yaml", False),             # zero-width space
    ("\u0430pp.yaml", False),               # Cyrillic a: looks like app.yaml
    ("helmchart-demo.yaml", False),         # the generated HelmChart's name pattern
    ("HelmChart-Other.yml", False),         # also when the case differs
    (".hidden.yaml", False),                # dot-files are not members
    ("semi;colon.yaml", False),
    ("quote'.yaml", False),
]


def _lock_side(tmp_path: Path, name: str) -> SpecError | None:
    proj = tmp_path / "proj"
    _write(proj / "manifests" / name, POD)
    spec = load_spec(_spec(proj, manifests=[f"manifests/{name}"]))
    try:
        local_files(spec, spec.bundles["demo"])
    except SpecError as e:
        return e
    return None


@pytest.mark.parametrize("name,accepted", NAMES, ids=[repr(n[:30]) for n, _ in NAMES])
def test_lock_time_name_rules_match_the_format(name: str, accepted: bool,
                                               tmp_path: Path) -> None:
    error = _lock_side(tmp_path, name)
    member = bundlefmt.Member(f"manifests/{name}", 1, "0" * 64, 0o644, "manifest")
    spec = default_spec()
    written = io.BytesIO()
    try:
        bundlefmt.write_bundle(written, manifest=manifest_for(spec, [
            bundlefmt.Member("k3s/k3s", 1, "0" * 64, 0o755, "k3s-binary"),
            bundlefmt.Member("k3s/install.sh", 1, "0" * 64, 0o755, "install-script"), member]),
            signatures=bundlefmt.unsigned_signatures(), roots=[],
            open_member=lambda m: io.BytesIO(b"x"))
        writer_refused = False
    except InstallerError:
        writer_refused = True
    if accepted:
        assert error is None, error
        assert not writer_refused
    else:
        assert error is not None, f"{name!r} passed the lock-time rules"
        assert "rename" in str(error) and repr(name)[1:-1] in str(error) or name in str(error)
        # the writer's own check refuses whatever slips past a builder (nothing written)
        if not name.lower().startswith("helmchart-"):
            assert writer_refused and written.getvalue() == b""


def test_accepted_names_install(tmp_path: Path) -> None:
    """Every name the lock accepts installs for real (one bundle holding all of them)."""
    keydir = KeyDir(tmp_path / "keys")
    names = [n for n, ok in NAMES if ok]
    spec = default_spec(manifests={n: f"# {n}\n{POD}".encode() for n in names})
    path = write_spec(spec, keydir, tmp_path)
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    r = cli("install", path, "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    placed = root / "var/lib/rancher/k3s/server/manifests"
    for n in names:
        assert (placed / n).read_bytes().startswith(f"# {n}\n".encode())


def test_case_folded_collision_refused_at_lock(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    _write(proj / "manifests" / "a" / "App.yaml", POD)
    _write(proj / "manifests" / "b" / "app.yaml", POD)
    spec = load_spec(_spec(proj, manifests=["manifests/**/*.yaml"]))
    with pytest.raises(SpecError, match="case-insensitively"):
        local_files(spec, spec.bundles["demo"])


def test_bundle_lock_names_the_file_to_rename(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    proj = tmp_path / "proj"
    _write(proj / "manifests" / "my app.yaml", POD)
    _write(proj / "manifests" / "helmchart-x.yaml", POD)
    for pattern, needle in (("manifests/my*.yaml", "manifests/my app.yaml"),
                            ("manifests/helm*.yaml", "reserved")):
        spec = _spec(proj, manifests=[pattern])
        for cmd in ("lock", "check"):
            r = bundle(capsys, "--spec", str(spec), "-q", cmd, "--cache", str(tmp_path / "c"))
            if cmd == "check":  # no lock yet: the spec's files are still checked first
                assert r.code == 2 and needle in r.err, r.err
                continue
            assert r.code == 2 and needle in r.err and "rename" in r.err, r.err
            assert "Traceback" not in r.err


def test_inspect_and_verify_warn_about_secret_looking_members(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keydir = KeyDir(tmp_path / "keys")
    spec = default_spec(manifests={"a.yaml": POD.encode(), "targets-1.pem": b"not really"})
    path = write_spec(spec, keydir, tmp_path)
    r = bundle(capsys, "inspect", str(path))
    assert r.code == 0 and "manifests/targets-1.pem looks like a secret" in r.err
    assert "a.yaml looks like" not in r.err
    r = bundle(capsys, "verify", str(path), "--trust", str(keydir.root_json))
    assert r.code == 0 and "manifests/targets-1.pem looks like a secret" in r.err
