"""K3s configuration a bundle carries (pure): ``[bundles.<name>.k3s_config]`` (keys of K3s's
config.yaml, placed as the drop-in ``config.yaml.d/50-airgap-bundle.yaml``) and
``[bundles.<name>.mirrors."<registry>"]`` (K3s's ``registries.yaml``).

Checked when the spec is read (so at `bundle lock`, `check` and `build`): every config key
against the flags of the bundle's K3s minor (``k3sfacts.CONFIG_KEYS``; a typo names the
nearest key), no control character and no password in a URL in any value, every mirror
entry's shape (endpoint URLs parsed strictly: host, port in range). Rendered as deterministic
YAML by ``yaml.safe_dump`` (sorted keys, characters written as themselves) and read back by
libyaml before it is shipped: the same spec gives the same bytes, and K3s reads what was
checked. The installer only places those bytes.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import yaml

from bundler.errors import SpecError
from bundler.spec import k3sfacts

Fail = Callable[..., SpecError]   # _Ctx.fail(key, message, hint=None)

# registries.yaml keys of one mirror, as K3s names them (docs.k3s.io "Private Registry
# Configuration": mirrors.<registry>.endpoint/rewrite, configs.<host>.tls.*)
_MIRROR_KEYS = ("endpoint", "rewrite", "ca_file", "cert_file", "key_file",
                "insecure_skip_verify")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")
# a registry host as images name it (docker.io, host:port, an IPv4 address) or "*" (K3s: every
# registry)
_REGISTRY_RE = re.compile(r"^(\*|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]"
                          r"{0,61}[a-z0-9])?)*(?::[0-9]{1,5})?)$")
_MAX_TEXT = 4096
# control characters (C0, DEL, C1) and lone surrogates: no K3s value holds them, and YAML
# readers disagree on them
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# a URL carrying a password (scheme://user:password@host): a credential, like a secret key
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s@]*:[^/?#\s@]*@")


def _nearest(key: str, known: Any) -> str:
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}?" if near else "no K3s flag is close to it"


def _scalar_ok(value: Any) -> bool:
    return isinstance(value, (str, bool, int)) and not (isinstance(value, str)
                                                        and len(value) > _MAX_TEXT)


def _check_text(value: Any, key: str, fail: Fail) -> None:
    """A k3s_config string: no control characters, no password in a URL."""
    if not isinstance(value, str):
        return
    if _CONTROL.search(value):
        raise fail(key, f"{value[:80]!r} holds a control character",
                   hint="K3s values are plain text on one line")
    if _URL_PASSWORD.search(value):
        raise fail(key, "holds a URL with a password: a bundle is copied to every host and "
                   "medium", hint="leave the password out of the URL and give it on the "
                   "device (a file the K3s service reads, e.g. an environment file)")


def check_k3s_config(table: Any, *, k3s: str, where: str, fail: Fail) -> dict[str, Any]:
    """Validate ``k3s_config`` for K3s release ``k3s``; returns it as plain data."""
    if not isinstance(table, dict):
        raise fail(where, "must be a table of K3s config.yaml keys",
                   hint='e.g. [bundles.edge.k3s_config] disable = ["traefik"]')
    try:
        known = k3sfacts.config_keys(k3s)
    except ValueError:
        raise fail(where, f"K3s release {k3s!r} has no minor version to check keys "
                   "against", hint="name a release like v1.34.3+k3s1") from None
    if known is None:
        minors = ", ".join(f"v{a}.{b}" for a, b in sorted(k3sfacts.CONFIG_KEYS))
        raise fail(where, f"no table of K3s config keys is kept for {k3s}'s minor (known: "
                   f"{minors})", hint="add that minor's flags to bundler/spec/k3sfacts.py "
                   "CONFIG_KEYS (from its `k3s server --help`), or drop k3s_config")
    out: dict[str, Any] = {}
    for key in sorted(table):
        value = table[key]
        name = key[:-1] if key.endswith("+") else key
        kw = f"{where}.{key}"
        if name not in known:
            raise fail(kw, f"{key!r} is not a K3s {k3s} config key: {_nearest(name, known)}",
                       hint="keys are `k3s server`/`k3s agent` flag names without the "
                            "leading --, as in config.yaml (bundler/spec/k3sfacts.py lists them)")
        if name in k3sfacts.SECRET_KEYS:
            raise fail(kw, "is a secret: a bundle is copied to every host and medium",
                       hint=f"use {k3sfacts.SECRET_KEYS[name]!r} naming a file on the device "
                            "(or pass it to airgap-install, e.g. --token-file)")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not _scalar_ok(item):
                    raise fail(f"{kw}[{i}]", "must be a string, number or boolean")
                _check_text(item, f"{kw}[{i}]", fail)
        elif not _scalar_ok(value):
            raise fail(kw, f"must be a string, number, boolean or list of them, not "
                       f"{type(value).__name__}")
        _check_text(value, kw, fail)
        out[key] = list(value) if isinstance(value, list) else value
    return out


def _endpoint_host(url: Any, key: str, fail: Fail) -> str:
    """A mirror endpoint's ``host[:port]``: an http(s) URL that parses (a bracketed IPv6
    address that closes, a port in 1-65535), without credentials, query, fragment, spaces or
    control characters."""
    bad = fail(key, f"{str(url)[:200]!r} is not an http(s):// registry URL",
               hint="scheme, host, optional port (1-65535) and path; no credentials")
    if not isinstance(url, str) or len(url) > _MAX_TEXT or _CONTROL.search(url) \
            or any(c.isspace() for c in url):
        raise bad
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or parts.password or port == 0:
        raise bad
    return parts.netloc


def _abs_path(value: Any, key: str, fail: Fail) -> str:
    if not isinstance(value, str) or not value.startswith("/") or _CONTROL.search(value) \
            or len(value) > _MAX_TEXT or "/../" in value + "/":
        raise fail(key, f"{value!r} must be an absolute path on the device",
                   hint="the file is not shipped: the device must have it at that path")
    return value


def check_mirrors(table: Any, *, where: str, fail: Fail) -> dict[str, dict[str, Any]]:
    """Validate ``mirrors``: registry -> {endpoint: [URL...], rewrite?, tls file paths?}."""
    if not isinstance(table, dict):
        raise fail(where, "must be a table of registries",
                   hint='e.g. [bundles.edge.mirrors."docker.io"] endpoint = ["https://..."]')
    out: dict[str, dict[str, Any]] = {}
    tls_of: dict[str, tuple[str, dict[str, Any]]] = {}
    for registry in sorted(table):
        entry = table[registry]
        rw = f"{where}.{json.dumps(registry)}"
        if not _REGISTRY_RE.match(registry):
            raise fail(rw, f"{registry!r} is not a registry host (docker.io, host:port) or '*'")
        if not isinstance(entry, dict):
            raise fail(rw, "must be a table with endpoint = [...]")
        _check_mirror_keys(entry, rw, fail)
        hosts = _endpoint_hosts(entry.get("endpoint"), rw, fail)
        mirror: dict[str, Any] = {"endpoint": list(entry["endpoint"])}
        if "rewrite" in entry:
            mirror["rewrite"] = _rewrite(entry["rewrite"], rw, fail)
        tls = _mirror_tls(entry, rw, fail)
        if tls:
            for host in hosts:
                other = tls_of.get(host)
                if other is not None and other[1] != tls:
                    raise fail(rw, f"endpoint host {host} has other TLS settings under "
                               f"mirror {other[0]!r}", hint="K3s keys TLS settings by "
                               "endpoint host: give both mirrors the same ones")
                tls_of[host] = (registry, tls)
            mirror["tls"] = tls
        out[registry] = mirror
    return out


def _check_mirror_keys(entry: dict[str, Any], rw: str, fail: Fail) -> None:
    for key in sorted(entry):
        if key == "auth_file":
            raise fail(f"{rw}.auth_file", "K3s's registries.yaml has no credentials-file "
                       "setting, and credentials must not travel in a bundle",
                       hint="give the mirror anonymous pull access for the site, or "
                            "use image-credential-provider-config in k3s_config")
        if key not in _MIRROR_KEYS:
            raise fail(f"{rw}.{key}", f"unknown key {key!r}: {_nearest(key, _MIRROR_KEYS)}",
                       hint=f"allowed: {', '.join(_MIRROR_KEYS)}")


def _endpoint_hosts(endpoints: Any, rw: str, fail: Fail) -> list[str]:
    """The host:port of each endpoint URL, each checked (http(s), no credentials)."""
    if not isinstance(endpoints, list) or not endpoints:
        raise fail(f"{rw}.endpoint", "must be a non-empty list of registry URLs",
                   hint='e.g. endpoint = ["https://registry.site.local:5000"]')
    return [_endpoint_host(url, f"{rw}.endpoint[{i}]", fail) for i, url in enumerate(endpoints)]


def _rewrite(rewrite: Any, rw: str, fail: Fail) -> dict[str, str]:
    if not isinstance(rewrite, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and not _CONTROL.search(k + v)
            for k, v in rewrite.items()):
        raise fail(f"{rw}.rewrite", "must be a table of regular expression = "
                   "replacement strings", hint='e.g. "^rancher/(.*)" = "mirror/$1"')
    for pattern in rewrite:
        try:
            re.compile(pattern)
        except re.error as e:
            raise fail(f"{rw}.rewrite", f"{pattern!r} is not a regular expression: "
                       f"{e}") from None
    return dict(rewrite)


def _mirror_tls(entry: dict[str, Any], rw: str, fail: Fail) -> dict[str, Any]:
    tls: dict[str, Any] = {}
    for key in _TLS_KEYS:
        if key not in entry:
            continue
        if key == "insecure_skip_verify":
            if not isinstance(entry[key], bool):
                raise fail(f"{rw}.{key}", "must be true or false")
            tls[key] = entry[key]
        else:
            tls[key] = _abs_path(entry[key], f"{rw}.{key}", fail)
    return tls


# ---------------------------------------------------------------------------- YAML


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no types here
    """Every string double-quoted: K3s reads config.yaml with Go YAML 1.1 rules, where a plain
    ``y``, ``n`` or ``off`` is a boolean (PyYAML only quotes the words its own resolver knows,
    and ``y``/``n`` are not among them); numbers and booleans stay plain."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v,
                                                             style='"'))


