"""Airgap lint (bundler/discover/lint.py): over real manifests and charts (fixtures/real), small
written
manifests where no real one shows the case, and through `bundle lock`/`bundle check` in the
test world (warnings by default, errors with --strict, nothing written)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bundler.discover import ChartInput
from bundler.discover.lint import (
    LATEST_TAG,
    PULL_ALWAYS,
    UNDEFINED_KIND,
    UNTAGGED,
    LintWarning,
    bundle_documents,
    lint_documents,
)
from tests.cli_helpers import Result, bundle
from tests.paths import REAL
from tests.world import World
from tests.world.charts import demo_app

KUBEEDGE = REAL / "kubeedge" / "examples" / "new-counter-demo"
METALLB_CHART = REAL / "charts" / "metallb-v0.16.1" / "metallb"
TRAEFIK_CHART = REAL / "charts" / "traefik-v37.1.0" / "traefik"

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lan
  namespace: metallb-system
spec:
  addresses: ["10.20.0.100-10.20.0.120"]
"""

PODS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: registry.example/shop/migrate
      containers:
        - name: app
          image: registry.example/shop/app:latest
          imagePullPolicy: Always
        - name: pinned
          image: registry.example/shop/side@sha256:{}
        - name: pinned-latest
          image: registry.example/shop/side:latest@sha256:{}
        - name: port
          image: registry.example:5000/shop/proxy:1.2
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: job
              image: busybox
""".format("a" * 64, "b" * 64)


def _lint(tmp_path: Path, manifests: list[Path], charts: Sequence[ChartInput] = ()
          ) -> list[LintWarning]:
    return lint_documents(bundle_documents(manifests, list(charts), base=tmp_path))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_real_kubeedge_resources_without_their_crds_warn() -> None:
    # the real KubeEdge example ships Device/DeviceModel objects but not their CRDs
    warnings = lint_documents(bundle_documents([KUBEEDGE], [], base=REAL))
    got = {(w.code, w.file, w.object) for w in warnings}
    assert got == {
        (UNDEFINED_KIND, "kubeedge/examples/new-counter-demo/crds/counter-instance.yaml",
         "Device default/counter-instance"),
        (UNDEFINED_KIND, "kubeedge/examples/new-counter-demo/crds/counter-model.yaml",
         "DeviceModel default/counter-model")}
    assert all("devices.kubeedge.io" in w.message and w.hint for w in warnings)


def test_ip_address_pool_warns_without_metallb_and_not_with_it(tmp_path: Path) -> None:
    pool = _write(tmp_path, "pool.yaml", POOL)
    alone = _lint(tmp_path, [pool])
    assert [(w.code, w.file, w.object) for w in alone] == [
        (UNDEFINED_KIND, "pool.yaml", "IPAddressPool metallb-system/lan")]
    assert "IPAddressPool (metallb.io)" in alone[0].message
    # MetalLB's real static manifest defines the CRD; so does its real chart (in templates)
    assert _lint(tmp_path, [pool, REAL / "metallb" / "v0.16.1" / "metallb-native.yaml"]) == []
    assert _lint(tmp_path, [pool], [ChartInput("metallb", METALLB_CHART,
                                               namespace="metallb-system")]) == []


def test_pull_always_latest_and_untagged_images_warn_per_container(tmp_path: Path) -> None:
    pods = _write(tmp_path, "pods.yaml", PODS)
    got = [(w.code, w.file, w.object) for w in _lint(tmp_path, [pods])]
    assert got == [
        (UNTAGGED, "pods.yaml", "Deployment shop/web container migrate"),
        (PULL_ALWAYS, "pods.yaml", "Deployment shop/web container app"),
        (LATEST_TAG, "pods.yaml", "Deployment shop/web container app"),
        (UNTAGGED, "pods.yaml", "CronJob nightly container job"),
    ]  # digest-pinned images (even :latest@sha256) and a registry port are fine


def test_a_chart_crds_folder_defines_kinds_and_chart_templates_are_linted(
        tmp_path: Path) -> None:
    chart = tmp_path / "widgets"
    (chart / "crds").mkdir(parents=True)
    (chart / "templates").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: widgets\nversion: 1.0.0\n")
    (chart / "crds" / "widget.yaml").write_text("""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true}]
