"""Push a ring repository folder or bundle files to an OCI registry, and pull one back onto a
folder (docs/fleet.md). The artifact layout is the device's (``installer.sources.remote``: one
manifest,
one layer per file titled with its path, a file's sha256 is its layer digest); this module only
writes it. Blobs the registry already holds are skipped (HEAD first), so a second push of an
unchanged repository moves only the manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

from bundler.errors import FetchError, LocalError, NotFoundError, SpecError, UpstreamError
from bundler.fetch.oci import RegistryClient
from bundler.fetch.transport import Transport, iter_raw
from bundler.limits import Limits, human
from bundler.spec.spec import RegistryConfig
from installer.errors import FormatError
from installer.fsio import write_verified
from installer.sources import ocidist, regauth, remote
from installer.sources.ocidist import OciRef, parse_oci_url

REPO_TAG = remote.DEFAULT_TAG  # what `sync --source oci://HOST/REPO` reads
EMPTY = b"{}"  # the empty config blob (remote.EMPTY_CONFIG)
_TAG_BAD = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class PushReport:
    target: str
    digest: str = ""
    files: int = 0
    pushed: int = 0            # blobs uploaded
    skipped: int = 0           # blobs the registry already held
    bytes_pushed: int = 0
    bytes_skipped: int = 0
    left_out: list[str] = field(default_factory=list)  # desk-only files never pushed

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class PullReport:
    source: str
    out: str
    files: list[str] = field(default_factory=list)
    bytes: int = 0

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Access:
    """How to reach a registry from the CLI: ``--plain-http``, ``--ca-file`` and the
    credentials (from ``--credentials-file`` or the environment, never the command line;
    ``access_from``)."""

    plain_http: bool = False
    ca_file: Path | None = None
    credentials: tuple[str, str] | None = field(default=None, repr=False)


AUTH_HINT = ("give --credentials-file FILE (user:password, or {\"username\": .., "
             "\"password\": ..}) or set $" + ocidist.USER_ENV + " and $" + ocidist.PASSWORD_ENV
             + "; check them and the account's rights on the repository")


def access_from(*, plain_http: bool = False, ca_file: Path | None = None,
                credentials_file: Path | None = None) -> Access:
    """The CLI's registry options, checked before any traffic: the same credentials file
    format and environment variables as `airgap-install sync --source oci://`
    (``installer.sources.ocidist.credentials_from``)."""
    if plain_http and ca_file is not None:
        raise SpecError("--plain-http and --ca-file contradict each other",
                        hint="a CA file is for https; drop one of them")
    if ca_file is not None and not ca_file.is_file():
        raise SpecError(f"--ca-file {ca_file} is not a file",
                        hint="give the PEM file of the CA that signed the registry's "
                             "certificate")
    creds = ocidist.credentials_from(str(credentials_file) if credentials_file else None,
                                     os.environ)
    return Access(plain_http=plain_http, ca_file=ca_file,
                  credentials=(creds.username, creds.password) if creds else None)


def endpoint_for(host: str, access: Access) -> str:
    """Plain HTTP on loopback unless a CA file is given (as Docker does, and as the device's
    ``installer.sources.ocidist.Client``), https elsewhere unless ``plain_http`` (pure)."""
    if access.plain_http or (regauth.is_loopback(host) and access.ca_file is None):
        return f"http://{host}"
    return f"https://{host}"


def target_ref(url: str, *, plain_http: bool = False,
               access: Access | None = None) -> tuple[OciRef, str]:
    """The parsed reference and the registry endpoint (pure: checked before any traffic)."""
    ref = parse_oci_url(url)
    return ref, endpoint_for(ref.host, access or Access(plain_http=plain_http))


def client_for(ref: OciRef, endpoint: str, *, transport: Transport | None = None,
               access: Access | None = None) -> RegistryClient:
    """The builder's registry client for a CLI target. Credentials over plain HTTP to a host
    that is not loopback are refused here, before the first connection."""
    access = access or Access()
    if access.credentials is not None:
        why = regauth.credentials_refusal(endpoint, endpoint)
        if why is not None:
            raise SpecError(f"oci://{ref.host}: credentials not sent: {why}",
                            hint="serve the registry over https (--ca-file for a private CA) "
                                 "instead of --plain-http, or unset the credentials")
    return RegistryClient(transport or Transport(limits=Limits.from_env()),
                          RegistryConfig(host=ref.host, endpoint=endpoint,
                                         ca_file=access.ca_file),
                          credentials=access.credentials, auth_hint=AUTH_HINT)


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def folder_files(directory: Path) -> dict[str, Path]:
    """Every regular file under ``directory`` by its ``/`` path; a symlink or special file
    is an error (what is pushed is exactly what a device would verify)."""
    if not directory.is_dir():
        raise SpecError(f"{directory} is not a folder", hint="give the ring repository folder "
                        "made by `bundle repo init`")
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = Path(root) / name
            rel = full.relative_to(directory).as_posix()
            mode = os.lstat(full).st_mode
            if not stat.S_ISREG(mode):
                raise SpecError(f"{full} is not a regular file",
                                hint="a pushed folder holds only regular files; remove it")
            try:
                files[remote.check_path(rel)] = full
            except FormatError as e:
                raise SpecError(f"{full}: {e.message}", hint=e.hint) from None
    if not files:
        raise SpecError(f"{directory} holds no files")
    return files


def push_files(client: RegistryClient, ref: OciRef, files: dict[str, tuple[Path, str]], *,
               tag: str, artifact_type: str,
               annotations: dict[str, str] | None = None) -> PushReport:
    """Push ``{path: (file, media type)}`` as one artifact tagged ``tag``."""
    report = PushReport(target=f"oci://{ref.host}/{ref.repository}:{tag}")
    entries: dict[str, tuple[str, int, str]] = {}
    for path, (file, media_type) in files.items():
        sha, size = _sha256(file)
        entries[path] = (sha, size, media_type)
    # the manifest is built (and parsed back) before the first byte goes out
    manifest = remote.folder_manifest(entries, artifact_type=artifact_type,
                                      annotations=annotations)
    blobs: dict[str, tuple[Path | bytes, int]] = {
        sha: (files[p][0], size) for p, (sha, size, _) in entries.items()}
    blobs.setdefault(hashlib.sha256(EMPTY).hexdigest(), (EMPTY, len(EMPTY)))  # the config
    repo = ref.repository
    for sha, (source, size) in sorted(blobs.items()):
        digest = "sha256:" + sha
        what = f"{report.target}: blob {digest[:19]}"
        if client.blob_exists(repo, digest, what=what):
            report.skipped += 1
            report.bytes_skipped += size
            continue
        client.upload_blob(repo, digest, source, size=size, what=what)
        report.pushed += 1
        report.bytes_pushed += size
    report.files = len(entries)
    report.digest = client.put_manifest(repo, tag, manifest,
                                        media_type=remote.MANIFEST_MEDIA_TYPE,
                                        what=f"{report.target}: manifest")
    return report


# A ring repository's changes waiting for threshold signatures (`bundle repo sign`): they stay
# at the desk; a device never reads them and a registry is no place for unfinished decisions.
DESK_ONLY = "staged/"


def push_repo(directory: Path, url: str, *, access: Access | None = None,
              transport: Transport | None = None) -> PushReport:
    ref, endpoint = target_ref(url, access=access)
    every = folder_files(directory)
    left_out = sorted(p for p in every if p.startswith(DESK_ONLY))
    files = {p: (f, remote.FILE_MEDIA_TYPE) for p, f in every.items() if p not in left_out}
    if not files:
        raise SpecError(f"{directory} holds only {DESK_ONLY} (changes waiting for signatures)",
                        hint="push the repository folder made by `bundle repo init`")
    client = client_for(ref, endpoint, transport=transport, access=access)
    report = push_files(client, ref, files,
                        tag=ref.reference or REPO_TAG, artifact_type=remote.FOLDER_ARTIFACT)
    report.left_out = left_out
    return report


def bundle_tag(path: Path) -> str:
    """``<name>-<version>-<arch>`` from the bundle's file name (``+`` and other characters a
    tag cannot hold become ``_``)."""
    stem = path.name[:-4] if path.name.endswith(".tar") else path.name
    return _TAG_BAD.sub("_", stem)[:128]


def push_bundles(bundles: list[Path], url: str, *, access: Access | None = None,
                 transport: Transport | None = None) -> list[PushReport]:
    ref, endpoint = target_ref(url, access=access)
    if ref.reference is not None and len(bundles) > 1:
        raise SpecError(f"{url}: one tag for {len(bundles)} bundles",
                        hint="leave the tag out: each bundle is tagged <name>-<version>-<arch>")
    for b in bundles:
        if not b.is_file():
            raise SpecError(f"{b} is not a bundle file")
        remote.check_path(b.name)
    client = client_for(ref, endpoint, transport=transport, access=access)
    return [push_files(client, ref, {b.name: (b, remote.BUNDLE_MEDIA_TYPE)},
                       tag=ref.reference or bundle_tag(b), artifact_type=remote.BUNDLE_ARTIFACT)
            for b in bundles]


def pull(url: str, out: Path, *, access: Access | None = None,
         transport: Transport | None = None) -> PullReport:
    """Every file of a folder or bundle artifact onto ``out``, each verified against its layer
    digest and written atomically; paths are checked before anything is written."""
    ref, endpoint = target_ref(url, access=access)
    if ref.reference is None:
        raise SpecError(f"{url}: which tag?", hint="write oci://HOST/REPO:TAG")
    client = client_for(ref, endpoint, transport=transport, access=access)
    try:
        fetched = client.get_manifest(ref.repository, ref.reference, what=url)
    except NotFoundError as e:
        raise NotFoundError(e.message, hint="check the tag: `bundle repo push` tags `repo`, "
                            "`bundle push` <name>-<version>-<arch>") from None
    try:
        entries = remote.parse_folder_manifest(fetched.data, what=url)
    except FormatError as e:
        raise UpstreamError(e.message, hint=e.hint) from None
    _check_pull(entries, client.limits, what=url)
    report = PullReport(source=ref.url, out=str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LocalError(f"cannot create {out}: {e.strerror}") from None
    stage = _staging(out)
    try:
        staged = [(path, entry, _pull_one(client, ref.repository, entry, stage=stage, what=url))
                  for path, entry in sorted(entries.items())]
        for path, entry, file in staged:   # every file verified: now they go into --out
            dest = out.joinpath(*path.split("/"))
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, dest)
            except OSError as e:
                raise LocalError(f"cannot write {dest}: {e.strerror}",
                                 hint="pull into an empty folder") from None
            report.files.append(path)
            report.bytes += entry.size
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return report


def _check_pull(entries: dict[str, remote.Entry], limits: Limits, *, what: str) -> None:
    """Before any byte: each file within the ``layer`` cap, all within ``pull_total``, and no
    path that is also a folder of another (``a`` and ``a/b``)."""
    total = 0
    for path, entry in entries.items():
        total += limits.check_size("layer", entry.size, what=f"{what}: {path}",
                                   source="the artifact manifest")
    if total > limits.pull_total:
        raise UpstreamError(f"{what}: the artifact declares {total} bytes in all, over the "
                            f"pull_total cap of {human(limits.pull_total)}",
                            hint="if that is real, raise it: BUNDLE_LIMITS=\"pull_total=<size>\"")
    for path in entries:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in entries:
                raise UpstreamError(f"{what}: {'/'.join(parts[:i])!r} is both a file and the "
                                    f"folder of {path!r}",
                                    hint="the artifact is malformed; nothing was written")


def _staging(out: Path) -> Path:
    """A fresh folder beside ``out`` for unverified bytes (``.<out>.pull-*``; ones left by a
    killed run are removed first), so ``out`` only ever receives verified files."""
    for stale in out.parent.glob(f".{out.name}.pull-*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.pull-", dir=out.parent))
    except OSError as e:
        raise LocalError(f"cannot write beside {out}: {e.strerror}") from None


def _pull_one(client: RegistryClient, repository: str, entry: remote.Entry, *, stage: Path,
              what: str) -> Path:
    """One file into ``stage`` (named by its digest), read stopping at its declared size and
    verified; a broken or dripping transfer is a FetchError (exit 5)."""
    dest = stage / entry.sha256
    label = f"{what}: {entry.path}"
    with client.open_blob(repository, "sha256:" + entry.sha256, what=label,
                          expect=entry.size) as resp:
        try:
            write_verified(dest, iter_raw(resp, what=label), sha256=entry.sha256,
                           size=entry.size, what=label, durable=False)
        except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
                TimeoutError) as e:
            raise FetchError(f"{label}: the transfer broke: {str(e)[:300]}",
                                hint="retry; the registry or the link dropped") from None
    return dest
