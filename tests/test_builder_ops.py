"""Issue #10, builder side: signing by default, root fingerprints, `--json` errors, arch
aliases and all-arch builds, the bundle SBOM, SHA256SUMS beside the bundles.

Builds run against the loopback world; one locked project and one key folder are shared by
the module (each test builds into its own output folder).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bundler.cli import main
from installer.trust import rootmeta
from tests.cli_helpers import Result, bundle
from tests.world import World

IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
          "docker.io/library/alpine:3.20", "docker.io/library/busybox:1.37")


@dataclass
class Project:
    folder: Path
    keys: Path
    cache: Path

    @property
    def spec(self) -> Path:
        return self.folder / "bundles.toml"


def _silent(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="module")
def project(world: World, tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("ops")
    folder = base / "proj"
    world.write_spec(folder, bundle_images=IMAGES, arch=("amd64", "arm64"))
    p = Project(folder, base / "keys", base / "cache")
    assert _silent("keys", "init", str(p.keys)) == 0
    assert _silent("--spec", str(p.spec), "-q", "lock", "--cache", str(p.cache)) == 0
    return p


def _b(capsys: pytest.CaptureFixture[str], p: Project, *args: str) -> Result:
    cmd, *rest = args
    cache = ["--cache", str(p.cache)] if cmd in ("lock", "build", "images", "check") else []
    return bundle(capsys, "--spec", str(p.spec), "-q", cmd, *cache, *rest)


def _fingerprint(root_json: Path) -> str:
    return rootmeta.root_fingerprint(rootmeta.parse_root(root_json.read_bytes()))


# --- defect 4: unsigned by accident -------------------------------------------------------

def test_build_without_keys_is_refused_before_anything_is_written(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dist"
    r = _b(capsys, project, "build", "--arch", "arm64", "--out", str(out))
    assert r.code == 2, r.err
    assert "refusing to build an unsigned bundle by accident" in r.err
    assert "--keys" in r.err and "[signing]" in r.err and "--unsigned" in r.err
    assert not out.exists()
    r = _b(capsys, project, "build", "--arch", "arm64", "--out", str(out), "--unsigned",
           "--keys", str(project.keys))
    assert r.code == 2 and "contradict" in r.err


def test_spec_signing_keys_sign_and_do_not_stale_the_lock(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a copy of the locked project whose spec names the key folder, relative to the spec
    folder = tmp_path / "signed-proj"
    shutil.copytree(project.folder, folder)
    rel = Path("..") / ".." / project.keys.relative_to(project.keys.parents[1])
    spec = folder / "bundles.toml"
    spec.write_text(spec.read_text() + f'\n[signing]\nkeys = "{rel.as_posix()}"\n')
    assert (spec.parent / rel).resolve() == project.keys.resolve()
    r = bundle(capsys, "--spec", str(spec), "-q", "build", "--arch", "arm64", "--cache",
               str(project.cache), "--out", str(tmp_path / "dist"), "--json")
    assert r.code == 0, r.err  # the lock made without [signing] is still fresh
    built = json.loads(r.out)["bundles"][0]
    fp = _fingerprint(project.keys / "root.json")
    assert built["signed"] is True and built["root_fingerprint"] == fp
    r = bundle(capsys, "inspect", built["bundle"], "--json")
    doc = json.loads(r.out)
    assert doc["signatures"] == 1 and doc["root_fingerprint"] == fp
    # a [signing] table with an unknown key is a spec error naming it
    spec.write_text(spec.read_text().replace("keys =", "key ="))
    r = bundle(capsys, "--spec", str(spec), "build", "--unsigned")
    assert r.code == 2 and "signing" in r.err and "key" in r.err


def test_unsigned_build_never_replaces_a_signed_bundle(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dist"
    r = _b(capsys, project, "build", "--arch", "arm64", "--out", str(out), "--keys",
           str(project.keys))
    assert r.code == 0 and "signed for root" in r.out, r.err
    target = out / "demo-1.0.0-arm64.tar"
    before = target.read_bytes()
    r = _b(capsys, project, "build", "--arch", "arm64", "--out", str(out), "--unsigned")
    assert r.code == 2, r.err
    assert str(target) in r.err and "refusing to replace it with an unsigned one" in r.err
    assert target.read_bytes() == before
    # into another folder an unsigned build is fine, and says so
    r = _b(capsys, project, "build", "--arch", "arm64", "--out", str(tmp_path / "u"),
           "--unsigned")
    assert r.code == 0 and "UNSIGNED" in r.out, r.err


def test_missing_key_folder_fails_before_downloading(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _b(capsys, project, "build", "--arch", "arm64", "--out", str(tmp_path / "d"),
           "--keys", str(tmp_path / "nokeys"))
    assert r.code == 2 and "nokeys" in r.err and "bundle keys init" in r.err
    assert not (tmp_path / "d").exists()


def test_keys_init_without_passphrase_warns_loudly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = bundle(capsys, "keys", "init", str(tmp_path / "plain"))
    assert r.code == 0, r.err
    assert "WARNING" in r.err and "NOT encrypted" in r.err and "--passphrase-env" in r.err
    monkeypatch.setenv("H8_PASS", "correct horse battery staple")
    r = bundle(capsys, "keys", "init", str(tmp_path / "enc"), "--passphrase-env", "H8_PASS")
    assert r.code == 0, r.err
    assert "NOT encrypted" not in r.err


# --- defect 5: which root is this? --------------------------------------------------------

def test_root_fingerprint_in_keys_inspect_and_verify_errors(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ours = _fingerprint(project.keys / "root.json")
    r = bundle(capsys, "keys", "show", str(project.keys))
    assert r.code == 0 and f"fingerprint {ours}" in r.out, r.err
    other = tmp_path / "other"
    r = bundle(capsys, "keys", "init", str(other), "--json")
    theirs = _fingerprint(other / "root.json")
    assert json.loads(r.out)["fingerprint"] == theirs != ours
    r = bundle(capsys, "keys", "init", str(tmp_path / "third"))
    assert f"fingerprint {_fingerprint(tmp_path / 'third' / 'root.json')}" in r.out

    out = tmp_path / "dist"
    assert _b(capsys, project, "build", "--arch", "arm64", "--out", str(out), "--keys",
              str(project.keys)).code == 0
    path = out / "demo-1.0.0-arm64.tar"
    r = bundle(capsys, "inspect", str(path))
    assert f"newest v1 fingerprint {ours}" in r.out
    assert json.loads(bundle(capsys, "inspect", str(path), "--json").out)["roots"] == [
        {"version": 1, "fingerprint": ours}]
    r = bundle(capsys, "verify", str(path), "--trust", str(other / "root.json"))
    assert r.code == 3
    assert f"signed for root {ours} (v1), this trusted root is {theirs} (v1)" in r.err
    # an unsigned bundle says so
    assert _b(capsys, project, "build", "--arch", "arm64", "--out", str(tmp_path / "u"),
              "--unsigned").code == 0
    r = bundle(capsys, "verify", str(tmp_path / "u" / "demo-1.0.0-arm64.tar"), "--trust",
               str(project.keys / "root.json"))
    assert r.code == 3 and "ships no root chain" in r.err and ours in r.err


# --- --json errors --------------------------------------------------------------------------

def _commands() -> list[list[str]]:
    from bundler.cli.app import cli
    found: list[list[str]] = []
    for name, cmd in sorted(cli.commands.items()):
        subs = getattr(cmd, "commands", None)
        found += [[name, s] for s in sorted(subs)] if subs else [[name]]
    return found


def test_every_command_has_json(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands()
    assert ["check"] in commands and ["keys", "show"] in commands
    for path in commands:
        r = bundle(capsys, *path, "--help")
        assert r.code == 0 and "--json" in r.out, path


@pytest.mark.parametrize("args,code,kind", [
    (["--spec", "/nonexistent/bundles.toml", "lock", "--json"], 2, "SpecError"),
    (["build", "--arch", "sparc", "--json"], 2, "BadParameter"),
    (["inspect", "--json", "/nonexistent.tar"], 2, "BadParameter"),
])
def test_json_errors_are_one_object_on_stdout(capsys: pytest.CaptureFixture[str],
                                              args: list[str], code: int, kind: str) -> None:
    r = bundle(capsys, *args)
    assert r.code == code
    doc = json.loads(r.out)
    assert set(doc) == {"error"}
    assert doc["error"]["code"] == code and doc["error"]["kind"] == kind
    assert doc["error"]["message"] and "hint" in doc["error"]
    assert r.err.strip()  # the human line is still on stderr


def test_json_error_of_a_bad_bundle_and_of_drift(project: Project, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar" * 100)
    r = bundle(capsys, "inspect", str(broken), "--json")
    assert r.code == 3
    assert json.loads(r.out)["error"]["code"] == 3 and "broken.tar" in r.err
    folder = tmp_path / "drift"
    shutil.copytree(project.folder, folder)
    spec = folder / "bundles.toml"
    spec.write_text(spec.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    r = bundle(capsys, "--spec", str(spec), "-q", "lock", "--check", "--json", "--cache",
               str(project.cache))
    assert r.code == 8, r.err
    doc = json.loads(r.out)  # exactly one JSON document
    assert doc["error"]["kind"] == "DriftError" and doc["error"]["details"]["drift"]
    r = bundle(capsys, "--spec", str(project.spec), "-q", "check", "--json", "--cache",
               str(project.cache))
    assert r.code == 0 and json.loads(r.out)["ok"] is True, r.err


# --- arch aliases, every arch by default -----------------------------------------------------

def test_build_without_arch_builds_every_locked_arch_and_aliases_work(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "all"
    r = _b(capsys, project, "build", "--out", str(out), "--unsigned", "--json")
    assert r.code == 0, r.err
    assert sorted(b["arch"] for b in json.loads(r.out)["bundles"]) == ["amd64", "arm64"]
    assert {p.name for p in out.glob("*.tar")} == {"demo-1.0.0-amd64.tar",
                                                    "demo-1.0.0-arm64.tar"}
    r = _b(capsys, project, "build", "--arch", "aarch64", "--out", str(tmp_path / "a"),
           "--unsigned", "--json")
    assert r.code == 0, r.err
    assert [b["arch"] for b in json.loads(r.out)["bundles"]] == ["arm64"]
    r = _b(capsys, project, "build", "--arch", "armv8l", "--unsigned")
    assert r.code == 2 and "unknown architecture" in r.err


# --- SBOM ------------------------------------------------------------------------------------

def _member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_sbom_is_a_signed_valid_cyclonedx_member(project: Project, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from installer.format.bundlefmt import BundleReader
    out = tmp_path / "dist"
    assert _b(capsys, project, "build", "--arch", "arm64", "--out", str(out), "--keys",
              str(project.keys)).code == 0
    path = out / "demo-1.0.0-arm64.tar"
    with open(path, "rb") as f:
        m = BundleReader(f).header().manifest
    member = m.member("sbom/bom.cdx.json")  # listed in the signed manifest
    assert member.kind == "sbom"
    raw = _member(path, "sbom/bom.cdx.json")
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(raw.decode())
    assert errors is None, errors
    doc = json.loads(raw)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    comps = doc["components"]
    by_member = {p["value"]: c for c in comps for p in c.get("properties", [])
                 if p["name"] == "k3s-airgap:member"}
    for mem in m.members:
        if mem.path == "sbom/bom.cdx.json":
            continue
        assert by_member[mem.path]["hashes"] == [{"alg": "SHA-256", "content": mem.sha256}]
    assert by_member["k3s/k3s"]["name"] == "k3s" and by_member["k3s/k3s"]["version"] == \
        m.k3s_version
    assert by_member["charts/demo-app-0.1.0.tgz"]["version"] == "0.1.0"
    images = {c["bom-ref"]: c for c in comps if c["type"] == "container"}
    for img in m.images:
        c = images[f"image:{img.ref}"]
        assert c["hashes"][0]["content"] == img.digest.split(":")[1]
        assert "arch=arm64" in c["purl"]
    # inspect shows it, and --sbom prints the document
    r = bundle(capsys, "inspect", str(path))
    assert "sbom: CycloneDX 1.6 at sbom/bom.cdx.json" in r.out
    assert json.loads(bundle(capsys, "inspect", str(path), "--sbom").out) == doc
    assert json.loads(bundle(capsys, "inspect", str(path), "--json").out)["sbom"][
        "components"]["container"] == len(m.images)
    # the device-side verifier accepts the bundle with its SBOM
    r = bundle(capsys, "verify", str(path), "--trust", str(project.keys / "root.json"))
    assert r.code == 0, r.err


def test_sbom_is_reproducible(project: Project, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        assert _b(capsys, project, "build", "--arch", "amd64", "--out", str(tmp_path / name),
                  "--unsigned").code == 0
    a = _member(tmp_path / "a" / "demo-1.0.0-amd64.tar", "sbom/bom.cdx.json")
    assert a == _member(tmp_path / "b" / "demo-1.0.0-amd64.tar", "sbom/bom.cdx.json")


# --- SHA256SUMS --------------------------------------------------------------------------------

def test_sha256sums_beside_the_bundles_checks_with_sha256sum(
        project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stick"
    assert _b(capsys, project, "build", "--out", str(out), "--unsigned").code == 0
    sums = (out / "SHA256SUMS").read_text()
    names = [line.split("  ", 1)[1] for line in sums.splitlines()]
    assert names == sorted(["INSTALL.txt", "airgap-install.pyz", "demo-1.0.0-amd64.tar",
                            "demo-1.0.0-arm64.tar"])
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum on PATH")
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    # and it catches a damaged copy
    with open(out / "demo-1.0.0-amd64.tar", "r+b") as f:
        f.seek(-10, 2)
        f.write(b"X")
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                       text=True)
    assert p.returncode != 0 and "demo-1.0.0-amd64.tar: FAILED" in p.stdout


# --- pure parts ------------------------------------------------------------------------------

def test_arch_aliases_are_one_table() -> None:
    from installer import arch
    from installer.format import bundlefmt
    assert [arch.normalize(a) for a in ("x86_64", "aarch64", "armhf", "armv7l", "ARM64")] == \
        ["amd64", "arm64", "arm", "arm", "arm64"]
    assert all(arch.normalize(a) == a for a in bundlefmt.ARCHES)
    for wrong in ("armv8l", "armv6l", "s390x", ""):
        with pytest.raises(ValueError, match="unknown architecture"):
            arch.normalize(wrong)


def test_spec_arch_aliases_normalise(tmp_path: Path) -> None:
    from bundler.errors import SpecError
    from bundler.spec.spec import parse_spec
    doc = {"bundles": {"edge": {"version": "1.0.0", "arch": ["x86_64", "aarch64", "armhf"],
                                "k3s": "v1.34.3+k3s1"}}}
    assert parse_spec(doc, tmp_path / "bundles.toml").bundles["edge"].arch == \
        ("amd64", "arm64", "arm")
    doc["bundles"]["edge"]["arch"] = ["amd64", "x86_64"]
    with pytest.raises(SpecError, match="each once"):
        parse_spec(doc, tmp_path / "bundles.toml")


def test_signing_table_is_relative_to_the_spec_and_outside_the_digest(tmp_path: Path) -> None:
    from bundler.spec.spec import parse_spec
    base = {"bundles": {"edge": {"version": "1.0.0", "arch": ["arm64"], "k3s": "v1.34.3+k3s1"}}}
    plain = parse_spec(base, tmp_path / "bundles.toml")
    signed = parse_spec({**base, "signing": {"keys": "keys"}}, tmp_path / "bundles.toml")
    assert plain.signing_keys is None and signed.signing_keys == tmp_path / "keys"
    assert plain.digest == signed.digest


def test_helm_engine_is_a_default_dependency() -> None:
    import tomllib
    doc = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    project_doc = doc["project"]
    assert any(d.startswith("helm-python-sdk") for d in project_doc["dependencies"])
    assert "discovery" in project_doc["optional-dependencies"]  # .ci/setup names it


def test_error_object_is_documented() -> None:
    from installer.errors import ToolError
    doc = (Path(__file__).resolve().parents[1] / "docs" / "exit-codes.md").read_text()
    section = doc.split("## The error object of `--json`", 1)[1]
    for field in [*ToolError("x").as_json(), "details"]:
        assert f"| `{field}` |" in section, field
