"""Where the shared, read-only fixtures live: ``shared/`` beside the checkout (here and in CI);
``BUNDLER_SHARED`` overrides. The one definition every test uses."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BUNDLER_SHARED", REPO.parent / "shared"))
REAL = SHARED / "fixtures" / "real"
SIGSTORE = SHARED / "fixtures" / "sigstore"
