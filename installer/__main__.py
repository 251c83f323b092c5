"""``python3 -m installer`` (the zipapp has its own ``__main__.py``, see zipapp.py). Like it,
this file stays parseable by old interpreters: the version check comes before any import of
the package's modules (which use Python 3.8 syntax)."""

import sys

if sys.version_info < (3, 8):  # noqa: UP036 - the point: old interpreters get a sentence
    sys.stderr.write("airgap-install: needs Python 3.8 or newer (found {})\n".format(  # noqa: UP032
        sys.version.split()[0]))  # (no f-string: it would not parse before 3.6)
    sys.exit(6)

from installer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
