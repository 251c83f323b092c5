"""The process that renders one chart for :func:`bundler.discover.helm.render_loaded`.

Run as a script (``python renderchild.py MEMORY_BYTES``, never imported by the builder): once
Helm's engine is loaded it caps its own address space at what is mapped then plus
``MEMORY_BYTES``, and its data segment at ``MEMORY_BYTES``; it reads one JSON
request on stdin (``chart``: a ``.tgz`` path, ``values``, ``name``, ``namespace``) and writes
one JSON reply on stdout: ``{"ok": {template: text}}`` or ``{"error": message}``. A template
that asks for more memory (``{{ repeat 1500000000 "x" }}``) kills only this process; the
parent also stops reading (and kills it) past the output cap and the deadline. Helm's home
folders come from the parent's environment (its private temporary folder).
"""

from __future__ import annotations

import json
import resource
import sys


def main() -> int:
    memory = int(sys.argv[1])
    request = json.load(sys.stdin)
    import helm_python  # starts Go's runtime, which reserves ~1.7 GB of address space
    # address space: what is mapped now (Go's reservations included) plus the cap; data
    # segment: the cap (RLIMIT_DATA alone misses some of Go's arena mappings)
    with open("/proc/self/status", encoding="ascii") as status:
        size = next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + memory, size + memory))
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    try:
        chart = helm_python.Chart.load(request["chart"])
        try:
            out = chart.render(request["values"], name=request["name"],
                               namespace=request["namespace"])
        finally:
            chart.close()
        reply: dict[str, object] = {"ok": out}
    except helm_python.HelmError as exc:
        reply = {"error": str(exc)}
    except MemoryError:
        return 3
    json.dump(reply, sys.stdout)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
