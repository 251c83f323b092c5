"""K3s configuration a bundle carries (bundler/spec/k3sconfig.py): checked at `bundle lock` and
`check` against K3s's flags, built as signed members, placed by `airgap-install` as the
config.yaml.d drop-in and registries.yaml, rolled back with the release, shown by `inspect`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.bundles import cli
from tests.cli_helpers import Result, bundle
from tests.world import World

CONFIG = """
[bundles.demo.k3s_config]
disable = ["traefik"]
tls-san = ["10.20.0.10"]
"node-label+" = ["site=north"]
write-kubeconfig-mode = "0644"
disable-default-registry-endpoint = true

[bundles.demo.mirrors."docker.io"]
endpoint = ["https://registry.site.local:5000"]
ca_file = "/etc/ssl/site-ca.pem"
"""
# exactly what the device gets (yaml.dump, deterministic: sorted keys, strings double-quoted)
DROPIN = b"""\
# K3s configuration of bundle demo ([bundles.demo.k3s_config]), placed by airgap-install.
# Replaced or removed with the bundle: put your own settings in config.yaml or another drop-in.
"disable":
- "traefik"
"disable-default-registry-endpoint": true
"node-label+":
- "site=north"
"tls-san":
- "10.20.0.10"
"write-kubeconfig-mode": "0644"
"""
REGISTRIES = b"""\
# K3s registries of bundle demo ([bundles.demo.mirrors]), placed by airgap-install.
# The bundle owns this file; a hand-written one found here is kept as registries.yaml.airgap-backup.
"configs":
  "registry.site.local:5000":
    "tls":
      "ca_file": "/etc/ssl/site-ca.pem"
"mirrors":
  "docker.io":
    "endpoint":
    - "https://registry.site.local:5000"
