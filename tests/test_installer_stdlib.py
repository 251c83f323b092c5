"""The installer runs on a bare host: only the standard library, Python 3.8+, and as a
single reproducible zipapp (``airgap-install.pyz``) that installs a real bundle."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from installer import zipapp
from tests.bundles import REPO, KeyDir, cli, default_spec, live, write_spec

# every installer module, subpackages included, as dotted names below ``installer.``
MODULES = sorted(".".join(p.relative_to(REPO / "installer").with_suffix("").parts)
                 for p in (REPO / "installer").rglob("*.py") if p.stem != "__main__")

_PROBE = """
import sys
sys.path.insert(0, %r)
before = set(sys.modules)
import importlib
for name in %r:
    importlib.import_module(("installer." + name).replace(".__init__", ""))
loaded = sorted(m.split(".")[0] for m in set(sys.modules) - before)
stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
print("\\n".join(sorted(set(m for m in loaded if m not in stdlib and m != "installer"))))
"""


def test_imports_only_the_standard_library() -> None:
    """``python3 -I -S``: no site-packages at all; every installer module imports, and
    nothing outside the stdlib gets loaded."""
    r = subprocess.run([sys.executable, "-I", "-S", "-c", _PROBE % (str(REPO), MODULES)],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"non-stdlib modules loaded: {r.stdout}"


def test_vermin_says_python_38() -> None:
    vermin = shutil.which("vermin")
    if vermin is None:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "vermin"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        vermin = shutil.which("vermin")
        if vermin is None:
            pytest.skip(f"vermin is not installable here: {r.stdout[-200:]}")
    r = subprocess.run([vermin, "--target=3.8-", "--no-tips", "--violations", "--eval-annotations",
                        str(REPO / "installer")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout
    r = subprocess.run([vermin, "--no-tips", "--eval-annotations", str(REPO / "installer")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = [x for x in r.stdout.splitlines() if x.startswith("Minimum required versions")][0]
    minimum = line.split(":", 1)[1].strip().split(",")[-1].strip()
    assert tuple(int(p) for p in minimum.split(".")) <= (3, 8), line


def test_zipapp_is_reproducible(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pyz", tmp_path / "b.pyz"
    da = zipapp.build_zipapp(str(a))
    os.utime(str(REPO / "installer" / "cli.py"))  # mtimes must not matter
    db = zipapp.build_zipapp(str(b))
    assert da == db and a.read_bytes() == b.read_bytes()
    assert a.stat().st_mode & 0o777 == 0o755
    import zipfile
    with zipfile.ZipFile(str(a)) as z:
        names = z.namelist()
    assert names == sorted(names) and "__main__.py" in names and "installer/cli.py" in names
    assert not any("__pycache__" in n for n in names)


def test_zipapp_installs_a_bundle(tmp_path: Path) -> None:
    """The .pyz on its own (cwd elsewhere, -I: no repository on the path) does the job."""
    pyz = tmp_path / "usb" / "airgap-install.pyz"
    pyz.parent.mkdir()
    zipapp.build_zipapp(str(pyz))
    keys = KeyDir(tmp_path / "keys")
    write_spec(default_spec("1.0.0"), keys, pyz.parent)
    (pyz.parent / "INSTALL.txt").write_text(zipapp.install_txt(["edge-1.0.0-amd64.tar"]))
    root = tmp_path / "root"

    def run(*args: object) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([sys.executable, "-I", str(pyz)] + [str(a) for a in args],
                              capture_output=True, text=True,
                              cwd=str(tmp_path), env={"PATH": os.environ["PATH"]})

    assert run("--version").stdout.startswith("airgap-install ")
    assert run("trust", keys.root_json, "--root", root).returncode == 0
    r = run("install", pyz.parent, "--root", root, "--server", "--skip-start", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["current"]["version"] == "1.0.0"
    assert "usr/local/bin/k3s" in live(root)
    assert run("status", "--root", root).returncode == 0
    bad = run("install", pyz.parent / "missing.tar", "--root", root)
    assert bad.returncode == 2


def test_install_txt_names_bundles() -> None:
    text = zipapp.install_txt(["edge-1.0.0-arm64.tar", "edge-1.0.0-amd64.tar"])
    assert text.index("edge-1.0.0-amd64.tar") < text.index("edge-1.0.0-arm64.tar")
    assert "airgap-install.pyz trust" in text and "install /media/usb" in text


# Modules allowed past the size limit, each with its reason.
LONG_MODULES = {
    "format/bundlefmt.py",  # the whole bundle format in one place (manifest, members, writer)
}


def test_module_sizes_stay_readable() -> None:
    too_long = []
    for path in sorted((REPO / "installer").rglob("*.py")):
        rel = path.relative_to(REPO / "installer").as_posix()
        lines = path.read_text().count("\n")
        if rel not in LONG_MODULES and lines >= 420:
            too_long.append(f"{rel} has {lines} lines")
    assert too_long == []
    assert len(MODULES) > 30 and "trust.verify" in MODULES  # the walk sees subpackages


def test_cli_help_runs() -> None:
    r = cli("--help")
    assert r.returncode == 0 and "rollback" in r.stdout


def _old_python() -> str:
    for candidate in ["python3.8"] + sorted(str(p) for p in Path("/root/.pyenv/versions").glob(
            "3.8*/bin/python3.8")):
        found = shutil.which(candidate) if "/" not in candidate else candidate
        if found and subprocess.run([found, "-c", "import sys; assert sys.version_info[:2] == "
                                     "(3, 8)"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL).returncode == 0:
            return found
    pytest.skip("no Python 3.8 interpreter on this machine")


def test_zipapp_runs_on_python38(tmp_path: Path) -> None:
    """A real 3.8 interpreter (bundles are written by the builder's newer Python: tar headers
    differ in devmajor/devminor between 3.8 and 3.9+, both are accepted)."""
    py38 = _old_python()
    pyz = tmp_path / "airgap-install.pyz"
    zipapp.build_zipapp(str(pyz))
    keys = KeyDir(tmp_path / "keys")
    b1 = write_spec(default_spec("1.0.0"), keys, tmp_path)
    b2 = write_spec(default_spec("1.1.0"), keys, tmp_path)
    root = tmp_path / "root"

    def run(*args: object) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([py38, "-I", str(pyz)] + [str(a) for a in args],
                              capture_output=True, text=True,
                              cwd=str(tmp_path), env={"PATH": os.environ["PATH"]})

    assert run("trust", keys.root_json, "--root", root).returncode == 0
    for args in (("install", b1, "--server"), ("verify", b2), ("install", b2), ("rollback",)):
        r = run(*args, "--root", root, *(("--skip-start",) if args[0] != "verify" else ()))
        assert r.returncode == 0, (args, r.stderr)
    st = json.loads(run("status", "--root", root, "--json").stdout)
    assert st["installed"]["version"] == "1.0.0" and st["previous"]["version"] == "1.1.0"
    flipped = bytearray(b2.read_bytes())
    flipped[600] ^= 0x10
    b2.write_bytes(bytes(flipped))
    assert run("verify", b2, "--root", root).returncode == 3
