"""A hostile Docker engine on 127.0.0.1 (``DOCKER_HOST=tcp://127.0.0.1:PORT``): just the
Engine API calls the builder makes for a ``docker-daemon:`` image (``/version``, ``/_ping``,
``GET /images/NAME/json``, ``GET /images/ID/get``), each answer chosen by the test: a good
``docker save`` tar, giant GNU long-name or pax headers, unreferenced members, a drip, an
endless inspect answer. Nothing but 127.0.0.1 is contacted."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from typing import Callable

from .httpbase import LoopbackServer, QuietHandler, ServerLifecycle

API = "1.41"
Writer = Callable[[io.BufferedIOBase], None]


def good_export(*, arch: str = "amd64", unreferenced: int = 0) -> tuple[str, bytes]:
    """``(image id, docker save tar)`` of a one-layer image, plus ``unreferenced`` extra
    1 KiB members that its manifest.json does not name."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    layer = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": arch, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    members = [(f"{image_id[7:]}.json", config), (f"{diff_id[7:]}/layer.tar", layer)]
    members += [(f"junk/{i:05d}", bytes([i % 251]) * 1024) for i in range(unreferenced)]
    members.append(("manifest.json", json.dumps([{
        "Config": f"{image_id[7:]}.json", "RepoTags": None,
        "Layers": [f"{diff_id[7:]}/layer.tar"]}]).encode()))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return image_id, out.getvalue()


def giant_header(kind: bytes) -> Writer:
    """A GNU long name (``L``) or pax (``x``) header declaring 3 GiB, then zeros forever."""
    def write(w: io.BufferedIOBase) -> None:
        info = tarfile.TarInfo("././@LongLink" if kind == b"L" else "pax")
        info.type = kind
        info.size = 3 << 30
        w.write(info.tobuf(format=tarfile.USTAR_FORMAT if kind == b"x"
                           else tarfile.GNU_FORMAT)[-512:])
        zeros = bytes(1 << 16)
        while True:
            w.write(zeros)
    return write


def drip(data: bytes, every: float) -> Writer:
    def write(w: io.BufferedIOBase) -> None:
        for i in range(len(data)):
            w.write(data[i:i + 1])
            w.flush()
            time.sleep(every)
    return write


def endless() -> Writer:
    def write(w: io.BufferedIOBase) -> None:
        block = b" " * (1 << 16)
        w.write(b'{"Id": "sha256:' + b"0" * 64 + b'", "Pad": "')
        while True:
            w.write(block)
    return write


@dataclass
class EngineState:
    image_id: str = ""
    inspect: dict[str, object] = field(default_factory=dict)
    inspect_writer: Writer | None = None
    export: bytes = b""
    export_writer: Writer | None = None
    requests: list[str] = field(default_factory=list)


class _Handler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        state: EngineState = self.owner.state  # type: ignore[attr-defined]
        state.requests.append(self.path)
        path = self.path.split("?", 1)[0]
        if path.endswith("/version"):
            return self._json({"ApiVersion": API, "Version": "24.0.0", "MinAPIVersion": "1.12"})
        if path.endswith("/_ping"):
            return self.send_simple(200, b"OK")
        if path.endswith("/json"):
            if state.inspect_writer is not None:
                return self._stream(state.inspect_writer, "application/json")
            return self._json(state.inspect)
        if path.endswith("/get"):
            if state.export_writer is not None:
                return self._stream(state.export_writer, "application/x-tar")
            return self.send_simple(200, state.export, content_type="application/x-tar")
        return self.send_simple(404, b'{"message": "no such image"}',
                                content_type="application/json")

    do_HEAD = do_GET

    def _json(self, doc: object) -> None:
        self.send_simple(200, json.dumps(doc).encode(), content_type="application/json")

    def _stream(self, writer: Writer, content_type: str) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            writer(self.wfile)  # type: ignore[arg-type]
        except (ConnectionError, TimeoutError, OSError):
            return


class FakeEngine(ServerLifecycle):
    """``host`` for DOCKER_HOST is ``tcp://127.0.0.1:PORT``; ``state`` says what it answers."""

    def __init__(self) -> None:
        self.state = EngineState()
        self._server = LoopbackServer(_Handler, self)

    def serve_image(self, *, arch: str = "amd64", unreferenced: int = 0) -> str:
        image_id, tar = good_export(arch=arch, unreferenced=unreferenced)
        self.state = EngineState(image_id=image_id, export=tar, inspect={
            "Id": image_id, "Os": "linux", "Architecture": arch, "Size": len(tar)})
        return image_id

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"
