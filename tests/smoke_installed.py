"""The project as users install it: ``python3 -m tests.smoke_installed [--source DIR]``.

Builds the sdist and the wheel of DIR (default: this checkout) with ``python3 -m build`` (the
wheel is built from the sdist, so both are checked), installs the wheel into a fresh virtualenv
in a temp folder outside the source tree, and runs the smoke job with the INSTALLED commands,
from a folder outside the tree and without PYTHONPATH (so nothing falls back to the checkout):

- ``bundle --version``, ``airgap-install --version``, ``python -m bundler/installer --version``;
- ``--help`` of every command and command group of both tools (read from their own help);
- against the test world (tests/world, loopback only): ``bundle keys init``, ``lock``, a signed
  ``build``, ``verify``; then ``airgap-install trust`` and ``install`` into a temporary root,
  ``status``, and ``--version`` of the zipapp the build wrote.

Exit 0 when all of it worked; otherwise the failing command, its output, and exit 1. Run by
.ci/run. ``--venv DIR`` reuses an existing virtualenv (skips the build and install).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from tests.world.world import World

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("docker.io/library/nginx:1.27", "docker.io/library/alpine:3.20")


class SmokeFailed(Exception):
    pass


def run(cmd: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None,
        expect: int = 0) -> str:
    args = [str(c) for c in cmd]
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    p = subprocess.run(args, cwd=cwd, text=True, capture_output=True, env=env, timeout=900)
    if p.returncode != expect or "Traceback" in p.stderr:
        raise SmokeFailed(f"`{' '.join(args)}` exited {p.returncode} (expected {expect})\n"
                          f"--- stdout\n{p.stdout}--- stderr\n{p.stderr}")
    return p.stdout


def _clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH: with the checkout on the path, pip would take the
    checkout's ``*.egg-info`` for an installed copy and skip the wheel."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def build_and_install(source: Path, work: Path) -> Path:
    """sdist + wheel of ``source`` into work/dist, the wheel into the new venv work/venv."""
    dist, venv, env = work / "dist", work / "venv", _clean_env()
    run([sys.executable, "-m", "build", "--outdir", dist, source], cwd=work, env=env)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise SmokeFailed(f"expected one wheel and one sdist in {dist}: {wheels + sdists}")
    run([sys.executable, "-m", "venv", venv], cwd=work, env=env)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]], cwd=work, env=env)
    return venv


def _bundle_commands(text: str) -> list[str]:
    """The command names under click's ``Commands:`` heading."""
    block = text.split("Commands:", 1)[1] if "Commands:" in text else ""
    return re.findall(r"^  (\w[\w-]*)\s", block.split("\n\n")[0], flags=re.M)


def _installer_commands(text: str) -> list[str]:
    """The command names argparse lists under ``COMMAND``."""
    return re.findall(r"^    (\w[\w-]*)\s", text, flags=re.M)


def helps(tool: Path, parse: Callable[[str], list[str]], *, cwd: Path, env: dict[str, str],
          prefix: tuple[str, ...] = ()) -> int:
    """``--help`` of ``tool PREFIX`` and, recursively, of every command it lists."""
    text = run([tool, *prefix, "--help"], cwd=cwd, env=env)
    count = 1
    for name in parse(text):
        count += helps(tool, parse, cwd=cwd, env=env, prefix=(*prefix, name))
    return count


def smoke(venv: Path, work: Path) -> None:
    bin_ = venv / "bin"
    env = _clean_env()
    env.update(XDG_CACHE_HOME=str(work / "cache"), NO_PROXY="127.0.0.1,localhost",
               SMOKE_PASSPHRASE="smoke test passphrase, long enough")
    where = run([bin_ / "python", "-c", "import bundler.cli, installer.format; "
                 "print(bundler.__file__); print(installer.format.__file__)"], cwd=work, env=env)
    if str(REPO) in where or str(venv) not in where:
        raise SmokeFailed(f"the packages do not come from the virtualenv:\n{where}")
    cmds: list[list[str | Path]] = [
        [bin_ / "bundle", "--version"], [bin_ / "airgap-install", "--version"],
        [bin_ / "python", "-m", "bundler", "--version"],
        [bin_ / "python", "-m", "installer", "--version"]]
    for cmd in cmds:
        print("  " + run(cmd, cwd=work, env=env).strip())
    n = helps(bin_ / "bundle", _bundle_commands, cwd=work, env=env)
    n += helps(bin_ / "airgap-install", _installer_commands, cwd=work, env=env)
    print(f"  {n} help pages")
    bundle, keys = bin_ / "bundle", work / "keys"
    with World(work / "world") as world:
        project = work / "project"
        world.write_spec(project, bundle_images=IMAGES, arch=("arm64",),
                         extra='[signing]\nkeys = "../keys"\n')
        run([bundle, "keys", "init", keys, "--passphrase-env", "SMOKE_PASSPHRASE"],
            cwd=project, env=env)
        run([bundle, "lock", "--add-discovered"], cwd=project, env=env)
        run([bundle, "build", "--arch", "arm64"], cwd=project, env=env)
        tar = project / "dist" / "demo-1.0.0-arm64.tar"
        run([bundle, "inspect", tar], cwd=project, env=env)
        run([bundle, "verify", tar, "--trust", keys / "root.json"], cwd=project, env=env)
    root, inst = work / "device-root", bin_ / "airgap-install"
    run([inst, "trust", "--root", root, keys / "root.json"], cwd=work, env=env)
    run([inst, "install", "--root", root, "--arch", "arm64", "--server", "--skip-start",
         project / "dist"], cwd=work, env=env)
    print(run([inst, "status", "--root", root], cwd=work, env=env), end="")
    pyz = project / "dist" / "airgap-install.pyz"
    print("  zipapp: " + run([sys.executable, pyz, "--version"], cwd=work, env=env).strip())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.smoke_installed",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO, help="the project to build")
    parser.add_argument("--venv", type=Path, help="an existing virtualenv to smoke-test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="airgap-smoke-") as tmp:
        work = Path(tmp).resolve()
        try:
            venv = args.venv.resolve() if args.venv else build_and_install(
                args.source.resolve(), work)
            smoke(venv, work)
        except SmokeFailed as e:
            print(f"smoke: FAILED: {e}", file=sys.stderr)
            return 1
    print("smoke: OK (installed wheel: versions, help pages, lock, signed build, verify, "
          "install)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
