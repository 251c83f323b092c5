"""Discovery against hostile manifests and charts (issue #16 item 7, THREATS.md line 41): a few
KB must not exhaust the build host's memory or CPU.

Each scenario is a spec folder whose manifest (or the chart it carries inline in a K3s
``HelmChart``'s ``spec.chartContent``) is a small bomb, run through the real CLI (``bundle
images``) as a child process with a 1 GiB data-segment limit and a wall-clock limit. Each must
end with the discovery gate's clear error (exit 9, the finding naming the file and the cap),
no traceback, a peak RSS under 512 MB (the render child included) and in bounded time.

``RLIMIT_DATA`` rather than ``RLIMIT_AS``: Helm's Go engine reserves about 1.7 GB of address
space (untouched ``PROT_NONE`` memory) as it starts, so an address-space limit of 1 GB kills
every chart render, hostile or not; the data limit bounds what is really allocated.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import resource
import time
from pathlib import Path

import pytest
import yaml

from tests.cli_helpers import Outcome, bundle_child
from tests.world.oci import LayerFile, targz_bytes

ROOT = Path(__file__).resolve().parents[1]
MEMORY = 1024 ** 3          # RLIMIT_DATA of the `bundle` child
MAX_RSS_MB = 512
POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: " \
      "docker.io/library/nginx:1.27}]}\n"


def chart(name: str, template: str) -> bytes:
    """A chart archive with one template."""
    meta = {"apiVersion": "v2", "name": name, "version": "0.1.0"}
    return targz_bytes([
        LayerFile(f"{name}/Chart.yaml", data=yaml.safe_dump(meta).encode()),
        LayerFile(f"{name}/templates/t.yaml", data=template.encode())], with_dirs=False)


def helmchart(name: str, archive: bytes) -> str:
    """A K3s HelmChart carrying ``archive`` inline (what discovery renders itself)."""
    return (f"apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {{name: {name}, "
            f"namespace: kube-system}}\nspec:\n  chartContent: "
            f"{base64.b64encode(archive).decode()}\n")


def alias_bomb_name() -> str:
    """A chart rendering a ConfigMap whose metadata.name is a billion-laughs list (9^9)."""
    levels = "abcdefghi"
    parts = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    parts += [f"&{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in itertools.pairwise(levels)]
    template = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [" + ", ".join(parts) +
                "]\ndata: {image: docker.io/library/nginx:1.27}\n")
    return helmchart("bomb", chart("bomb", template))


def aliased_embedded_yaml(k: int = 40, levels: int = 4) -> str:
    """YAML strings holding manifests, each level aliased ``k`` times: k^levels re-parses."""
    text = POD
    for _ in range(levels):
        text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata:\n  s: &s "
                + json.dumps(text) + "\n  l: [" + ", ".join(["*s"] * k) + "]\n")
    return text


def chart_fan_out(n: int = 8, depth: int = 4) -> str:
    """A chart rendering ``n`` HelmCharts whose inline chart renders ``n`` more, ``depth`` deep:
    n^depth renders from a few KB."""
    archive = chart("leaf", POD)
    for level in range(depth):
        payload = base64.b64encode(archive).decode()
        template = ("{{- range $i := until " + str(n) + " }}\n---\napiVersion: "
                    "helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: \"l" + str(level)
                    + "-{{ $i }}\", namespace: kube-system}\nspec:\n  chartContent: "
                    + payload + "\n{{- end }}\n")
        archive = chart(f"fan{level}", template)
    return helmchart("fan", archive)


def huge_render() -> str:
    """A chart whose one template is 1.5 GB of "x" (``repeat``), from a 300-byte archive."""
    return helmchart("huge", chart("huge", 'x: {{ repeat 1500000000 "x" }}\n'))


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))


def run_images(folder: Path, *, timeout: float) -> Outcome:
    """``bundle images`` on ``folder`` as a child; peak RSS of it and its render children."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder / "home"),
           "TMPDIR": str(folder / "tmp"), "XDG_CACHE_HOME": str(folder / "xdg"),
           "PYTHONPATH": str(ROOT)}
    (folder / "tmp").mkdir()
    return bundle_child(["--spec", str(folder / "proj" / "bundles.toml"), "-q", "images",
                         "--cache", str(folder / "cache")], cwd=folder, env=env,
                        timeout=timeout, limits=_limits)


