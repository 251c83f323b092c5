"""Build ``airgap-install.pyz``: the installer package as one reproducible zipapp, and the
``INSTALL.txt`` that goes next to the bundles on a USB stick.

Reproducible: entries sorted, fixed timestamps (1980-01-01), fixed permissions, stored
uncompressed (deflate output may differ between zlib builds), a fixed shebang. The same
source tree gives byte-identical files on any machine.
"""

import os
import zipfile
from typing import List, Optional, Sequence

from installer.fsio import write_verified

SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)
# The zipapp's entry point. It must parse and run on ANY python3 (and python2) a device may
# have, so an old interpreter gets a clear sentence instead of a SyntaxError from a module it
# cannot read: no f-strings, no annotations, nothing imported from the package before the check.
# Exit 6 is ``EnvironmentProblem`` (this host lacks what is needed).
VERSION_GATE = b"""import sys
if sys.version_info < (3, 8):
    sys.stderr.write("airgap-install: needs Python 3.8 or newer (found {})\\n".format(
        sys.version.split()[0]))
    sys.exit(6)
"""
_MAIN = VERSION_GATE + b"from installer.cli import main\nsys.exit(main())\n"


def _sources(package_dir: str) -> List[str]:
    """Every ``.py`` file of the package and its subpackages, as sorted relative '/' paths
    (caches and anything that is not a regular ``.py`` file are left out)."""
    found = []
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel = os.path.relpath(folder, package_dir)
        for n in files:
            if n.endswith(".py") and os.path.isfile(os.path.join(folder, n)):
                found.append(n if rel == "." else rel.replace(os.sep, "/") + "/" + n)
    return sorted(found)


def zipapp_bytes(package_dir: Optional[str] = None) -> bytes:
    """The zipapp's bytes (small: the installer's own sources)."""
    import io
    package_dir = package_dir or os.path.dirname(os.path.abspath(__file__))
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        entries = [("__main__.py", _MAIN)]
        for name in _sources(package_dir):
            with open(os.path.join(package_dir, *name.split("/")), "rb") as f:
                entries.append(("installer/" + name, f.read()))
        for arcname, data in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.create_system = 3  # unix, whatever the building host
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, data)
    return buf.getvalue()


def build_zipapp(out_path: str, package_dir: Optional[str] = None) -> str:
    """Write ``airgap-install.pyz`` atomically to ``out_path`` (mode 0755); returns sha256."""
    digest, _ = write_verified(out_path, [zipapp_bytes(package_dir)], mode=0o755)
    return digest


def install_txt(bundle_names: Sequence[str]) -> str:
    """Instructions for the USB stick, naming the bundles on it."""
    listing = "\n".join(f"  {n}" for n in sorted(bundle_names)) or "  (none)"
    return f"""K3s airgap bundles
==================

This medium holds signed K3s airgap bundles and the offline installer:

{listing}
  airgap-install.pyz   (needs only python3 >= 3.8 on the target host)

On each host (as root), with the medium mounted at /media/usb:

1. Once per host, pin the publisher's trust anchor (root.json, delivered separately):
     python3 /media/usb/airgap-install.pyz trust /path/to/root.json
   It prints the root's fingerprint (12 hex digits): compare it with the one the
   publisher gave you along with root.json.

2. Check, then install the newest bundle for this host's architecture:
     python3 /media/usb/airgap-install.pyz verify /media/usb
     python3 /media/usb/airgap-install.pyz install /media/usb --server
   or, for an agent joining a server:
     python3 /media/usb/airgap-install.pyz install /media/usb --agent \\
         --url https://SERVER:6443 --token-file /root/k3s-token

3. See what is installed (with its K3s options), or go back to the previous release:
     python3 /media/usb/airgap-install.pyz status
     python3 /media/usb/airgap-install.pyz rollback

4. K3s options (--exec "ARGS", --url, --token-file, --skip-start) are remembered: later
   installs of newer bundles keep them. To change them without a new bundle:
     python3 /media/usb/airgap-install.pyz reconfigure --exec "--disable traefik"

Exit codes and every option: python3 /media/usb/airgap-install.pyz --help

The installer copies each file from the medium to the host while checking its signed
sha256, and installs only from that checked copy: the medium can be removed as soon as
the command prints "installed". A bundle for another architecture, an older version,
or one not signed by the pinned key is refused and nothing is changed.
"""
