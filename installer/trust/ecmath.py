"""Shared elliptic-curve arithmetic of the pure-Python verifiers (``ed25519.py``, ``p256.py``).

Variable time: every input of a signature check is public.
"""

from typing import Callable, TypeVar

P = TypeVar("P")


def straus(a: int, p1: P, b: int, *, p2: P, add: Callable[[P, P], P],
           double: Callable[[P], P], identity: P) -> P:
    """[a]P1 + [b]P2 by one shared double-and-add (Straus-Shamir), over the curve's own
    ``add``/``double`` and ``identity`` in whatever coordinates they use."""
    both = add(p1, p2)
    acc = identity
    for i in range(max(a.bit_length(), b.bit_length()) - 1, -1, -1):
        acc = double(acc)
        bits = ((a >> i) & 1, (b >> i) & 1)
        if bits == (1, 1):
            acc = add(acc, both)
        elif bits[0]:
            acc = add(acc, p1)
        elif bits[1]:
            acc = add(acc, p2)
    return acc
