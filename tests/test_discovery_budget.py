"""What one `bundle lock` may spend on discovery and on slow or huge upstream answers
(THREATS 58 and 42; issue 25 rows 13-15): a budget of parsed YAML nodes across all texts of the
lock and an overall discovery deadline; a 61 MB `index.yaml` (under its 64 MiB cap) parsed
within 512 MB; a chart repository dripping one byte every two seconds ended by the minimum-rate
rule. `bundle lock` runs as a child under RLIMIT_DATA (2 GiB) against the loopback hostile
upstream (``tests.world.hostile``); exit code, message, time and peak RSS are asserted."""

from __future__ import annotations

import hashlib
import json
import os
import resource
from pathlib import Path
from typing import Iterator

import pytest

from tests.cli_helpers import Outcome, bundle_child
from tests.world.hostile import CHART_NAME, CHART_VERSION, HostileUpstream, Reply, chart_tgz

MAX_RSS_MB = 512
EMPTY_LISTS = 989_999   # per text: just under manifest_nodes (1,000,000)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    with HostileUpstream(tmp_path_factory.mktemp("budget-tls")) as server:
        yield server


def _limits() -> None:
    # RLIMIT_DATA, not RLIMIT_AS: the chart render child (Helm's Go runtime) reserves far more
    # address space than it uses, and sets its own render_memory limit
    resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (128 << 20, 128 << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (300, 300))


def _lock(up: HostileUpstream, tmp: Path, *, manifests: bool = False, charts: bool = True,
          args: tuple[str, ...] = (), timeout: float = 240, **env: str) -> Outcome:
    project = tmp / "proj"
    project.mkdir(exist_ok=True)
    lines = ["[k3s]", f'releases = "{up.url}/k3s"', f'install_script = "{up.url}/install.sh"',
             "", "[bundles.h]", 'version = "1.0.0"', 'arch = ["amd64"]',
             'k3s = "v1.34.3+k3s1"', "k3s_airgap_images = false", "images = []"]
    if manifests:
        lines.append('manifests = ["m/*.yaml"]')
    if charts:
        lines += ["", "[[bundles.h.charts]]", f'name = "{CHART_NAME}"',
                  f'repo = "{up.url}/charts"', f'version = "{CHART_VERSION}"']
    (project / "bundles.toml").write_text("\n".join(lines) + "\n")
    for sub in ("home", "tmp", "xdg"):
        (tmp / sub).mkdir(exist_ok=True)
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"),
            "TMPDIR": str(tmp / "tmp"), "XDG_CACHE_HOME": str(tmp / "xdg"),
            "XDG_CONFIG_HOME": str(tmp / "xdg"), "XDG_DATA_HOME": str(tmp / "xdg"),
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env}
    return bundle_child(["lock", "--cache", str(tmp / "cache"), *args], cwd=project, env=full,
                        timeout=timeout, limits=_limits)


def _said(o: Outcome, code: int, says: str) -> None:
    text = o.out + o.err
    assert o.code == code, text[-3000:]
    assert says in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


def _serve_chart(up: HostileUpstream, chart: bytes, *, index_extra: str = "") -> None:
    up.reset(dict(up.routes))
    up.routes["/charts/index.yaml"] = Reply(body=(
        "apiVersion: v1\nentries:\n" + index_extra + f"  {CHART_NAME}:\n"
        f"  - apiVersion: v2\n    name: {CHART_NAME}\n    version: {CHART_VERSION}\n"
        f"    digest: {hashlib.sha256(chart).hexdigest()}\n"
        f"    urls: [{CHART_NAME}-{CHART_VERSION}.tgz]\n").encode())
    up.routes[f"/charts/{CHART_NAME}-{CHART_VERSION}.tgz"] = Reply(body=chart)


# ---------------------------------------------------------------- row 13

