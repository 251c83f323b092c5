"""``SHA256SUMS`` for an output folder: what a field tech runs ``sha256sum -c`` against
after copying the folder to a USB stick (GNU coreutils format: ``<hex>  <name>``)."""

from __future__ import annotations

from pathlib import Path

from installer.fsio import hash_file

SUMS_NAME = "SHA256SUMS"
# what goes onto the stick: every bundle (or its parts, parity part and index), its Sigstore
# provenance, the installer and its guide
_PATTERNS = ("*.tar", "*.tar.part-*", "*.tar.parts.json", "*.sigstore.json",
             "airgap-install.pyz", "INSTALL.txt")


def sums_members(folder: Path) -> list[Path]:
    """The files ``SHA256SUMS`` covers, sorted by name (dotfiles and temp files excluded)."""
    found = {p for pattern in _PATTERNS for p in folder.glob(pattern)
             if p.is_file() and not p.name.startswith(".")}
    return sorted(found, key=lambda p: p.name)


def format_sums(entries: list[tuple[str, str]]) -> str:
    """``sha256sum`` text for ``(hex, name)`` pairs; pure."""
    for _, name in entries:
        if "\n" in name or "\\" in name:
            raise ValueError(f"{name!r} cannot be listed in SHA256SUMS")
    return "".join(f"{digest}  {name}\n" for digest, name in entries)


def sha256sums(folder: Path) -> str:
    """Hash every file of the folder that goes onto the stick (re-read from disk: the sums
    describe the bytes that are there, not the ones meant to be)."""
    return format_sums([(hash_file(p)[0], p.name) for p in sums_members(folder)])
