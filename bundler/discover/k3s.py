"""K3s ``%{NAME}%`` placeholders in packaged manifests (pure).

K3s substitutes these in the files it stages under ``server/manifests`` before applying them;
until then some files are not valid YAML (``clusterIP: %{CLUSTER_DNS}%``). Discovery
substitutes the same names with K3s's defaults first, so such files are scanned like any
other. Names and defaults follow k3s ``pkg/server/server.go`` ``stageFiles`` (templateVars)
and ``registryTemplate``; ``%{KUBERNETES_API}%`` (filled in by helm-controller's job in
``HelmChart`` chart URLs) is left as written. An unknown placeholder is replaced by a marker
(``K3S_PLACEHOLDER_<NAME>``): the file still parses, and an image that contains one is
reported as ``invalid`` (its real value is unknown) instead of being guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER_RE = re.compile(r"%\{([A-Za-z0-9_]+)\}%")
UNKNOWN_MARKER = "K3S_PLACEHOLDER_"
UNKNOWN_RE = re.compile(UNKNOWN_MARKER + r"([A-Z0-9_]+)")

DEFAULTS: Mapping[str, str] = {
    "CLUSTER_DNS": "10.43.0.10",
    "CLUSTER_DNS_LIST": "[10.43.0.10]",
    "CLUSTER_DNS_IPFAMILYPOLICY": "SingleStack",
    "CLUSTER_DOMAIN": "cluster.local",
    "DEFAULT_LOCAL_STORAGE_PATH": "/var/lib/rancher/k3s/storage",
    "SYSTEM_DEFAULT_REGISTRY": "",
    "SYSTEM_DEFAULT_REGISTRY_RAW": "",
    "PREFERRED_ADDRESS_TYPES": "InternalIP,ExternalIP,Hostname",
    # filled in by helm-controller's job, not by K3s: kept as written (it only occurs inside
    # chart URLs, where it is valid YAML), so reports show the URL as the user wrote it
    "KUBERNETES_API": "%{KUBERNETES_API}%",
}


def k3s_vars(*, system_default_registry: str = "",
             overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """K3s's placeholder values for a server started with ``--system-default-registry``.

    Like K3s's ``registryTemplate``: a non-empty registry gets a trailing ``/`` in
    ``SYSTEM_DEFAULT_REGISTRY`` and stays bare in ``SYSTEM_DEFAULT_REGISTRY_RAW``.
    """
    values = dict(DEFAULTS)
    registry = system_default_registry.strip().rstrip("/")
    values["SYSTEM_DEFAULT_REGISTRY"] = f"{registry}/" if registry else ""
    values["SYSTEM_DEFAULT_REGISTRY_RAW"] = registry
    values.update(overrides or {})
    return values


def substitute(text: str, values: Mapping[str, str] | None = None) -> str:
    """Replace every ``%{NAME}%``: known names by their value, unknown ones by a marker."""
    table = DEFAULTS if values is None else values

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        return table[name] if name in table else UNKNOWN_MARKER + name

    return PLACEHOLDER_RE.sub(repl, text)


def unknown_placeholders(text: str) -> list[str]:
    """The placeholder names a marker in ``text`` stands for (after :func:`substitute`)."""
    return [f"%{{{m}}}%" for m in UNKNOWN_RE.findall(text)]
