"""`bundles.toml`: parse and validate the user's spec into frozen dataclasses (pure but for
reading the one file and globbing manifest paths).

Every error names the file and the key. Credentials appear only as environment-variable names.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bundler.errors import SpecError
from bundler.spec import k3sconfig, specfiles
from bundler.spec.refs import ImageRef, parse_image_ref
from bundler.spec.specfiles import LocalFile
from installer.arch import normalize as arch_name
from installer.errors import InstallerError
from installer.format import canonjson
from installer.format.bundlefmt import ARCHES, ROLES, check_member_path

DEFAULT_RELEASES = "https://github.com/k3s-io/k3s/releases/download"
DEFAULT_INSTALL_SCRIPT = "https://get.k3s.io"
# Where a registry host is served from when the spec names no endpoint.
DEFAULT_ENDPOINTS = {"docker.io": "https://registry-1.docker.io"}


@dataclass(frozen=True)
class RegistryConfig:
    host: str
    endpoint: str
    username_env: str | None = None
    password_env: str | None = None
    ca_file: Path | None = None
    # hosts besides the registry's own that may receive its credentials (token realms):
    # ``host`` (any port) or ``host:port``, lower case
    auth_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChartSpec:
    name: str
    repo: str                 # https://... chart repository, or oci://host/path
    version: str
    namespace: str = "default"
    value_files: tuple[LocalFile, ...] = ()   # confined to the spec's roots at load
    release: str = ""         # HelmChart object name; defaults to the chart name

    @property
    def is_oci(self) -> bool:
        return self.repo.startswith("oci://")

    @property
    def values(self) -> tuple[Path, ...]:
        return tuple(v.path for v in self.value_files)


@dataclass(frozen=True)
class BundleSpec:
    name: str
    version: str
    arch: tuple[str, ...]
    k3s: str
    images: tuple[ImageRef, ...]
    manifests: tuple[str, ...]           # glob patterns relative to the spec folder
    charts: tuple[ChartSpec, ...] = ()
    k3s_airgap_images: bool = True       # ship K3s's own airgap images tarball
    roles: tuple[str, ...] = ROLES
    allow_k3s_minor_skip: bool = False
    allow_k3s_downgrade: bool = False
    # K3s configuration the bundle carries (bundler/spec/k3sconfig.py): config.yaml keys for the
    # drop-in, and registry -> mirror entry for registries.yaml; both validated at load
    k3s_config: dict[str, Any] = field(default_factory=dict, hash=False)
    mirrors: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Spec:
    path: Path
    releases: str
    install_script: str
    registries: dict[str, RegistryConfig]
    bundles: dict[str, BundleSpec]
    digest: str = field(default="")
    signing_keys: Path | None = None     # [signing] keys: the key folder `build` signs with
    extra_roots: tuple[str, ...] = ()    # [files] extra_roots: more folders spec files may use

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def roots(self) -> tuple[Path, ...]:
        """Folders the spec's local files must resolve into (the spec's own first)."""
        return specfiles.roots(self.base_dir, self.extra_roots)

    def registry(self, host: str) -> RegistryConfig:
        """The config for a registry host (endpoint defaults to https://<host>)."""
        if host in self.registries:
            return self.registries[host]
        return RegistryConfig(host=host, endpoint=DEFAULT_ENDPOINTS.get(host, f"https://{host}"))

    def bundle(self, name: str) -> BundleSpec:
        if name not in self.bundles:
            raise SpecError(f"{self.path}: no bundle named {name!r}",
                            hint=f"bundles in this spec: {', '.join(sorted(self.bundles))}")
        return self.bundles[name]

    def manifest_files(self, bundle: BundleSpec) -> list[Path]:
        """The manifest files of a bundle, sorted, each matched by the spec's globs."""
        return [f.path for f in self.manifest_locals(bundle)]

    def manifest_locals(self, bundle: BundleSpec) -> list[LocalFile]:
        """The manifest files of a bundle (sorted by lock key), each matched by the spec's
        globs, resolved inside the spec's roots, and named as a bundle member may be."""
        files: dict[str, LocalFile] = {}
        where = f"bundles.{bundle.name}.manifests"
        allowed = self.roots
        for pattern in bundle.manifests:
            matched = specfiles.expand(self.base_dir, pattern, allowed=allowed, what=where,
                                       spec_path=self.path)
            if not matched:
                raise SpecError(f"{self.path}: {where}: pattern {pattern!r} matches no file "
                                f"under {self.base_dir}")
            files.update((f.url, f) for f in matched)
        out = [files[k] for k in sorted(files)]
        specfiles.check_manifest_names(out, where=where, spec_path=self.path)
        return out


_TOP_KEYS = {"k3s", "registries", "bundles", "signing", "files"}
_BUNDLE_KEYS = {"version", "arch", "k3s", "images", "manifests", "charts", "k3s_airgap_images",
                "roles", "allow_k3s_minor_skip", "allow_k3s_downgrade", "k3s_config", "mirrors"}
_CHART_KEYS = {"name", "repo", "version", "namespace", "values", "release"}
_REGISTRY_KEYS = {"endpoint", "username_env", "password_env", "ca_file", "auth_hosts"}
# a DNS name or IPv4 address, optionally with a port; [v6] literals with a port too
_AUTH_HOST_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]"
                           r"{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


