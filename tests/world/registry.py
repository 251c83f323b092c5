"""A real OCI registry (CNCF distribution, ``docker-registry`` from Debian) on 127.0.0.1.

What it does: writes a private config (never the packaged ``/etc/docker/registry/config.yml``),
starts ``docker-registry serve`` on a free loopback port with filesystem storage under a given
folder and deletes enabled, optionally with TLS (a throw-away CA) and htpasswd basic auth, and
stops it by PID. What it does not do: populate it (see ``images.py``).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import requests
import yaml

from .procs import LOOPBACK, ManagedProcess, free_port, wait_until_http_ready
from .tls import make_server_cert

REGISTRY_BINARY = "docker-registry"


class Registry:
    """One ``docker-registry`` process.

    Attributes once started: ``url`` (``http(s)://127.0.0.1:PORT``), ``host``
    (``127.0.0.1:PORT``), ``port``, ``ca_file`` (``Path`` of the CA when ``tls``, else ``None``),
    ``username``/``password`` (when ``htpasswd``), ``data_dir``, ``config_path``, ``process``.
    """

    def __init__(self, base_dir: Path, *, tls: bool = False,
                 htpasswd: tuple[str, str] | None = None, name: str = "registry") -> None:
        self.base_dir = Path(base_dir)
        self.name = name
        self.tls = tls
        self.username: str | None = htpasswd[0] if htpasswd else None
        self.password: str | None = htpasswd[1] if htpasswd else None
        self.data_dir = self.base_dir / "data"
        self.config_path = self.base_dir / "config.yml"
        self.ca_file: Path | None = None
        self.port = 0
        self.process: ManagedProcess | None = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def auth(self) -> tuple[str, str] | None:
        """``(username, password)`` for requests, or ``None`` when auth is off."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    @property
    def verify(self) -> str | bool:
        """Value for requests' ``verify=``: the CA file for TLS registries."""
        return str(self.ca_file) if self.ca_file else True

    def session(self) -> requests.Session:
        """A ``requests.Session`` that trusts this registry's CA and sends its credentials.

        ``trust_env`` is off: otherwise ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (set on these
        machines) silently override ``session.verify``, and proxy variables could route
        loopback traffic elsewhere."""
        sess = requests.Session()
        sess.trust_env = False
        sess.verify = self.verify
        if self.auth:
            sess.auth = self.auth
        return sess

    # -- lifecycle -------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        http: dict[str, object] = {"addr": self.host, "secret": secrets.token_hex(16)}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.data_dir)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": http,
        }
        if self.tls:
            files = make_server_cert(self.base_dir / "tls")
            self.ca_file = files.ca_file
            http["tls"] = {"certificate": str(files.cert_file), "key": str(files.key_file)}
        if self.auth:
            line = htpasswd_line(*self.auth)
            pw_file = self.base_dir / "htpasswd"
            pw_file.write_text(line + "\n")
            config["auth"] = {"htpasswd": {"realm": f"{self.name}-realm", "path": str(pw_file)}}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def launch(self) -> Registry:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        if shutil.which(REGISTRY_BINARY) is None:
            raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
        self.port = free_port()
        self._write_config()
        self.process = ManagedProcess(
            [REGISTRY_BINARY, "serve", str(self.config_path)],
            log_path=self.base_dir / "registry.log", name=f"{self.name}({self.host})")
        self.process.start()
        return self

    def wait_ready(self, timeout: float = 10.0) -> Registry:
        assert self.process is not None, "launch() first"
        wait_until_http_ready(f"{self.url}/v2/", timeout, process=self.process)
        return self

    def start(self, timeout: float = 10.0) -> Registry:
        """Start and wait until ``/v2/`` answers; retries once on a lost port race."""
        for attempt in range(3):
            self.launch()
            try:
                return self.wait_ready(timeout)
            except RuntimeError:
                assert self.process is not None
                if "address already in use" not in self.process.log_text() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Registry({self.url}, tls={self.tls}, auth={bool(self.auth)})"


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line made by Apache's ``htpasswd -Bbn`` (distribution wants bcrypt)."""
    if shutil.which("htpasswd") is None:
        raise RuntimeError("htpasswd is not installed: apt-get install apache2-utils")
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[0]
