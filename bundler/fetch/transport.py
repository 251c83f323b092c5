"""HTTP transport: one pooled `requests` session, bounded retries with backoff, clear errors.

Retried: connection errors and resets, timeouts, HTTP 429 and 5xx. Not retried: other 4xx
(the request itself is wrong) and an overall deadline that passed (see ``deadline``). Every
failure names the URL and what to do. Redirects are followed here, not by ``requests``: at most
``Limits.redirects`` hops, each an http(s) URL, never from https down to http, and
credentials (``auth`` and ``Authorization``) are dropped as soon as a hop changes host or
scheme. Bodies are asked for and read as sent (``Accept-Encoding: identity``, no decoding:
digests cover the raw bytes and no compression bomb is expanded). This module knows nothing
about registries or caches.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from bundler.errors import FetchError, UpstreamError
from bundler.fetch.deadline import Deadline, DeadlineAdapter, Watchdog, set_current
from bundler.limits import Limits, human
from installer.sources import regauth

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 0.25        # first delay; doubles each time, with jitter
    max_backoff: float = 8.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0   # between bytes; the whole request has Limits.deadline()


def check_url(url: str, *, what: str) -> None:
    """Only http(s) URLs with a host are ever fetched (no ``file:``, ``ftp:``, ...)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"{what}: refusing to fetch {url[:200]!r}: only http:// and "
                            "https:// URLs are fetched",
                            hint="the URL comes from upstream data or the spec; fix it there")


class Transport:
    """Thread-safe HTTP client: shared connection pool, retry policy, per-request TLS."""

    def __init__(self, *, policy: RetryPolicy | None = None, pool_size: int = 16,
                 sleep: Callable[[float], None] = time.sleep,
                 limits: Limits | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.limits = limits or Limits()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies from the environment by surprise
        self._session.headers["Accept-Encoding"] = "identity"
        adapter = DeadlineAdapter(pool_connections=pool_size, pool_maxsize=pool_size,
                                  max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._watchdog = Watchdog()
        self._lock = threading.Lock()
        self.requests_sent = 0

    def close(self) -> None:
        self._session.close()

    def delay(self, attempt: int) -> float:
        base = float(min(self.policy.max_backoff, self.policy.backoff * (2 ** attempt)))
        return base * (0.5 + random.random() / 2)

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                stream: bool = False, verify: Any = True, auth: Any = None,
                what: str | None = None, ok: tuple[int, ...] = (200,),
                allow_status: tuple[int, ...] = (), expect: int | None = None,
                body: Callable[[], Any] | None = None) -> requests.Response:
        """Send with retries. Returns a response whose status is in ``ok`` or
        ``allow_status`` (the caller handles those); raises ``FetchError`` otherwise.
        ``expect`` (bytes the body should bring) sets the overall deadline; a streamed
        response's deadline runs until it is closed. ``body`` makes the request body (bytes or
        an open file), called again for each attempt and hop so a retry re-sends it whole."""
        label = what or url
        check_url(url, what=label)
        last: str = ""
        for attempt in range(self.policy.attempts):
            if attempt:
                self._sleep(self.delay(attempt - 1))
            deadline = self._watch(expect, uploads=body is not None)
            try:
                resp = self._follow(method, url, headers=dict(headers or {}), stream=stream,
                                    verify=verify, auth=auth, label=label, deadline=deadline,
                                    body=body)
            except requests.exceptions.SSLError as e:
                deadline.finish()
                raise FetchError(
                    f"TLS verification failed for {label}: {_short(e)}",
                    hint="set ca_file for this registry in bundles.toml to the CA that "
                         "signed its certificate") from None
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                deadline.finish()
                if deadline.expired:
                    raise deadline_error(label, deadline) from None
                last = _short(e)
                continue
            except requests.RequestException as e:  # a URL or header requests cannot use
                deadline.finish()
                raise UpstreamError(f"{method} {label}: {type(e).__name__}: {_short(e)}",
                                    hint="the server sent something unusable") from None
            except BaseException:
                deadline.finish()
                raise
            if resp.status_code in ok or resp.status_code in allow_status:
                _finish_on_close(resp, deadline)
                if not stream:   # a body nobody streams is still read with a cap
                    self._read_small(resp, what=label)
                return resp
            deadline.finish()
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}"
                resp.close()
                continue
            status = resp.status_code
            resp.close()
            raise FetchError(f"{method} {label}: HTTP {status}{_via(resp)}",
                                hint=_hint_for(status))
        raise FetchError(
            f"{method} {label} failed after {self.policy.attempts} attempts: {last}",
            hint="the server or the link is failing; retry later (downloads resume)")

    def _watch(self, expect: int | None, *, uploads: bool) -> Deadline:
        """The overall deadline, and (unless the request sends a body, whose progress is not
        counted) the minimum rate: at least ``speed_limit`` bytes/s over every window of
        ``min(speed_time, --timeout)`` seconds, after a grace of one window."""
        window = None if uploads else min(self.limits.speed_time, self.policy.read_timeout)
        return self._watchdog.watch(self.limits.deadline(expect), window=window,
                                    min_bytes=int(self.limits.speed_limit * (window or 0)))

    def _read_small(self, resp: requests.Response, *, what: str) -> None:
        """Read a non-streamed answer (an upload's, a PUT's, a HEAD's) whole, refused past
        ``limits.response``; the response is closed, its ``content`` kept."""
        if resp.request is not None and resp.request.method == "HEAD":
            resp.close()   # no body; its Content-Length describes the GET's
            resp._content, resp._content_consumed = b"", True
            return
        try:
            data = read_capped(resp, limit=self.limits.response, what=f"{what}: the answer",
                               kind="response")
        finally:
            resp.close()
        resp._content = data
        resp._content_consumed = True

    def _follow(self, method: str, url: str, *, headers: dict[str, str], stream: bool,
                verify: Any, auth: Any, label: str, deadline: Deadline,
                body: Callable[[], Any] | None = None) -> requests.Response:
        """One attempt: the request and at most ``limits.redirects`` validated hops."""
        hops = [url]
        while True:
            with self._lock:
                self.requests_sent += 1
            set_current(deadline)
            data = body() if body is not None and method not in ("GET", "HEAD") else None
            try:
                resp = self._session.request(  # always streamed: no body is read uncapped
                    method, url, headers=headers, stream=True, verify=verify, auth=auth,
                    timeout=(self.policy.connect_timeout, self.policy.read_timeout),
                    allow_redirects=False, data=data)
            finally:
                set_current(None)
                if data is not None and hasattr(data, "close"):
                    data.close()
            resp.bundler_hops = hops  # type: ignore[attr-defined]
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECT_STATUS or location is None:
                return resp
            resp.close()
            nxt = urljoin(url, location.strip())
            chain = " -> ".join([*hops, nxt])
            if len(hops) > self.limits.redirects:
                raise UpstreamError(f"{label}: more than {self.limits.redirects} redirects: "
                                    f"{chain[:600]}", hint="the server redirects in a loop")
            check_url(nxt, what=f"{label} (redirected: {chain[:400]})")
            if regauth.redirect_refusal(url, nxt) is not None:
                raise UpstreamError(f"{label}: refusing a redirect from https down to http: "
                                    f"{chain[:600]}", hint="the server or a proxy downgrades "
                                    "the connection; do not use it")
            if not regauth.keeps_credentials(url, nxt):
                auth = None  # credentials never follow a redirect to another host or scheme
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303:
                method = "GET" if method != "HEAD" else method
            hops.append(nxt)
            url = nxt


