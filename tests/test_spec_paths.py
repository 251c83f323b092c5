"""Spec paths and names (THREATS 37; issue 16 items 1 and 4, issue 9 "validated on write",
issue 10 defect 3): what a spec may pull from the host into a bundle, and what it may call it.

The refusals happen before any network traffic: the specs here point at a dead loopback port,
so an error that came later would show up as exit 5 instead of 2.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler import keys
from bundler.errors import SpecError
from bundler.lock.resolve import chart_values, local_files
from bundler.spec.spec import load_spec
from tests.cli_helpers import bundle

DEAD = "http://127.0.0.1:9"
PEM_KEY = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHRlc3Qta2V5LW5vdC1yZWFsLWF0LWFsbC0w"
           "MDAwMA==\n-----END PRIVATE KEY-----\n")
SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
POD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n"


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + i.replace("\\", "\\\\") + '"' for i in items) + "]"


def _spec(folder: Path, *, manifests: list[str], extra: str = "", chart: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundles.toml").write_text(
        f'[k3s]\nreleases = "{DEAD}/releases"\ninstall_script = "{DEAD}/install.sh"\n'
        f'[registries."docker.io"]\nendpoint = "{DEAD}"\n'
        f"{extra}\n"
        f'[bundles.demo]\nversion = "1.0.0"\narch = ["amd64"]\nk3s = "v1.34.3+k3s1"\n'
        f"images = []\nmanifests = {_toml_list(manifests)}\n{chart}")
    return folder / "bundles.toml"


def _chart(**kw: str) -> str:
    table = {"name": "demo-app", "repo": f"{DEAD}/charts", "version": "0.1.0", **kw}
    return "[[bundles.demo.charts]]\n" + "".join(
        f"{k} = {v if v.startswith('[') else chr(34) + v + chr(34)}\n" for k, v in table.items())


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _lock(capsys: pytest.CaptureFixture[str], spec: Path) -> tuple[int, str]:
    r = bundle(capsys, "--spec", str(spec), "-q", "lock", "--cache",
               str(spec.parent.parent / "cache"))
    assert "Traceback" not in r.err
    return r.code, r.err


def _no_key_anywhere(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            data = (Path(dirpath) / name).read_bytes()
            assert b"PRIVATE KEY" not in data, Path(dirpath) / name


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    keys.init_keys(path)
    return path


# -- THREATS 37: paths that reach outside the spec folder or into key material -------------

def _outside_glob(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "a.yaml", POD)
    _write(proj.parent / "outside" / "b.yaml", POD)
    return _spec(proj, manifests=["manifests/*.yaml", "../outside/*.yaml"])


def _keys_glob(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "a.yaml", POD)
    rel = os.path.relpath(keydir / "keys", proj)
    return _spec(proj, manifests=["manifests/*.yaml", f"{rel}/*.pem"])


def _keys_inside_project(proj: Path, keydir: Path) -> Path:
    shutil.copytree(keydir, proj / "keys")
    _write(proj / "manifests" / "a.yaml", POD)
    return _spec(proj, manifests=["manifests/*.yaml", "keys/keys/*.pem"])


def _symlink_to_key(proj: Path, keydir: Path) -> Path:
    shutil.copytree(keydir, proj / "keys")
    _write(proj / "manifests" / "a.yaml", POD)
    pem = sorted((proj / "keys" / "keys").glob("targets-*.pem"))[0]
    (proj / "manifests" / "zz.yaml").symlink_to(pem)
    return _spec(proj, manifests=["manifests/*.yaml"])


def _symlink_outside(proj: Path, keydir: Path) -> Path:
    _write(proj.parent / "elsewhere.yaml", POD)
    (proj / "manifests").mkdir(parents=True)
    (proj / "manifests" / "zz.yaml").symlink_to(proj.parent / "elsewhere.yaml")
    return _spec(proj, manifests=["manifests/*.yaml"])


def _root_json_in_keydir(proj: Path, keydir: Path) -> Path:
    shutil.copytree(keydir, proj / "keys")
    _write(proj / "manifests" / "a.yaml", POD)
    return _spec(proj, manifests=["manifests/*.yaml", "keys/root.json"])


def _pem_in_manifest(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "tls.yaml",
           "apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\nstringData:\n  tls.key: |\n" +
           "".join(f"    {line}\n" for line in PEM_KEY.splitlines()))
    return _spec(proj, manifests=["manifests/*.yaml"])


def _ssh_key_as_values(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "a.yaml", POD)
    _write(proj / "values" / "v.yaml", "key: |\n" + "".join(
        f"  {line}\n" for line in SSH_KEY.splitlines()))
    return _spec(proj, manifests=["manifests/*.yaml"],
                 chart=_chart(values='["values/v.yaml"]'))


def _values_outside(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "a.yaml", POD)
    _write(proj.parent / "v.yaml", "a: 1\n")
    return _spec(proj, manifests=["manifests/*.yaml"], chart=_chart(values='["../v.yaml"]'))


def _ca_with_key(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "a.yaml", POD)
    _write(proj / "ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
           + PEM_KEY)
    return _spec(proj, manifests=["manifests/*.yaml"],
                 extra=f'[registries."quay.io"]\nendpoint = "{DEAD}"\nca_file = "ca.pem"\n')


def _ca_outside(proj: Path, keydir: Path) -> Path:
    _write(proj / "manifests" / "a.yaml", POD)
    _write(proj.parent / "ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n")
    return _spec(proj, manifests=["manifests/*.yaml"],
                 extra=f'[registries."quay.io"]\nendpoint = "{DEAD}"\nca_file = "../ca.pem"\n')


def _absolute_outside(proj: Path, keydir: Path) -> Path:
    other = _write(proj.parent / "other" / "b.yaml", POD)
    return _spec(proj, manifests=[str(other)])


def _absolute_glob_outside(proj: Path, keydir: Path) -> Path:
    _write(proj.parent / "other" / "b.yaml", POD)
    return _spec(proj, manifests=[str(proj.parent / "other" / "*.yaml")])


def _key_in_extra_root(proj: Path, keydir: Path) -> Path:
    shared = proj.parent / "shared"
    _write(shared / "a.yaml", POD)
    _write(shared / "b.yaml", PEM_KEY)
    return _spec(proj, manifests=["../shared/*.yaml"],
                 extra='[files]\nextra_roots = ["../shared"]\n')


REFUSED: list[tuple[str, Callable[[Path, Path], Path], str]] = [
    ("glob outside the spec folder", _outside_glob, "outside the spec folder"),
    ("glob into the bundler's keys folder", _keys_glob, "outside the spec folder"),
    ("keys folder inside the project", _keys_inside_project, "inside the key folder"),
    ("symlink to a private key", _symlink_to_key, "inside the key folder"),
    ("symlink out of the tree", _symlink_outside, "outside the spec folder"),
    ("root.json of a key folder", _root_json_in_keydir, "inside the key folder"),
    ("PEM private key in a manifest", _pem_in_manifest, "private key material"),
    ("OpenSSH key as a values file", _ssh_key_as_values, "private key material"),
    ("values file outside", _values_outside, "outside the spec folder"),
    ("CA file holding a key", _ca_with_key, "private key material"),
    ("CA file outside", _ca_outside, "outside the spec folder"),
    ("absolute manifest path outside", _absolute_outside, "outside the spec folder"),
    ("absolute glob outside", _absolute_glob_outside, "outside the spec folder"),
    ("key material in an allowed extra root", _key_in_extra_root, "private key material"),
]


@pytest.mark.parametrize("make,expect", [(m, e) for _, m, e in REFUSED],
                         ids=[name for name, _, _ in REFUSED])
def test_spec_paths_outside_or_into_keys_are_refused(
        make: Callable[[Path, Path], Path], expect: str, keydir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = make(tmp_path / "proj", keydir)
    code, err = _lock(capsys, spec)
    assert code == 2, err
    assert expect in err and str(spec) in err
    assert not (spec.parent / "bundles.lock").exists()
    _no_key_anywhere(tmp_path / "cache") if (tmp_path / "cache").exists() else None


def test_absolute_paths_inside_the_spec_folder_are_accepted(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    m = _write(proj / "manifests" / "a.yaml", POD)
    v = _write(proj / "values" / "v.yaml", "a: 1\n")
    shared = _write(tmp_path / "shared" / "s.yaml", POD)
    spec = load_spec(_spec(proj, manifests=[str(m), "../shared/*.yaml"],
                           extra='[files]\nextra_roots = ["../shared"]\n',
                           chart=_chart(values=f'["{v}"]')))
    pinned = local_files(spec, spec.bundles["demo"])
    assert sorted(f.url for f in pinned) == sorted([m.as_posix(), "../shared/s.yaml"])
    assert [f.url for f in chart_values(spec.bundles["demo"].charts[0])] == [v.as_posix()]
    assert shared.read_text() == POD


def test_symlink_inside_the_tree_is_followed(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    target = _write(proj / "base" / "real.yaml", POD)
    (proj / "manifests").mkdir()
    (proj / "manifests" / "link.yaml").symlink_to(target)
    spec = load_spec(_spec(proj, manifests=["manifests/*.yaml"]))
    [pinned] = local_files(spec, spec.bundles["demo"])
    assert pinned.url == "manifests/link.yaml" and pinned.size == len(POD)


# -- issue 16 item 4: chart name and version are member paths ------------------------------

BAD_CHARTS = [
    ({"name": "../../../x"}, "name"),
    ({"name": "a/b"}, "name"),
    ({"version": "1.0.0/../../../x"}, "version"),
    ({"version": "../1"}, "version"),
    ({"version": "1.0 beta"}, "version"),
    ({"release": "Bad_Release"}, "release"),
    ({"namespace": "kube system"}, "namespace"),
    ({"name": "a" * 101, "release": "x"}, "name"),
    ({"name": "café"}, "name"),
]


@pytest.mark.parametrize("fields,key", BAD_CHARTS, ids=[str(f) for f, _ in BAD_CHARTS])
def test_chart_names_and_versions_validated_at_load(fields: dict[str, str], key: str,
                                                    tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    _write(proj / "manifests" / "a.yaml", POD)
    with pytest.raises(SpecError) as e:
        load_spec(_spec(proj, manifests=["manifests/*.yaml"], chart=_chart(**fields)))
    assert key in str(e.value) and "charts[0]" in str(e.value)


def test_two_charts_with_one_release_refused(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    _write(proj / "manifests" / "a.yaml", POD)
    with pytest.raises(SpecError, match="used by charts"):
        load_spec(_spec(proj, manifests=["manifests/*.yaml"],
                        chart=_chart() + _chart(name="other", release="demo-app")))
