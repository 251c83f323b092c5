"""The spec's local files (manifests, values, CA files): where they may come from, what they
may hold, and the names they get in a bundle.

`bundle build --keys` runs next to the signing keys, so a spec path is a way to steer a file
from that host into a signed bundle. Every local file a spec names is therefore

- resolved (symlinks included) and refused unless it lands inside the spec's folder tree or
  one of the extra roots the spec lists in ``[files] extra_roots``;
- refused whatever its path when it holds private key material (a PEM or OpenSSH private key
  block, a PuTTY key) or lies in a key folder (``bundle keys init``'s layout: ``root.json``
  with ``keys/`` or ``roots/``, or ``keyring.json``);
- for manifests: given a bundle member name checked with the very rules the installer applies
  (``installer.format.bundlefmt``), at lock time, so nothing is built that devices would refuse.

Reading is the only I/O here; the hashing pass and the key scan read the same bytes.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import LocalError, SpecError
from installer.errors import InstallerError
from installer.format import bundlefmt

#: Manifest names the builder generates (one HelmChart per chart); a spec file may not use them.
RESERVED_PREFIX = "helmchart-"
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
                          rb"|PuTTY-User-Key-File-[0-9]+:")
_OVERLAP = 64
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalFile:
    """One local file of the spec: the path as the spec names it and where it really is."""

    path: Path      # as written (joined to the spec folder), symlinks not followed
    real: Path      # resolved: the file actually read
    url: str        # the key in bundles.lock: relative to the spec folder, or absolute
    key: str = ""   # "<spec>: <key>" naming where the spec names it, for errors


def roots(base_dir: Path, extra: Sequence[str] = ()) -> tuple[Path, ...]:
    """The folders spec files may live in: the spec's own, then ``extra`` (resolved)."""
    out = [base_dir.resolve()]
    for text in extra:
        out.append((base_dir / os.path.expanduser(text)).resolve())
    return tuple(dict.fromkeys(out))


def is_key_dir(folder: Path) -> bool:
    """A key folder as ``bundle keys init`` lays it out."""
    try:
        if (folder / "keyring.json").is_file():
            return True
        return (folder / "root.json").is_file() and (
            (folder / "keys").is_dir() or (folder / "roots").is_dir())
    except OSError:
        return False


def _key_dir_of(real: Path) -> Path | None:
    for folder in real.parents:
        if is_key_dir(folder):
            return folder
    return None


def _url(base_dir: Path, lexical: Path, written_absolute: bool) -> str:
    if not written_absolute:
        return Path(os.path.relpath(lexical, base_dir)).as_posix()
    return lexical.as_posix()


def confine(base_dir: Path, text: str, *, allowed: Sequence[Path], what: str,
            spec_path: Path) -> LocalFile:
    """Resolve one spec path (relative to the spec folder, or absolute) and refuse it unless
    it is a regular file inside an allowed root and outside any key folder."""
    written = Path(os.path.expanduser(text))
    lexical = Path(os.path.normpath(base_dir / written))
    try:
        real = lexical.resolve(strict=True)
    except FileNotFoundError:
        raise SpecError(f"{spec_path}: {what}: {text!r}: {lexical} does not exist") from None
    except (OSError, RuntimeError) as e:  # symlink loop, permission
        raise SpecError(f"{spec_path}: {what}: {text!r}: cannot resolve {lexical}: {e}") \
            from None
    shown = f"{text!r}" + (f" (-> {real})" if real != lexical else "")
    if not any(real == r or r in real.parents for r in allowed):
        raise SpecError(
            f"{spec_path}: {what}: {shown} is outside the spec folder "
            f"{allowed[0]}", hint="spec files must live under the folder of bundles.toml; "
            "to read from another folder on purpose, list it in [files] extra_roots")
    if not real.is_file():
        raise SpecError(f"{spec_path}: {what}: {shown} is not a regular file")
    keydir = _key_dir_of(real)
    if keydir is not None:
        raise SpecError(f"{spec_path}: {what}: {shown} is inside the key folder {keydir}",
                        hint="signing keys and root metadata never go into a bundle; fix "
                        "the path or glob so it does not reach the key folder")
    return LocalFile(path=lexical, real=real, url=_url(base_dir, lexical, written.is_absolute()),
                     key=f"{spec_path}: {what}")


