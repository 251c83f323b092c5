"""Discovery's entry points: manifests and charts in, findings out; and the bundle check.

Pure apart from reading the files it is given and rendering charts (offline, in a capped child
process: see :func:`.helm.render_loaded`).
It prints nothing and contacts nothing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from bundler import safeyaml
from bundler.discover import k3s, yamldocs
from bundler.discover.helm import compose_values, open_chart, scan_loaded
from bundler.discover.localonly import DEFAULT_POLICY, LocalImagePolicy
from bundler.discover.model import (
    BLIND_KINDS,
    DECLARED,
    REQUIRED_KINDS,
    UNRENDERED,
    ChartInput,
    Finding,
)
from bundler.discover.walk import HelmChartConfigSpec, HelmChartSpec, Scanner, ScanResult
from bundler.errors import SpecError
from bundler.limits import Limits
from bundler.spec.refs import ImageRef, parse_image_ref

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _scan_text(text: str, source: str, *, policy: LocalImagePolicy,
               k3s_vars: Mapping[str, str] | None) -> ScanResult:
    scanner = Scanner(source, policy=policy)
    scanner.text(yamldocs.split_manifest(k3s.substitute(text, k3s_vars)))
    return scanner.result


def _no_source(hc: HelmChartSpec, why: str) -> Finding:
    what = f"HelmChart {hc.namespace}/{hc.name} (chart {hc.chart or 'in spec.chartContent'})"
    return Finding("", hc.source, hc.label, UNRENDERED, f"{what}: {why}")


def scan_manifest_text(text: str, source: str, *, policy: LocalImagePolicy = DEFAULT_POLICY,
                       k3s_vars: Mapping[str, str] | None = None) -> list[Finding]:
    """Findings in one manifest file's text (K3s placeholders substituted first).

    A ``HelmChart`` is reported ``unrendered`` unless it carries its chart inline
    (``spec.chartContent``); to render charts it points at, use :func:`discover`.
    """
    result = _scan_text(text, source, policy=policy, k3s_vars=k3s_vars)
    return result.findings + _resolve_helmcharts(result, {}, policy=policy)


def manifest_paths(paths: Iterable[Path]) -> list[Path]:
    """The manifest files ``paths`` name (a directory: its .yaml/.yml/.json files, sorted),
    leaving out those with a K3s ``<name>.skip`` sibling."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file()
                          and p.suffix in MANIFEST_SUFFIXES and not p.name.startswith("."))
        else:
            out.append(path)
    # K3s: "<file>.skip" next to a manifest disables it
    return [p for p in out if not p.with_name(p.name + ".skip").exists()]


def read_manifest(path: Path) -> str:
    """A manifest file's text; ``SpecError`` naming it when missing, unreadable or not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"manifest {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"manifest {path} is not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise SpecError(f"cannot read manifest {path}: {exc.strerror}") from exc


def _scan_files(paths: Iterable[Path], *, policy: LocalImagePolicy,
                k3s_vars: Mapping[str, str] | None) -> ScanResult:
    result = ScanResult()
    for path in manifest_paths(paths):
        result.extend(_scan_text(read_manifest(path), str(path), policy=policy, k3s_vars=k3s_vars))
    return result


def scan_manifest_files(paths: Iterable[Path], *, policy: LocalImagePolicy = DEFAULT_POLICY,
                        k3s_vars: Mapping[str, str] | None = None) -> list[Finding]:
    """Findings in manifest files; a directory means every .yaml/.yml/.json under it.

    Like K3s, a file with a ``<name>.skip`` sibling is left out. Raises ``SpecError`` for a
    file that is missing or not UTF-8.
    """
    result = _scan_files(paths, policy=policy, k3s_vars=k3s_vars)
    return result.findings + _resolve_helmcharts(result, {}, policy=policy)


def _source_keys(hc: HelmChartSpec) -> list[str]:
    """Keys a HelmChart's chart may be found under in ``helmchart_sources``, best first."""
    keys = []
    if hc.version:
        keys.append(f"{hc.chart}@{hc.version}")
    if hc.repo:
        keys.append(f"{hc.repo.rstrip('/')}/{hc.chart}")
    keys.append(hc.chart)
    parsed = urlparse(hc.chart)
    if parsed.scheme in ("http", "https", "oci"):
        keys.append(PurePosixPath(parsed.path).name)
    return [k for k in dict.fromkeys(keys) if k]


