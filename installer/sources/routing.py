"""The urllib handlers that make the device's HTTP client (``ocidist.Client`` and the mirror
client built on it) follow ``regauth``'s rules: which proxy a request goes through (decided
over the same ``proxies`` the route was checked against) and which redirects are followed.
The decisions are ``regauth``'s; this module only plugs them into urllib."""

import ssl
import urllib.request
from typing import Mapping, Optional

from installer.errors import TransferError
from installer.sources import regauth

MAX_REDIRECTS = 5


class _Proxies(urllib.request.ProxyHandler):
    """urllib's proxy handler, deciding direct-or-proxy with ``regauth.proxy_for`` over the
    same ``proxies`` the route was checked against (urllib alone would read ``no_proxy`` from
    the environment again; where the two differ, the request goes direct, never through a
    proxy the check did not see)."""

    def __init__(self, proxies: Mapping[str, str]) -> None:
        super().__init__({k: v for k, v in proxies.items() if k != "no"})
        self.all = proxies

    def proxy_open(self, req, proxy, type):  # type: ignore[no-untyped-def]  # noqa: A002
        if regauth.proxy_for(req.full_url, self.all) is None:
            return None
        return super().proxy_open(req, proxy, type)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects as ``regauth`` allows them: http(s) only, never https -> http, and plain http
    only over loopback hops (proxy included) unless the user allowed plain http. The
    Authorization header never follows (it is added unredirected)."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, *, plain_http: bool, proxies: Mapping[str, str]) -> None:
        super().__init__()
        self.plain_http = plain_http
        self.proxies = proxies

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        why = regauth.redirect_refusal(req.full_url, newurl)
        if why is None and not self.plain_http:
            why = regauth.clear_route_refusal(newurl,
                                              proxy=regauth.proxy_for(newurl, self.proxies))
        if why is not None:
            raise TransferError(f"redirect not followed: {why}",
                                hint="the server must not send clients to plain http or "
                                     "away from http(s); pass --plain-http only if plain "
                                     "http off loopback is really meant")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(proxies: Mapping[str, str], *, plain_http: bool,
           ca_file: Optional[str]) -> urllib.request.OpenerDirector:
    """A urllib opener: ``regauth``'s proxies and redirects, TLS against ``ca_file`` (or the
    system CAs)."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    return urllib.request.build_opener(
        _Proxies(proxies), urllib.request.HTTPSHandler(context=context),
        _Redirects(plain_http=plain_http, proxies=proxies))
