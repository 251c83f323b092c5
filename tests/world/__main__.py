"""Run the test world in the foreground: ``python -m tests.world [--dir DIR] [--ready-file F]``.

Starts every server, writes ``DIR/bundles.toml`` and ``DIR/manifests/`` pointing at them,
prints the URLs/credentials/digests as JSON (also to ``--ready-file`` once ready, so a demo
script can wait for that file), and serves until Ctrl-C or SIGTERM, then stops everything.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
from pathlib import Path

from .world import World


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.world", description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to put the world (default: a temp dir)")
    parser.add_argument("--ready-file", type=Path, help="write the JSON summary here when ready")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="k3s-airgap-world-"))
    base.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with World(base / "servers") as world:
        spec = world.write_spec(base)
        summary = {**world.describe(), "spec": str(spec), "dir": str(base)}
        text = json.dumps(summary, indent=2)
        print(text, flush=True)
        if args.ready_file:
            args.ready_file.write_text(text)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