""")
    widget = _write(tmp_path, "widget.yaml",
                    "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    assert [w.object for w in _lint(tmp_path, [widget])] == ["Widget w"]
    assert _lint(tmp_path, [widget], [ChartInput("widgets", chart)]) == []
    # a chart's rendered templates: demo-app with pullPolicy Always from a values file
    archive = tmp_path / "demo-app-0.1.0.tgz"
    archive.write_bytes(demo_app("0.1.0").data)
    values = _write(tmp_path, "values.yaml", "image:\n  pullPolicy: Always\n")
    warnings = _lint(tmp_path, [], [ChartInput("demo", archive, (values,), "demo")])
    assert [(w.code, w.file, w.object) for w in warnings] == [
        (PULL_ALWAYS, "demo-app@0.1.0:demo-app/templates/deployment.yaml",
         "Deployment demo-demo-app container app")]  # no namespace in the template
    assert _lint(tmp_path, [], [ChartInput("demo", archive, (), "demo")]) == []


def test_clean_real_bundle_gives_no_warnings(tmp_path: Path) -> None:
    # K3s's own manifests (HelmChart kinds), ingress-nginx (digest-pinned), MetalLB, the real
    # traefik and MetalLB charts, and resources of kinds K3s ships (Traefik, helm-controller)
    shipped = _write(tmp_path, "k3s-kinds.yaml", """\
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: strip, namespace: web}
---
apiVersion: helm.cattle.io/v1
kind: HelmChartConfig
metadata: {name: traefik, namespace: kube-system}
spec: {valuesContent: ""}
---
apiVersion: k3s.cattle.io/v1
kind: Addon
metadata: {name: extra, namespace: kube-system}
""")
    manifests = [REAL / "k3s" / "v1.34.3+k3s1" / "manifests",
                 REAL / "ingress-nginx" / "controller-v1.15.1" / "baremetal" / "deploy.yaml",
                 REAL / "metallb" / "v0.16.1" / "metallb-frr-k8s.yaml",
                 _write(tmp_path, "pool.yaml", POOL), shipped]
    charts = [ChartInput("traefik", TRAEFIK_CHART, namespace="kube-system"),
              ChartInput("metallb", METALLB_CHART, namespace="metallb-system")]
    docs = bundle_documents(manifests, charts, base=tmp_path)
    kinds = {d.obj.get("kind") for d in docs}
    assert {"HelmChart", "Deployment", "DaemonSet", "CustomResourceDefinition",
            "IPAddressPool", "Middleware"} <= kinds  # the objects were really read
    assert lint_documents(docs) == []


# --- through the CLI, in the test world ---------------------------------------------------

AIRGAP_UNSAFE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: puller, namespace: default}
spec:
  template:
    spec:
      containers:
        - name: main
          image: docker.io/library/alpine:3.20
          imagePullPolicy: Always
---
""" + POOL


def _project(tmp_path: Path, world: World, unsafe: bool) -> Path:
    folder = tmp_path / "proj"
    world.write_spec(folder)
    if unsafe:
        (folder / "manifests" / "unsafe.yaml").write_text(AIRGAP_UNSAFE)
    return folder


def _b(capsys: pytest.CaptureFixture[str], folder: Path, *args: str) -> Result:
    cmd, *rest = args
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", cmd,
                  "--cache", str(folder / "cache"), *rest)


def _codes(warnings: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(w["code"], w["file"], w["object"]) for w in warnings]


EXPECTED = [
    (PULL_ALWAYS, "manifests/unsafe.yaml", "Deployment default/puller container main"),
    (UNDEFINED_KIND, "manifests/unsafe.yaml", "IPAddressPool metallb-system/lan"),
]


def test_lock_warns_and_strict_refuses_writing_nothing(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, unsafe=True)
    r = _b(capsys, folder, "lock", "--strict", "--json")
    assert r.code == 2, r.err
    assert not (folder / "bundles.lock").exists()
    error = json.loads(r.out)["error"]
    assert error["code"] == 2 and "--strict" in error["message"]
    assert _codes(error["details"]["warnings"]) == EXPECTED
    assert all(w["bundle"] == "demo" and w["message"] and w["hint"]
               for w in error["details"]["warnings"])
    r = _b(capsys, folder, "lock", "--json")
    assert r.code == 0, r.err
    assert _codes(json.loads(r.out)["warnings"]) == EXPECTED
    assert (folder / "bundles.lock").exists()
    assert "warning: bundle demo: [pull-always] manifests/unsafe.yaml: Deployment " \
           "default/puller container main" in r.err
    assert "[undefined-kind] manifests/unsafe.yaml: IPAddressPool metallb-system/lan" in r.err


def test_check_warns_and_strict_fails(world: World, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, unsafe=True)
    assert _b(capsys, folder, "lock").code == 0
    r = _b(capsys, folder, "check")
    assert r.code == 0, r.err
    assert "2 airgap lint warning(s)" in r.out
    assert r.err.count("warning: bundle demo:") == 2
    r = _b(capsys, folder, "check", "--strict")
    assert r.code == 2
    assert "IPAddressPool metallb-system/lan" in r.err and "imagePullPolicy: Always" in r.err
    r = _b(capsys, folder, "check", "--strict", "--json")
    assert r.code == 2
    assert _codes(json.loads(r.out)["error"]["details"]["warnings"]) == EXPECTED


def test_clean_world_bundle_has_no_warnings(world: World, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, unsafe=False)
    r = _b(capsys, folder, "lock", "--strict", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["warnings"] == [] and "warning" not in r.err
    r = _b(capsys, folder, "check", "--strict", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["warnings"] == [] and "warning" not in r.err