@dataclasses.dataclass
class _Renders:
    """HelmChart renders left for one bundle (``helmchart_renders``): a chart's output may
    hold HelmCharts with ``spec.chartContent`` whose output holds more, N^depth renders from
    a few KB."""

    left: int

    @classmethod
    def new(cls) -> _Renders:
        return cls(Limits.from_env().helmchart_renders)


def _resolve_helmcharts(result: ScanResult, sources: Mapping[str, Path], *,
                        policy: LocalImagePolicy, renders: _Renders | None = None
                        ) -> list[Finding]:
    renders = renders or _Renders.new()
    configs: dict[tuple[str, str], HelmChartConfigSpec] = {
        (c.namespace, c.name): c for c in result.configs}
    findings: list[Finding] = []
    for hc in result.helmcharts:
        config = configs.get((hc.namespace, hc.name))
        if hc.values_secrets or (config and config.values_secrets):
            findings.append(_no_source(hc, "values come from Secrets (valuesSecrets) that "
                                       "discovery cannot read"))
            continue
        chart = _chart_of(hc, sources, renders)
        if isinstance(chart, str):
            findings.append(_no_source(hc, chart))
            continue
        renders.left -= 1
        rendered = _render_helmchart(hc, config, chart, policy=policy)
        if isinstance(rendered, str):
            findings.append(_no_source(hc, rendered))
            continue
        findings += rendered.findings + _resolve_helmcharts(rendered, sources, policy=policy,
                                                            renders=renders)
    return findings


def _chart_of(hc: HelmChartSpec, sources: Mapping[str, Path],
              renders: _Renders) -> Path | bytes | str:
    """The HelmChart's chart (its inline content or a local source), or why there is none."""
    chart: Path | bytes | None = None
    if hc.chart_content:
        try:
            chart = base64.b64decode(hc.chart_content, validate=False)
        except (binascii.Error, ValueError):
            return "spec.chartContent is not base64"
    else:
        chart = next((sources[k] for k in _source_keys(hc) if k in sources), None)
    if chart is not None and renders.left <= 0:
        cap = Limits.from_env().helmchart_renders
        return (f"not rendered: over the helmchart_renders cap of {cap} HelmChart renders in "
                "one bundle (HelmCharts whose charts render more HelmCharts?); if that is "
                "real, raise it: BUNDLE_LIMITS=\"helmchart_renders=N\"")
    if chart is None:
        return ("the chart"
                f"{' from ' + hc.repo if hc.repo else ''}"
                f"{' version ' + hc.version if hc.version else ''} is "
                "not available locally, so its images are unknown; "
                "pass it in helmchart_sources (keys tried: "
                f"{', '.join(_source_keys(hc))})")
    return chart


def _render_helmchart(hc: HelmChartSpec, config: HelmChartConfigSpec | None,
                      chart: Path | bytes, *, policy: LocalImagePolicy) -> ScanResult | str:
    """What the HelmChart's chart renders to with its values (and its HelmChartConfig's),
    or why it could not be rendered."""
    try:
        loaded = open_chart(chart)
    except SpecError as exc:
        return exc.message
    try:
        if hc.version and loaded.version != hc.version.lstrip("v") and \
                loaded.version != hc.version:
            return (f"the chart supplied is version {loaded.version}"
                    f" but the HelmChart asks for {hc.version}")
        contents = [hc.values_content] if hc.values_content else []
        if config and config.values_content:
            contents.append(config.values_content)  # helm-controller: values-10_HelmChartConfig
        values = compose_values([], contents, hc.set_values)
        return scan_loaded(loaded, values, release=hc.name,
                           namespace=hc.target_namespace or hc.namespace,
                           policy=policy, via=f"{hc.label} ({hc.source}) -> ")
    except SpecError as exc:
        return exc.message
    finally:
        loaded.close()


def discover(manifests: list[Path], charts: list[ChartInput], *,
             helmchart_sources: Mapping[str, Path] | None = None,
             policy: LocalImagePolicy = DEFAULT_POLICY,
             k3s_vars: Mapping[str, str] | None = None) -> list[Finding]:
    """:func:`_discover` within the active discovery budget (the lock's, see
    ``safeyaml.discovery_budget``), or a fresh one: nodes parsed and time, across texts."""
    with safeyaml.discovery_budget(Limits.from_env()):
        return _discover(manifests, charts, helmchart_sources=helmchart_sources,
                         policy=policy, k3s_vars=k3s_vars)


