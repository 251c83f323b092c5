"""Image discovery against the real fixtures (ground truth) and small synthetic manifests.

Chart ground truth lives in tests/test_discover_charts.py; compare/report/CLI in
tests/test_discover_compare.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bundler.discover import (
    IMAGE,
    INVALID,
    LOCAL_ONLY,
    UNRENDERED,
    Finding,
    LocalImagePolicy,
    k3s_vars,
    scan_manifest_files,
    scan_manifest_text,
)
from bundler.spec.refs import normalize
from tests.paths import REAL

K3S = REAL / "k3s" / "v1.34.3+k3s1"


def images(findings: list[Finding], kind: str = IMAGE) -> set[str]:
    return {f.image for f in findings if f.kind == kind}


def kinds(findings: list[Finding]) -> set[str]:
    return {f.kind for f in findings}


# --- ground truth: every static manifest of fixtures/real (README.md "Static manifests" and
# "K3s v1.34.3+k3s1"), in the normal form README.md describes -----------------------------
MANIFESTS = [
    ("metallb/v0.13.12/metallb-native.yaml",
     {"quay.io/metallb/controller:v0.13.12", "quay.io/metallb/speaker:v0.13.12"}, set()),
    ("metallb/v0.16.1/metallb-native.yaml",
     {"quay.io/metallb/controller:v0.16.1", "quay.io/metallb/speaker:v0.16.1"}, set()),
    ("metallb/v0.16.1/metallb-frr.yaml",
     {"quay.io/metallb/controller:v0.16.1", "quay.io/metallb/speaker:v0.16.1",
      "quay.io/frrouting/frr:10.5.3"}, set()),
    ("metallb/v0.16.1/metallb-frr-k8s.yaml",
     {"quay.io/metallb/controller:v0.16.1", "quay.io/metallb/speaker:v0.16.1",
      "quay.io/metallb/frr-k8s:v0.0.25", "quay.io/frrouting/frr:10.4.3"}, set()),
    ("ingress-nginx/controller-v1.15.1/baremetal/deploy.yaml",
     {"registry.k8s.io/ingress-nginx/controller:v1.15.1@sha256:"
      "594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1",
      "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.6.9@sha256:"
      "01038e7de14b78d702d2849c3aad72fd25903c4765af63cf16aa3398f5d5f2dd"}, set()),
    ("kubeedge/examples/new-counter-demo/crds/counter-model.yaml", set(), set()),
    ("kubeedge/examples/new-counter-demo/crds/counter-instance.yaml", set(), set()),
    ("kubeedge/examples/new-counter-demo/virtualprotocol/resource/configmap.yaml", set(), set()),
    ("kubeedge/examples/new-counter-demo/virtualprotocol/resource/deployment.yaml",
     set(), {"docker.io/library/counter-mapper:v1.0"}),
    ("k3s/v1.34.3+k3s1/manifests/coredns.yaml",
     {"docker.io/rancher/mirrored-coredns-coredns:1.13.1"}, set()),
    ("k3s/v1.34.3+k3s1/manifests/local-storage.yaml",
     {"docker.io/rancher/local-path-provisioner:v0.0.32",
      "docker.io/rancher/mirrored-library-busybox:1.37.0"}, set()),
    ("k3s/v1.34.3+k3s1/manifests/metrics-server/metrics-server-deployment.yaml",
     {"docker.io/rancher/mirrored-metrics-server:v0.8.0"}, set()),
    ("k3s/v1.34.3+k3s1/manifests/traefik.yaml", set(), set()),
] + [(f"k3s/v1.34.3+k3s1/manifests/{name}", set(), set()) for name in (
    "ccm.yaml", "rolebindings.yaml", "runtimes.yaml", "metrics-server/resource-reader.yaml",
    "metrics-server/aggregated-metrics-reader.yaml", "metrics-server/auth-delegator.yaml",
    "metrics-server/auth-reader.yaml", "metrics-server/metrics-apiservice.yaml",
    "metrics-server/metrics-server-service.yaml")]


def test_every_fixture_manifest_is_in_the_table() -> None:
    on_disk = {str(p.relative_to(REAL)) for p in REAL.rglob("*.yaml")
               if "charts/" not in str(p.relative_to(REAL))}
    assert on_disk == {rel for rel, _, _ in MANIFESTS}


@pytest.mark.parametrize("rel,want,want_local", MANIFESTS, ids=[m[0] for m in MANIFESTS])
def test_real_manifest_images_exactly(rel: str, want: set[str], want_local: set[str]) -> None:
    findings = scan_manifest_files([REAL / rel])
    assert images(findings) == want
    assert images(findings, LOCAL_ONLY) == want_local
    assert INVALID not in kinds(findings)
    assert all(normalize(f.image) == f.image for f in findings if f.image)
    if rel.endswith("traefik.yaml"):
        assert kinds(findings) == {UNRENDERED}
    elif not want and not want_local:
        assert findings == []  # negative controls and CRDs: nothing at all


def test_k3s_traefik_helmcharts_are_unrendered_with_a_reason() -> None:
    findings = scan_manifest_files([K3S / "manifests" / "traefik.yaml"])
    assert sorted(f.location for f in findings) == [
        "HelmChart/kube-system/traefik", "HelmChart/kube-system/traefik-crd"]
    for f in findings:
        assert f.kind == UNRENDERED and f.image == ""
        assert "not available locally" in f.detail and "helmchart_sources" in f.detail
        assert "%{KUBERNETES_API}%/static/charts/traefik" in f.detail


def test_k3s_manifest_images_are_k3s_list_minus_code_and_chart_images() -> None:
    found = images(scan_manifest_files([K3S / "manifests"]))
    listed = set((K3S / "scripts" / "airgap" / "image-list.txt").read_text().split())
    # klipper-helm/klipper-lb/pause are set in K3s code; traefik comes from its HelmChart
    rest = {i for i in listed if not any(s in i for s in (
        "klipper-helm", "klipper-lb", "mirrored-pause", "mirrored-library-traefik"))}
    assert found == rest


def test_busybox_found_inside_configmap_string_with_location() -> None:
    findings = scan_manifest_files([K3S / "manifests" / "local-storage.yaml"])
    busybox = [f for f in findings if "busybox" in f.image]
    assert len(busybox) == 1
    assert busybox[0].location == ('ConfigMap/kube-system/local-path-config: '
                                   "data['helperPod.yaml'] -> Pod/helper-pod: "
                                   "spec.containers[0].image")


def test_coredns_location_and_system_default_registry() -> None:
    text = (K3S / "manifests" / "coredns.yaml").read_text()
    [f] = scan_manifest_text(text, "coredns.yaml")
    assert f.location == "Deployment/kube-system/coredns: spec.template.spec.containers[0].image"
    [g] = scan_manifest_text(text, "coredns.yaml",
                             k3s_vars=k3s_vars(system_default_registry="reg.example:5000"))
    assert g.image == "reg.example:5000/rancher/mirrored-coredns-coredns:1.13.1"


def test_counter_mapper_is_local_only_unless_the_caller_says_pullable() -> None:
    path = REAL / "kubeedge/examples/new-counter-demo/virtualprotocol/resource/deployment.yaml"
    [f] = scan_manifest_files([path])
    assert (f.kind, f.image) == (LOCAL_ONLY, "docker.io/library/counter-mapper:v1.0")
    assert "not a Docker Hub official image" in f.detail
    [g] = scan_manifest_files([path], policy=LocalImagePolicy(pullable=("counter-mapper",)))
    assert g.kind == IMAGE
    [h] = scan_manifest_files([path], policy=LocalImagePolicy(heuristics=False))
    assert h.kind == IMAGE


def test_directory_scan_honours_k3s_skip_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POD.format(image="nginx:1.27"))
    (tmp_path / "b.yaml").write_text(POD.format(image="redis:7"))
    (tmp_path / "b.yaml.skip").write_text("")
    (tmp_path / "notes.txt").write_text("image: bogus:1")
    assert images(scan_manifest_files([tmp_path])) == {"docker.io/library/nginx:1.27"}


# --- synthetic cases ---------------------------------------------------------------------
POD = """apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: ns}}
spec:
  containers:
  - name: c
    image: {image}
