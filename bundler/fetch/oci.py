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
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests

from bundler.errors import AuthError, NotFoundError, UpstreamError
from bundler.fetch.transport import Transport, check_url, read_capped
from bundler.limits import DEFAULT as DEFAULT_LIMITS
from bundler.spec.refs import (  # re-exported: the client's callers name them from here
    DOCKER_LIST as DOCKER_LIST,
)
from bundler.spec.refs import (
    DOCKER_MANIFEST as DOCKER_MANIFEST,
)
from bundler.spec.refs import (
    INDEX_TYPES as INDEX_TYPES,
)
from bundler.spec.refs import (
    MANIFEST_TYPES as MANIFEST_TYPES,
)
from bundler.spec.refs import (
    MEDIA_TYPES as MEDIA_TYPES,
)
from bundler.spec.refs import (
    OCI_INDEX as OCI_INDEX,
)
from bundler.spec.refs import (
    OCI_MANIFEST as OCI_MANIFEST,
)
from bundler.spec.spec import RegistryConfig
from installer.sources import regauth

MAX_MANIFEST_BYTES = DEFAULT_LIMITS.manifest

ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))


@dataclass(frozen=True)
class Fetched:
    """A manifest's exact bytes and its verified digest; its media type comes from those
    bytes (``media_type``), checked against ``MEDIA_TYPES``."""

    data: bytes
    digest: str

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.data)
        except (ValueError, RecursionError) as e:
            raise UpstreamError(f"manifest {self.digest} is not valid JSON: "
                                f"{str(e)[:200]}") from None
        if not isinstance(doc, dict):
            raise UpstreamError(f"manifest {self.digest} is not a JSON object")
        return doc

    @cached_property
    def media_type(self) -> str:
        return manifest_media_type(self.json(), what=f"manifest {self.digest}")


