"""Splitting multi-document YAML the way its consumer does, and loading it safely (pure).

Two splitters, each copying the program whose view of the file matters:

- :func:`split_manifest`: Kubernetes' ``YAMLReader`` (what kubectl and K3s's deploy
  controller use): a line starting with ``---`` followed by nothing, spaces or a comment.
- :func:`split_helm`: Helm's ``releaseutil.SplitManifests``: the regex
  ``(?:^|\\s*\\n)---\\s*`` on the trimmed output, each part trimmed, so ``---# comment``
  ends a document too.

Each part is then loaded on its own, so one broken document cannot hide the others, by the
one loader for untrusted YAML (:func:`bundler.safeyaml.load_all`).
"""

from __future__ import annotations

import re
from typing import Any

from bundler import safeyaml
from bundler.limits import Limits

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


def load_all(text: str, *, what: str = "YAML document", limits: Limits | None = None
             ) -> list[Any]:
    """Every non-empty YAML document in ``text``, by :func:`bundler.safeyaml.load_all` (no
    aliases, depth/node/size caps, parsed once per content digest; unknown ``!tags`` and a
    bare ``=`` read as plain data, like Kubernetes does). Raises ``UpstreamError`` (a
    :class:`~bundler.safeyaml.YamlRefused` for a refusal) when it cannot be read."""
    return safeyaml.load_all(text, what=what, limits=limits or Limits.from_env())


def image_lines(text: str) -> list[str]:
    """``image:`` values found by plain text search (only for documents that do not parse)."""
    return _IMAGE_LINE.findall(text)