@pytest.mark.world
@pytest.mark.slow
def test_many_texts_just_under_the_per_text_cap_stay_bounded(up: HostileUpstream,
                                                            tmp_path: Path) -> None:
    """Eight local manifests of 989,999 empty lists each (every per-text cap respected): with
    the defaults the lock passes and stays under 512 MB (the parse cache is bounded by nodes,
    not text bytes); with a discovery_nodes budget of 5 million the parsing across texts stops
    with a blind spot naming it (exit 9)."""
    up.reset(dict(up.routes))
    (tmp_path / "proj" / "m").mkdir(parents=True)
    text = "[" + "[]," * (EMPTY_LISTS - 1) + "[]]\n"
    for i in range(8):
        (tmp_path / "proj" / "m" / f"{i:02d}.yaml").write_text(f"# {i}\n" + text)
    o = _lock(up, tmp_path, manifests=True, charts=False)
    assert o.code == 0, o.err[-3000:]
    assert o.rss_mb < MAX_RSS_MB, o.rss_mb
    print(json.dumps({"texts": 8, "nodes_each": EMPTY_LISTS, "rss_mb": round(o.rss_mb),
                      "seconds": round(o.seconds, 1)}))
    o = _lock(up, tmp_path, manifests=True, charts=False,
              BUNDLE_LIMITS="discovery_nodes=5000000")
    _said(o, 9, "discovery_nodes")
    assert o.rss_mb < MAX_RSS_MB, o.rss_mb


@pytest.mark.world
def test_the_discovery_deadline_stops_a_slow_render(up: HostileUpstream,
                                                   tmp_path: Path) -> None:
    """A chart whose render would run for minutes (render_seconds allows 300 s): the lock's
    discovery_seconds (3 s here) stops it: a blind spot naming the budget, exit 9, at once."""
    slow = b"{{- range until 20000 }}{{- range until 20000 }}{{- end }}{{- end }}\n"
    _serve_chart(up, chart_tgz(extra={f"{CHART_NAME}/templates/slow.yaml": slow}))
    o = _lock(up, tmp_path, BUNDLE_LIMITS="discovery_seconds=3")
    _said(o, 9, "discovery_seconds")
    assert o.seconds < 60, o.seconds


# ---------------------------------------------------------------- row 14

def _big_index(size: int) -> str:
    """An index.yaml of about ``size`` bytes: many charts of many versions, as a large public
    repository has, plus the chart the spec locks."""
    parts = []
    total, c = 0, 0
    while total < size:
        name = f"filler{c:05d}"
        versions = "".join(
            f"  - apiVersion: v2\n    appVersion: {v}.0.0\n    created: "
            f"\"2024-01-{v % 28 + 1:02d}T10:00:00.123456789Z\"\n    description: A Helm chart "
            f"for Kubernetes with a fairly long description of what it does\n"
            f"    digest: {hashlib.sha256(f'{name}{v}'.encode()).hexdigest()}\n"
            f"    home: https://example.com/{name}\n    keywords:\n    - a\n    - b\n"
            f"    maintainers:\n    - email: someone@example.com\n      name: someone\n"
            f"    name: {name}\n    type: application\n    urls:\n"
            f"    - https://example.com/charts/{name}-1.{v}.0.tgz\n    version: 1.{v}.0\n"
            for v in range(200))
        parts.append(f"  {name}:\n{versions}")
        total += len(parts[-1])
        c += 1
    return "".join(parts)


@pytest.mark.world
@pytest.mark.slow
def test_a_61_mb_index_yaml_locks_within_512_mb(up: HostileUpstream, tmp_path: Path) -> None:
    index_extra = _big_index(61 * 1000 * 1000)
    _serve_chart(up, chart_tgz(), index_extra=index_extra)
    size = len(up.routes["/charts/index.yaml"].body)  # type: ignore[union-attr]
    assert 60_000_000 < size < 64 << 20
    o = _lock(up, tmp_path)
    assert o.code == 0, o.err[-3000:]
    assert o.rss_mb < MAX_RSS_MB, o.rss_mb
    print(json.dumps({"index_bytes": size, "rss_mb": round(o.rss_mb), "seconds":
                      round(o.seconds, 1)}))


# ---------------------------------------------------------------- row 15

@pytest.mark.world
def test_a_dripping_chart_repository_ends_with_exit_5(up: HostileUpstream,
                                                     tmp_path: Path) -> None:
    """`bundle lock --timeout 3` against an index.yaml sent one byte every 2 s: the minimum-rate
    rule (fewer than speed_limit bytes/s over a window of min(speed_time, --timeout)) ends it,
    exit 5, long before the size-based deadline (about 17 minutes for 64 MiB)."""
    up.reset(dict(up.routes))
    up.routes["/charts/index.yaml"] = Reply(body=b"apiVersion: v1\nentries: {}\n" * 50,
                                            trickle=2.0)
    o = _lock(up, tmp_path, args=("--timeout", "3"), timeout=120)
    _said(o, 5, "fewer than")
    assert o.seconds < 30, o.seconds
