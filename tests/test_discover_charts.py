"""Chart discovery: Helm's own engine (helm-python-sdk), real charts and a synthetic one.

Needs helm-python-sdk (``pip install -e '.[discovery]'``): these tests fail, not skip, without
it, so a CI that forgot the install cannot pass silently. The cross-check against the real
``helm`` v4 binary is skipped when no such binary is on PATH (or in $HELM_BIN).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from bundler.discover import (
    DECLARED,
    IMAGE,
    UNRENDERED,
    ChartInput,
    Finding,
    discover,
    render_chart,
    scan_chart,
)
from bundler.discover.walk import Scanner
from bundler.discover.yamldocs import load_all, split_helm
from bundler.errors import SpecError
from bundler.spec.refs import normalize
from tests.paths import REAL

CHARTS = REAL / "charts"
METALLB = CHARTS / "metallb-v0.16.1" / "metallb"
TRAEFIK = CHARTS / "traefik-v37.1.0" / "traefik"
K3S_TRAEFIK = REAL / "k3s" / "v1.34.3+k3s1" / "manifests" / "traefik.yaml"


def images(findings: list[Finding], kind: str = IMAGE) -> set[str]:
    return {f.image for f in findings if f.kind == kind}


def expected(chart_dir: Path) -> set[str]:
    lines = (chart_dir.parent / "expected-images.txt").read_text().splitlines()
    return {normalize(line.strip()) for line in lines if line.strip() and
            not line.startswith("#")}


# --- ground truth: fixtures/real/charts/*/expected-images.txt, default values ------------
@pytest.mark.parametrize("chart", [METALLB, TRAEFIK], ids=["metallb", "traefik"])
def test_real_chart_default_values_exactly(chart: Path) -> None:
    findings = scan_chart(chart, [], release="rel", namespace="ns")
    assert images(findings) == expected(chart)
    assert {f.kind for f in findings} == {IMAGE}


def test_every_real_chart_is_covered() -> None:
    assert sorted(p.parent.name for p in CHARTS.glob("*/expected-images.txt")) == [
        "metallb-v0.16.1", "traefik-v37.1.0"]


def test_traefik_image_is_docker_hub_library_normal_form() -> None:
    assert expected(TRAEFIK) == {"docker.io/library/traefik:v3.5.1"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


VARIANTS = [
    ("metallb frr mode", METALLB, {"frrk8s": {"enabled": False},
                                   "speaker": {"frr": {"enabled": True}}},
     {"quay.io/metallb/controller:v0.16.1", "quay.io/metallb/speaker:v0.16.1",
      "quay.io/frrouting/frr:10.5.3"}),
    ("metallb without frr-k8s", METALLB, {"frrk8s": {"enabled": False}},
     {"quay.io/metallb/controller:v0.16.1", "quay.io/metallb/speaker:v0.16.1"}),
    ("traefik with K3s values", TRAEFIK,
     {"image": {"repository": "rancher/mirrored-library-traefik", "tag": "3.5.1"}},
     {"docker.io/rancher/mirrored-library-traefik:3.5.1"}),
]


@pytest.mark.parametrize("name,chart,values,want", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_real_chart_with_values(tmp_path: Path, name: str, chart: Path, values: dict[str, object],
                                want: set[str]) -> None:
    vf = tmp_path / "values.yaml"
    vf.write_text(json.dumps(values))
    assert images(scan_chart(chart, [vf], release="rel", namespace="ns")) == want


# --- a synthetic chart: subchart .tgz, aliases, conditions, appVersion, annotations ------
def make_chart(root: Path) -> Path:
    sub = root / "src" / "sub"
    write(sub / "Chart.yaml", """\
        apiVersion: v2
        name: sub
        version: 0.1.0
        appVersion: "2.0.0"
        """)
    write(sub / "values.yaml", """\
        image: {repository: example.com/sub}
        extra: {enabled: false, image: "example.com/extra:9"}
        """)
    write(sub / "templates" / "deploy.yaml", """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: "{{ .Release.Name }}-{{ .Values.suffix | default .Chart.Name }}"}
        spec:
          template:
            spec:
              {{- $tag := .Values.image.tag | default .Chart.AppVersion }}
              containers:
              - name: c
                image: "{{ .Values.image.repository }}:{{ $tag }}"
              {{- if .Values.extra.enabled }}
              - name: extra
                image: {{ .Values.extra.image }}
              {{- end }}
        """)
    parent = root / "parent"
    write(parent / "Chart.yaml", """\
        apiVersion: v2
        name: parent
        version: 1.2.3
        appVersion: v5.0.0
        annotations:
          artifacthub.io/images: |
            - name: debug
              image: example.com/debug:1.0
            - name: app
              image: example.com/parent:v5.0.0
        dependencies:
        - {name: sub, version: 0.1.0, alias: first, condition: first.enabled}
        - {name: sub, version: 0.1.0, alias: second, condition: second.enabled}
        """)
    write(parent / "values.yaml", """\
        image: {registry: example.com, repository: parent, tag: ""}
        first: {enabled: true, suffix: a, image: {repository: example.com/first}}
        second: {enabled: false, suffix: b, image: {repository: example.com/second}}
        # image: example.com/commented:1
        debug: {enabled: false, image: "example.com/debug:1.0"}
        """)
    write(parent / "templates" / "all.yaml", """\
        apiVersion: v1
        kind: Pod
        metadata: {name: "{{ .Release.Name }}", namespace: "{{ .Release.Namespace }}"}
        spec:
          {{- $tag := .Values.image.tag | default .Chart.AppVersion }}
          containers:
          - name: app
            image: "{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ $tag }}"
          {{- if .Values.debug.enabled }}
          - name: debug
            image: {{ .Values.debug.image }}
          {{- end }}
        ---# a comment glued to the separator, as helm allows
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: "{{ .Release.Name }}-cm"}
        data: {a: b}
        """)
    write(parent / "templates" / "NOTES.txt", "image: example.com/notes:1\n")
    (parent / "charts").mkdir()
    with tarfile.open(parent / "charts" / "sub-0.1.0.tgz", "w:gz") as tar:
        tar.add(sub, arcname="sub")
    return parent


def tgz(chart: Path, dest: Path) -> Path:
    archive = dest / f"{chart.name}.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(chart, arcname=chart.name)
    return archive


ALL_ON = """\
    first: {image: {tag: "3"}}
    second: {enabled: true}
    debug: {enabled: true}
    """
LATER = """\
    first: {image: {tag: "4"}, extra: {enabled: true}}
    """
SYNTH = [
    ("defaults: condition off, appVersion tags, comment and NOTES ignored", [],
     {"example.com/parent:v5.0.0", "example.com/first:2.0.0"}, {"example.com/debug:1.0"}),
    ("values files merged in order", [ALL_ON, LATER],
     {"example.com/parent:v5.0.0", "example.com/first:4", "example.com/extra:9",
      "example.com/second:2.0.0", "example.com/debug:1.0"}, set()),
]


@pytest.mark.parametrize("as_tgz", [False, True], ids=["dir", "tgz"])
@pytest.mark.parametrize("name,values,want,declared", SYNTH, ids=[s[0] for s in SYNTH])
def test_synthetic_chart(tmp_path: Path, as_tgz: bool, name: str, values: list[str],
                         want: set[str], declared: set[str]) -> None:
    chart = make_chart(tmp_path)
    if as_tgz:
        chart = tgz(chart, tmp_path)
    files = [write(tmp_path / f"v{i}.yaml", text) for i, text in enumerate(values)]
    findings = scan_chart(chart, files, release="rel", namespace="apps")
    assert images(findings) == want
    assert images(findings, DECLARED) == declared
    app = [f for f in findings if f.image == "example.com/parent:v5.0.0"]
    assert app[0].source == "parent@1.2.3:parent/templates/all.yaml"
    assert app[0].location == "Pod/apps/rel: spec.containers[0].image"


def test_render_chart_returns_sorted_templates_without_notes(tmp_path: Path) -> None:
    out = render_chart(make_chart(tmp_path), [], release="rel", namespace="ns")
    paths = [p for p, _ in out]
    assert paths == sorted(paths)
    assert "parent/templates/all.yaml" in paths
    assert "parent/charts/first/templates/deploy.yaml" in paths
    assert not any(p.endswith("NOTES.txt") for p in paths)
    all_yaml = dict(out)["parent/templates/all.yaml"]
    assert len(split_helm(all_yaml)) == 2 and "---# a comment" in all_yaml


def test_render_chart_accepts_a_values_dict(tmp_path: Path) -> None:
    out = dict(render_chart(make_chart(tmp_path), {"debug": {"enabled": True}},
                            release="r", namespace="n"))
    assert "example.com/debug:1.0" in out["parent/templates/all.yaml"]


def test_chart_errors_name_the_chart(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        scan_chart(tmp_path / "nope", [], release="r", namespace="n")
    with pytest.raises(SpecError, match="does not render"):
        scan_chart(TRAEFIK, [write(tmp_path / "v.yaml", "image: {tag: 5}\n")],
                   release="r", namespace="n")  # values.schema.json: tag must be a string


def test_helm_homes_are_private_temp_dirs() -> None:
    scan_chart(TRAEFIK, [], release="r", namespace="n")
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        assert "bundler-helm-home-" in os.environ[var]


# --- discover(): explicit charts and K3s HelmCharts ---------------------------------------
def test_discover_explicit_charts() -> None:
    findings = discover([], [ChartInput("rel", METALLB, (), "ns"),
                             ChartInput("rel", TRAEFIK, (), "ns")])
    assert images(findings) == expected(METALLB) | expected(TRAEFIK)


def test_discover_explicit_chart_that_fails_is_unrendered(tmp_path: Path) -> None:
    [f] = discover([], [ChartInput("rel", tmp_path / "missing", (), "ns")])
    assert f.kind == UNRENDERED and "does not exist" in f.detail


def test_k3s_traefik_helmchart_rendered_with_its_values_content() -> None:
    key = "https://%{KUBERNETES_API}%/static/charts/traefik-37.1.1+up37.1.0.tgz"
    findings = discover([K3S_TRAEFIK], [], helmchart_sources={key: TRAEFIK})
    assert images(findings) == {"docker.io/rancher/mirrored-library-traefik:3.5.1"}
    [crd] = [f for f in findings if f.kind == UNRENDERED]
    assert crd.location == "HelmChart/kube-system/traefik-crd"
    # the file name of the URL is enough too
    by_name = discover([K3S_TRAEFIK], [],
                       helmchart_sources={"traefik-37.1.1+up37.1.0.tgz": TRAEFIK})
    assert images(by_name) == {"docker.io/rancher/mirrored-library-traefik:3.5.1"}


def helmchart(chart_line: str, extra: str = "") -> str:
    return textwrap.dedent("""\
        apiVersion: helm.cattle.io/v1
        kind: HelmChart
        metadata: {name: demo, namespace: kube-system}
        spec:
          targetNamespace: apps
        """) + textwrap.indent(chart_line + "\n" + textwrap.dedent(extra), "  ")


HELMCHARTS = [
    ("inline chartContent with valuesContent, set and HelmChartConfig", "CONTENT", """\
        valuesContent: |-
          debug: {enabled: true}
        set:
          first.image.tag: "7"
          second.enabled: "true"
        """, """\
        ---
        apiVersion: helm.cattle.io/v1
        kind: HelmChartConfig
        metadata: {name: demo, namespace: kube-system}
        spec:
          valuesContent: |-
            first: {extra: {enabled: true}}
        """, {"example.com/parent:v5.0.0", "example.com/first:7", "example.com/extra:9",
              "example.com/second:2.0.0", "example.com/debug:1.0"}, ""),
    ("repo chart found by name@version", "chart: parent\nrepo: https://charts.example\n"
     "version: 1.2.3", "", "", {"example.com/parent:v5.0.0", "example.com/first:2.0.0"}, ""),
    ("version mismatch is not guessed", "chart: parent\nversion: 9.9.9", "", "", set(),
     "asks for 9.9.9"),
    ("HelmChartConfig of another HelmChart is ignored", "chart: parent", "", """\
        ---
        apiVersion: helm.cattle.io/v1
        kind: HelmChartConfig
        metadata: {name: other, namespace: kube-system}
        spec: {valuesContent: "debug: {enabled: true}"}
        """, {"example.com/parent:v5.0.0", "example.com/first:2.0.0"}, ""),
    ("values from Secrets cannot be seen", "chart: parent", "valuesSecrets: [{name: s}]\n", "",
     set(), "Secrets"),
    ("values that break the chart", "chart: parent", "set: {debug: 5}\n", "", set(),
     "does not render"),
]


@pytest.mark.parametrize("name,chart_line,extra,after,want,unrendered", HELMCHARTS,
                         ids=[h[0] for h in HELMCHARTS])
def test_helmchart_resources(tmp_path: Path, name: str, chart_line: str, extra: str,
                             after: str, want: set[str], unrendered: str) -> None:
    chart = make_chart(tmp_path)
    archive = tgz(chart, tmp_path)
    if chart_line == "CONTENT":
        chart_line = "chartContent: " + base64.b64encode(archive.read_bytes()).decode()
    manifest = write(tmp_path / "m.yaml", helmchart(chart_line, extra) +
                     textwrap.dedent(after))
    findings = discover([manifest], [], helmchart_sources={"parent@1.2.3": archive,
                                                            "parent": chart})
    assert images(findings) == want
    blind = [f for f in findings if f.kind == UNRENDERED]
    if unrendered:
        assert len(blind) == 1 and unrendered in blind[0].detail, blind
        assert "HelmChart kube-system/demo" in blind[0].detail
    else:
        assert blind == []
        app = [f for f in findings if f.image == "example.com/parent:v5.0.0"][0]
        assert app.location.startswith("HelmChart/kube-system/demo (")
        assert app.location.endswith("-> Pod/apps/demo: spec.containers[0].image")


# --- cross-check against the real helm v4 binary -----------------------------------------
def helm_binary() -> str | None:
    found = os.environ.get("HELM_BIN") or shutil.which("helm")
    if not found:
        return None
    out = subprocess.run([found, "version", "--short"], capture_output=True, text=True)
    return found if out.returncode == 0 and out.stdout.startswith("v4.") else None


HELM = helm_binary()
needs_helm = pytest.mark.skipif(
    HELM is None, reason="no helm v4 binary on PATH or in $HELM_BIN: the cross-check needs one "
    "(see docs/discovery.md, 'Cross-checking with the helm binary')")


def docs_of(texts: list[str]) -> list[str]:
    return sorted(json.dumps(doc, sort_keys=True, default=str)
                  for text in texts for part in split_helm(text) for doc in load_all(part))


CROSS = [
    ("metallb", METALLB, [], []),
    ("metallb frr mode", METALLB, ["frrk8s: {enabled: false}\nspeaker: {frr: {enabled: true}}\n"],
     []),
    ("traefik", TRAEFIK, [], []),
    ("traefik K3s values", TRAEFIK,
     ['image: {repository: "rancher/mirrored-library-traefik", tag: "3.5.1"}\n'],
     ["--set-string", "global.systemDefaultRegistry="]),
    ("synthetic", None, [], []),
    ("synthetic all on", None, [ALL_ON, LATER], []),
]


@needs_helm
@pytest.mark.parametrize("name,chart,values,flags", CROSS, ids=[c[0] for c in CROSS])
def test_same_documents_and_images_as_helm_template(tmp_path: Path, name: str,
                                                    chart: Path | None, values: list[str],
                                                    flags: list[str]) -> None:
    assert HELM is not None
    chart = chart or make_chart(tmp_path)
    files = [write(tmp_path / f"v{i}.yaml", text) for i, text in enumerate(values)]
    env = {**os.environ, **{v: str(tmp_path / v.lower()) for v in (
        "HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}
    cmd = [HELM, "template", "rel", str(chart), "--namespace", "ns"]
    for f in files:
        cmd += ["-f", str(f)]
    out = subprocess.run(cmd + flags, capture_output=True, text=True, env=env, check=True).stdout

    set_values = {"global.systemDefaultRegistry": ""} if flags else None
    ours = scan_chart(chart, files, release="rel", namespace="ns", set_values=set_values)
    scanner = Scanner("helm")
    scanner.text(split_helm(out))
    assert images(ours) == images(scanner.result.findings)
    if not flags:
        rendered = render_chart(chart, files, release="rel", namespace="ns")
        assert docs_of([t for _, t in rendered]) == docs_of([out])