"""

SYNTHETIC = [
    ("docker hub short names", POD.format(image="nginx"), {"docker.io/library/nginx:latest"}),
    ("namespaced hub name", POD.format(image="rancher/klipper-lb:v0.4.13"),
     {"docker.io/rancher/klipper-lb:v0.4.13"}),
    ("tag and digest", POD.format(image="ghcr.io/a/b:1.0@sha256:" + "a" * 64),
     {"ghcr.io/a/b:1.0@sha256:" + "a" * 64}),
    ("args flags", """kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      containers:
      - name: c
        image: quay.io/x/controller:v1
        args:
        - --helper-image=quay.io/x/helper:v2
        - --image
        - registry.k8s.io/pause:3.10
        - --sidecarImage=ghcr.io/x/side:1
        - --image-pull-policy=Always
        - --config=/etc/x.yaml
        - --log-level
        - info
        command: ["/bin/sh", "-c", "exec run --init-image=docker.io/library/alpine:3.20 --v 2"]
""", {"quay.io/x/controller:v1", "quay.io/x/helper:v2", "registry.k8s.io/pause:3.10",
      "ghcr.io/x/side:1", "docker.io/library/alpine:3.20"}),
    ("digest-pinned reference in args", """kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox:1.36
    args: ["--reloader=quay.io/x/reloader@sha256:""" + "b" * 64 + """", "--v=2"]
""", {"docker.io/library/busybox:1.36", "quay.io/x/reloader@sha256:" + "b" * 64}),
    ("env image variables", """kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      containers:
      - name: c
        image: quay.io/x/op:v1
        env:
        - {name: HELPER_IMAGE, value: "quay.io/x/helper:v3"}
        - {name: RELATED_IMAGE_DB, value: "postgres:16"}
        - {name: IMAGE_PULL_POLICY, value: IfNotPresent}
        - {name: ENABLE_IMAGE, value: "true"}
        - {name: FROM_CM_IMAGE, valueFrom: {configMapKeyRef: {name: x, key: y}}}
        - {name: EXPANDED_IMAGE, value: "$(OTHER)"}
        - {name: LOG_LEVEL, value: "busybox"}
""", {"quay.io/x/op:v1", "quay.io/x/helper:v3", "docker.io/library/postgres:16"}),
    ("cronjob, init and ephemeral containers", """apiVersion: batch/v1
kind: CronJob
metadata: {name: cj, namespace: ns}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          initContainers: [{name: i, image: "alpine:3.20"}]
          containers: [{name: c, image: "quay.io/x/job:1"}]
          ephemeralContainers: [{name: e, image: "busybox:1.37"}]
""", {"docker.io/library/alpine:3.20", "quay.io/x/job:1", "docker.io/library/busybox:1.37"}),
    ("custom resources with pod templates and container-like maps", """apiVersion: example.io/v1
kind: Workload
metadata: {name: w}
spec:
  podTemplate:
    spec:
      containers: [{name: c, image: "ghcr.io/x/worker:2"}]
  runner:
    image: ghcr.io/x/runner:3
    imagePullPolicy: IfNotPresent
  logo:
    image: not-a-container.png
""", {"ghcr.io/x/worker:2", "ghcr.io/x/runner:3"}),
    ("CRD schema trap", """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.io}
spec:
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        properties:
          image: {type: string, default: "busybox:1.36"}
          containers:
            type: array
            items:
              properties:
                image: {type: string, example: "nginx:1.27"}
""", set()),
    ("schema keys in a custom resource are not images", """apiVersion: example.io/v1
kind: Schema
metadata: {name: s}
spec:
  properties:
    image: {type: string}
    containers: {type: array}
""", set()),
    ("nodeSelector trap", """kind: DaemonSet
metadata: {name: ds}
spec:
  template:
    spec:
      nodeSelector: {kubernetes.io/os: linux, image: "special"}
      containers: [{name: c, image: "quay.io/x/agent:1"}]
""", {"quay.io/x/agent:1"}),
    ("commented-out images", """kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: quay.io/x/real:1
  # - name: old
  #   image: quay.io/x/old:0
---
# image: quay.io/x/also-old:0
""", {"quay.io/x/real:1"}),
    ("--- followed by a comment ends a document", POD.format(image="quay.io/x/a:1")
     + "---# next\n" + POD.format(image="quay.io/x/b:1"), {"quay.io/x/a:1", "quay.io/x/b:1"}),
    ("JSON manifest embedded in a ConfigMap", """kind: ConfigMap
metadata: {name: cm}
data:
  pod.json: '{"kind": "Pod", "metadata": {"name": "j"},
    "spec": {"containers": [{"name": "c", "image": "quay.io/x/json:1"}]}}'
  script.sh: |
    #!/bin/sh
    echo "image: is not yaml here"; exit 0
""", {"quay.io/x/json:1"}),
    ("ConfigMap keys fed to envFrom", """kind: ConfigMap
metadata: {name: default-controller-env}
data:
  SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE: rancher/kubectl:v1.30.3
  SYSTEM_UPGRADE_JOB_PRIVILEGED: "true"
""", {"docker.io/rancher/kubectl:v1.30.3"}),
    ("image volumes", """kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, image: "quay.io/x/app:1"}]
  volumes:
  - name: data
    image: {reference: "quay.io/x/data:2", pullPolicy: IfNotPresent}
  - name: cfg
    configMap: {name: x}
""", {"quay.io/x/app:1", "quay.io/x/data:2"}),
    ("system-upgrade-controller Plan", """apiVersion: upgrade.cattle.io/v1
kind: Plan
metadata: {name: server-plan, namespace: system-upgrade}
spec:
  version: v1.34.3+k3s1
  prepare: {image: "rancher/k3s-upgrade", args: ["prepare", "server-plan"]}
  upgrade: {image: "rancher/k3s-upgrade"}
""", {"docker.io/rancher/k3s-upgrade:v1.34.3-k3s1"}),
    ("HelmChart jobImage", """apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {name: x, namespace: kube-system}
spec:
  jobImage: rancher/klipper-helm:v0.9.12-build20251215
""", {"docker.io/rancher/klipper-helm:v0.9.12-build20251215"}),
    ("List of objects", """apiVersion: v1
kind: List
items:
- {kind: Pod, metadata: {name: a}, spec: {containers: [{name: c, image: "quay.io/x/a:1"}]}}
""", {"quay.io/x/a:1"}),
]


