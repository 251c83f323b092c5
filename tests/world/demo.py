"""The README demo, end to end on loopback: ``python3 -m tests.world.demo [--dir DIR]``.

1. starts the test world (a real registry with multi-arch images, a K3s release folder with
   stand-in binaries, a Helm repository) on 127.0.0.1;
2. writes a ``bundles.toml`` for it whose chart needs an image the spec does not list;
3. ``bundle keys init`` (keys encrypted with a passphrase from the environment; the spec's
   ``[signing] keys`` names the folder), ``bundle lock`` (refused: discovery finds the missing
   image), ``bundle lock --add-discovered``, ``bundle build --arch arm64`` (signed by default),
   ``bundle inspect``, ``bundle verify``, ``sha256sum -c SHA256SUMS`` on the output folder;
4. installs the arm64 bundle into a temporary root with the zipapp, as when preparing an SD
   card for a Raspberry Pi (``--arch arm64 --root``), and prints ``status``;
5. OTA rings: ``bundle repo init``, ``bundle publish`` to canary, a device pinned to the stable
   ring syncs (nothing listed yet), ``bundle promote`` canary -> stable, ``bundle repo status``,
   and the stable device's next ``airgap-install sync`` installs the promoted bundle.

Every command is printed before it runs, so the output reads as a walkthrough. The install.sh
in this world is a stand-in that records its environment inside the root; nothing on this
host is changed outside DIR.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from .world import World

DEMO_IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
               "docker.io/library/alpine:3.20")  # busybox: only the chart's values know it


def run(cmd: list[str], *, cwd: Path, expect: int = 0, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(c) for c in cmd).replace(sys.executable, "python3")
    print(f"\n$ {shown}", flush=True)
    p = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True,
                       env={**os.environ, **(env or {})})
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr)
    sys.stdout.flush()
    if p.returncode != expect:
        raise SystemExit(f"demo: `{shown}` exited {p.returncode}, expected {expect}")
    return p


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m tests.world.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temp folder)")
    args = parser.parse_args()
    base = (args.dir or Path(tempfile.mkdtemp(prefix="k3s-airgap-demo-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    env = {"XDG_CACHE_HOME": str(base / "cache"), "NO_PROXY": "127.0.0.1,localhost",
           "DEMO_KEYS_PASSPHRASE": "demo passphrase: use a long random one",
           # the checked-out tree, not whichever copy of the project pip installed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH")]))}
    os.environ.update(env)
    bundle = [sys.executable, "-m", "bundler"]
    print(f"demo folder: {base}")
    with World(base / "world") as world:
        project = base / "project"
        world.write_spec(project, bundle_images=DEMO_IMAGES, arch=("amd64", "arm64"),
                         extra='[signing]\nkeys = "../keys"   # relative to bundles.toml\n')
        print(f"test world up: registry {world.registry.url}, releases "
              f"{world.release.releases_url}, charts {world.release.charts_url}")
        print("\n--- bundles.toml ---\n" + (project / "bundles.toml").read_text())

        run([*bundle, "keys", "init", str(base / "keys"), "--passphrase-env",
             "DEMO_KEYS_PASSPHRASE"], cwd=project)
        run([*bundle, "lock"], cwd=project, expect=9)
        run([*bundle, "lock", "--add-discovered"], cwd=project)
        run([*bundle, "build", "--arch", "arm64"], cwd=project)
        tar = project / "dist" / "demo-1.0.0-arm64.tar"
        run([*bundle, "inspect", str(tar)], cwd=project)
        run([*bundle, "verify", str(tar), "--trust", str(base / "keys" / "root.json")],
            cwd=project)
        run(["sha256sum", "-c", "SHA256SUMS"], cwd=project / "dist")

    # The world is gone now: what follows is the disconnected side, from the "USB stick".
    stick, root = project / "dist", base / "sdcard-root"
    pyz = [sys.executable, str(stick / "airgap-install.pyz")]
    print("\n--- offline: install onto an SD card root for an arm64 board ---")
    run([*pyz, "trust", "--root", str(root), str(base / "keys" / "root.json")], cwd=base)
    run([*pyz, "install", "--root", str(root), "--arch", "arm64", "--server", "--skip-start",
         str(stick)],
        cwd=base)
    run([*pyz, "status", "--root", str(root)], cwd=base)
    print("\nfiles placed under the root:")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not str(rel).startswith("var/lib/rancher/airgap/"):
            print(f"  /{rel}  ({p.stat().st_size} bytes)")

    # OTA rings: the same bytes reach canary first, then stable by a signed promotion; a
    # stable device syncing from the ring repository (a folder on the stick) follows it.
    print("\n--- OTA rings: publish to canary, promote to stable, a stable device follows ---")
    ring, gw = base / "ring-repo", base / "gateway-root"
    kp = ["--keys", str(base / "keys"), "--passphrase-env", "DEMO_KEYS_PASSPHRASE"]
    sync = [*pyz, "sync", "--source", str(ring), "--root", str(gw), "--arch", "arm64",
            "--server", "--skip-start", "--health-cmd", "true"]
    run([*bundle, "repo", "init", str(ring), *kp], cwd=base)
    run([*bundle, "publish", str(tar), "--repo", str(ring), "--ring", "canary", *kp], cwd=base)
    run([*pyz, "trust", "--root", str(gw), "--ring", "stable",
         str(ring / "metadata" / "1.root.json")], cwd=base)
    run(sync, cwd=base)  # stable lists nothing yet: the device stays as it is
    run([*bundle, "promote", "demo", "1.0.0", "--repo", str(ring), "--from", "canary",
         "--to", "stable", *kp], cwd=base)
    run([*bundle, "repo", "status", str(ring)], cwd=base)
    run(sync, cwd=base)  # now it installs the promoted bundle
    run([*pyz, "status", "--root", str(gw)], cwd=base)
    print(f"\ndemo complete: bundle {tar}, root {root}, ring repository {ring}, "
          f"stable device {gw}")


if __name__ == "__main__":
    main()
