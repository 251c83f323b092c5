"""The builder's error tree and exit codes, in one place (the CLI maps them).

Families split by fault:

- ``SpecError``: the user's spec, lock or flags are wrong (file and key named).
- ``UpstreamError``: upstream content is not what it claims (digest mismatch, missing arch,
  checksum missing or wrong, manifest too large, wrong architecture in a config).
- ``TransferError``: the network failed (5xx, resets, timeouts, auth, TLS) after retries.
- ``DriftError``: the lock no longer matches the spec or upstream (``lock --check``).
- ``LocalError``: this host cannot do it (disk full, folder not writable).
- ``MissingImagesError``: discovery found images the bundle does not carry.
"""

from __future__ import annotations


class BundleError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class SpecError(BundleError):
    exit_code = 2


class UpstreamError(BundleError):
    exit_code = 3


class NotFoundError(UpstreamError):
    """A tag, repository, asset or chart version that does not exist upstream."""


class TransferError(BundleError):
    exit_code = 5


class AuthError(TransferError):
    pass


class LocalError(BundleError):
    exit_code = 6


class DriftError(BundleError):
    exit_code = 8


class MissingImagesError(BundleError):
    exit_code = 9


EXIT_CODES = {
    0: "success",
    1: "internal error (a bug: please report it with the output)",
    2: "bad spec, lock or command line (file and key are named)",
    3: "upstream content is wrong: digest/checksum mismatch, missing architecture, not found",
    5: "transfer failed after retries: network, HTTP 5xx, authentication, TLS",
    6: "local problem: disk full, folder not writable",
    8: "drift: the lock no longer matches the spec or upstream (lock --check)",
    9: "images referenced by manifests or charts are missing from the bundle",
}
