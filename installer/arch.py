"""Architecture names: the three K3s uses, and the other names people and ``uname -m`` use.

K3s names its images and checksum files ``amd64``, ``arm64`` and ``arm`` (linux/arm/v7); its
32-bit ARM binary is ``k3s-armhf``. ``uname -m`` says ``x86_64``, ``aarch64`` or ``armv7l``.
Everywhere an architecture is given (``bundle build --arch``, a spec's ``arch`` list, the
installer's ``--arch``), these aliases mean the K3s name. Standard library only, pure.
"""

from typing import Dict, Tuple

from installer.format.bundlefmt import ARCHES

# alias -> K3s name (the K3s names map to themselves)
ALIASES: Dict[str, str] = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",      # K3s's own name for its 32-bit ARM binary
    "armv7": "arm",
    "armv7l": "arm",     # uname -m on a 32-bit Raspberry Pi OS
}
# Not aliased on purpose: "armv8l" (32-bit userspace on a 64-bit CPU) and "armv6l" (no
# K3s build): guessing would ship the wrong binary.


def known_names() -> Tuple[str, ...]:
    """Every accepted name, K3s's first."""
    return ARCHES + tuple(sorted(ALIASES))


def normalize(name: str) -> str:
    """The K3s architecture for ``name`` (case-insensitive); ``ValueError`` when unknown."""
    key = name.strip().lower()
    if key in ARCHES:
        return key
    if key in ALIASES:
        return ALIASES[key]
    raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(ARCHES)} "
                     f"(aliases: {', '.join(sorted(ALIASES))}; arm means linux/arm/v7)")
