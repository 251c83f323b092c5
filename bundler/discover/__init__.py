"""Image discovery: which images a bundle's manifests and charts need (issue 5).

Public API (pure core: returns data, prints nothing, contacts nothing)::

    scan_manifest_text(text, source) -> list[Finding]
    scan_manifest_files(paths) -> list[Finding]
    render_chart(chart, values, *, release, namespace) -> list[tuple[str, str]]
    scan_chart(chart, values_files, *, release, namespace, values_content=None,
               set_values=None) -> list[Finding]
    discover(manifests, charts, *, helmchart_sources=None) -> list[Finding]
    compare(findings, bundle_images) -> (missing, unused)

All scanners also take keyword-only ``policy`` (:class:`LocalImagePolicy`) and the manifest
scanners ``k3s_vars`` (K3s placeholder values, see :func:`k3s_vars`). See docs/discovery.md.
"""

from bundler.discover.core import (
    compare,
    discover,
    referenced_images,
    scan_manifest_files,
    scan_manifest_text,
)
from bundler.discover.helm import render_chart, scan_chart
from bundler.discover.k3s import k3s_vars
from bundler.discover.localonly import LocalImagePolicy
from bundler.discover.model import (
    BLIND_KINDS,
    DECLARED,
    IMAGE,
    INVALID,
    KINDS,
    LOCAL_ONLY,
    REQUIRED_KINDS,
    UNRENDERED,
    ChartInput,
    Finding,
)

__all__ = [
    "BLIND_KINDS", "DECLARED", "IMAGE", "INVALID", "KINDS", "LOCAL_ONLY", "REQUIRED_KINDS",
    "UNRENDERED", "ChartInput", "Finding", "LocalImagePolicy", "compare", "discover",
    "k3s_vars", "referenced_images", "render_chart", "scan_chart", "scan_manifest_files",
    "scan_manifest_text",
]