def spec_folder(root: Path, manifest: str) -> Path:
    proj = root / "proj"
    (proj / "manifests").mkdir(parents=True)
    (proj / "manifests" / "hostile.yaml").write_text(manifest)
    (proj / "bundles.toml").write_text(
        '[k3s]\nreleases = "http://127.0.0.1:9/k3s"\n'
        'install_script = "http://127.0.0.1:9/install.sh"\n\n'
        '[bundles.h]\nversion = "1.0.0"\narch = ["amd64"]\nk3s = "v1.34.3+k3s1"\n'
        'k3s_airgap_images = false\nimages = ["docker.io/library/nginx:1.27"]\n'
        'manifests = ["manifests/*.yaml"]\n')
    return root


SCENARIOS = [
    # (id, manifest, what the report must say, seconds allowed)
    ("alias-bomb-in-rendered-metadata-name", alias_bomb_name,
     "[invalid] bomb@0.1.0:bomb/templates/t.yaml: HelmChart/kube-system/bomb "
     "(manifests/hostile.yaml) -> document 1 refused, scanned as text only: YAML aliases (*a) "
     "are not accepted", 30.0),
    ("aliased-embedded-yaml", aliased_embedded_yaml,
     "manifests/hostile.yaml: document 1 refused, scanned as text only: YAML aliases (*s) are "
     "not accepted", 30.0),
    ("chartcontent-fan-out", chart_fan_out,
     "over the helmchart_renders cap of 64 HelmChart renders in one bundle", 60.0),
    ("huge-render-repeat", huge_render,
     "chart huge@0.1.0: rendering needed more than the render_memory cap of 512 MiB", 30.0),
]


@pytest.mark.parametrize("make,says,seconds", [s[1:] for s in SCENARIOS],
                         ids=[s[0] for s in SCENARIOS])
def test_hostile_discovery_input_is_bounded(tmp_path: Path, make: object, says: str,
                                            seconds: float) -> None:
    assert callable(make)
    manifest = make()
    assert len(manifest) < 64 * 1024  # a few KB
    r = run_images(spec_folder(tmp_path, manifest), timeout=seconds)
    assert "Traceback" not in r.err and "goroutine" not in r.err, r.err[-3000:]
    assert r.code == 9, (r.code, r.out[-2000:], r.err[-2000:])
    assert "images are missing from the bundle" in r.err
    assert says in " ".join(r.out.replace(f"{tmp_path}/proj/", "").split()), r.out[-3000:]
    assert r.seconds < seconds
    assert r.rss_mb < MAX_RSS_MB, r.rss_mb


@pytest.mark.parametrize("template,limit,says", [
    ('x: {{ repeat 2097152 "x" }}\n', "render_output=1MiB",
     "its rendered output passed the render_output cap of 1 MiB"),
    # nested small loops: a long render that allocates little, so the time cap (not the
    # memory cap, as one 100M-element range can) is what stops it, even on a loaded host
    ("{{- range until 20000 }}{{- range until 20000 }}{{- end }}{{- end }}\n",
     "render_seconds=1",
     "rendering did not finish within render_seconds (1 s)"),
], ids=["output-cap", "time-cap"])
def test_render_is_stopped_at_its_cap(tmp_path: Path, template: str, limit: str,
                                      says: str) -> None:
    from bundler.discover.helm import open_chart, render_loaded
    from bundler.errors import SpecError
    from bundler.limits import Limits

    loaded = open_chart(chart("capped", template))
    start = time.monotonic()
    try:
        with pytest.raises(SpecError) as caught:
            render_loaded(loaded, {}, release="r", namespace="d", limits=Limits.parse(limit))
    finally:
        loaded.close()
    assert f"chart capped@0.1.0: {says}" in caught.value.message
    assert "BUNDLE_LIMITS" in (caught.value.hint or "")
    assert time.monotonic() - start < 20