@pytest.mark.parametrize("name,text,want", SYNTHETIC, ids=[s[0] for s in SYNTHETIC])
def test_synthetic_images_exactly(name: str, text: str, want: set[str]) -> None:
    findings = scan_manifest_text(text, "synthetic.yaml")
    assert images(findings) == want
    assert kinds(findings) <= {IMAGE}, findings


LOCATIONS = [
    ("args flag", """kind: Pod
metadata: {name: p, namespace: n}
spec:
  containers:
  - {name: c, image: "a.io/x:1", args: ["--v=1", "--foo-image", "b.io/y:2"]}
""", "b.io/y:2", "Pod/n/p: spec.containers[0].args[2] --foo-image"),
    ("env", """kind: Pod
metadata: {name: p}
spec:
  containers:
  - {name: c, image: "a.io/x:1", env: [{name: A_IMAGE, value: "b.io/y:2"}]}
""", "b.io/y:2", "Pod/p: spec.containers[0].env[0].value A_IMAGE"),
]


@pytest.mark.parametrize("name,text,image,location", LOCATIONS, ids=[x[0] for x in LOCATIONS])
def test_locations_name_the_field(name: str, text: str, image: str, location: str) -> None:
    found = [f for f in scan_manifest_text(text, "s.yaml") if f.image == image]
    assert [f.location for f in found] == [location]


