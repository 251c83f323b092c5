"""A folder pushed to an OCI registry as one artifact (``oci://HOST/REPO[:TAG]``, written by
`bundle repo push` and `bundle push`, docs/fleet.md): one OCI image manifest with
``artifactType`` ``application/vnd.k3s-airgap.folder.v1`` (or ``...bundle.v1`` for a pushed
bundle), the empty config, and one layer per file whose ``org.opencontainers.image.title``
annotation is the file's path in the folder (``/`` separated). A file's sha256 is its layer
digest, so what TUF metadata or a bundle index pins is exactly what the registry serves by
digest; nothing fetched is trusted for being there."""

import json
import os
import re
import shutil
import tempfile
from typing import Dict, Optional, Tuple

from installer.errors import DigestMismatch, FormatError
from installer.format import canonjson
from installer.sources import ocidist
from installer.sources.base import Entry, Missing, Options, Source, check_path

FOLDER_ARTIFACT = "application/vnd.k3s-airgap.folder.v1"
BUNDLE_ARTIFACT = "application/vnd.k3s-airgap.bundle.v1"
FILE_MEDIA_TYPE = "application/vnd.k3s-airgap.file.v1"
BUNDLE_MEDIA_TYPE = "application/vnd.k3s-airgap.bundle.v1.tar"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
# The tag a pushed ring repository gets and a device reads when the URL names none (one
# default for `bundle repo push` and `airgap-install sync --source oci://`).
DEFAULT_TAG = "latest"
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


class OciSource:
    """A folder artifact in a registry (``oci://HOST/REPO[:TAG]``, default tag ``latest``)."""

    def __init__(self, url: str, *, client: Optional[ocidist.Client] = None,
                 plain_http: bool = False, ca_file: Optional[str] = None,
                 credentials: Optional[ocidist.Credentials] = None) -> None:
        self.ref = ocidist.parse_oci_url(url)
        self.label = self.ref.url
        self.client = client or ocidist.Client(self.ref.host, plain_http=plain_http,
                                               ca_file=ca_file, credentials=credentials)
        self._entries: Optional[Dict[str, Entry]] = None

    def entries(self) -> Dict[str, Entry]:
        """Path -> entry, from the artifact manifest (fetched once)."""
        if self._entries is None:
            data, _, _ = self.client.manifest(self.ref.repository,
                                              self.ref.reference or DEFAULT_TAG)
            self._entries = parse_folder_manifest(data, what=self.label)
        return self._entries

    def _entry(self, path: str) -> Entry:
        entry = self.entries().get(check_path(path))
        if entry is None:
            raise Missing(f"{self.label} holds no file {path}",
                                hint="push the repository again with `bundle repo push`")
        return entry

    def read(self, path: str, *, max_size: int) -> bytes:
        entry = self._entry(path)
        if entry.size > max_size:
            raise FormatError(f"{self.label}/{path} is {entry.size} bytes, over {max_size}")
        # small files go through a temp file like big ones: one verified download path
        tmp_dir = tempfile.mkdtemp(prefix=".airgap-remote-")
        dest = os.path.join(tmp_dir, "blob")
        try:
            self.client.blob_to(self.ref.repository, "sha256:" + entry.sha256, entry.size,
                                dest=dest)
            with open(dest, "rb") as f:
                return f.read()
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
        entry = self._entry(path)
        if (entry.sha256, entry.size) != (sha256, size):
            raise DigestMismatch(f"{self.label}/{path} is sha256:{entry.sha256} "
                                 f"({entry.size} bytes) in the registry; the signed metadata "
                                 f"wants sha256:{sha256} ({size} bytes)",
                                 hint="the registry holds another publication: push it again")
        self.client.blob_to(self.ref.repository, "sha256:" + sha256, size, dest=dest)


def parse_folder_manifest(data: bytes, *, what: str) -> Dict[str, Entry]:
    """The files of a folder artifact manifest, strictly (pure)."""
    doc = canonjson.loads_strict(data, what=f"{what} manifest")
    if not isinstance(doc, dict) or doc.get("artifactType") not in (FOLDER_ARTIFACT,
                                                                     BUNDLE_ARTIFACT):
        raise FormatError(f"{what} is not a k3s-airgap folder or bundle artifact",
                          hint="push it with `bundle repo push` or `bundle push`")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise FormatError(f"{what}: layers must be a list")
    out: Dict[str, Entry] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise FormatError(f"{what}: layer {i} is not an object")
        annotations = layer.get("annotations") or {}
        path = annotations.get(TITLE) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(path, str):
            raise FormatError(f"{what}: layer {i} has no {TITLE} annotation")
        match = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
        if match is None or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"{what}: layer {path!r} has a bad digest or size")
        if check_path(path) in out:
            raise FormatError(f"{what}: {path!r} is listed twice")
        out[path] = Entry(path, match.group(1), size)
    return out


def folder_manifest(entries: Dict[str, Tuple[str, int, str]], *, artifact_type: str,
                    annotations: Optional[Dict[str, str]] = None) -> bytes:
    """The manifest bytes for files ``{path: (sha256, size, media type)}``, deterministic
    (layers sorted by path), written by the builder and read back with
    :func:`parse_folder_manifest` before it is pushed."""
    empty = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # {}
    layers = [{"mediaType": media_type, "digest": "sha256:" + sha, "size": size,
               "annotations": {TITLE: check_path(path)}}
              for path, (sha, size, media_type) in sorted(entries.items())]
    doc: Dict[str, object] = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                              "artifactType": artifact_type,
                              "config": {"mediaType": EMPTY_CONFIG, "digest": empty, "size": 2},
                              "layers": layers}
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    parse_folder_manifest(data, what="the manifest to push")
    return data


def open_oci(spec: str, options: Options) -> Source:
    return OciSource(spec, plain_http=options.plain_http, ca_file=options.ca_file,
                     credentials=options.credentials)
