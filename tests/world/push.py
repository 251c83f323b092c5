"""Push blobs and manifests to a registry with ``requests`` (distribution API v2).

What it does: for each blob, ``HEAD /v2/<repo>/blobs/<digest>`` and, when absent, a monolithic
upload (``POST .../blobs/uploads/`` then ``PUT <Location>&digest=...`` with the whole body,
streamed from disk for big layers); then ``PUT /v2/<repo>/manifests/<ref>`` for platform
manifests (by digest) and the top manifest/index (by tag). Checks that the registry reports the
digest we computed (so digests are preserved byte for byte).

What it does not do: token auth (point it at the real registry, or pass a session whose auth
handles challenges), chunked uploads, or cross-repository mounts.
"""

from __future__ import annotations

import urllib.parse
from typing import Iterable

import requests

from .oci import Blob


class PushError(RuntimeError):
    """The registry refused something or answered with an unexpected digest."""


def _check(resp: requests.Response, what: str, *expected: int) -> None:
    if resp.status_code not in expected:
        raise PushError(f"{what}: HTTP {resp.status_code} {resp.text[:300]!r}")


def blob_exists(session: requests.Session, base_url: str, repository: str, digest: str) -> bool:
    resp = session.head(f"{base_url}/v2/{repository}/blobs/{digest}")
    if resp.status_code == 404:
        return False
    _check(resp, f"HEAD blob {digest} in {repository}", 200)
    return True


def push_blob(session: requests.Session, base_url: str, repository: str, blob: Blob) -> bool:
    """Upload ``blob`` unless the repository has it; return True when bytes were sent."""
    if blob_exists(session, base_url, repository, blob.digest):
        return False
    resp = session.post(f"{base_url}/v2/{repository}/blobs/uploads/")
    _check(resp, f"start upload of {blob.digest} to {repository}", 202)
    location = urllib.parse.urljoin(base_url + "/", resp.headers["Location"])
    sep = "&" if urllib.parse.urlsplit(location).query else "?"
    url = f"{location}{sep}digest={urllib.parse.quote(blob.digest)}"
    with blob.open() as body:
        resp = session.put(url, data=body, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(blob.size)})
    _check(resp, f"upload of {blob.digest} to {repository}", 201)
    got = resp.headers.get("Docker-Content-Digest")
    if got and got != blob.digest:
        raise PushError(f"registry stored {blob.digest} as {got}")
    return True


def put_manifest(session: requests.Session, base_url: str, repository: str, reference: str,
                 manifest: Blob) -> str:
    """PUT a manifest/index by tag or digest; return the digest the registry reports."""
    resp = session.put(f"{base_url}/v2/{repository}/manifests/{reference}",
                       data=manifest.read(), headers={"Content-Type": manifest.media_type})
    _check(resp, f"PUT manifest {repository}:{reference}", 201)
    got = resp.headers.get("Docker-Content-Digest", manifest.digest)
    if got != manifest.digest:
        raise PushError(f"registry stored manifest {manifest.digest} as {got}")
    return got


def push_content(session: requests.Session, base_url: str, repository: str, *,
                 blobs: Iterable[Blob], children: Iterable[Blob], top: Blob,
                 tags: Iterable[str]) -> str:
    """Push layers/configs, then child manifests by digest, then ``top`` under each tag
    (by its digest when ``tags`` is empty)."""
    base_url = base_url.rstrip("/")
    seen: set[str] = set()
    for blob in blobs:
        if blob.digest not in seen:
            seen.add(blob.digest)
            push_blob(session, base_url, repository, blob)
    for child in children:
        put_manifest(session, base_url, repository, child.digest, child)
    digest = top.digest
    for ref in list(tags) or [top.digest]:
        digest = put_manifest(session, base_url, repository, ref, top)
    return digest


def push_folder_artifact(session: requests.Session, base_url: str, repository: str, *,
                         files: dict[str, bytes], tag: str) -> str:
    """``files`` (path -> bytes) as one folder artifact in the layout installer/sources/remote.py
    reads, written by hand (independent of `bundle repo push`); returns the manifest digest."""
    import hashlib

    from installer.sources import remote

    def sha(d: bytes) -> str:
        return hashlib.sha256(d).hexdigest()
    manifest = remote.folder_manifest(
        {p: (sha(d), len(d), remote.FILE_MEDIA_TYPE) for p, d in files.items()},
        artifact_type=remote.FOLDER_ARTIFACT)
    blobs = [Blob(remote.FILE_MEDIA_TYPE, "sha256:" + sha(d), len(d), data=d)
             for d in files.values()]
    blobs.append(Blob(remote.EMPTY_CONFIG, "sha256:" + sha(b"{}"), 2, data=b"{}"))
    top = Blob(remote.MANIFEST_MEDIA_TYPE, "sha256:" + sha(manifest), len(manifest),
               data=manifest)
    return push_content(session, base_url, repository, blobs=blobs, children=[], top=top,
                        tags=[tag])
