"""The discovery report that `bundle images`, `bundle check` and `bundle lock` print: which
images are referenced, where, and which the bundle lacks. Pure formatting; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from bundler.discover.core import compare
from bundler.discover.model import BLIND_KINDS, DECLARED, LOCAL_ONLY, REQUIRED_KINDS, Finding
from installer.format.canonjson import encode


def _grouped(findings: Iterable[Finding]) -> list[dict[str, object]]:
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.image, f.kind), []).append(f)
    return [{"image": image, "kind": kind,
             "references": [{"source": f.source, "location": f.location, "detail": f.detail}
                            for f in refs]}
            for (image, kind), refs in sorted(groups.items())]


def images_report(findings: list[Finding], bundle_images: Iterable[str], as_json: bool) -> str:
    """The report as text (for people) or canonical JSON (for machines). Pure."""
    missing, unused = compare(findings, bundle_images)
    required = [f for f in findings if f.kind in REQUIRED_KINDS]
    blind = [f for f in missing if f.kind in BLIND_KINDS]
    absent = [f for f in missing if f.kind in REQUIRED_KINDS]
    declared = [f for f in findings if f.kind == DECLARED]
    if as_json:
        return encode({
            "ok": not missing,
            "images": _grouped(required),
            "missing": _grouped(absent),
            "blind": [{"kind": f.kind, "source": f.source, "location": f.location,
                       "detail": f.detail} for f in blind],
            "declared": _grouped(declared),
            "unused": unused,
        }).decode("utf-8")
    return "\n".join(_text(required, absent=absent, blind=blind, declared=declared,
                           unused=unused, ok=not missing))


def _text(required: list[Finding], *, absent: list[Finding], blind: list[Finding],
          declared: list[Finding], unused: list[str], ok: bool) -> list[str]:
    lines: list[str] = []
    images = sorted({f.image for f in required})
    local = sorted({f.image for f in required if f.kind == LOCAL_ONLY})
    lines.append(f"{len(images)} image(s) referenced, {len(local)} of them local-only")
    if absent:
        lines.append(f"MISSING from the bundle: {len(_grouped(absent))}")
        for group in _grouped(absent):
            refs = group["references"]
            assert isinstance(refs, list)
            tag = " (local-only: build or export it yourself)" if group["kind"] == LOCAL_ONLY \
                else ""
            lines.append(f"  {group['image']}{tag}")
            for ref in refs:
                lines.append(f"    <- {ref['source']}: {ref['location']}")
                if ref["detail"]:
                    lines.append(f"       {ref['detail']}")
    if blind:
        lines.append(f"NOT LOOKED INTO (images unknown): {len(blind)}")
        for f in blind:
            lines.append(f"  [{f.kind}] {f.source}: {f.location}")
            lines.append(f"       {f.detail}")
    if declared:
        lines.append(f"declared by charts but unused with these values: "
                     f"{', '.join(sorted({f.image for f in declared}))}")
    if unused:
        lines.append(f"in the bundle but referenced nowhere: {len(unused)}")
        lines += [f"  {image}" for image in unused]
    if ok:
        lines.append("ok: the bundle carries every image its manifests and charts reference")
    return lines