"""
DROPIN_PATH = "etc/rancher/k3s/config.yaml.d/50-airgap-bundle.yaml"
REGISTRIES_PATH = "etc/rancher/k3s/registries.yaml"
KEPT_PATH = "etc/rancher/k3s/registries.yaml.airgap-backup"


def _project(tmp_path: Path, world: World, *, version: str = "1.0.0", extra: str = "") -> Path:
    folder = tmp_path / "proj"
    # no app images or manifests: the bundle is K3s, its airgap images and the configuration
    world.write_spec(folder, arch=("amd64",), bundle_images=(), manifests=(), charts=[],
                     version=version, extra=extra)
    return folder


def _b(capsys: pytest.CaptureFixture[str], folder: Path, *args: str) -> Result:
    cmd, *rest = args
    cache = ["--cache", str(folder / "cache")] if cmd in ("lock", "build", "check") else []
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", cmd, *cache, *rest)


@pytest.mark.parametrize("extra,key,said", [
    ('[bundles.demo.k3s_config]\ndisabel = ["traefik"]\n', "bundles.demo.k3s_config.disabel",
     "did you mean 'disable'?"),
    ('[bundles.demo.k3s_config]\n"tls-sans+" = ["a"]\n', "k3s_config.tls-sans+",
     "did you mean 'tls-san'?"),
    ('[bundles.demo.k3s_config]\ntoken = "s3cret"\n', "k3s_config.token", "'token-file'"),
    ('[bundles.demo.k3s_config]\nnode-label = [{a = 1}]\n', "node-label[0]", "must be a string"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["registry.site.local:5000"]\n',
     "endpoint[0]", "is not an http(s):// registry URL"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = []\n', "endpoint",
     "must be a non-empty list"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r"]\nca_file = "ca.pem"\n',
     "ca_file", "must be an absolute path"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r"]\nauth_file = "/etc/a"\n',
     "auth_file", "no credentials-file"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoints = ["https://r"]\n', "endpoints",
     "did you mean 'endpoint'?"),
    ('[bundles.demo.mirrors."Docker IO"]\nendpoint = ["https://r"]\n', "mirrors",
     "is not a registry host"),
])
def test_lock_and_check_refuse_bad_config(world: World, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], extra: str,
                                          key: str, said: str) -> None:
    folder = _project(tmp_path, world, extra=extra)
    for cmd in ("lock", "check"):
        r = _b(capsys, folder, cmd)
        assert r.code == 2, (cmd, r.code, r.err)
        assert key in r.err and said in r.err, r.err
        assert "Traceback" not in r.err
    assert not (folder / "bundles.lock").exists()


def test_config_for_a_minor_without_a_key_table_is_refused(world: World, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    folder = tmp_path / "proj"
    world.write_spec(folder, arch=("amd64",), bundle_images=(), manifests=(), charts=[],
                     k3s="v1.20.4+k3s1", extra='[bundles.demo.k3s_config]\ndisable = ["a"]\n')
    r = _b(capsys, folder, "lock")
    assert r.code == 2 and "no table of K3s config keys is kept for v1.20.4+k3s1" in r.err, r.err


def _status(root: Path) -> dict[str, Any]:
    r = cli("status", "--root", root, "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_build_install_places_config_and_rollback_restores(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert bundle(capsys, "keys", "init", str(keys)).code == 0
    dist = tmp_path / "dist"
    built = {}
    for version, extra in (("1.0.0", ""), ("1.1.0", CONFIG)):
        folder = _project(tmp_path, world, version=version, extra=extra)
        assert _b(capsys, folder, "lock").code == 0
        r = _b(capsys, folder, "build", "--arch", "amd64", "--out", str(dist), "--keys",
               str(keys))
        assert r.code == 0, r.err
        built[version] = dist / f"demo-{version}-amd64.tar"

    # inspect shows what the bundle carries, in text and JSON
    r = bundle(capsys, "inspect", str(built["1.1.0"]))
    assert r.code == 0, r.err
    assert "k3s config drop-in -> /" + DROPIN_PATH in r.out
    assert '    "registry.site.local:5000":' in r.out and '    - "traefik"' in r.out
    doc = json.loads(bundle(capsys, "inspect", str(built["1.1.0"]), "--json").out)
    assert {c["target"]: c["text"].encode() for c in doc["k3s_config"]} == {
        "/" + DROPIN_PATH: DROPIN, "/" + REGISTRIES_PATH: REGISTRIES}
    assert {m["path"]: m["kind"] for m in doc["members"]
            if m["path"].startswith("config/")} == {
        "config/50-airgap-bundle.yaml": "k3s-config", "config/registries.yaml": "registries"}
    plain = json.loads(bundle(capsys, "inspect", str(built["1.0.0"]), "--json").out)
    assert plain["k3s_config"] == []

    root = tmp_path / "root"
    assert cli("trust", keys / "root.json", "--root", root).returncode == 0
    p = cli("install", built["1.0.0"], "--root", root, "--arch", "amd64", "--server",
            "--skip-start")
    assert p.returncode == 0, p.stderr
    assert not (root / DROPIN_PATH).exists() and not (root / REGISTRIES_PATH).exists()
    # the operator's own files
    own_config = b"# operator\nnode-name: north-1\n"
    hand_written = b"mirrors:\n  quay.io:\n    endpoint: [\"https://old.site\"]\n"
    (root / "etc/rancher/k3s").mkdir(parents=True, exist_ok=True)
    (root / "etc/rancher/k3s/config.yaml").write_bytes(own_config)
    (root / REGISTRIES_PATH).write_bytes(hand_written)

    p = cli("install", built["1.1.0"], "--root", root, "--arch", "amd64")
    assert p.returncode == 0, p.stderr
    assert (root / DROPIN_PATH).read_bytes() == DROPIN
    assert (root / REGISTRIES_PATH).read_bytes() == REGISTRIES
    assert (root / KEPT_PATH).read_bytes() == hand_written
    assert (root / "etc/rancher/k3s/config.yaml").read_bytes() == own_config
    assert f"kept the hand-written /{REGISTRIES_PATH} as /{KEPT_PATH}" in p.stderr, p.stderr
    status = _status(root)
    assert status["registries_backup"] == str(root / KEPT_PATH)
    # placed files are verified and repaired like every other: a hand edit of the drop-in is
    # found by `status --verify` and undone by installing the same bundle again
    (root / DROPIN_PATH).write_bytes(DROPIN + b"disable-agent: true\n")
    p = cli("status", "--root", root, "--verify", "--json")
    verify = json.loads(p.stdout)["verify"]
    assert not verify["ok"] and DROPIN_PATH in json.dumps(verify["damaged"]), verify
    p = cli("install", built["1.1.0"], "--root", root, "--arch", "amd64")
    assert p.returncode == 0, p.stderr
    assert (root / DROPIN_PATH).read_bytes() == DROPIN
    assert (root / KEPT_PATH).read_bytes() == hand_written

    p = cli("rollback", "--root", root)
    assert p.returncode == 0, p.stderr
    assert not (root / DROPIN_PATH).exists()
    assert (root / REGISTRIES_PATH).read_bytes() == hand_written
    assert not (root / KEPT_PATH).exists()
    assert (root / "etc/rancher/k3s/config.yaml").read_bytes() == own_config
    assert f"put the hand-written /{REGISTRIES_PATH} back" in p.stderr, p.stderr
    assert _status(root)["registries_backup"] is None

    # forward again, and an install.sh that fails: the tree is put back as it was
    before = {p: (root / p).read_bytes() for p in (REGISTRIES_PATH,)}
    p = cli("install", built["1.1.0"], "--root", root, "--arch", "amd64",
            env={"AIRGAP_INSTALL_RECORD": "/nonexistent-dir/record"})
    assert p.returncode != 0
    assert not (root / DROPIN_PATH).exists() and not (root / KEPT_PATH).exists()
    assert {p: (root / p).read_bytes() for p in before} == before
