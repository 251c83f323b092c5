"""Rendering charts with Helm's own engine and scanning what it renders.

Rendering is done by helm-python-sdk (Helm v4's Go engine through its C ABI): subcharts
shipped as ``.tgz`` in ``charts/``, aliases, conditions and tags, ``values.schema.json``
checks and ``.Chart.AppVersion`` defaults are all Helm's own behaviour, never imitated here.
This module only merges values files the way ``helm -f a -f b --set ...`` does, splits the
output the way ``helm template`` does, and hands documents to :mod:`.walk`.

Before the SDK is first imported, ``HELM_CACHE_HOME``/``HELM_CONFIG_HOME``/``HELM_DATA_HOME``
are pointed at a private temporary folder (removed at exit), so rendering never reads or
writes the user's Helm configuration, repositories or cache. (The SDK's Go runtime copies the
environment when it loads; if something imported ``helm_python`` earlier, its settings stay.)
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from bundler import safeyaml
from bundler.discover import yamldocs
from bundler.discover.localonly import DEFAULT_POLICY, LocalImagePolicy
from bundler.discover.model import DECLARED, IMAGE, LOCAL_ONLY, Finding
from bundler.discover.walk import Scanner, ScanResult
from bundler.errors import BundleError, LocalError, SpecError
from bundler.limits import Limits, human
from bundler.spec.refs import parse_image_ref

_helm_module: ModuleType | None = None
_COMMA_RE = re.compile(r"\\*,")


def helm_sdk() -> ModuleType:
    """The ``helm_python`` module, imported with Helm's home folders in a private temp dir."""
    global _helm_module
    if _helm_module is None:
        home = tempfile.mkdtemp(prefix="bundler-helm-home-")
        atexit.register(shutil.rmtree, home, True)
        for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                         ("HELM_DATA_HOME", "data")):
            os.environ[var] = os.path.join(home, sub)
        try:
            import helm_python  # late: starts Go's runtime (~1.7 GB of address space)
        except ImportError as exc:
            raise LocalError("rendering charts needs helm-python-sdk, which is not installed",
                             hint="pip install 'k3s-airgap-bundler[discovery]' "
                                  "(helm-python-sdk==0.2.2)") from exc
        _helm_module = helm_python
    return _helm_module


