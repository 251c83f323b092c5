"""A Bearer-token auth front in front of a real registry (the docker.io/ghcr.io/quay.io flow).

What it does: answers every ``/v2/...`` request lacking a valid ``Authorization: Bearer`` with
``401`` and ``WWW-Authenticate: Bearer realm="<front>/token",service="world-registry",
scope="repository:NAME:pull"`` (``pull,push`` for writes; no scope on ``/v2/`` itself), issues
opaque tokens at ``GET /token?service=..&scope=..`` (and the OAuth2 ``POST /token`` form),
anonymously for public repositories and only with correct HTTP Basic credentials otherwise,
checks each request against its token's scopes, and proxies valid requests to the upstream
registry (streamed bodies; upload ``Location`` headers rewritten to point back at the front).
Counts token requests and TCP connections so tests can assert reuse.

What it does not do: sign JWTs (tokens are random strings looked up in a table; clients must
treat them as opaque anyway) or implement refresh tokens.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable

from .httpbase import (
    LoopbackServer,
    QuietHandler,
    ServerLifecycle,
    drain_request_body,
    has_request_body,
    iter_request_body,
    relay,
)

_REPO_PATH = re.compile(r"^/v2/(?P<name>.+)/(?:manifests|blobs|tags|referrers)/")
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class TokenRequest:
    """One call to the token endpoint, as logged."""

    scopes: tuple[str, ...]
    user: str | None
    status: int


@dataclass
class FrontRequest:
    """One request the front answered (appended on arrival, ``status`` set before replying)."""

    method: str
    path: str
    status: int | None = None


@dataclass
class _Grant:
    access: dict[str, set[str]]  # "repository:NAME" / "registry:catalog" -> actions
    expires: float
    user: str | None = None


@dataclass
class TokenAuthFront(ServerLifecycle):
    """Token service + auth proxy in front of ``upstream_url``.

    ``public``: fnmatch patterns of repositories anyone may pull (``["public/*"]``). Every other
    repository is private: its token needs Basic ``username``/``password``. Authenticated users
    get ``pull,push`` everywhere; anonymous users get ``pull`` on public repositories only.
    Attributes: ``url``, ``host``, ``realm``, ``service``, ``token_requests`` (count),
    ``token_log`` (list of :class:`TokenRequest`), ``connections``, ``request_log``.
    """

    upstream_url: str
    public: Iterable[str] = ()
    username: str = "token-user"
    password: str = "token-pass"
    service: str = "world-registry"
    expires_in: int = 300
    upstream_ca_file: str | None = None
    token_requests: int = 0
    token_log: list[TokenRequest] = field(default_factory=list)
    request_log: list[FrontRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.public = tuple(self.public)
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._server = LoopbackServer(_FrontHandler, self)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def reset_counters(self) -> None:
        """Zero the token/connection counters and logs (between tests)."""
        with self._lock:
            self.token_requests = 0
            self.token_log.clear()
            self.request_log.clear()
        self._server.reset_connections()

    def revoke_all(self) -> None:
        """Forget every issued token (clients must fetch new ones)."""
        with self._lock:
            self._grants.clear()

    # -- policy ----------------------------------------------------------------------------
    def is_public(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, pat) for pat in self.public)

    def challenge(self, scope: str | None, error: str | None = None) -> str:
        value = f'Bearer realm="{self.realm}",service="{self.service}"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        return value

    def _grant(self, scopes: list[str], user: str | None) -> dict[str, set[str]] | None:
        """Access granted for the requested scopes, or None when a private one is refused."""
        access: dict[str, set[str]] = {}
        for scope in scopes:
            pieces = scope.split(":")
            if len(pieces) < 3:
                continue
            kind, name, actions = pieces[0], ":".join(pieces[1:-1]), pieces[-1]
            if kind == "registry" and name == "catalog":
                if user:
                    access["registry:catalog"] = {"*"}
                continue
            if kind != "repository" or not name:
                continue
            wanted = set(actions.split(","))
            if user:
                granted = wanted & {"pull", "push", "delete", "*"}
            elif self.is_public(name):
                granted = wanted & {"pull"}
            else:
                return None
            access.setdefault(f"repository:{name}", set()).update(granted)
        return access

    def issue_token(self, scopes: list[str], authorization: str | None) -> tuple[int, dict]:
        """Token endpoint logic: ``(status, json_body)``."""
        user: str | None = None
        status = 200
        body: dict[str, object]
        if authorization:
            user = self._check_basic(authorization)
            if user is None:
                status = 401
        if status == 200:
            access = self._grant(scopes, user)
            if access is None:
                status = 401
        if status == 200:
            token = secrets.token_urlsafe(24)
            now = time.time()
            with self._lock:
                self._grants[token] = _Grant(access or {}, now + self.expires_in, user)
            issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            body = {"token": token, "access_token": token, "expires_in": self.expires_in,
                    "issued_at": issued}
        else:
            body = {"errors": [{"code": "UNAUTHORIZED",
                                "message": "authentication required" if not authorization
                                else "incorrect username or password"}]}
        with self._lock:
            self.token_requests += 1
            self.token_log.append(TokenRequest(tuple(scopes), user, status))
        return status, body

    def _check_basic(self, authorization: str) -> str | None:
        kind, _, value = authorization.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        ok = (secrets.compare_digest(user, self.username)
              and secrets.compare_digest(password, self.password))
        return user if ok else None

    def access_for(self, authorization: str | None) -> dict[str, set[str]] | None:
        """The access map of a valid, unexpired Bearer token, else None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        with self._lock:
            grant = self._grants.get(token)
        if grant is None or grant.expires < time.time():
            return None
        return grant.access