def _finish_on_close(resp: requests.Response, deadline: Deadline) -> None:
    resp.bundler_deadline = deadline  # type: ignore[attr-defined]
    close = resp.close

    def closing() -> None:
        deadline.finish()
        close()
    resp.close = closing  # type: ignore[method-assign]


def deadline_error(label: str, deadline: Deadline) -> FetchError:
    if deadline.slow:
        return FetchError(
            f"{label}: fewer than {deadline.min_bytes} bytes arrived in {deadline.window:g} s "
            f"(the server is too slow or drips; {deadline.received} bytes in all)",
            hint="a slow but honest link: lower BUNDLE_LIMITS speed_limit or raise "
                 "speed_time (docs/builder-trust.md); then re-run, downloads resume")
    return FetchError(f"{label}: no answer within the request deadline of "
                         f"{deadline.seconds:.0f} s (the server is too slow or stalls)",
                         hint="a slow but honest link: lower BUNDLE_LIMITS min_rate or raise "
                              "deadline_floor (docs/builder-trust.md); then re-run, downloads "
                              "resume")


def expired(resp: requests.Response) -> Deadline | None:
    d = getattr(resp, "bundler_deadline", None)
    return d if isinstance(d, Deadline) and d.expired else None


def hops(resp: requests.Response) -> list[str]:
    return list(getattr(resp, "bundler_hops", []))


def _via(resp: requests.Response) -> str:
    chain = hops(resp)
    return f" (via {' -> '.join(chain)[:400]})" if len(chain) > 1 else ""


def iter_raw(resp: requests.Response, *, what: str,
             size: int = 1024 * 1024) -> Iterator[bytes]:
    """The body as sent (no Content-Encoding decoding), in chunks of whatever has arrived
    (``read1``), so a connection that drops mid-body still leaves every received byte with
    the caller. A stream broken by the request deadline raises ``FetchError``; other
    stream errors propagate (the caller may retry)."""
    raw = resp.raw
    while True:
        try:
            chunk = raw.read1(size, decode_content=False)
        except Exception:
            d = expired(resp)
            if d is not None:
                raise deadline_error(what, d) from None
            raise
        if not chunk:
            d = expired(resp)
            if d is not None:
                raise deadline_error(what, d)
            return
        counted = getattr(resp, "bundler_deadline", None)
        if isinstance(counted, Deadline):
            counted.progress(len(chunk))
        yield chunk


def read_capped(resp: requests.Response, *, limit: int, what: str, kind: str) -> bytes:
    """A whole small body, refused (``UpstreamError``) as soon as it passes ``limit``."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UpstreamError(f"{what}: the server declares {declared} bytes, over the {kind} "
                            f"cap of {human(limit)}{_via(resp)}", hint=_raise_hint(kind))
    data = bytearray()
    try:
        for chunk in iter_raw(resp, what=what, size=65536):
            data += chunk
            if len(data) > limit:
                raise UpstreamError(f"{what}: more than the {kind} cap of {human(limit)}"
                                    f"{_via(resp)}", hint=_raise_hint(kind))
    except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as e:
        raise FetchError(f"{what}: the transfer broke: {_short(e)}",
                            hint="retry; the link dropped") from None
    return bytes(data)


def _raise_hint(kind: str) -> str:
    return (f"if that size is real, raise the cap: BUNDLE_LIMITS=\"{kind}=<size>\" "
            "(docs/builder-trust.md)")


def _short(e: BaseException) -> str:
    text = str(e)
    return text if len(text) < 300 else text[:300] + "..."


def _hint_for(status: int) -> str | None:
    return {
        401: "authentication failed: check the username_env/password_env variables",
        403: "access denied: the credentials lack permission for this resource",
        404: "not found: check the name, tag or version",
    }.get(status)
