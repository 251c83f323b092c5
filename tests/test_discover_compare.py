"""compare(), the images report and the thin ``images`` click command."""

from __future__ import annotations

import json

import pytest

from bundler.discover import (
    DECLARED,
    IMAGE,
    INVALID,
    LOCAL_ONLY,
    UNRENDERED,
    Finding,
    compare,
    referenced_images,
)
from bundler.discover.report import images_report
from bundler.errors import SpecError

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def f(image: str, kind: str = IMAGE, where: str = "Pod/p: spec.containers[0].image") -> Finding:
    return Finding(image, "m.yaml", where, kind)


CASES = [
    ("exact", [f("docker.io/library/nginx:1.27")], ["nginx:1.27"], [], []),
    ("bundle names are normalised", [f("docker.io/library/nginx:1.27")],
     ["docker.io/nginx:1.27"], [], []),
    ("tag-only reference carried by a pinned bundle image",
     [f("quay.io/a/b:1")], [f"quay.io/a/b:1@{D1}"], [], []),
    ("digest reference needs that digest", [f(f"quay.io/a/b:1@{D1}")], [f"quay.io/a/b:2@{D1}"],
     [], []),
    ("digest reference, other digest in bundle", [f(f"quay.io/a/b:1@{D1}")],
     [f"quay.io/a/b:1@{D2}"], [f"quay.io/a/b:1@{D1}"], [f"quay.io/a/b:1@{D2}"]),
    ("digest reference, tag only in bundle", [f(f"quay.io/a/b:1@{D1}")], ["quay.io/a/b:1"],
     [f"quay.io/a/b:1@{D1}"], ["quay.io/a/b:1"]),
    ("missing and unused", [f("quay.io/a/b:1")], ["quay.io/a/c:1"], ["quay.io/a/b:1"],
     ["quay.io/a/c:1"]),
    ("local-only images are required too", [f("docker.io/library/app:1", LOCAL_ONLY)], [],
     ["docker.io/library/app:1"], []),
    ("declared hints are never missing but count as referenced",
     [f("quay.io/a/debug:1", DECLARED)], ["quay.io/a/debug:1"], [], []),
    ("blind spots are always missing", [Finding("", "m.yaml", "HelmChart/x", UNRENDERED, "why"),
                                        Finding("x", "m.yaml", "Pod/p", INVALID, "bad")],
     [], ["", "x"], []),
]


@pytest.mark.parametrize("name,findings,bundle,missing,unused", CASES, ids=[c[0] for c in CASES])
def test_compare(name: str, findings: list[Finding], bundle: list[str], missing: list[str],
                 unused: list[str]) -> None:
    got_missing, got_unused = compare(findings, bundle)
    assert [m.image for m in got_missing] == missing
    assert got_unused == unused


def test_compare_explains_a_digest_the_bundle_lacks() -> None:
    [m], _ = compare([f(f"quay.io/a/b:1@{D1}")], ["quay.io/a/b:1"])
    assert "bundle has quay.io/a/b:1 but not digest" in m.detail


def test_compare_rejects_a_bad_bundle_image() -> None:
    with pytest.raises(SpecError, match="Bad:Name"):
        compare([], ["Bad:Name:x"])


def test_referenced_images_are_distinct_and_sorted() -> None:
    assert referenced_images([f("b.io/x:1"), f("a.io/x:1"), f("b.io/x:1", LOCAL_ONLY),
                              f("c.io/x:1", DECLARED)]) == ["a.io/x:1", "b.io/x:1"]


FINDINGS = [f("quay.io/a/b:1"), f("quay.io/a/b:1", where="Pod/q: spec.containers[0].image"),
            f("docker.io/library/app:1", LOCAL_ONLY),
            Finding("", "traefik.yaml", "HelmChart/kube-system/traefik", UNRENDERED,
                    "chart not available locally")]


def test_report_text_names_every_gap() -> None:
    text = images_report(FINDINGS, ["quay.io/a/c:1"], as_json=False)
    assert "2 image(s) referenced, 1 of them local-only" in text
    assert "quay.io/a/b:1" in text and "<- m.yaml: Pod/q: spec.containers[0].image" in text
    assert "docker.io/library/app:1 (local-only" in text
    assert "[unrendered] traefik.yaml: HelmChart/kube-system/traefik" in text
    assert "quay.io/a/c:1" in text and "ok:" not in text


def test_report_json_is_canonical_and_complete() -> None:
    out = images_report(FINDINGS, ["quay.io/a/b:1"], as_json=True)
    data = json.loads(out)
    assert out == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert data["ok"] is False
    assert [g["image"] for g in data["missing"]] == ["docker.io/library/app:1"]
    assert [b["kind"] for b in data["blind"]] == [UNRENDERED]
    assert len(data["images"][1]["references"]) == 2
    assert data["unused"] == []


def test_report_ok() -> None:
    text = images_report([f("quay.io/a/b:1")], ["quay.io/a/b:1"], as_json=False)
    assert text.endswith("ok: the bundle carries every image its manifests and charts reference")
