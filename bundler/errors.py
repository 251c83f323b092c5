"""The builder's error tree and exit codes, in one place (the CLI maps them).

Families split by fault:

- ``SpecError``: the user's spec, lock or flags are wrong (file and key named).
- ``UpstreamError``: upstream content is not what it claims (digest mismatch, missing arch,
  checksum missing or wrong, manifest too large, wrong architecture in a config).
- ``UntrustedInput``: content given to the builder is not what it claims (``UpstreamError``
  for downloads, ``UntrustedBundle`` for a bundle given to ``bundle publish``).
- ``RefusedError``: the data is fine but the operation is not allowed (ring soak, not listed).
- ``FetchError``: the network failed (5xx, resets, timeouts, auth, TLS) after retries (named
  apart from the installer's ``TransferError``, a different family of another tree).
- ``DriftError``: the lock no longer matches the spec or upstream (``lock --check``).
- ``LocalError``: this host cannot do it (disk full, folder not writable).
- ``MissingImagesError``: discovery found images the bundle does not carry.
"""

from __future__ import annotations

from typing import Any

from installer.errors import ToolError


class BundleError(ToolError):
    """Base of every error the builder raises on purpose (message, hint, exit code).

    ``details``: optional structured data for the ``--json`` error object (the list of drifts,
    the images report), so that a failing command still prints one JSON document."""

    details: Any = None


class SpecError(BundleError):
    exit_code = 2


class UntrustedInput(BundleError):
    """Content is not what it claims (code 3, like the installer's ``UntrustedContent``)."""

    exit_code = 3


class UpstreamError(UntrustedInput):
    """Upstream content is wrong: digest or checksum mismatch, missing architecture."""


class NotFoundError(UpstreamError):
    """A tag, repository, asset or chart version that does not exist upstream."""


class RefusedError(BundleError):
    """The data is fine but the operation is not allowed (code 4, like ``PolicyRefusal``)."""

    exit_code = 4


class FetchError(BundleError):
    exit_code = 5


class AuthError(FetchError):
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
    4: "refused by policy: an installer check run by `bundle` refused the bundle",
    5: "transfer failed after retries: network, HTTP 5xx, authentication, TLS",
    6: "local problem: disk full, folder not writable",
    7: "health gate failed (reported by installer code run from `bundle`)",
    8: "drift: the lock no longer matches the spec or upstream (lock --check)",
    9: "images referenced by manifests or charts are missing from the bundle",
    10: "check failed: trust metadata expired or expires within --warn-days (status --check)",
}


def exit_code_for(error: ToolError) -> int:
    """The exit code of `bundle` for an error of either package: an installer error raised
    from shared code (verify, fsio, bundlefmt) keeps its family's code, which means the same
    fault in both tables (tests/test_errors.py checks every installer code is in ours)."""
    return error.exit_code