def merge_maps(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's ``mergeMaps`` (pkg/cli/values): nested maps merge, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = value
    return out


def _values_text(text: str, what: str) -> dict[str, Any]:
    helm = helm_sdk()
    try:
        return dict(helm.values_from_yaml(text))
    except helm.HelmError as exc:
        raise SpecError(f"{what} is not a YAML mapping of values: {exc}",
                        hint="fix the YAML; Helm would refuse it too") from exc


def _set_value(key: str, value: Any) -> dict[str, Any]:
    """One HelmChart ``spec.set`` entry, as helm-controller passes it (--set or --set-string)."""
    helm = helm_sdk()
    text = ("true" if value else "false") if isinstance(value, bool) else (
        "null" if value is None else str(value))
    typed = isinstance(value, (bool, int)) or value is None or text.lower() in (
        "true", "false", "null")
    try:
        if typed:
            return dict(helm.parse_set_string(f"{key}={text}"))
        escaped = _COMMA_RE.sub(lambda m: m.group(0) if len(m.group(0)) % 2 == 0
                                else "\\" + m.group(0), text)
        return dict(helm.parse_set_string_values(f"{key}={escaped}"))
    except helm.HelmError as exc:
        raise SpecError(f"set value {key}={text!r} is not valid: {exc}") from exc


def compose_values(values_files: Iterable[Path], contents: Iterable[str] = (),
                   set_values: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()
                   ) -> dict[str, Any]:
    """User values as Helm builds them: each file in order, then inline YAML, then sets."""
    merged: dict[str, Any] = {}
    for path in values_files:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read values file {path}: {exc.strerror}") from exc
        merged = merge_maps(merged, _values_text(text, f"values file {path}"))
    for content in contents:
        merged = merge_maps(merged, _values_text(content, "valuesContent"))
    pairs = sorted(set_values.items() if isinstance(set_values, Mapping) else set_values)
    for key, value in pairs:
        merged = merge_maps(merged, _set_value(key, value))
    return merged


def _open(chart: Path | bytes) -> Any:
    helm = helm_sdk()
    try:
        if isinstance(chart, bytes):
            return helm.Chart.load_archive(chart)
        if not Path(chart).exists():
            raise SpecError(f"chart {chart} does not exist")
        return helm.Chart.load(str(chart))
    except helm.HelmError as exc:
        what = "(inline archive)" if isinstance(chart, bytes) else chart
        raise SpecError(f"cannot load chart {what}: {exc}",
                        hint="a chart is a directory with Chart.yaml or a .tgz") from exc


_CHILD = Path(__file__).with_name("renderchild.py")
_STDERR_TAIL = 64 * 1024
_RENDER_CACHE_BYTES = 64 * 1024 * 1024
_renders: OrderedDict[str, tuple[list[tuple[str, str]], int]] = OrderedDict()
_rendered_bytes = [0]


def render_loaded(loaded: Any, values: dict[str, Any], *, release: str, namespace: str,
                  limits: Limits | None = None) -> list[tuple[str, str]]:
    """``helm template`` of an open chart: (template path, rendered text), sorted, without
    ``NOTES.txt`` and empty templates.

    Rendered in a child process (Helm's engine has no output limit, and a template such as
    ``{{ repeat 1500000000 "x" }}`` would take the builder down with it): its data segment is
    capped at ``render_memory``, its output is read as a stream and it is killed past
    ``render_output`` bytes or ``render_seconds``. The same chart, values, release and
    namespace are rendered once per run. Raises ``SpecError`` when the chart does not
    render or passes a cap (the message names the chart and the cap).
    """
    limits = limits or Limits.from_env()
    ident = f"chart {loaded.name}@{loaded.version}"
    with tempfile.TemporaryDirectory(prefix="bundler-render-") as tmp:
        archive = Path(helm_call(lambda: loaded.save(tmp), f"cannot package {ident}"))
        data = archive.read_bytes()
        request = json.dumps({"chart": str(archive), "values": values, "name": release,
                              "namespace": namespace}, sort_keys=True, default=str)
        key = hashlib.sha256(data + b"\0" + request.replace(str(archive), "").encode()
                             ).hexdigest() + repr(limits)
        hit = _renders.get(key)
        if hit is not None:
            return list(hit[0])
        out = _render_in_child(request, ident=ident, limits=limits)
    # helm template leaves NOTES.txt out of the manifests, and empty templates produce nothing
    result = sorted((path, text) for path, text in out.items()
                    if not path.endswith("NOTES.txt") and text.strip())
    size = sum(len(t) for _, t in result)
    _renders[key] = (result, size)
    _rendered_bytes[0] += size
    while _rendered_bytes[0] > _RENDER_CACHE_BYTES and _renders:
        _rendered_bytes[0] -= _renders.popitem(last=False)[1][1]
    return list(result)


def helm_call(call: Callable[[], Any], what: str) -> Any:
    """``call()``, a ``HelmError`` becoming a ``SpecError`` that starts with ``what``."""
    helm = helm_sdk()
    try:
        return call()
    except helm.HelmError as exc:
        raise SpecError(f"{what}: {exc}") from exc


_HINT = "if the chart really is that large, raise it: BUNDLE_LIMITS=\"{}=<{}>\" " \
        "(docs/builder-trust.md)"


def _render_in_child(request: str, *, ident: str, limits: Limits) -> dict[str, str]:
    child = subprocess.Popen([sys.executable, str(_CHILD), str(limits.render_memory)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stdin and child.stdout and child.stderr
    out = bytearray()
    err = bytearray()
    over: str | None = None
    try:
        try:
            child.stdin.write(request.encode())
            child.stdin.close()
        except BrokenPipeError:
            pass
        over = _collect(child, out, err, limits=limits)
    finally:
        if over is not None:
            child.kill()
        code = child.wait()
        child.stdout.close()
        child.stderr.close()
    _check_child(ident, over=over, code=code, tail=err.decode("utf-8", "replace"),
                 limits=limits)
    try:
        reply = json.loads(out)
    except ValueError:
        raise SpecError(f"{ident}: the chart renderer gave no answer") from None
    if "error" in reply:
        raise SpecError(f"{ident} does not render with these values: {reply['error']}")
    rendered: dict[str, str] = reply["ok"]
    return rendered


def _collect(child: subprocess.Popen[bytes], out: bytearray, err: bytearray, *,
             limits: Limits) -> str | None:
    """Read the child's stdout and stderr (only its tail) until both end; ``"time"`` or
    ``"output"`` when a cap stopped it first."""
    assert child.stdout and child.stderr
    deadline = time.monotonic() + limits.render_seconds
    budget = safeyaml.active_budget()   # the lock's discovery_seconds bound every render too
    if budget is not None:
        deadline = min(deadline, budget.deadline)
    streams = {child.stdout.fileno(): out, child.stderr.fileno(): err}
    while streams:
        left = deadline - time.monotonic()
        if left <= 0:
            return "time"
        ready, _, _ = select.select(list(streams), [], [], left)
        for fd in ready:
            chunk = os.read(fd, 1024 * 1024)
            if not chunk:
                del streams[fd]
                continue
            buf = streams[fd]
            buf += chunk
            if buf is err and len(err) > _STDERR_TAIL:
                del err[:-_STDERR_TAIL]
            if buf is out and len(out) > limits.render_output:
                return "output"
    return None


def _check_child(ident: str, *, over: str | None, code: int, tail: str,
                 limits: Limits) -> None:
    """An error naming the cap the render passed, or the renderer's own failure."""
    if over == "output":
        raise SpecError(f"{ident}: its rendered output passed the render_output cap of "
                        f"{human(limits.render_output)}; rendering was stopped",
                        hint=_HINT.format("render_output", "size"))
    budget = safeyaml.active_budget()
    if over == "time" and budget is not None and budget.seconds_left() <= 0:
        raise SpecError(f"{ident}: not rendered: discovery used up its discovery_seconds "
                        f"budget ({limits.discovery_seconds:g} s for the lock)",
                        hint=_HINT.format("discovery_seconds", "seconds"))
    if over == "time":
        raise SpecError(f"{ident}: rendering did not finish within render_seconds "
                        f"({limits.render_seconds:g} s); it was stopped",
                        hint=_HINT.format("render_seconds", "seconds"))
    if code != 0:
        if "out of memory" in tail or code in (3, -6, 134):
            raise SpecError(f"{ident}: rendering needed more than the render_memory cap of "
                            f"{human(limits.render_memory)}; it was stopped",
                            hint=_HINT.format("render_memory", "size"))
        first = next((line for line in tail.splitlines() if line.strip()), "no message")
        raise SpecError(f"{ident}: the chart renderer failed (exit {code}): {first[:300]}")


def render_chart(chart: Path, values: list[Path] | dict[str, Any], *, release: str,
                 namespace: str) -> list[tuple[str, str]]:
    """``helm template RELEASE CHART -n NAMESPACE -f ...``: (template path, rendered text).

    ``chart`` is a directory or a ``.tgz``; ``values`` is a list of values files (merged in
    order) or an already merged dict of user values. Raises ``SpecError`` when the chart cannot
    be loaded or does not render (bad values, schema violation, template error).
    """
    user = values if isinstance(values, dict) else compose_values(values)
    loaded = _open(Path(chart))
    try:
        return render_loaded(loaded, user, release=release, namespace=namespace)
    finally:
        loaded.close()


def annotated_images(metadata: Mapping[str, Any]) -> list[str]:
    """Images a Chart.yaml lists in ``artifacthub.io/images``-style annotations."""
    annotations = metadata.get("annotations")
    if not isinstance(annotations, Mapping):
        return []
    found: list[str] = []
    for key, value in sorted(annotations.items()):
        if not isinstance(key, str) or not isinstance(value, str) or not (
                key == "images" or key.endswith("/images")):
            continue
        try:
            entries = safeyaml.load(value, what=f"Chart.yaml annotation {key}")
        except BundleError:
            continue  # not YAML, or aliases/caps: a hint only, never worth the risk
        for entry in entries if isinstance(entries, list) else []:
            image = entry.get("image") if isinstance(entry, dict) else entry
            if isinstance(image, str) and image.strip():
                found.append(image.strip())
    return found


def scan_loaded(loaded: Any, values: dict[str, Any], *, release: str, namespace: str,
                policy: LocalImagePolicy = DEFAULT_POLICY, via: str = "") -> ScanResult:
    """Render an open chart and scan every rendered document; add annotation hints."""
    ident = f"{loaded.name}@{loaded.version}"
    result = ScanResult()
    for template, text in render_loaded(loaded, values, release=release, namespace=namespace):
        scanner = Scanner(f"{ident}:{template}", policy=policy)
        scanner.text(yamldocs.split_helm(text), prefix=via)
        result.extend(scanner.result)
    used = {f.image for f in result.findings if f.kind in (IMAGE, LOCAL_ONLY)}
    metas = [loaded.metadata, *loaded.dependencies]
    for meta in metas:
        for raw in annotated_images(meta):
            try:
                image = str(parse_image_ref(raw))
            except SpecError:
                continue
            if image not in used:
                used.add(image)
                result.findings.append(Finding(
                    image, f"{ident}:Chart.yaml", f"{via}{meta.get('name')}: annotations",
                    DECLARED, "listed in the chart's image annotation but not used by this "
                              "render (enable the feature that needs it to require it)"))
    return result


def scan_chart(chart: Path, values_files: list[Path], *, release: str, namespace: str,
               values_content: str | None = None, set_values: dict[str, Any] | None = None,
               policy: LocalImagePolicy = DEFAULT_POLICY) -> list[Finding]:
    """Images one chart release asks for: render (like ``helm template``) and scan.

    Values: ``values_files`` in order, then ``values_content`` (inline YAML, like a HelmChart's
    ``valuesContent``), then ``set_values`` (like ``spec.set``: ``--set`` for numbers,
    booleans and null, ``--set-string`` otherwise). Raises ``SpecError`` if it cannot render.
    """
    values = compose_values(values_files, [values_content] if values_content else [],
                            set_values or {})
    loaded = _open(Path(chart))
    try:
        return scan_loaded(loaded, values, release=release, namespace=namespace,
                           policy=policy).findings
    finally:
        loaded.close()


def open_chart(chart: Path | bytes) -> Any:
    """Load a chart (path or archive bytes) for :func:`scan_loaded`; caller closes it."""
    return _open(chart)