BLIND = [
    ("unknown K3s placeholder in an image", POD.format(image='"%{MY_REGISTRY}%x/y:1"'),
     INVALID, "%{MY_REGISTRY}%"),
    ("unknown placeholder elsewhere still parses", POD.format(image="quay.io/x/y:1")
     + "  hostname: %{NODE_NAME}%\n", None, ""),
    ("template left over", POD.format(image='"{{ .Values.image }}"'), INVALID, "invalid"),
    ("empty image", POD.format(image='""'), INVALID, "empty"),
    ("not YAML", "kind: Pod\nspec:\n  containers:\n  - image: quay.io/x/y:1\n    name: [oops\n",
     INVALID, "not valid YAML"),
    ("Plan tag from a channel", """apiVersion: upgrade.cattle.io/v1
kind: Plan
metadata: {name: p}
spec:
  channel: https://update.k3s.io/v1-release/channels/stable
  upgrade: {image: rancher/k3s-upgrade}
""", UNRENDERED, "channel"),
    ("Flux HelmRelease", """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: r}
spec:
  chart: {spec: {chart: podinfo}}
  values: {image: {repository: ghcr.io/x/y}}
""", UNRENDERED, "HelmRelease"),
]


@pytest.mark.parametrize("name,text,kind,detail", BLIND, ids=[b[0] for b in BLIND])
def test_blind_spots_are_reported_not_guessed(name: str, text: str, kind: str | None,
                                              detail: str) -> None:
    findings = scan_manifest_text(text, "s.yaml")
    if kind is None:
        assert kinds(findings) == {IMAGE}
        return
    assert any(f.kind == kind and detail in f.detail for f in findings), findings
    assert not any(f.kind == IMAGE and "{{" in f.image for f in findings)