def expand(base_dir: Path, pattern: str, *, allowed: Sequence[Path], what: str,
           spec_path: Path) -> list[LocalFile]:
    """Files a manifest glob matches (relative or absolute, ``**`` allowed), each confined.
    Dot-files are not matched (they cannot be bundle members)."""
    expanded = os.path.expanduser(pattern)
    try:
        hits = sorted(glob.glob(expanded, root_dir=base_dir, recursive=True))
    except (OSError, ValueError) as e:
        raise SpecError(f"{spec_path}: {what}: pattern {pattern!r} is not usable: {e}") \
            from None
    out = []
    for hit in hits:
        full = base_dir / hit
        if full.is_dir():
            continue
        out.append(confine(base_dir, hit, allowed=allowed, what=f"{what} (pattern {pattern!r})",
                           spec_path=spec_path))
    return out


def check_no_key_material(data_chunks: Iterable[bytes], *, shown: str) -> None:
    """Refuse bytes holding a private key block (scanned across chunk borders)."""
    tail = b""
    for chunk in data_chunks:
        window = tail + chunk
        if _PRIVATE_KEY.search(window):
            raise SpecError(f"{shown} holds private key material",
                            hint="private keys never go into a bundle: remove the key from "
                            "the file (ship it to devices by other means)")
        tail = window[-_OVERLAP:]


def hash_checked(lf: LocalFile) -> tuple[str, int]:
    """sha256 and size of a local file, refusing private key material in the same pass."""
    h = hashlib.sha256()
    size = 0

    def chunks() -> Iterable[bytes]:
        nonlocal size
        try:
            with open(lf.real, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    yield chunk
        except OSError as e:
            raise LocalError(f"{lf.key}: cannot read {lf.path}: {e.strerror}") from None

    check_no_key_material(chunks(), shown=f"{lf.key}: {lf.url}")
    return h.hexdigest(), size


def scan_file(path: Path, *, what: str) -> None:
    """Refuse a file (a CA bundle) that holds private key material."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LocalError(f"cannot read {what} {path}: {e.strerror}") from None
    check_no_key_material([data], shown=f"{what} {path}")


def manifest_member(name: str) -> str:
    return f"manifests/{name}"


def check_manifest_names(files: Sequence[LocalFile], *, where: str, spec_path: Path) -> None:
    """Every name rule the bundle format applies, at lock time, naming the file and what to
    rename: a valid member name, not a generated ``helmchart-*.yaml``, unique even after case
    folding."""
    taken: dict[str, str] = {}
    for lf in files:
        name = lf.path.name
        shown = f"{spec_path}: {where}: {lf.url}"
        if name.lower().startswith(RESERVED_PREFIX) and name.lower().endswith((".yaml", ".yml")):
            raise SpecError(f"{shown}: file names {RESERVED_PREFIX}*.yaml are reserved for the "
                            "HelmChart manifests the builder generates for charts",
                            hint=f"rename {name} (e.g. to {name[len(RESERVED_PREFIX):]})")
        try:
            bundlefmt.check_member_path(manifest_member(name), "manifest")
        except InstallerError as e:
            raise SpecError(f"{shown}: its file name cannot be a bundle member ({e.message})",
                            hint=f"rename {name!r} to ASCII letters, digits and . _ + - only, "
                            "not starting with a dot, at most 201 characters") from None
        folded = name.lower()
        if folded in taken:
            raise SpecError(f"{shown}: has the same file name as {taken[folded]} (compared "
                            "case-insensitively)",
                            hint="K3s reads one flat manifests folder, and a FAT USB stick "
                            "folds case: rename one of them")
        taken[folded] = lf.url


_SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".ppk", ".gpg")
_SECRET_NAMES = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "keyring.json", "root.json",
                 ".netrc", "credentials", "kubeconfig")


def secret_warnings(paths: Iterable[str]) -> list[str]:
    """Bundle members whose names look like secrets (key files, key-folder files), for
    `bundle inspect`/`verify` to warn about. Names only: pure."""
    out = []
    for path in paths:
        name = path.rsplit("/", 1)[-1].lower()
        if name.endswith(_SECRET_SUFFIXES) or name in _SECRET_NAMES or name.startswith("id_"):
            out.append(f"warning: member {path} looks like a secret (key or credential file); "
                       "check that it belongs in the bundle")
    return out
