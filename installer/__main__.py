"""``python3 -m installer`` (the zipapp has its own ``__main__.py``, see zipapp.py)."""

import sys

from installer.cli import main

if __name__ == "__main__":
    sys.exit(main())
