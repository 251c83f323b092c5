"""The installer's error tree and its exit codes, in one place.

Families split by fault, not by module:

- ``UntrustedContent``: the data is bad (signature, digest, size, format, unsafe member).
- ``PolicyRefusal``: the data is fine but must not be installed here (architecture, version,
  ring, role).
- ``TransferError``: the medium or the network failed to deliver bytes.
- ``EnvironmentProblem``: this host cannot do it now (free space, lock held, permissions).
- ``ConfigError``: the operator asked for something inconsistent.

Every message says what, where, and what to do. Only the CLI turns these into exit codes.
"""

from typing import Dict, Optional, Union


class ToolError(Exception):
    """The one error base of both packages (the builder's ``BundleError`` derives from it
    too): a message saying what and where, an optional hint saying what to do, and the exit
    code of its family. Kinds are told apart by type, never by message text."""

    exit_code = 1

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def as_json(self) -> Dict[str, Union[str, int, None]]:
        """The documented error object of ``--json`` output (docs/exit-codes.md)."""
        return {"code": self.exit_code, "kind": type(self).__name__,
                "message": self.message, "hint": self.hint}


class InstallerError(ToolError):
    """Base of every error the installer raises on purpose."""


class ConfigError(InstallerError):
    exit_code = 2


class UntrustedContent(InstallerError):
    exit_code = 3


class FormatError(UntrustedContent):
    """Bytes that do not parse as the format they claim to be."""


class UnsafeMember(UntrustedContent):
    """A tar member that could escape or subvert the install root."""


class DigestMismatch(UntrustedContent):
    """Bytes whose sha256 or size differ from what a signed document says."""


class SignatureError(UntrustedContent):
    """Missing, unknown or insufficient signatures, or a broken root chain."""


class PolicyRefusal(InstallerError):
    exit_code = 4


class TransferError(InstallerError):
    exit_code = 5


class EnvironmentProblem(InstallerError):
    exit_code = 6


class HealthGateFailed(InstallerError):
    exit_code = 7


class ExpiryCheckFailed(InstallerError):
    """``status --check``: trust metadata expired or expires within ``--warn-days``."""

    exit_code = 10


EXIT_CODES = {
    0: "success (also: nothing to do, the same bundle is already installed)",
    1: "internal error (a bug: please report it with the output)",
    2: "usage or configuration error",
    3: "untrusted content: signature, digest, size or format check failed",
    4: "refused by policy: wrong architecture, older version, K3s minor skip/downgrade",
    5: "transfer error: the medium or mirror could not deliver the bytes",
    6: "environment problem: free space, lock held by another run, permissions",
    7: "health gate failed after an update: rolled back to the previous release",
    10: "check failed: trust metadata expired or expires within --warn-days (status --check)",
}