def _discover(manifests: list[Path], charts: list[ChartInput], *,
              helmchart_sources: Mapping[str, Path] | None = None,
              policy: LocalImagePolicy = DEFAULT_POLICY,
              k3s_vars: Mapping[str, str] | None = None) -> list[Finding]:
    """Every image the bundle's manifests and charts ask for, and every blind spot.

    ``helmchart_sources`` maps what a K3s ``HelmChart`` names in ``spec.chart`` to a local
    chart (directory or .tgz). Keys may be the exact ``spec.chart`` (placeholders such as
    ``%{KUBERNETES_API}%`` allowed), its file name for URLs (``traefik-37.1.1+up37.1.0.tgz``),
    ``<repo>/<chart>``, ``<chart>@<version>`` or the bare chart name. A HelmChart is rendered
    with its ``valuesContent``, then the ``valuesContent`` of the ``HelmChartConfig`` of the
    same name and namespace, then ``spec.set``, in its ``targetNamespace``. A chart that cannot
    be rendered (explicit or HelmChart) becomes an ``unrendered`` finding, never an exception.
    """
    sources = {k3s.substitute(str(k), k3s_vars): Path(v)
               for k, v in (helmchart_sources or {}).items()}
    result = _scan_files(manifests, policy=policy, k3s_vars=k3s_vars)
    renders = _Renders.new()
    findings = result.findings + _resolve_helmcharts(result, sources, policy=policy,
                                                     renders=renders)
    for chart in charts:
        where = f"chart {chart.name} ({chart.archive_or_dir})"
        try:
            loaded = open_chart(chart.archive_or_dir)
        except SpecError as exc:
            findings.append(Finding("", str(chart.archive_or_dir), where, UNRENDERED,
                                    exc.message))
            continue
        try:
            values = compose_values(chart.values_files)
            rendered = scan_loaded(loaded, values, release=chart.name,
                                   namespace=chart.namespace, policy=policy)
        except SpecError as exc:
            findings.append(Finding("", str(chart.archive_or_dir), where, UNRENDERED,
                                    exc.message))
            continue
        finally:
            loaded.close()
        findings += rendered.findings + _resolve_helmcharts(rendered, sources, policy=policy,
                                                            renders=renders)
    return findings


def _covers(have: ImageRef, want: ImageRef) -> bool:
    if have.name != want.name:
        return False
    if want.digest:
        return have.digest == want.digest
    return have.tag == want.tag


def compare(findings: list[Finding], bundle_images: Iterable[str]
            ) -> tuple[list[Finding], list[str]]:
    """``(missing, unused)`` for a bundle carrying ``bundle_images``.

    ``missing``: every ``image``/``local_only`` finding the bundle does not carry (one per
    place it is referenced), then every ``unrendered``/``invalid`` finding (discovery could
    not see those images, so a gate must not pass them silently). A reference pinned by
    digest is carried only by the same digest; a tag-only reference by the same tag.
    ``unused``: bundle images (normalised) no finding refers to, ``declared`` hints included.
    Raises ``SpecError`` naming a bundle image that is not a valid reference.
    """
    have: list[ImageRef] = []
    for text in bundle_images:
        try:
            have.append(parse_image_ref(text))
        except SpecError as exc:
            raise SpecError(f"bundle image list: {exc.message}") from exc
    missing: list[Finding] = []
    used: set[ImageRef] = set()
    for f in findings:
        if f.kind not in (*REQUIRED_KINDS, DECLARED):
            continue
        want = parse_image_ref(f.image)
        carriers = [h for h in have if _covers(h, want)]
        used.update(carriers)
        if carriers or f.kind == DECLARED:
            continue
        same_tag = [h for h in have if h.name == want.name and h.tag == want.tag]
        if want.digest and same_tag:
            f = dataclasses.replace(f, detail=(f"{f.detail}; " if f.detail else "") +
                                    f"the bundle has {same_tag[0]} but not digest {want.digest}")
        missing.append(f)
    missing += [f for f in findings if f.kind in BLIND_KINDS]
    unused = sorted({str(h) for h in have if h not in used})
    return missing, unused


def referenced_images(findings: Iterable[Finding]) -> list[str]:
    """The distinct images a bundle must carry, sorted."""
    return sorted({f.image for f in findings if f.kind in REQUIRED_KINDS})


