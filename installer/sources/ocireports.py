"""Device reports through an OCI registry: push one report as a one-file folder artifact (the
layout of ``remote.folder_manifest``), tagged ``<device id>-<sequence>``; list and read them
back (the desk's ``bundle fleet status --reports oci://HOST/REPO``).

Built on the device's own client (``ocidist.Client``): the same auth (anonymous, Basic,
Bearer), the same credential rule (credentials only to the registry's own host over https or
to loopback) and never plain http off loopback: a report sink has no ``--plain-http``.
"""

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterator, List, Optional, Tuple

from installer.errors import ConfigError, FormatError, TransferError
from installer.sources import ocidist, remote

TAG_RE = re.compile(r"^([0-9a-f]{64})-([0-9]{1,12})$")
MAX_REPORT = 64 * 1024
_EMPTY = b"{}"
MAX_TAG_PAGES = 1000


def report_tag(device_id: str, sequence: int) -> str:
    return f"{device_id}-{sequence}"


class ReportClient(ocidist.Client):
    """``ocidist.Client`` plus the three calls a push needs and tag listing."""

    credentials_hint = ("give the device's registry credentials "
                        f"({ocidist.USER_ENV}/{ocidist.PASSWORD_ENV} or --report-credentials-file)")

    def __init__(self, ref: ocidist.OciRef, *, ca_file: Optional[str] = None,
                 credentials: Optional[ocidist.Credentials] = None) -> None:
        super().__init__(ref.host, plain_http=False, ca_file=ca_file, credentials=credentials)
        self.ref = ref
        if self.scheme == "http" and not ocidist.is_loopback(ref.host):
            raise ConfigError(f"{ref.url}: reports go to a registry over https only")

    def _send(self, method: str, url: str, *, data: Optional[bytes], what: str,
              headers: Dict[str, str]) -> Tuple[int, Dict[str, str]]:
        scope = f"repository:{self.ref.repository}:pull,push"
        parts = urllib.parse.urlsplit(url)
        if parts.netloc != self.host or parts.scheme != self.scheme:
            raise TransferError(f"{what}: the registry sent the upload to {url}, another host "
                                "or scheme: not followed")
        with self.send(url, what=what, scope=scope, headers=headers, method=method,
                       data=data) as resp:
            resp.read(MAX_REPORT)
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}

    def _base(self) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.ref.repository}"

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        what = f"upload of {digest[:19]} to {self.ref.url}"
        _, headers = self._send("POST", self._base() + "/blobs/uploads/", data=b"", what=what,
                                headers={"Content-Length": "0"})
        location = headers.get("location")
        if not location:
            raise TransferError(f"{what}: the registry gave no upload location")
        url = urllib.parse.urljoin(self._base() + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        self._send("PUT", url, data=data, what=what,
                   headers={"Content-Type": "application/octet-stream"})
        return digest

    def put_manifest(self, tag: str, data: bytes) -> None:
        self._send("PUT", f"{self._base()}/manifests/{tag}", data=data,
                   what=f"manifest {self.ref.url}:{tag}",
                   headers={"Content-Type": remote.MANIFEST_MEDIA_TYPE})

    def tags(self) -> List[str]:
        """Every tag of the repository (``/tags/list``, following ``Link`` pages)."""
        out: List[str] = []
        path: Optional[str] = f"/v2/{self.ref.repository}/tags/list?n=1000"
        scope = f"repository:{self.ref.repository}:pull"
        for _ in range(MAX_TAG_PAGES):
            if path is None:
                return out
            try:
                resp = self.request(path, what=f"tags of {self.ref.url}", scope=scope)
            except TransferError as e:
                if "HTTP 404" in e.message and not out:
                    return []  # nothing pushed there yet
                raise
            with resp:
                body = resp.read(ocidist.MAX_MANIFEST + 1)
                link = resp.headers.get("Link") or ""
            try:
                doc = json.loads(body)
            except ValueError:
                raise FormatError(f"tags of {self.ref.url}: not JSON") from None
            tags = doc.get("tags") if isinstance(doc, dict) else None
            out += [t for t in (tags or []) if isinstance(t, str)]
            m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            path = m.group(1) if m else None
            if path is not None and "://" in path:
                parts = urllib.parse.urlsplit(path)
                path = parts.path + ("?" + parts.query if parts.query else "")
        raise TransferError(f"tags of {self.ref.url}: over {MAX_TAG_PAGES} pages")


def push_report(url: str, name: str, data: bytes, *, tag: str, ca_file: Optional[str] = None,
                credentials: Optional[ocidist.Credentials] = None) -> str:
    """Push one report file; returns ``oci://HOST/REPO:TAG``."""
    ref = ocidist.parse_oci_url(url)
    if ref.reference is not None:
        raise ConfigError(f"--report-to {url}: name the repository only (each report gets "
                          "its own tag)")
    client = ReportClient(ref, ca_file=ca_file, credentials=credentials)
    client.put_blob(_EMPTY)
    digest = client.put_blob(data)
    manifest = remote.folder_manifest(
        {name: (digest.split(":", 1)[1], len(data), remote.FILE_MEDIA_TYPE)},
        artifact_type=remote.FOLDER_ARTIFACT)
    client.put_manifest(tag, manifest)
    return f"oci://{ref.host}/{ref.repository}:{tag}"


def read_reports(url: str, *, ca_file: Optional[str] = None,
                 credentials: Optional[ocidist.Credentials] = None
                 ) -> Iterator[Tuple[str, bytes]]:
    """``(name, bytes)`` of every report tag in the repository (other tags are skipped)."""
    ref = ocidist.parse_oci_url(url)
    client = ReportClient(ref, ca_file=ca_file, credentials=credentials)
    for tag in sorted(client.tags()):
        if not TAG_RE.match(tag):
            continue
        source = remote.OciSource(f"oci://{ref.host}/{ref.repository}:{tag}", client=client)
        for path, entry in sorted(source.entries().items()):
            if entry.size > MAX_REPORT:
                yield f"{ref.url}:{tag}/{path}", b""
                continue
            yield f"{ref.url}:{tag}", source.read(path, max_size=MAX_REPORT)
