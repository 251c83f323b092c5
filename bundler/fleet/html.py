"""``bundle fleet status --html FILE``: the fleet on one static page, readable offline.

No script, no external stylesheet, font or image: one file to copy anywhere. Rings are
columns (in the order the repository lists them), each with its versions and device counts,
then its devices, failing ones first; rejected reports and unknown devices below.
"""

from __future__ import annotations

from html import escape
from typing import Any

from bundler.fleet.status import failing

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
.rings{display:flex;gap:1em;align-items:flex-start}
.ring{flex:1;border:1px solid #bbb;border-radius:6px;padding:.5em 1em;min-width:14em}
.ring h2{margin:.2em 0}
.device{border-top:1px solid #ddd;padding:.3em 0}
.failing{background:#fde2e2}
.stale{color:#777}
.tag{font-size:.8em;padding:0 .3em;border-radius:3px;background:#eee}
.failing .tag.gate{background:#c62828;color:#fff}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
"""


def _device(r: dict[str, Any]) -> str:
    classes = ["device"] + (["failing"] if failing(r) else []) + (["stale"] if r["stale"]
                                                                   else [])
    failed = f" failed: {', '.join(r['failed'])}" if r["failed"] else ""
    output = f"<div class='out'>{escape(str(r['gate_output']))}</div>" \
        if r.get("gate_output") else ""
    return (f"<div class='{' '.join(classes)}' data-device='{escape(r['device_id'])}'>"
            f"<b>{escape(str(r['hostname']))}</b> <code>{escape(r['device_id'][:12])}</code><br>"
            f"{escape(str(r['version'] or 'never reported'))} "
            f"<span class='tag gate'>gate {escape(r['gate'])}</span>"
            f"{' <span class=tag>stale</span>' if r['stale'] else ''}"
            f"{escape(failed)}<br><small>last seen {escape(str(r['last_seen'] or 'never'))}"
            f"</small>{output}</div>")


def _ring(name: str, info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    versions = "".join(f"<li><span class='version'>{escape(v)}</span>: "
                       f"<span class='count'>{n}</span> device(s)</li>"
                       for v, n in sorted(info["versions"].items()))
    devices = "".join(_device(r) for r in rows if str(r["ring"]) == name)
    return (f"<section class='ring' data-ring='{escape(name)}'><h2>{escape(name)}</h2>"
            f"<p>{info['devices']} device(s), {info['failing']} failing, {info['stale']} stale"
            f"</p><ul class='versions'>{versions}</ul>{devices}</section>")


def render(report: dict[str, Any], *, order: list[str] | None = None,
           title: str = "Fleet status") -> str:
    t = report["totals"]
    names = [r for r in (order or []) if r in t["rings"]] + sorted(
        r for r in t["rings"] if r not in (order or []))
    columns = "".join(_ring(n, t["rings"][n], report["devices"]) for n in names)
    rejected = "".join(f"<tr><td>{escape(r['file'])}</td><td>{escape(r['reason'])}</td>"
                       f"<td>{escape(r.get('detail', ''))}</td></tr>"
                       for r in report["rejected"])
    by = ", ".join(f"{escape(k)} {v}" for k, v in t["rejected_by_reason"].items() if v)
    unknown = "".join(f"<li><code>{escape(u['device_id'][:16])}</code> "
                      f"{escape(str(u['hostname']))} (ring {escape(str(u['ring']))})</li>"
                      for u in report["unknown"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>"
            f"<p id='summary'>{t['devices']} devices, {t['failing']} failing, {t['stale']} "
            f"stale, {t['rejected']} rejected report(s); generated "
            f"{escape(str(report['generated']))}</p>"
            f"<div class='rings'>{columns}</div>"
            f"<h2>Rejected reports</h2><p id='rejected'>{t['rejected']} rejected"
            f"{': ' + by if by else ''}</p><table><tr><th>file</th><th>reason</th>"
            f"<th>detail</th></tr>{rejected}</table>"
            f"<h2>Unknown devices</h2><ul id='unknown'>{unknown}</ul></body></html>\n")