def manifest_media_type(doc: dict[str, Any], *, what: str) -> str:
    """The media type a manifest's own bytes declare (or imply, when the optional
    ``mediaType`` is absent), if it is an OCI/Docker image index or manifest."""
    declared = doc.get("mediaType")
    if declared is None:
        if isinstance(doc.get("manifests"), list):
            return OCI_INDEX
        if isinstance(doc.get("config"), dict):
            return OCI_MANIFEST
        raise UpstreamError(f"{what} declares no mediaType and is neither an index nor a "
                            "manifest")
    if not isinstance(declared, str) or declared not in MEDIA_TYPES:
        raise UpstreamError(f"{what}: unsupported manifest media type {str(declared)[:100]!r}",
                            hint="only OCI and Docker v2 image indexes and manifests are "
                                 "bundled")
    return declared


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """Talks to one registry endpoint. Thread-safe; tokens are cached per repository."""

    def __init__(self, transport: Transport, config: RegistryConfig, *,
                 credentials: tuple[str, str] | None = None,
                 auth_hint: str | None = None) -> None:
        """``credentials`` given here (a credentials file or environment variable read by the
        CLI, ``ocipush.access_from``) take the place of the spec's ``username_env``;
        ``auth_hint`` is what a refusal tells the user to check."""
        self.transport = transport
        self.config = config
        self._given_credentials = credentials
        self._auth_hint = auth_hint
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._verify: Any = str(config.ca_file) if config.ca_file else True
        self.limits = transport.limits
        # hosts (besides the endpoint's) that may receive this registry's credentials
        self.auth_hosts: tuple[str, ...] = (
            config.host, *regauth.KNOWN_TOKEN_HOSTS.get(config.host, ()),
            *config.auth_hosts)

    # -------------------------------------------------------------- auth

    def _credentials(self) -> tuple[str, str] | None:
        cfg = self.config
        if self._given_credentials is not None:
            return self._given_credentials
        if not cfg.username_env:
            return None
        user = os.environ.get(cfg.username_env)
        password = os.environ.get(cfg.password_env or "", "")
        if user is None:
            raise AuthError(f"registry {cfg.host}: environment variable {cfg.username_env} "
                            "is not set", hint="export it, or remove username_env from the spec")
        return user, password

    def _checked_credentials(self, target: str) -> tuple[str, str] | None:
        """The credentials, if configured, after checking ``target`` may receive them."""
        creds = self._credentials()
        if creds is None:
            return None
        # the transport ignores proxy variables (trust_env off): every request goes direct
        why = regauth.credentials_refusal(self.config.endpoint, target,
                                          allowed_hosts=self.auth_hosts)
        if why is not None:
            raise AuthError(f"registry {self.config.host}: credentials not sent: {why}",
                            hint="credentials go only over https (or loopback) to the "
                                 "registry's host; name another token host in the "
                                 "registry's auth_hosts if it is really yours")
        return creds

    def _token(self, challenge: str, repo: str) -> str:
        _, params = regauth.parse_challenge(challenge)
        realm = params.pop("realm", None)
        what = f"token for {self.config.host}/{repo}"
        if not realm:
            raise AuthError(f"registry {self.config.host}: Bearer challenge without realm")
        check_url(realm, what=f"{what} (realm)")
        if "scope" not in params:
            params["scope"] = f"repository:{repo}:pull"
        creds = self._checked_credentials(realm)
        sep = "&" if "?" in realm else "?"
        cap = self.limits.token
        resp = self.transport.request(
            "GET", realm + sep + urlencode(params), headers={}, verify=self._verify, auth=creds,
            what=what, allow_status=(401, 403), stream=True, expect=cap)
        with resp:
            if resp.status_code != 200:
                raise AuthError(
                    f"registry {self.config.host}: token service refused access to {repo} "
                    f"(HTTP {resp.status_code})",
                    hint=self._auth_hint or ("check the credentials named by "
                                             "username_env/password_env" if creds else
                                             "this repository needs credentials: set "
                                             "username_env and password_env for the "
                                             "registry in bundles.toml"))
            data = read_capped(resp, limit=cap, what=what, kind="token")
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise UpstreamError(f"{what}: the token service's answer is not a JSON object")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"{what}: the token service returned no token")
        return token

    def _auth_headers(self, repo: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(repo)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _request(self, method: str, path: str, repo: str, *, headers: dict[str, str],
                 stream: bool = False, what: str, ok: tuple[int, ...] = (200,),
                 allow_status: tuple[int, ...] = (),
                 expect: int | None = None, url: str | None = None,
                 body: Any = None) -> requests.Response:
        url = url or f"{self.config.endpoint}/v2/{repo}/{path}"
        basic = None
        for attempt in range(2):
            resp = self.transport.request(
                method, url, headers={**headers, **self._auth_headers(repo)}, stream=stream,
                verify=self._verify, auth=basic, what=what, ok=ok,
                allow_status=(401, *allow_status), expect=expect, body=body)
            if resp.status_code != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            if attempt:
                break
            if regauth.parse_challenge(challenge)[0] == "bearer":
                token = self._token(challenge, repo)
                with self._lock:
                    self._tokens[repo] = token
            else:
                basic = self._checked_credentials(url)
                if basic is None:
                    break
        raise AuthError(f"{what}: authentication failed at {self.config.endpoint}"
                        + (" (the registry refused the credentials)" if basic else ""),
                        hint=self._auth_hint or "set username_env/password_env for this "
                             "registry in bundles.toml and export those variables")

    # -------------------------------------------------------------- uploads

    def blob_exists(self, repo: str, digest: str, *, what: str) -> bool:
        """Whether the registry already holds blob ``digest`` in ``repo`` (HEAD)."""
        resp = self._request("HEAD", f"blobs/{digest}", repo, headers={}, what=what,
                             allow_status=(404,))
        resp.close()
        return resp.status_code == 200

    def manifest_exists(self, repo: str, reference: str, *, what: str) -> bool:
        """Whether the registry already holds manifest ``reference`` in ``repo`` (HEAD)."""
        resp = self._request("HEAD", f"manifests/{reference}", repo,
                             headers={"Accept": ACCEPT}, what=what, allow_status=(404,))
        resp.close()
        return resp.status_code == 200

    def upload_blob(self, repo: str, digest: str, source: Path | bytes, *, size: int,
                    what: str) -> None:
        """Upload ``source`` (a file, or small bytes) as blob ``digest``: POST opens an
        upload, one monolithic PUT with ``?digest=`` streams the file (re-opened on a
        retry); the registry checks the digest."""
        resp = self._request("POST", "blobs/uploads/", repo, headers={"Content-Length": "0"},
                             what=what, ok=(202,))
        location = resp.headers.get("Location", "")
        resp.close()
        base = f"{self.config.endpoint}/v2/{repo}/blobs/uploads/"
        target = urljoin(base, location.strip())
        if not location or urlsplit(target)[:2] != urlsplit(base)[:2]:
            raise UpstreamError(f"{what}: the registry gave no upload location on its own host "
                                f"({location[:200]!r})", hint="the registry does not speak the "
                                "OCI distribution upload protocol")
        parts = urlsplit(target)
        query = "&".join(q for q in (parts.query, urlencode({"digest": digest})) if q)
        self._request("PUT", "", repo, url=urlunsplit(parts._replace(query=query)),
                      headers={"Content-Type": "application/octet-stream",
                               "Content-Length": str(size)},
                      what=what, ok=(201,), expect=size,
                      body=(lambda: source) if isinstance(source, bytes)
                      else (lambda: open(source, "rb"))).close()

    def put_manifest(self, repo: str, reference: str, data: bytes, *, media_type: str,
                     what: str) -> str:
        """PUT manifest bytes under tag ``reference``; returns their digest."""
        self._request("PUT", f"manifests/{reference}", repo,
                      headers={"Content-Type": media_type}, what=what, ok=(201,),
                      body=lambda: data).close()
        return sha256_digest(data)

    # -------------------------------------------------------------- content

    def get_manifest(self, repo: str, reference: str, *, what: str) -> Fetched:
        """Fetch a manifest or index by tag or digest; verify its digest."""
        cap = self.limits.manifest
        resp = self._request("GET", f"manifests/{reference}", repo, headers={"Accept": ACCEPT},
                             stream=True, what=what, allow_status=(404,), expect=cap)
        with resp:
            if resp.status_code == 404:
                raise NotFoundError(
                    f"{what}: not found at {self.config.endpoint} (repository {repo}, "
                    f"reference {reference})",
                    hint="check the image name and tag; `bundle lock --update` after fixing")
            data = read_capped(resp, limit=cap, what=f"{what}: manifest", kind="manifest")
            header_digest = resp.headers.get("Docker-Content-Digest")
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise UpstreamError(f"{what}: registry returned content with digest {digest}, "
                                f"expected {reference}", hint="the registry or a proxy is "
                                "corrupting data; do not use it")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise UpstreamError(f"{what}: registry says digest {header_digest} but the bytes "
                                f"hash to {digest}", hint="the transfer was corrupted; retry")
        fetched = Fetched(data, digest)
        fetched.media_type  # noqa: B018 - valid JSON object of an allowed media type, or raise
        return fetched

    def open_blob(self, repo: str, digest: str, *, start: int = 0, what: str,
                  expect: int | None = None) -> requests.Response:
        """Streaming response for a blob, from byte ``start`` (206) when the server allows;
        ``expect`` is how many bytes it should bring (for the request deadline)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        resp = self._request("GET", f"blobs/{digest}", repo, headers=headers, stream=True,
                             what=what, ok=(200, 206), allow_status=(404,), expect=expect)
        if resp.status_code == 404:
            resp.close()
            raise NotFoundError(f"{what}: blob {digest} not found in {repo} at "
                                f"{self.config.endpoint}")
        return resp
