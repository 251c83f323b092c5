"""``python3 -m installer`` and the zipapp entry point."""

import sys

from installer.cli import main

sys.exit(main())
