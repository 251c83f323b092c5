"""The one registry-auth policy of both packages (pure, standard library only).

The device's OCI and mirror clients (``ocidist``, ``remote``) and the builder's registry client
and transport (``bundler/fetch/oci.py``, ``bundler/fetch/transport.py``) ask the questions
below and never decide them themselves:

- **Challenges**: a ``WWW-Authenticate`` header is parsed here (:func:`parse_challenge`).
- **Which hosts** may receive a registry's credentials (:func:`credentials_refusal`): the
  registry's own host, or a host named for it (``host`` any port, ``host:port`` that port;
  ``auth.docker.io`` for ``docker.io`` is known, :data:`KNOWN_TOKEN_HOSTS`).
- **Over which schemes**: https, or plain http only when every hop is loopback; never from an
  https registry down to an http token service.
- **Through which proxies**: a request in clear crosses every hop in clear, the proxy's too,
  so a loopback registry reached through a proxy at a non-loopback address is *not* loopback
  (:func:`clear_route_refusal`). An https request through a proxy is a ``CONNECT`` tunnel: the
  proxy sees only the host name.
- **Redirects** (:func:`redirect_refusal`): http(s) only, never from https down to http (not
  even to loopback); credentials never follow a hop that changes host or scheme
  (:func:`keeps_credentials`).

Every function returns why something is refused (a sentence naming the URL) or ``None``; the
callers raise their own error families, before any connection is made.
"""

import ipaddress
import re
import urllib.parse
import urllib.request
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

# Token services on another host than the registry, known for the registries that use one.
# Any other host must be named by the user (the builder's ``auth_hosts``).
KNOWN_TOKEN_HOSTS: Dict[str, Tuple[str, ...]] = {"docker.io": ("auth.docker.io",)}

_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
MAX_CHALLENGE = 8192
# urllib's own ``no_proxy`` matcher (undocumented, absent from typeshed): the same decision
# urllib's ProxyHandler makes
_bypass: Callable[[str, Dict[str, str]], bool] = getattr(  # noqa: B009 - not in typeshed
    urllib.request, "proxy_bypass_environment")


def is_loopback(host: Optional[str]) -> bool:
    """Whether ``host`` (a name, ``host:port``, ``[v6]:port`` or a bare IP) is loopback:
    127.0.0.0/8, ``::1`` or ``localhost``."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        name = host  # a bare address (``::1`` has colons but no port)
    except ValueError:
        try:
            name = urllib.parse.urlsplit("//" + host).hostname or ""
        except ValueError:
            return False
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_challenge(header: str) -> Tuple[str, Dict[str, str]]:
    """``(scheme in lower case, {param: value})`` of a ``WWW-Authenticate`` header, as
    registries send it (``Bearer realm="...",service="...",scope="..."`` or ``Basic ...``);
    a header over 8 KiB is read as no parameters."""
    text = header.strip()
    scheme, _, rest = text.partition(" ")
    if len(text) > MAX_CHALLENGE:
        return scheme.lower(), {}
    return scheme.lower(), dict(_PARAM_RE.findall(rest))


def proxy_for(url: str, proxies: Mapping[str, str]) -> Optional[str]:
    """The proxy URL a request for ``url`` goes through, as urllib's ``ProxyHandler`` picks it
    from ``proxies`` (``urllib.request.getproxies()``: ``{"http": .., "https": ..,
    "no": ..}``), or ``None`` when it goes direct (no proxy for its scheme, or ``no_proxy``
    names its host)."""
    parts = urllib.parse.urlsplit(url)
    proxy = proxies.get(parts.scheme)
    if not proxy or not parts.netloc:
        return None
    if _bypass(parts.netloc, dict(proxies)):
        return None
    return proxy


def _proxy_host(proxy: str) -> str:
    """``host[:port]`` of a proxy setting (``http://h:p``, ``h:p``, with or without
    credentials)."""
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else "//" + proxy)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    return f"{host}:{port}" if port else host


def clear_route_refusal(url: str, *, proxy: Optional[str]) -> Optional[str]:
    """Why a plain http request for ``url`` would cross a non-loopback hop in clear (the
    target, or the ``proxy`` it goes through), or ``None`` (an https URL, or every hop
    loopback)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        return None
    if not is_loopback(parts.netloc):
        return f"{url[:200]} is plain http to {parts.hostname}, which is not loopback"
    if proxy is not None and not is_loopback(_proxy_host(proxy)):
        return (f"{url[:200]} is plain http through the proxy {_proxy_host(proxy)}, which is "
                "not loopback (a loopback registry reached through a proxy is not loopback)")
    return None


def _host_allowed(target: "urllib.parse.SplitResult", registry: "urllib.parse.SplitResult",
                  allowed_hosts: Sequence[str]) -> bool:
    netloc, host = target.netloc.lower(), (target.hostname or "").lower()
    if netloc == registry.netloc.lower():
        return True
    return bool({netloc, host} & {h.lower() for h in allowed_hosts})


def credentials_refusal(registry: str, target: str, *, allowed_hosts: Sequence[str] = (),
                        proxy: Optional[str] = None) -> Optional[str]:
    """Why the credentials of the registry at URL ``registry`` may NOT be sent to URL
    ``target`` (the registry itself, a token realm, an upload location), or ``None`` when they
    may: an http(s) URL; never from an https registry down to http; plain http only when every
    hop (``target`` and the ``proxy`` it goes through) is loopback; only to the registry's own
    ``host:port`` or one of ``allowed_hosts`` (``host`` any port, ``host:port`` that port)."""
    reg, tgt = urllib.parse.urlsplit(registry), urllib.parse.urlsplit(target)
    if tgt.scheme not in ("http", "https") or not tgt.hostname:
        return f"{target[:200]} is not an http(s) URL"
    if reg.scheme == "https" and tgt.scheme == "http":
        return f"{target[:200]} is plain http while the registry is https (a downgrade)"
    clear = clear_route_refusal(target, proxy=proxy)
    if clear is not None:
        return clear
    if not _host_allowed(tgt, reg, allowed_hosts):
        return f"{target[:200]} is on another host than the registry {reg.netloc}"
    return None


def redirect_refusal(old: str, new: str) -> Optional[str]:
    """Why a redirect from URL ``old`` to URL ``new`` is not followed: only http(s) URLs with
    a host, and never from https down to plain http (not even to loopback: what was asked for
    over TLS is never answered in clear)."""
    o, n = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    if n.scheme not in ("http", "https") or not n.hostname:
        return f"{old[:200]} redirected to {new[:200]}: only http(s) is followed"
    if o.scheme == "https" and n.scheme == "http":
        return f"{old[:200]} redirected from https down to plain http ({new[:200]})"
    return None


def keeps_credentials(old: str, new: str) -> bool:
    """Whether credentials may follow a redirect from ``old`` to ``new``: only when it keeps
    the scheme and ``host:port``."""
    o, n = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    return (o.scheme, o.netloc.lower()) == (n.scheme, n.netloc.lower())
