"""Where the read-only fixtures live: ``tests/fixtures/`` in this repository (real upstream files,
unchanged; ``tests/fixtures/PROVENANCE.tsv`` names source, version and licence of each).
``BUNDLER_FIXTURES`` points elsewhere if set. The one definition every test uses."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", REPO / "tests" / "fixtures"))
REAL = FIXTURES / "real"
SIGSTORE = FIXTURES / "sigstore"
