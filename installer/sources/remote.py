"""Where a device reads a ring repository or bundles from, picked by the URL's scheme from
one table (:data:`TRANSPORTS`): a folder (a USB stick, a mounted share: no scheme;
installer/sources/folder.py), a static HTTP(S) mirror of that folder (mirror.py) or an OCI
registry (ociregistry.py). Each implements :class:`~installer.sources.base.Source`, so sync
does not care which it is. A new transport is one new module with an ``open_X(spec,
options)`` and one line in :data:`TRANSPORTS`.

The names the builder and the tests use (``Missing``, ``check_path``, the OCI folder manifest
and its media types) are re-exported here from the module that defines them."""

import re
from typing import Callable, Dict, Optional

from installer.errors import ConfigError
from installer.sources import ocidist
from installer.sources.base import Entry, Missing, Options, Source, check_path
from installer.sources.folder import FolderSource, open_folder
from installer.sources.mirror import HttpSource, open_mirror
from installer.sources.ociregistry import (
    BUNDLE_ARTIFACT,
    BUNDLE_MEDIA_TYPE,
    DEFAULT_TAG,
    EMPTY_CONFIG,
    FILE_MEDIA_TYPE,
    FOLDER_ARTIFACT,
    MANIFEST_MEDIA_TYPE,
    TITLE,
    OciSource,
    folder_manifest,
    open_oci,
    parse_folder_manifest,
)

__all__ = ["BUNDLE_ARTIFACT", "BUNDLE_MEDIA_TYPE", "DEFAULT_TAG", "EMPTY_CONFIG",
           "FILE_MEDIA_TYPE", "FOLDER_ARTIFACT", "MANIFEST_MEDIA_TYPE", "TITLE", "Entry",
           "FolderSource", "HttpSource", "Missing", "OciSource", "Options", "Source",
           "TRANSPORTS", "check_path", "folder_manifest", "open_source",
           "parse_folder_manifest"]

Opener = Callable[[str, Options], Source]

# scheme -> how to open a source of it; a spec without a scheme is a folder
TRANSPORTS: Dict[str, Opener] = {
    "oci": open_oci,
    "http": open_mirror,
    "https": open_mirror,
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_source(spec: str, *, plain_http: bool = False, ca_file: Optional[str] = None,
                credentials: Optional[ocidist.Credentials] = None) -> Source:
    """``oci://HOST/REPO[:TAG]``, ``http(s)://MIRROR`` or a folder path."""
    options = Options(plain_http=plain_http, ca_file=ca_file, credentials=credentials)
    scheme = _SCHEME.match(spec)
    if scheme is None:
        return open_folder(spec, options)
    opener = TRANSPORTS.get(scheme.group(1))
    if opener is None:
        raise ConfigError(f"source {spec!r}: expected a folder, http(s)://MIRROR or "
                          "oci://HOST/REPO")
    return opener(spec, options)
