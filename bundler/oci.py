"""A small OCI distribution client over the shared transport.

Why not oras-py: its ``get_manifest`` returns parsed JSON (the exact bytes, hence the digest,
are lost) and ``download_blob`` neither verifies digests nor resumes; both are the heart of
this tool. What it does: manifests by tag or digest with the exact bytes verified against the
digest, streaming blob responses with Range, Bearer-token and Basic auth as docker.io, ghcr.io
and quay.io speak them (https://distribution.github.io/distribution/spec/auth/token/), custom
CA files. Pure helpers for picking platforms live in ``platforms``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from .errors import AuthError, NotFoundError, UpstreamError
from .spec import RegistryConfig
from .transport import Transport

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))

_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Fetched:
    """A manifest's exact bytes, its media type and its verified digest."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.data)
        except ValueError as e:
            raise UpstreamError(f"manifest {self.digest} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise UpstreamError(f"manifest {self.digest} is not a JSON object")
        return doc


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """Talks to one registry endpoint. Thread-safe; tokens are cached per repository."""

    def __init__(self, transport: Transport, config: RegistryConfig) -> None:
        self.transport = transport
        self.config = config
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._verify: Any = str(config.ca_file) if config.ca_file else True

    # -------------------------------------------------------------- auth

    def _credentials(self) -> tuple[str, str] | None:
        cfg = self.config
        if not cfg.username_env:
            return None
        user = os.environ.get(cfg.username_env)
        password = os.environ.get(cfg.password_env or "", "")
        if user is None:
            raise AuthError(f"registry {cfg.host}: environment variable {cfg.username_env} "
                            "is not set", hint="export it, or remove username_env from the spec")
        return user, password

    def _token(self, challenge: str, repo: str) -> str:
        params = dict(_CHALLENGE_RE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise AuthError(f"registry {self.config.host}: Bearer challenge without realm")
        if "scope" not in params:
            params["scope"] = f"repository:{repo}:pull"
        creds = self._credentials()
        sep = "&" if "?" in realm else "?"
        resp = self.transport.request(
            "GET", realm + sep + urlencode(params), headers={}, verify=self._verify, auth=creds,
            what=f"token for {self.config.host}/{repo}", allow_status=(401, 403))
        if resp.status_code != 200:
            resp.close()
            raise AuthError(
                f"registry {self.config.host}: token service refused access to {repo} "
                f"(HTTP {resp.status_code})",
                hint="check the credentials named by username_env/password_env"
                if creds else "this repository needs credentials: set username_env and "
                              "password_env for the registry in bundles.toml")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"registry {self.config.host}: token service returned no token")
        return token

    def _auth_headers(self, repo: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(repo)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _request(self, method: str, path: str, repo: str, *, headers: dict[str, str],
                 stream: bool = False, what: str, ok: tuple[int, ...] = (200,),
                 allow_status: tuple[int, ...] = ()) -> requests.Response:
        url = f"{self.config.endpoint}/v2/{repo}/{path}"
        basic = None
        for attempt in range(2):
            resp = self.transport.request(
                method, url, headers={**headers, **self._auth_headers(repo)}, stream=stream,
                verify=self._verify, auth=basic, what=what, ok=ok,
                allow_status=(401, *allow_status))
            if resp.status_code != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            if attempt:
                break
            if challenge.lower().startswith("bearer"):
                token = self._token(challenge, repo)
                with self._lock:
                    self._tokens[repo] = token
            else:
                basic = self._credentials()
                if basic is None:
                    break
        raise AuthError(f"{what}: authentication failed at {self.config.endpoint}",
                        hint="set username_env/password_env for this registry in bundles.toml "
                             "and export those variables")

    # -------------------------------------------------------------- content

    def get_manifest(self, repo: str, reference: str, *, what: str) -> Fetched:
        """Fetch a manifest or index by tag or digest; verify its digest."""
        resp = self._request("GET", f"manifests/{reference}", repo, headers={"Accept": ACCEPT},
                             stream=True, what=what, allow_status=(404,))
        with resp:
            if resp.status_code == 404:
                raise NotFoundError(
                    f"{what}: not found at {self.config.endpoint} (repository {repo}, "
                    f"reference {reference})",
                    hint="check the image name and tag; `bundle lock --update` after fixing")
            declared = resp.headers.get("Content-Length")
            if declared and int(declared) > MAX_MANIFEST_BYTES:
                raise UpstreamError(f"{what}: manifest is {declared} bytes, over the "
                                    f"{MAX_MANIFEST_BYTES} byte limit")
            data = b""
            for chunk in resp.iter_content(65536):
                data += chunk
                if len(data) > MAX_MANIFEST_BYTES:
                    raise UpstreamError(f"{what}: manifest exceeds {MAX_MANIFEST_BYTES} bytes")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest")
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise UpstreamError(f"{what}: registry returned content with digest {digest}, "
                                f"expected {reference}", hint="the registry or a proxy is "
                                "corrupting data; do not use it")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise UpstreamError(f"{what}: registry says digest {header_digest} but the bytes "
                                f"hash to {digest}", hint="the transfer was corrupted; retry")
        if not media_type or media_type in ("application/json", "text/plain"):
            media_type = str(json.loads(data).get("mediaType", "")) if data else ""
        return Fetched(data, media_type, digest)

    def open_blob(self, repo: str, digest: str, *, start: int = 0,
                  what: str) -> requests.Response:
        """Streaming response for a blob, from byte ``start`` (206) when the server allows."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        resp = self._request("GET", f"blobs/{digest}", repo, headers=headers, stream=True,
                             what=what, ok=(200, 206), allow_status=(404,))
        if resp.status_code == 404:
            resp.close()
            raise NotFoundError(f"{what}: blob {digest} not found in {repo} at "
                                f"{self.config.endpoint}")
        return resp