class _Ctx:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.allowed: tuple[Path, ...] = specfiles.roots(path.parent)

    def local(self, text: str, key: str) -> LocalFile:
        """A local file the spec names, confined to the spec's roots (see specfiles)."""
        return specfiles.confine(self.path.parent, text, allowed=self.allowed, what=key,
                                 spec_path=self.path)

    def fail(self, key: str, msg: str, hint: str | None = None) -> SpecError:
        return SpecError(f"{self.path}: {key}: {msg}", hint=hint)

    def get(self, table: dict[str, Any], key: str, where: str, *, typ: type,
            default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(f"{where}.{key}" if where else key, "is required")
            return default
        value = table[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise self.fail(f"{where}.{key}" if where else key,
                            f"must be a {typ.__name__}, got {type(value).__name__}")
        return value

    def check_keys(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(where or "(top level)", f"unknown key(s) {', '.join(unknown)}",
                            hint=f"allowed: {', '.join(sorted(allowed))}")

    def str_list(self, table: dict[str, Any], key: str, where: str,
                 *, default: Any = ...) -> list[str]:
        value = self.get(table, key, where, typ=list, default=default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{where}.{key}[{i}]", "must be a string")
        return list(value)


def load_spec(path: Path) -> Spec:
    """Read and validate a spec file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"spec file {path} not found",
                        hint="run in the folder holding bundles.toml, or pass --spec") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse_spec(doc, path)


def parse_spec(doc: dict[str, Any], path: Path) -> Spec:
    c = _Ctx(path)
    c.check_keys(doc, _TOP_KEYS, "")
    k3s = c.get(doc, "k3s", "", typ=dict, default={})
    c.check_keys(k3s, {"releases", "install_script"}, "k3s")
    releases = c.get(k3s, "releases", "k3s", typ=str, default=DEFAULT_RELEASES).rstrip("/")
    files = c.get(doc, "files", "", typ=dict, default={})
    c.check_keys(files, {"extra_roots"}, "files")
    extra_roots = tuple(c.str_list(files, "extra_roots", "files", default=[]))
    for i, root in enumerate(extra_roots):
        if not (path.parent / root).is_dir():
            raise c.fail(f"files.extra_roots[{i}]", f"{root!r} is not a folder")
    c.allowed = specfiles.roots(path.parent, extra_roots)
    install_script = c.get(k3s, "install_script", "k3s", typ=str, default=DEFAULT_INSTALL_SCRIPT)

    registries: dict[str, RegistryConfig] = {}
    for host, table in c.get(doc, "registries", "", typ=dict, default={}).items():
        where = f"registries.{host!r}"
        if not isinstance(table, dict):
            raise c.fail(where, "must be a table")
        c.check_keys(table, _REGISTRY_KEYS, where)
        endpoint = c.get(table, "endpoint", where, typ=str, default=f"https://{host}").rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise c.fail(f"{where}.endpoint", f"{endpoint!r} must start with http:// or https://")
        ca = c.get(table, "ca_file", where, typ=str, default=None)
        ca_path = None
        if ca:
            ca_path = c.local(ca, f"{where}.ca_file (CA file)").path
            specfiles.scan_file(ca_path, what=f"{path}: {where}.ca_file")
        for key in ("username_env", "password_env"):
            if key in table and not str(table[key]).replace("_", "").isalnum():
                raise c.fail(f"{where}.{key}", "must name an environment variable",
                             hint="credentials are never written into the spec")
        auth_hosts = c.str_list(table, "auth_hosts", where, default=[])
        for i, name in enumerate(auth_hosts):
            if len(name) > 255 or not _AUTH_HOST_RE.fullmatch(name):
                raise c.fail(f"{where}.auth_hosts[{i}]",
                             f"{name[:100]!r} is not a host name or host:port",
                             hint="name the token service's host as in its URL, lower case, "
                                  'without scheme or path, e.g. "auth.example" or '
                                  '"auth.example:8443"')
        registries[host] = RegistryConfig(
            host=host, endpoint=endpoint,
            username_env=c.get(table, "username_env", where, typ=str, default=None),
            password_env=c.get(table, "password_env", where, typ=str, default=None),
            ca_file=ca_path, auth_hosts=tuple(auth_hosts))

    bundles_table = c.get(doc, "bundles", "", typ=dict)
    if not bundles_table:
        raise c.fail("bundles", "defines no bundle", hint="add a [bundles.<name>] table")
    bundles = {name: _parse_bundle(c, name, table) for name, table in bundles_table.items()}
    signing = c.get(doc, "signing", "", typ=dict, default={})
    c.check_keys(signing, {"keys"}, "signing")
    keys_dir = c.get(signing, "keys", "signing", typ=str, default=None)
    if keys_dir == "":
        raise c.fail("signing.keys", "is empty", hint="name the key folder of `bundle keys init`")
    # Where the keys live says nothing about what is locked: not part of the spec digest.
    meaning = {k: v for k, v in doc.items() if k != "signing"}
    return Spec(path=path, releases=releases, install_script=install_script,
                registries=registries, bundles=bundles, digest=spec_digest(meaning),
                signing_keys=path.parent / keys_dir if keys_dir else None,
                extra_roots=extra_roots)


def spec_digest(doc: dict[str, Any]) -> str:
    """Digest of the spec's meaning (comments and layout do not count)."""
    return "sha256:" + hashlib.sha256(canonjson.encode(_plain(doc))).hexdigest()


def _plain(obj: Any) -> Any:
    # canonical JSON has no floats or dates; the spec has none that matter, render as text
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _parse_bundle(c: _Ctx, name: str, table: Any) -> BundleSpec:
    where = f"bundles.{name}"
    if not isinstance(table, dict):
        raise c.fail(where, "must be a table")
    if not name.replace("-", "").isalnum() or not name[:1].isalnum() or name != name.lower():
        raise c.fail(where, f"bundle name {name!r} must be lowercase letters, digits and '-'")
    c.check_keys(table, _BUNDLE_KEYS, where)
    version = c.get(table, "version", where, typ=str)
    if not version or not all(part.isdigit() for part in version.split("-")[0].split(".")):
        raise c.fail(f"{where}.version", f"{version!r} is not a version like 1.2.3",
                     hint="devices compare versions numerically to refuse downgrades")
    arches = _bundle_arches(c, table, where)
    k3s = c.get(table, "k3s", where, typ=str)
    if not k3s.startswith("v") or "+k3s" not in k3s:
        raise c.fail(f"{where}.k3s", f"{k3s!r} is not a K3s release like v1.34.3+k3s1")
    images = _bundle_images(c, table, where)
    charts = _bundle_charts(c, table, where)
    roles = tuple(c.str_list(table, "roles", where, default=list(ROLES)))
    for r in roles:
        if r not in ROLES:
            raise c.fail(f"{where}.roles", f"unknown role {r!r} (server, agent)")
    k3s_config = k3sconfig.check_k3s_config(table["k3s_config"], k3s=k3s,
                                            where=f"{where}.k3s_config", fail=c.fail) \
        if "k3s_config" in table else {}
    mirrors = k3sconfig.check_mirrors(table["mirrors"], where=f"{where}.mirrors",
                                      fail=c.fail) if "mirrors" in table else {}
    return BundleSpec(
        k3s_config=k3s_config, mirrors=mirrors,
        name=name, version=version, arch=tuple(arches), k3s=k3s, images=tuple(images),
        manifests=tuple(c.str_list(table, "manifests", where, default=[])),
        charts=tuple(charts),
        k3s_airgap_images=c.get(table, "k3s_airgap_images", where, typ=bool, default=True),
        roles=roles,
        allow_k3s_minor_skip=c.get(table, "allow_k3s_minor_skip", where, typ=bool, default=False),
        allow_k3s_downgrade=c.get(table, "allow_k3s_downgrade", where, typ=bool, default=False))


def _bundle_arches(c: _Ctx, table: dict[str, Any], where: str) -> list[str]:
    arches = []
    for a in c.str_list(table, "arch", where):
        try:
            arches.append(arch_name(a))   # x86_64 -> amd64, aarch64 -> arm64, armhf -> arm
        except ValueError:
            raise c.fail(f"{where}.arch", f"unknown architecture {a!r}",
                         hint=f"use one of {', '.join(ARCHES)} (arm means linux/arm/v7; "
                              "x86_64, aarch64, armhf and armv7l are accepted too)") from None
    if not arches or len(set(arches)) != len(arches):
        raise c.fail(f"{where}.arch", "must list at least one architecture, each once")
    return arches


def _bundle_images(c: _Ctx, table: dict[str, Any], where: str) -> list[ImageRef]:
    images = []
    for i, text in enumerate(c.str_list(table, "images", where, default=[])):
        try:
            images.append(parse_image_ref(text))
        except SpecError as e:
            raise c.fail(f"{where}.images[{i}]", e.message) from None
    if len({str(i) for i in images}) != len(images):
        raise c.fail(f"{where}.images", "lists an image twice")
    if len({i.runtime_name for i in images}) != len(images):  # docker-daemon: and registry
        twice = next(i for i in images if i.daemon and any(
            j.runtime_name == i.runtime_name and not j.daemon for j in images))
        raise c.fail(f"{where}.images", f"lists {twice.runtime_name} twice: from a registry "
                     "and from the Docker engine (docker-daemon:)",
                     hint="keep one of the two")
    return images


def _bundle_charts(c: _Ctx, table: dict[str, Any], where: str) -> list[ChartSpec]:
    charts = [_parse_chart(c, f"{where}.charts[{i}]", ct)
              for i, ct in enumerate(c.get(table, "charts", where, typ=list, default=[]))]
    for key, label in (("name", "chart name"), ("release", "release")):
        seen: dict[str, int] = {}
        for i, ch in enumerate(charts):
            value = getattr(ch, key)
            if value in seen:
                raise c.fail(f"{where}.charts[{i}].{key}", f"{label} {value!r} is used by "
                             f"charts[{seen[value]}] too", hint="each chart of a bundle needs "
                             "its own name and release (they name its files on the device)")
            seen[value] = i
    return charts


def _parse_chart(c: _Ctx, cw: str, ct: Any) -> ChartSpec:
    if not isinstance(ct, dict):
        raise c.fail(cw, "must be a table")
    c.check_keys(ct, _CHART_KEYS, cw)
    repo = c.get(ct, "repo", cw, typ=str)
    if not repo.startswith(("http://", "https://", "oci://")):
        raise c.fail(f"{cw}.repo", f"{repo!r} must be an http(s):// or oci:// URL")
    values = tuple(c.local(v, f"{cw}.values[{j}] (values file)")
                   for j, v in enumerate(c.str_list(ct, "values", cw, default=[])))
    chart = ChartSpec(name=c.get(ct, "name", cw, typ=str), repo=repo.rstrip("/"),
                      version=c.get(ct, "version", cw, typ=str),
                      namespace=c.get(ct, "namespace", cw, typ=str, default="default"),
                      value_files=values, release=c.get(ct, "release", cw, typ=str, default=""))
    chart = replace(chart, release=chart.release or chart.name)
    return _check_chart(c, cw, chart)


# Helm: chart names are lowercase letters, digits and dashes (dots and underscores exist in the
# wild); versions are SemVer 2. Both become the member name charts/<name>-<version>.tgz.
_CHART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CHART_VERSION = re.compile(r"^v?[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$")
_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_chart(c: _Ctx, cw: str, chart: ChartSpec) -> ChartSpec:
    """Chart name, version, release and namespace, validated like every other name: each
    becomes part of a member path or a Kubernetes object name on the device."""
    if not _CHART_NAME.match(chart.name) or ".." in chart.name:
        raise c.fail(f"{cw}.name", f"{chart.name!r} is not a chart name",
                     hint="letters, digits, '-', '_' and '.' (no '..', no '/'), as in the "
                          "chart's Chart.yaml")
    if not _CHART_VERSION.match(chart.version) or ".." in chart.version:
        raise c.fail(f"{cw}.version", f"{chart.version!r} is not a chart version",
                     hint="a SemVer version as the repository lists it, e.g. 0.16.1")
    if not _RFC1123.match(chart.release) or len(chart.release) > 53:
        raise c.fail(f"{cw}.release", f"{chart.release!r} is not a valid Helm release name",
                     hint="lowercase letters, digits and '-', at most 53 characters (set "
                          "release = \"...\" when the chart name is not one)")
    if not _RFC1123.match(chart.namespace) or len(chart.namespace) > 63:
        raise c.fail(f"{cw}.namespace", f"{chart.namespace!r} is not a Kubernetes namespace",
                     hint="lowercase letters, digits and '-', at most 63 characters")
    for member, kind in ((f"charts/{chart.name}-{chart.version}.tgz", "chart"),
                         (f"manifests/helmchart-{chart.release}.yaml", "manifest")):
        try:
            check_member_path(member, kind)
        except InstallerError as e:
            raise c.fail(cw, f"would be bundle member {member!r}, which devices refuse: "
                         f"{e.message}", hint="shorten the chart name or version") from None
    return chart
