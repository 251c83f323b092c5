"""Run a command's module (``python3 -m tests.world.netguard LOG MODULE ARGS...``) with every
``connect()`` recorded in LOG (one ``host port`` line each) and every connection to a
non-loopback address refused in the process itself, so a test can prove that nothing was
attempted and that nothing could leave the machine even if the code under test tried."""

from __future__ import annotations

import errno
import ipaddress
import runpy
import socket
import sys
from typing import Any

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True   # a Unix socket
    try:
        return ipaddress.ip_address(str(address[0])).is_loopback
    except ValueError:
        return False


def install(log: str) -> None:
    def note(address: Any) -> None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{address!r}\n")

    def connect(self: socket.socket, address: Any) -> None:
        note(address)
        if not _loopback(address):
            raise OSError(errno.ENETUNREACH, f"netguard: no connection to {address!r}")
        _real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        note(address)
        if not _loopback(address):
            return errno.ENETUNREACH
        return _real_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]


def main() -> None:
    log, module, *args = sys.argv[1:]
    install(log)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
