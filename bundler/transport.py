"""HTTP transport: one pooled `requests` session, bounded retries with backoff, clear errors.

Retried: connection errors and resets, timeouts, HTTP 429 and 5xx. Not retried: other 4xx
(the request itself is wrong). Every failure names the URL and what to do. This module knows
nothing about registries or caches.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .errors import TransferError

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 0.25        # first delay; doubles each time, with jitter
    max_backoff: float = 8.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0   # between bytes, not for the whole body


class Transport:
    """Thread-safe HTTP client: shared connection pool, retry policy, per-request TLS."""

    def __init__(self, *, policy: RetryPolicy | None = None, pool_size: int = 16,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies from the environment by surprise
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._lock = threading.Lock()
        self.requests_sent = 0

    def close(self) -> None:
        self._session.close()

    def delay(self, attempt: int) -> float:
        base = min(self.policy.max_backoff, self.policy.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                stream: bool = False, verify: Any = True, auth: Any = None,
                what: str | None = None, ok: tuple[int, ...] = (200,),
                allow_status: tuple[int, ...] = ()) -> requests.Response:
        """Send with retries. Returns a response whose status is in ``ok`` or
        ``allow_status`` (the caller handles those); raises ``TransferError`` otherwise."""
        label = what or url
        last: str = ""
        for attempt in range(self.policy.attempts):
            if attempt:
                self._sleep(self.delay(attempt - 1))
            with self._lock:
                self.requests_sent += 1
            try:
                resp = self._session.request(
                    method, url, headers=dict(headers or {}), stream=stream, verify=verify,
                    auth=auth, timeout=(self.policy.connect_timeout, self.policy.read_timeout),
                    allow_redirects=True)
            except requests.exceptions.SSLError as e:
                raise TransferError(
                    f"TLS verification failed for {label}: {_short(e)}",
                    hint="set ca_file for this registry in bundles.toml to the CA that "
                         "signed its certificate") from None
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                last = _short(e)
                continue
            if resp.status_code in ok or resp.status_code in allow_status:
                return resp
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}"
                resp.close()
                continue
            status = resp.status_code
            resp.close()
            raise TransferError(f"{method} {label}: HTTP {status}",
                                hint=_hint_for(status))
        raise TransferError(
            f"{method} {label} failed after {self.policy.attempts} attempts: {last}",
            hint="the server or the link is failing; retry later (downloads resume)")


def _short(e: BaseException) -> str:
    text = str(e)
    return text if len(text) < 300 else text[:300] + "..."


def _hint_for(status: int) -> str | None:
    return {
        401: "authentication failed: check the username_env/password_env variables",
        403: "access denied: the credentials lack permission for this resource",
        404: "not found: check the name, tag or version",
    }.get(status)
