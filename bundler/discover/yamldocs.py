"""Splitting multi-document YAML the way its consumer does, and loading it safely (pure).

Two splitters, each copying the program whose view of the file matters:

- :func:`split_manifest`: Kubernetes' ``YAMLReader`` (what kubectl and K3s's deploy
  controller use): a line starting with ``---`` followed by nothing, spaces or a comment.
- :func:`split_helm`: Helm's ``releaseutil.SplitManifests``: the regex
  ``(?:^|\\s*\\n)---\\s*`` on the trimmed output, each part trimmed, so ``---# comment``
  ends a document too.

Each part is then loaded on its own, so one broken document cannot hide the others.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe loading that tolerates what Kubernetes tolerates.

    PyYAML refuses a bare ``=`` (YAML 1.1's "value" tag) and unknown ``!tags``; Kubernetes
    (sigs.k8s.io/yaml) reads both as plain data.
    """


def _plain(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:value",
                        lambda loader, node: loader.construct_scalar(node))
_Loader.add_multi_constructor("", _plain)

_HELM_SEP = re.compile(r"(?:^|\s*\n)---\s*")
_IMAGE_LINE = re.compile(r"""^[ \t-]*image:[ \t]*["']?([^\s"'#]+)""", re.MULTILINE)


def split_manifest(text: str) -> list[str]:
    """Documents of a manifest file, as Kubernetes' YAMLReader sees them."""
    docs: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("---"):
            rest = line[3:].strip()
            if not rest or rest.startswith("#"):
                docs.append("".join(current))
                current = []
                continue
        current.append(line)
    docs.append("".join(current))
    return [d for d in docs if d.strip()]


def split_helm(text: str) -> list[str]:
    """Documents of one rendered Helm template, as ``helm template``/install see them."""
    return [d.strip() for d in _HELM_SEP.split(text.strip()) if d.strip()]


def load_all(text: str) -> list[Any]:
    """Every non-empty YAML document in ``text``; raises ``yaml.YAMLError`` when invalid."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def image_lines(text: str) -> list[str]:
    """``image:`` values found by plain text search (only for documents that do not parse)."""
    return _IMAGE_LINE.findall(text)