def test_unparseable_document_does_not_hide_the_others() -> None:
    text = POD.format(image="quay.io/x/a:1") + "---\nkind: [broken\n---\n" + POD.format(
        image="quay.io/x/b:1")
    findings = scan_manifest_text(text, "s.yaml")
    assert images(findings) == {"quay.io/x/a:1", "quay.io/x/b:1"}
    assert [f.location for f in findings if f.kind == INVALID] == ["document 2"]


def test_text_fallback_in_a_broken_document_still_finds_images() -> None:
    findings = scan_manifest_text(BLIND[4][1], "s.yaml")
    assert images(findings) == {"quay.io/x/y:1"}


LOCAL = [
    ("pull policy Never", "quay.io/x/y:1", "Never", LocalImagePolicy(), True),
    ("podman localhost", "localhost/myapp:dev", None, LocalImagePolicy(), True),
    ("local registry with port is pullable", "localhost:5000/myapp:dev", None,
     LocalImagePolicy(), False),
    ("official one-word name", "busybox:1.37", None, LocalImagePolicy(), False),
    ("caller's local list (glob)", "quay.io/acme/app:1", None,
     LocalImagePolicy(local=("quay.io/acme/*",)), True),
    ("caller's pullable list wins", "localhost/app:1", None,
     LocalImagePolicy(local=("localhost/*",), pullable=("localhost/app",)), False),
    ("pinned pattern needs the same tag", "counter-mapper:v2", None,
     LocalImagePolicy(pullable=("counter-mapper:v1.0",)), True),
]


@pytest.mark.parametrize("name,image,policy_value,policy,local", LOCAL, ids=[x[0] for x in LOCAL])
def test_local_only_rule(name: str, image: str, policy_value: str | None,
                         policy: LocalImagePolicy, local: bool) -> None:
    pull = f"\n    imagePullPolicy: {policy_value}" if policy_value else ""
    [f] = scan_manifest_text(POD.format(image=image) + pull, "s.yaml", policy=policy)
    assert f.kind == (LOCAL_ONLY if local else IMAGE)


ODD = [
    ("empty", ""), ("only separators", "---\n---\n"), ("top-level list", "- a\n- b\n"),
    ("scalar", "just text"), ("non-string kind", "kind: 5\nspec: {containers: 3}\n"),
    ("odd container shapes", "kind: Pod\nspec:\n  containers: [a, 3, null]\n"),
    ("odd field types", "kind: Pod\nspec:\n  containers:\n  - name: c\n    image: nginx\n"
     "    env: x\n    args: 7\n    command: [1, null, --a-image]\n"),
    ("impossible date", "when: 2024-02-30\n"), ("unhashable key", "{[1, 2]: x}\n"),
    ("binary", "\x00\x01\x02"), ("odd HelmChart", "apiVersion: helm.cattle.io/v1\n"
                                "kind: HelmChart\nspec: {chart: x, set: [1, 2]}\n"),
    ("odd Plan", "apiVersion: upgrade.cattle.io/v1\nkind: Plan\nspec: {upgrade: 5}\n"),
    ("deep nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
]


@pytest.mark.parametrize("name,text", ODD, ids=[o[0] for o in ODD])
def test_odd_input_never_crashes(name: str, text: str) -> None:
    for f in scan_manifest_text(text, "odd.yaml"):
        assert f.kind in (IMAGE, INVALID, UNRENDERED)


def test_yaml_alias_bomb_is_refused_as_a_blind_spot() -> None:
    levels = "abcdefghij"
    text = 'a: &a ["image", "x"]\n' + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in itertools.pairwise(levels))
    text += "kind: Pod\nspec: {containers: [{name: c, image: nginx, args: *j}], x: *j}\n"
    findings = scan_manifest_text(text, "bomb.yaml")
    assert [(f.kind, f.location) for f in findings] == [(INVALID, "document 1")]
    assert "refused" in findings[0].detail and "aliases (*a)" in findings[0].detail
