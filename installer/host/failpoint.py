"""Named fail points for crash tests: ``AIRGAP_INSTALL_FAILPOINT=<name>[:<action>]``.

Actions: ``kill`` (default: SIGKILL ourselves, like a power cut), ``stop`` (SIGSTOP ourselves so
a test can change the world, e.g. swap the USB file or fill the disk, then SIGCONT us). Several
points may be given separated by commas. ``AIRGAP_INSTALL_FAILPOINT_TRACE=<file>`` appends
``<name> <monotonic seconds>`` for every point reached, so a test that kills the installer at a
random moment can prove where the kill landed. Unset in production: ``hit`` is then two dict
lookups.
"""

import os
import signal
import time

ENV = "AIRGAP_INSTALL_FAILPOINT"
TRACE_ENV = "AIRGAP_INSTALL_FAILPOINT_TRACE"


def hit(name: str) -> None:
    trace = os.environ.get(TRACE_ENV)
    if trace:
        # the kernel keeps what a SIGKILLed process wrote: no fsync needed for the test
        with open(trace, "a") as f:
            f.write(f"{name} {time.monotonic():.6f}\n")
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
