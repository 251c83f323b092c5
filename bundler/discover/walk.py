"""Finding image references in parsed Kubernetes objects (pure: no I/O, no rendering).

Where images are looked for, in any object of any kind (custom resources included):

- every list under ``containers``, ``initContainers`` or ``ephemeralContainers`` whose items
  are mappings (a PodSpec anywhere: Deployments, CronJobs, operator CRs with pod templates);
  a CRD schema's ``containers`` is a mapping (``type: array``), so schemas never match;
- any other mapping that looks like a container: a string ``image`` beside one of
  ``imagePullPolicy``, ``command``, ``args``, ``env``, ``ports``, ``volumeMounts``,
  ``resources``;
- in a container: ``image``; ``command``/``args`` flags named ``*-image``/``*Image``
  (``--foo-image=REF``, ``--image REF``, also inside ``sh -c`` strings) and any
  digest-pinned reference there; ``env`` values of variables named ``*_IMAGE`` or
  ``RELATED_IMAGE_*``;
- image volumes (``volumes[].image.reference``);
- ConfigMap ``data`` keys named like such variables (they are usually fed in by ``envFrom``);
- string values that hold YAML or JSON manifests (a ConfigMap carrying a pod spec), scanned
  recursively;
- K3s ``HelmChart`` (``spec.jobImage``; the chart itself is handed back for rendering) and
  ``HelmChartConfig`` (values handed back), system-upgrade-controller ``Plan`` images (tag
  from ``spec.version`` like the controller does; a channel-only tag is reported as
  ``unrendered``), Flux ``HelmRelease`` and Argo CD ``Application`` (reported as
  ``unrendered``: their content is elsewhere).

CustomResourceDefinitions are skipped whole: they declare types, they run nothing.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from bundler.discover import yamldocs
from bundler.discover.k3s import unknown_placeholders
from bundler.discover.localonly import DEFAULT_POLICY, LocalImagePolicy, classify
from bundler.discover.model import IMAGE, INVALID, LOCAL_ONLY, UNRENDERED, Finding
from bundler.errors import SpecError
from bundler.safeyaml import YamlRefused
from bundler.spec.refs import parse_image_ref

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
CONTAINER_HINTS = ("imagePullPolicy", "command", "args", "env", "ports", "volumeMounts",
                   "resources")
ENV_IMAGE_RE = re.compile(r"(?:^|_)IMAGE$|^RELATED_IMAGE_", re.IGNORECASE)
FLAG_IMAGE_RE = re.compile(
    r"^-{1,2}(?:[Ii]mage|[\w.-]*[-_.](?:image|Image|IMAGE)|[\w.-]*[a-z0-9]Image)$")
DIGEST_REF_RE = re.compile(r"[\w][\w./:-]*@sha256:[0-9a-f]{64}")
MANIFEST_HINT_RE = re.compile(r"^\s*(?:-\s*)?(?:apiVersion|kind|containers|image)\s*:",
                              re.MULTILINE)
_NOT_IMAGES = {"true", "false", "yes", "no", "on", "off", "null", "none", "always", "never",
               "ifnotpresent"}
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_EMBED_DEPTH = 4


@dataclass(frozen=True)
class HelmChartSpec:
    """A K3s ``HelmChart`` (helm.cattle.io/v1) as read from a manifest."""

    name: str
    namespace: str
    chart: str
    repo: str
    version: str
    target_namespace: str
    values_content: str
    set_values: tuple[tuple[str, Any], ...]
    chart_content: str
    values_secrets: bool
    source: str
    label: str


@dataclass(frozen=True)
class HelmChartConfigSpec:
    """A K3s ``HelmChartConfig``: extra values for the ``HelmChart`` of the same name."""

    name: str
    namespace: str
    values_content: str
    values_secrets: bool


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    helmcharts: list[HelmChartSpec] = field(default_factory=list)
    configs: list[HelmChartConfigSpec] = field(default_factory=list)

    def extend(self, other: ScanResult) -> None:
        self.findings += other.findings
        self.helmcharts += other.helmcharts
        self.configs += other.configs


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def path_str(path: list[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def object_label(doc: Any, index: int) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
        meta = _mapping(doc.get("metadata"))
        name = meta.get("name") or meta.get("generateName") or "?"
        ns = meta.get("namespace")
        return f"{doc['kind']}/{ns}/{name}" if ns else f"{doc['kind']}/{name}"
    return f"document {index + 1}"


class Scanner:
    """Walks parsed documents from one source and collects findings into ``result``."""

    def __init__(self, source: str, *, policy: LocalImagePolicy = DEFAULT_POLICY) -> None:
        self.source = source
        self.policy = policy
        self.result = ScanResult()
        # each mapping or list of a document is walked once (the loader refuses aliases, so
        # this only guards against shared objects); holding them keeps their ids unique. Per
        # document: the loader hands back the same objects for the same text (its cache by
        # content digest), and a manifest embedded twice is reported at both places.
        self._seen: dict[int, Any] = {}

    # -- documents ---------------------------------------------------------------------
    def text(self, chunks: list[str], *, prefix: str = "", depth: int = 0,
             strict: bool = True) -> None:
        """Scan already-split YAML chunks; a chunk that does not parse is ``invalid``."""
        index = 0
        for number, chunk in enumerate(chunks, 1):
            what = f"{self.source}: {prefix}document {number}"
            try:
                docs = yamldocs.load_all(chunk, what=what)
            # the loader's refusals (aliases, caps) and anything else it raises (bad syntax,
            # 2024-02-30 as a date) mean "not a document we can read"
            except Exception as exc:
                refused = isinstance(exc, YamlRefused)
                if not strict and not refused:
                    continue  # a string that merely looked like YAML; a refusal is a blind spot
                why = "refused" if refused else "not valid YAML"
                text = str(getattr(exc, "message", exc)).removeprefix(f"{what}: ")
                text = text.removeprefix("not valid YAML: ")
                hint = getattr(exc, "hint", None)
                self._add("", f"{prefix}document {number}", INVALID,
                          detail=f"{why}, scanned as text only: {_one_line(text)}"
                          + (f" ({hint})" if hint else ""))
                for raw in yamldocs.image_lines(chunk):
                    self._emit(raw, f"{prefix}document {number}: image", strict=True,
                               why="found by text search in a document that is not valid YAML")
                continue
            for doc in docs:
                try:
                    self.document(doc, index, prefix=prefix, depth=depth)
                except RecursionError:
                    self._add("", f"{prefix}{object_label(doc, index)}", INVALID,
                              detail="nested too deeply to scan")
                index += 1

    def document(self, doc: Any, index: int, *, prefix: str = "", depth: int = 0) -> None:
        outer, self._seen = self._seen, {}
        try:
            self._document(doc, index, prefix=prefix, depth=depth)
        finally:
            self._seen = outer

    def _document(self, doc: Any, index: int, *, prefix: str, depth: int) -> None:
        label = prefix + object_label(doc, index)
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
            if self._kind(doc, label):
                return
            if doc["kind"] == "ConfigMap" and isinstance(doc.get("data"), dict):
                for key, value in doc["data"].items():
                    if isinstance(key, str) and ENV_IMAGE_RE.search(key):
                        self._candidate(value, f"{label}: {path_str(['data', key])}",
                                        why=f"ConfigMap key {key}")
        self._walk(doc, [], label, depth=depth)

    def _kind(self, doc: dict[str, Any], label: str) -> bool:
        """Handle an object whose kind says where its images are; True when done with it."""
        kind, api = doc["kind"], str(doc.get("apiVersion", ""))
        group = api.split("/", 1)[0] if "/" in api else ""
        spec = _mapping(doc.get("spec"))
        if kind == "CustomResourceDefinition":
            return True
        if group == "helm.cattle.io" and kind == "HelmChart":
            self._helmchart(doc, spec, label)
            return True
        if group == "helm.cattle.io" and kind == "HelmChartConfig":
            meta = _mapping(doc.get("metadata"))
            self.result.configs.append(HelmChartConfigSpec(
                str(meta.get("name", "")), str(meta.get("namespace") or "kube-system"),
                str(spec.get("valuesContent") or ""), bool(spec.get("valuesSecrets"))))
            return True
        if group == "upgrade.cattle.io" and kind == "Plan":
            self._plan(spec, label)
            return True
        if (group == "helm.toolkit.fluxcd.io" and kind == "HelmRelease") or (
                group == "argoproj.io" and kind in ("Application", "ApplicationSet")):
            self._add("", label, UNRENDERED,
                      detail=f"{kind} ({api}): its chart or manifests live elsewhere; "
                      "discovery renders K3s HelmCharts and charts given to it")
            return True
        return False

    # -- generic walk ------------------------------------------------------------------
    def _walk(self, node: Any, path: list[str | int], label: str, *, depth: int) -> None:
        if isinstance(node, (dict, list)):
            if id(node) in self._seen:
                return
            self._seen[id(node)] = node
        if isinstance(node, dict):
            self._walk_mapping(node, path, label, depth=depth)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                self._walk(item, [*path, i], label, depth=depth)
        elif isinstance(node, str) and depth < MAX_EMBED_DEPTH and _looks_like_manifest(node):
            self.text(yamldocs.split_manifest(node), prefix=f"{label}: {path_str(path)} -> ",
                      depth=depth + 1, strict=False)

    def _walk_mapping(self, node: dict[Any, Any], path: list[str | int], label: str, *,
                      depth: int) -> None:
        if isinstance(node.get("image"), str) and any(h in node for h in CONTAINER_HINTS):
            self._container(node, path, label)
            return
        for key, value in node.items():
            if not isinstance(key, str):
                continue
            if path == ["metadata"] and key == "managedFields":
                continue
            if key in CONTAINER_LISTS and isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        self._container(item, [*path, key, i], label)
                continue
            if key == "volumes" and isinstance(value, list):
                self._image_volumes(value, [*path, key], label)
            if key == _LAST_APPLIED and path and path[-1] == "annotations":
                continue
            self._walk(value, [*path, key], label, depth=depth)

    def _container(self, c: dict[str, Any], path: list[str | int], label: str,
                   *, image: Any = None) -> None:
        if image is not None or "image" in c:
            raw = c.get("image") if image is None else image
            where = f"{label}: {path_str([*path, 'image'])}"
            if isinstance(raw, str) and raw.strip():
                self._emit(raw, where, strict=True, pull_policy=c.get("imagePullPolicy"))
            else:
                self._add("" if raw is None else str(raw), where, INVALID,
                          detail="container image is empty or not a string")
        for key in ("command", "args"):
            if isinstance(c.get(key), list):
                self._flags(c[key], [*path, key], label)
        for key in ("env", "envs"):
            for j, var in enumerate(c.get(key) or []):
                if not isinstance(var, dict) or not isinstance(var.get("name"), str):
                    continue
                if ENV_IMAGE_RE.search(var["name"]) and "value" in var:
                    self._candidate(var["value"], f"{label}: {path_str([*path, key, j, 'value'])}"
                                    f" {var['name']}", why=f"env {var['name']}")

    def _flags(self, items: list[Any], path: list[str | int], label: str) -> None:
        tokens: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                tokens += [(i, t) for t in _split_words(item)]
        n = 0
        while n < len(tokens):
            i, tok = tokens[n]
            where = f"{label}: {path_str([*path, i])}"
            name, eq, value = tok.partition("=")
            if tok.startswith("-") and FLAG_IMAGE_RE.match(name):
                if eq:
                    self._flag_value(value, f"{where} {name}", name)
                    n += 1
                    continue
                if n + 1 < len(tokens) and not tokens[n + 1][1].startswith("-"):
                    j, value = tokens[n + 1]
                    self._flag_value(value, f"{label}: {path_str([*path, j])} {name}", name)
                    n += 2
                    continue
            for ref in DIGEST_REF_RE.findall(tok):
                self._emit(ref, where, strict=False, why="digest-pinned reference in arguments")
            n += 1

    def _flag_value(self, value: str, where: str, flag: str) -> None:
        if "$(" in value or "${" in value:
            return  # the kubelet expands it from env, where the env rule sees it
        self._emit(value, where, strict=True, why=f"flag {flag}")

    def _image_volumes(self, volumes: list[Any], path: list[str | int], label: str) -> None:
        for i, vol in enumerate(volumes):
            image = vol.get("image") if isinstance(vol, dict) else None
            if isinstance(image, dict) and isinstance(image.get("reference"), str):
                self._emit(image["reference"], f"{label}: {path_str([*path, i, 'image'])}"
                           ".reference", strict=True, pull_policy=image.get("pullPolicy"),
                           why="image volume")

    # -- special kinds -----------------------------------------------------------------
    def _helmchart(self, doc: dict[str, Any], spec: dict[str, Any], label: str) -> None:
        meta = _mapping(doc.get("metadata"))
        if isinstance(spec.get("jobImage"), str) and spec["jobImage"].strip():
            self._emit(spec["jobImage"], f"{label}: spec.jobImage", strict=True)
        if not spec.get("chart") and not spec.get("chartContent"):
            return  # helm-controller ignores it too
        sets = _mapping(spec.get("set"))
        self.result.helmcharts.append(HelmChartSpec(
            name=str(meta.get("name", "")), namespace=str(meta.get("namespace") or "kube-system"),
            chart=str(spec.get("chart") or ""), repo=str(spec.get("repo") or ""),
            version=str(spec.get("version") or ""),
            target_namespace=str(spec.get("targetNamespace") or ""),
            values_content=str(spec.get("valuesContent") or ""),
            set_values=tuple(sorted((str(k), v) for k, v in sets.items())),
            chart_content=str(spec.get("chartContent") or ""),
            values_secrets=bool(spec.get("valuesSecrets")), source=self.source, label=label))

    def _plan(self, spec: dict[str, Any], label: str) -> None:
        version = str(spec.get("version") or "").replace("+", "-")  # SUC's MungeVersion
        for part in ("prepare", "upgrade"):
            c = spec.get(part)
            if not isinstance(c, dict):
                continue
            raw = c.get("image")
            path: list[str | int] = ["spec", part]
            if isinstance(raw, str) and raw.strip() and _name_only(raw):
                if version:
                    raw = f"{raw.strip()}:{version}"
                elif spec.get("channel"):
                    self._add("", f"{label}: {path_str([*path, 'image'])}", UNRENDERED,
                              detail=f"the tag of {raw.strip()} comes at run time from channel "
                              f"{spec['channel']}; set spec.version to pin it")
                    self._container({k: v for k, v in c.items() if k != "image"}, path, label)
                    continue
            self._container(c, path, label, image=raw if raw is not None else None)

    # -- emitting ----------------------------------------------------------------------
    def _candidate(self, value: Any, where: str, *, why: str) -> None:
        """A value that may be an image (env, ConfigMap key): kept only if it parses."""
        if not isinstance(value, str):
            return
        text = value.strip()
        if not text or "$(" in text or "${" in text or text.lower() in _NOT_IMAGES \
                or text.replace(".", "").isdigit():
            return
        self._emit(text, where, strict=False, why=why)

    def _emit(self, raw: str, where: str, *, strict: bool, pull_policy: Any = None,
              why: str = "") -> None:
        raw = raw.strip().strip("\"'")
        unknown = unknown_placeholders(raw)
        if unknown:
            self._add(raw, where, INVALID,
                      detail=f"uses K3s placeholder {', '.join(unknown)} whose "
                      "value discovery does not know (pass it in k3s_vars)")
            return
        try:
            ref = parse_image_ref(raw)
        except SpecError as exc:
            if strict:
                self._add(raw, where, INVALID, detail=exc.message)
            return
        local, reason = classify(raw, ref, pull_policy=pull_policy, policy=self.policy)
        self._add(str(ref), where, LOCAL_ONLY if local else IMAGE, detail=reason or why)

    def _add(self, image: str, where: str, kind: str, *, detail: str = "") -> None:
        self.result.findings.append(Finding(image, self.source, where, kind, detail))


def _looks_like_manifest(text: str) -> bool:
    if "image" not in text.lower():
        return False
    if "\n" in text and MANIFEST_HINT_RE.search(text):
        return True
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[") and '"image"' in text


def _split_words(text: str) -> list[str]:
    if not any(c.isspace() for c in text):
        return [text]
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _name_only(raw: str) -> bool:
    raw = raw.strip()
    return "@" not in raw and ":" not in raw.rsplit("/", 1)[-1]


def _one_line(exc: Exception | str) -> str:
    return " ".join(str(exc).split())[:300]