def _document(comment: str, doc: dict[str, Any]) -> bytes:
    """``doc`` as YAML by PyYAML's emitter (sorted keys, block style, strings double-quoted
    with characters written as themselves, never a surrogate-pair escape, no line folding),
    read back by libyaml and refused unless it gives ``doc`` again: what is shipped is exactly
    what was checked."""
    body: str = yaml.dump(doc, Dumper=_Dumper, sort_keys=True, allow_unicode=True,
                          default_flow_style=False, width=1 << 20)
    data = ("".join(f"# {line}\n" for line in comment.splitlines()) + body).encode()
    try:
        back = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        back = e
    if back != doc:
        raise SpecError("the K3s configuration does not read back as written "
                        f"({str(back)[:200]})", hint="remove unusual characters from the "
                        "k3s_config or mirrors values")
    return data


def config_yaml(bundle: str, config: dict[str, Any]) -> bytes:
    """The drop-in's bytes."""
    return _document(f"K3s configuration of bundle {bundle} "
                     f"([bundles.{bundle}.k3s_config]), placed by airgap-install.\n"
                     "Replaced or removed with the bundle: put your own settings in "
                     "config.yaml or another drop-in.", config)


def registries_yaml(bundle: str, mirrors: dict[str, dict[str, Any]]) -> bytes:
    """registries.yaml's bytes: ``mirrors`` per registry, ``configs`` (TLS) per endpoint host."""
    doc: dict[str, Any] = {"mirrors": {r: {k: v for k, v in m.items() if k != "tls"}
                                       for r, m in mirrors.items()}}
    configs = {urlsplit(url).netloc: {"tls": m["tls"]}
               for m in mirrors.values() if "tls" in m for url in m["endpoint"]}
    if configs:
        doc["configs"] = configs
    return _document(f"K3s registries of bundle {bundle} "
                     f"([bundles.{bundle}.mirrors]), placed by airgap-install.\n"
                     "The bundle owns this file; a hand-written one found here is kept as "
                     "registries.yaml.airgap-backup.", doc)