def required_scope(method: str, path: str) -> tuple[str | None, tuple[str, ...]]:
    """``("repository:NAME", ("pull",))`` for a /v2 path; ``(None, ())`` for ``/v2/``."""
    match = _REPO_PATH.match(path)
    if match:
        actions = ("pull",) if method in READ_METHODS else ("pull", "push")
        return f"repository:{match['name']}", actions
    if path.startswith("/v2/_catalog"):
        return "registry:catalog", ("*",)
    return None, ()


class _FrontHandler(QuietHandler):
    def _front(self) -> TokenAuthFront:
        return self.owner  # type: ignore[return-value]

    def _dispatch(self) -> None:
        front = self._front()
        self._entry = FrontRequest(self.command, self.path)
        with front._lock:
            front.request_log.append(self._entry)
        parts = urllib.parse.urlsplit(self.path)
        if parts.path == "/token" and self.command in ("GET", "POST"):
            self._token(parts)
            return
        if not parts.path.startswith("/v2"):
            drain_request_body(self)
            self._entry.status = 404
            self.send_simple(404, b"not found\n")
            return
        resource, actions = required_scope(self.command, parts.path)
        access = front.access_for(self.headers.get("Authorization"))
        held = access.get(resource, set()) if access is not None and resource else set()
        allowed = access is not None and (resource is None or "*" in held
                                          or set(actions) <= held)
        scope = f"{resource}:{','.join(actions)}" if resource else None
        if not allowed:
            if has_request_body(self):
                self.close_connection = True
            error = "insufficient_scope" if access is not None else None
            body = json.dumps({"errors": [{
                "code": "UNAUTHORIZED" if access is None else "DENIED",
                "message": "authentication required" if access is None
                else "requested access to the resource is denied",
                "detail": [{"Type": resource.split(":")[0], "Name": resource.split(":", 1)[1],
                            "Action": a} for a in actions] if resource else None}]})
            self._entry.status = 401
            self.send_simple(401, body.encode(), content_type="application/json", headers={
                "WWW-Authenticate": front.challenge(scope, error),
                "Docker-Distribution-API-Version": "registry/2.0"})
            return
        query = parts.query
        if access is not None and "mount=" in query:
            query = _strip_unauthorised_mount(query, access)
        path = parts.path + (f"?{query}" if query else "")
        upstream = front.upstream_url.rstrip("/")

        def rewrite(location: str) -> str:
            return front.url + location[len(upstream):] if location.startswith(upstream) \
                else location

        relay(self, upstream, path, drop_headers=frozenset({"authorization"}),
              rewrite_location=rewrite, ca_file=front.upstream_ca_file,
              on_status=self._set_status)

    def _set_status(self, status: int) -> None:
        self._entry.status = status

    def _token(self, parts: urllib.parse.SplitResult) -> None:
        front = self._front()
        query = urllib.parse.parse_qs(parts.query)
        authorization = self.headers.get("Authorization")
        if self.command == "POST":  # OAuth2 password/refresh form (docker's newer clients)
            form = urllib.parse.parse_qs(b"".join(iter_request_body(self)).decode())
            query = {**query, **form}
            if form.get("username") and form.get("password"):
                cred = f"{form['username'][0]}:{form['password'][0]}".encode()
                authorization = "Basic " + base64.b64encode(cred).decode()
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        status, body = front.issue_token(scopes, authorization)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = f'Basic realm="{front.service}"'
        self._entry.status = status
        self.send_simple(status, json.dumps(body).encode(), content_type="application/json",
                         headers=headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


def _strip_unauthorised_mount(query: str, access: dict[str, set[str]]) -> str:
    """Drop ``mount``/``from`` when the token cannot pull the source (as real registries do)."""
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    source = dict(params).get("from", "")
    if "pull" in access.get(f"repository:{source}", set()):
        return query
    return urllib.parse.urlencode([(k, v) for k, v in params if k not in ("mount", "from")])
