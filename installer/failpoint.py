"""Named fail points for crash tests: ``AIRGAP_INSTALL_FAILPOINT=<name>[:<action>]``.

Actions: ``kill`` (default: SIGKILL ourselves, like a power cut), ``stop`` (SIGSTOP ourselves so
a test can change the world, e.g. swap the USB file or fill the disk, then SIGCONT us). Several
points may be given separated by commas. Unset in production: ``hit`` is then a dict lookup.
"""

import os
import signal

ENV = "AIRGAP_INSTALL_FAILPOINT"


def hit(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, _, action = item.strip().partition(":")
        if point != name:
            continue
        if action in ("", "kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
