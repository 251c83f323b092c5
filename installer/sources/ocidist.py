"""A small OCI distribution client for devices, stdlib only: enough to fetch a ring repository
and a bundle from an in-site registry (Harbor, Zot, CNCF distribution).

What it does: GET manifests (size-capped, digest-checked when asked for by digest) and blobs
(resumable with HTTP Range into a dotfile beside the destination, hashed while written, moved
into place only when size and sha256 match, through ``fsio.adopt_verified``); anonymous, Basic
and Bearer-token auth (the distribution token flow); a custom CA file; redirects to blob storage
(at most 5, http(s) only, never https -> http, the Authorization header never follows a
redirect); bounded retries with backoff on resets, timeouts and 5xx.

Where credentials may go, and over which hops, is ``regauth``'s one policy (shared with the
builder): only to the registry's own host (any port), over https, or over plain http when the
registry and the proxy the environment names for it (``http_proxy``, ``no_proxy``) are both
loopback; checked when the client is made, before any connection. Registries on loopback
(127.0.0.0/8, ``localhost``, ``::1``) are reached over plain HTTP, as Docker does, unless a CA
file is given; any other host, or a loopback one behind a non-loopback proxy, needs
``plain_http=True`` for that (and then gets no credentials).

What it does not do: push, list tags, or trust anything it fetched: callers verify what they
got exactly as if it came from a USB stick.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

from installer.errors import ConfigError, DigestMismatch, FormatError, TransferError
from installer.fsio import CHUNK, adopt_verified, open_regular
from installer.sources import regauth, routing
from installer.sources.regauth import is_loopback as is_loopback  # one rule, re-exported
from installer.sources.transfer import Deadline, clear_odd_partial, resume_state
from installer.sources.transfer import Unavailable as Unavailable  # ocidist.Unavailable

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MAX_MANIFEST = 4 * 1024 * 1024
MAX_TOKEN_BODY = 64 * 1024
MAX_REDIRECTS = routing.MAX_REDIRECTS
ATTEMPTS = 5
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
USER_ENV, PASSWORD_ENV = "AIRGAP_REGISTRY_USERNAME", "AIRGAP_REGISTRY_PASSWORD"

OnBytes = Optional[Callable[[int], None]]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class OciRef:
    host: str           # host[:port]
    repository: str
    reference: Optional[str]  # tag or sha256:..., None when not given

    @property
    def url(self) -> str:
        ref = "" if self.reference is None else (
            "@" + self.reference if self.reference.startswith("sha256:") else ":" + self.reference)
        return f"oci://{self.host}/{self.repository}{ref}"


def parse_oci_url(text: str) -> OciRef:
    """``oci://HOST[:PORT]/REPO[:TAG|@sha256:...]`` (pure)."""
    if not text.startswith("oci://"):
        raise ConfigError(f"{text!r} is not an oci:// reference",
                          hint="write it like oci://registry.site.local:5000/edge/ring")
    rest = text[len("oci://"):]
    host, _, path = rest.partition("/")
    reference: Optional[str] = None
    if "@" in path:
        path, _, reference = path.partition("@")
        if not _DIGEST_RE.match(reference):
            raise ConfigError(f"{text}: a digest must be sha256:<64 hex digits>")
    elif ":" in path.rsplit("/", 1)[-1]:
        path, _, reference = path.rpartition(":")
        if not _TAG_RE.match(reference):
            raise ConfigError(f"{text}: bad tag {reference!r}")
    if not host or not path or not _REPO_RE.match(path):
        raise ConfigError(f"{text}: expected oci://HOST[:PORT]/REPOSITORY[:TAG]",
                          hint="repository names are lowercase, separated by /")
    return OciRef(host, path, reference)


def credentials_from(file: Optional[str], env: Mapping[str, str]) -> Optional[Credentials]:
    """Credentials from a file (``{"username": .., "password": ..}`` or one ``user:password``
    line) or from ``AIRGAP_REGISTRY_USERNAME``/``AIRGAP_REGISTRY_PASSWORD``; never from the
    command line, where every user of the host could read them."""
    if file:
        try:
            with open_regular(file, what="registry credentials") as f:  # never a FIFO
                data = f.read(MAX_TOKEN_BODY).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read registry credentials {file}: {e}") from None
        if data.startswith("{"):
            try:
                doc = json.loads(data)
                return Credentials(str(doc["username"]), str(doc["password"]))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{file}: expected {{\"username\": .., \"password\": ..}}") \
                    from None
        user, sep, password = data.partition(":")
        if not sep or not user:
            raise ConfigError(f"{file}: expected one line user:password")
        return Credentials(user, password)
    if env.get(USER_ENV):
        return Credentials(env[USER_ENV], env.get(PASSWORD_ENV, ""))
    return None


class Client:
    """One registry host. Not thread-safe (a device fetches one thing at a time)."""

    credentials_hint = f"give a credentials file or set {USER_ENV} and {PASSWORD_ENV}"

    def __init__(self, host: str, *, plain_http: bool = False, ca_file: Optional[str] = None,
                 credentials: Optional[Credentials] = None, timeout: float = 60.0,
                 scheme: Optional[str] = None,
                 proxies: Optional[Mapping[str, str]] = None) -> None:
        """``proxies`` as ``urllib.request.getproxies()`` reads them from the environment
        (the default); the route to the registry is checked against ``regauth`` here, before
        any connection: plain http only over loopback hops unless ``plain_http``, and
        credentials never in clear over a non-loopback hop."""
        self.host = host
        # loopback without a CA is plain http, as Docker treats it; with a CA, https
        self.scheme = scheme or (
            "http" if plain_http or (is_loopback(host) and not ca_file) else "https")
        self.credentials = credentials
        self.timeout = timeout
        self.proxies: Mapping[str, str] = dict(
            urllib.request.getproxies() if proxies is None else proxies)
        self._opener = routing.opener(self.proxies, plain_http=plain_http, ca_file=ca_file)
        self._tokens: Dict[str, str] = {}
        self._basic = False
        self.deadline = Deadline(lambda: self.timeout)  # per transfer (THREATS 45)
        self._check_route(plain_http)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _check_route(self, plain_http: bool) -> None:
        """Refuse, before any connection, a route ``regauth`` forbids."""
        proxy = regauth.proxy_for(self.base_url, self.proxies)
        why = None if plain_http else regauth.clear_route_refusal(self.base_url, proxy=proxy)
        if why is not None:
            raise ConfigError(f"{self.base_url}: {why}",
                              hint="serve it over https (--ca-file for a private CA), bypass "
                                   "the proxy with no_proxy, or pass --plain-http: what is "
                                   "fetched is verified either way, but http lets anyone on "
                                   "the path see and stall it")
        if self.credentials is not None:
            why = self._credentials_refusal(self.base_url)
            if why is not None:
                raise ConfigError(f"registry credentials not sent: {why}",
                                  hint="credentials go only over https, or over plain http "
                                       "when the registry and any proxy are on loopback; "
                                       "set no_proxy for the registry or use https")

    # ---- auth ------------------------------------------------------------------------
    def _credentials_refusal(self, url: str) -> Optional[str]:
        """``regauth.credentials_refusal`` for this registry: its own host, any port."""
        hostname = urllib.parse.urlsplit("//" + self.host).hostname or self.host
        return regauth.credentials_refusal(self.base_url, url, allowed_hosts=(hostname,),
                                           proxy=regauth.proxy_for(url, self.proxies))

    def _authorization(self, scope: str) -> Optional[str]:
        if scope in self._tokens:
            return "Bearer " + self._tokens[scope]
        if self._basic and self.credentials:
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return None

    def _fetch_token(self, params: Dict[str, str], scope: str) -> None:
        realm = params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        why = regauth.redirect_refusal(self.base_url, realm) or regauth.clear_route_refusal(
            realm, proxy=regauth.proxy_for(realm, self.proxies))
        if why is not None:
            raise TransferError(f"registry {self.host} sends clients to token realm "
                                f"{realm[:200]!r}: {why}",
                                hint="a token realm must be https (or on loopback)")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        req = urllib.request.Request(realm + ("&" if parts.query else "?")
                                     + urllib.parse.urlencode(query))
        if self.credentials:
            why = self._credentials_refusal(realm)
            if why is not None:
                raise ConfigError(f"registry {self.host} asks for credentials at "
                                  f"{realm[:200]}: not sent: {why}",
                                  hint="use a registry whose token service is on its own host "
                                       "over https")
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            req.add_unredirected_header("Authorization",
                                        "Basic " + base64.b64encode(pair).decode())
        try:
            resp = self._open(req, what=f"token for {scope}")
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (401, 403):
                raise TransferError(f"token service {realm} refused access to {scope} "
                                    f"(HTTP {e.code})", hint=self.credentials_hint) from None
            raise self._http_error(e, realm, f"token for {scope}") from None
        with resp:
            body = self.deadline.read_body(resp, MAX_TOKEN_BODY + 1, what=f"token for {scope}")
        if len(body) > MAX_TOKEN_BODY:
            raise TransferError(f"token response from {realm} is over {MAX_TOKEN_BODY} bytes")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise TransferError(f"token service {realm} answered without a token")
        self._tokens[scope] = token

    def _open(self, req: urllib.request.Request, *, what: str) -> http.client.HTTPResponse:
        try:
            resp: http.client.HTTPResponse = self._opener.open(
                req, timeout=self.deadline.time_left(what))
            return resp
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLError):
                raise TransferError(f"{what}: TLS failed for {req.full_url}: {reason}",
                                    hint="give the registry's CA with --ca-file") from None
            raise Unavailable(f"{what}: {req.full_url}: {reason}") from None

    def request(self, path: str, *, what: str, headers: Optional[Dict[str, str]] = None,
                scope: str) -> http.client.HTTPResponse:
        """GET ``path`` with auth (answering one challenge); the caller closes the answer."""
        return self.send(f"{self.base_url}{path}", what=what, headers=headers, scope=scope)

    def send(self, url: str, *, what: str, scope: str, headers: Optional[Dict[str, str]] = None,
             method: str = "GET", data: Optional[bytes] = None) -> http.client.HTTPResponse:
        """``method`` ``url`` with auth, answering one challenge (Bearer or Basic); Basic
        credentials only where ``regauth`` allows them. The caller closes the answer."""
        for attempt in range(2):
            req = urllib.request.Request(url, data=data, method=method,
                                         headers=dict(headers or {}))
            auth = self._authorization(scope)
            if auth:
                why = self._credentials_refusal(url) if auth.startswith("Basic ") else None
                if why is not None:
                    raise ConfigError(f"registry credentials not sent: {why}",
                                      hint="use https, or a registry on loopback")
                req.add_unredirected_header("Authorization", auth)
            try:
                return self._open(req, what=what)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "")
                e.close()
                if e.code != 401 or attempt == 1 or not challenge:
                    raise self._http_error(e, url, what) from None
                scheme, params = regauth.parse_challenge(challenge)
                if scheme == "bearer":
                    self._fetch_token(params, scope)
                elif scheme == "basic" and self.credentials:
                    self._basic = True
                else:
                    raise TransferError(f"{what}: {self.host} needs credentials",
                                        hint=self.credentials_hint) from None
        raise AssertionError("unreachable")

    def _http_error(self, e: "urllib.error.HTTPError", url: str, what: str) -> TransferError:
        if e.code in (401, 403):
            return TransferError(f"{what}: {url} refused the credentials (HTTP {e.code})",
                                 hint="check the credentials file and the repository's "
                                      "permissions")
        if e.code == 404:
            return TransferError(f"{what}: {url} does not exist (HTTP 404)",
                                 hint="check the repository and tag; push it with "
                                      "`bundle repo push` or `bundle push`")
        if e.code >= 500:
            return Unavailable(f"{what}: {url} answered HTTP {e.code}")
        return TransferError(f"{what}: {url} answered HTTP {e.code}")

    # ---- content -----------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> Tuple[bytes, str, str]:
        """``(bytes, media type, digest)`` of a manifest; a digest reference is checked."""
        what = f"manifest {repository}:{reference}"
        scope = f"repository:{repository}:pull"
        with self.deadline.transfer(MAX_MANIFEST):
            resp = self._retrying(lambda: self.request(
                f"/v2/{repository}/manifests/{reference}", what=what, scope=scope,
                headers={"Accept": ", ".join(MANIFEST_TYPES)}))
            with resp:
                self.deadline.narrow(resp)
                data = self.deadline.read_body(resp, MAX_MANIFEST + 1, what=what)
                media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if len(data) > MAX_MANIFEST:
            raise FormatError(f"{what} is over {MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"{what}: the registry sent content with digest {digest}")
        return data, media_type, digest

    def blob_to(self, repository: str, digest: str, size: int, *, dest: str,
                on_bytes: OnBytes = None) -> None:
        """Download a blob to ``dest``, resuming a partial download left beside it, verified
        against ``digest`` and ``size`` before it is moved into place."""
        if not _DIGEST_RE.match(digest):
            raise FormatError(f"blob digest {digest!r} is not sha256:<64 hex digits>")
        self.download(f"/v2/{repository}/blobs/{digest}", dest, sha256=digest.split(":", 1)[1],
                      size=size, what=f"blob {digest} of {repository}",
                      scope=f"repository:{repository}:pull", on_bytes=on_bytes)

    def download(self, path: str, dest: str, *, sha256: str, size: int, what: str,
                 scope: str, on_bytes: OnBytes = None) -> None:
        """GET ``path`` on this host into ``dest``: resumed with Range from a partial file
        beside it (``.<name>.partial``, kept across attempts and runs), retried on transient
        failures, hashed while written and moved into place only when size and sha256 match
        (``fsio.adopt_verified``; a mismatch removes the partial file)."""
        partial = os.path.join(os.path.dirname(dest) or ".",
                               f".{os.path.basename(dest)}.partial")
        clear_odd_partial(partial)
        with self.deadline.transfer(size):
            hashed = self._download(path, partial, size=size, what=what, scope=scope,
                                    on_bytes=on_bytes)
        adopt_verified(partial, dest, sha256=sha256, size=size, hashed=hashed, what=what)

    def _download(self, path: str, partial: str, *, size: int, what: str, scope: str,
                  on_bytes: OnBytes) -> str:
        """Fill ``partial`` up to ``size`` bytes (resumed, retried); its sha256."""
        h = hashlib.sha256()
        have = resume_state(partial, size, h)
        last: Optional[Exception] = None
        for attempt in range(ATTEMPTS):
            if have >= size:
                break
            try:
                have, h = self._range_to(path, partial, have=have, size=size, h=h, what=what,
                                         scope=scope, on_bytes=on_bytes)
            except Unavailable as e:
                last = e
                time.sleep(min(5.0, 0.25 * 2 ** attempt))
                # what reached the disk before the break is kept: hash it again, go on
                h = hashlib.sha256()
                have = resume_state(partial, size, h)
        if have < size:
            raise TransferError(f"{what}: {have} of {size} bytes after {ATTEMPTS} attempts "
                                f"({last})",
                                hint="run the command again: it resumes where it stopped")
        return h.hexdigest()

    def _range_to(self, path: str, partial: str, *, have: int, size: int,
                  h: "hashlib._Hash", what: str, scope: str,
                  on_bytes: OnBytes) -> Tuple[int, "hashlib._Hash"]:
        """Fetch from byte ``have`` on, appending to ``partial``; ``(bytes held, hash)``."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = self.request(path, what=what, scope=scope, headers=headers)
        with resp:
            if have and resp.status != 206:   # the server ignored Range: start again
                have, h = 0, hashlib.sha256()
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if have else
                                                                 os.O_TRUNC)
            fd = os.open(partial, flags, 0o600)
            with os.fdopen(fd, "wb") as out:
                try:
                    while have < size:
                        self.deadline.time_left(what, have)
                        # read1: what has arrived, so a broken transfer keeps its progress
                        data = resp.read1(min(CHUNK, size - have))
                        if not data:
                            break
                        out.write(data)
                        # on disk at once: a kill -9 during a slow download leaves what
                        # arrived for the next run to resume from (never a 0-byte partial)
                        out.flush()
                        h.update(data)
                        have += len(data)
                        if on_bytes is not None:
                            on_bytes(len(data))
                except (OSError, ValueError, http.client.HTTPException) as e:
                    out.flush()   # reset, timeout, IncompleteRead: keep what arrived
                    raise Unavailable(f"{what}: transfer broke at {have} bytes: {e}") from None
        if have < size:
            raise Unavailable(f"{what}: the connection closed at {have} of {size} bytes")
        return have, h

    def _retrying(self, call: Callable[[], http.client.HTTPResponse]
                  ) -> http.client.HTTPResponse:
        for attempt in range(ATTEMPTS):
            try:
                return call()
            except Unavailable:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(min(5.0, 0.25 * 2 ** attempt))
        raise AssertionError("unreachable")
