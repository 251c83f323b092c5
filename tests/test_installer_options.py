"""Node options persist (issue #10, defect 1): what a release was installed with carries over
to upgrades, same-version re-installs, ``reconfigure`` and rollbacks; the command line replaces
it explicitly, and the output and ``status`` say what changed.

Every test runs the real CLI against a temp root with the stand-in install.sh, which appends
the environment it was run with to ``AIRGAP_TEST_RECORD`` (see tests/bundles.py).
"""

import json
from pathlib import Path
from typing import Dict, List

import pytest

from tests.bundles import KeyDir, cli, default_spec, live, write_spec

TLS = "--cluster-init --tls-san 10.20.0.10"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Path:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    return root


@pytest.fixture
def token(tmp_path: Path) -> Path:
    t = tmp_path / "token"
    t.write_text("K10secret::server:abc\n")
    return t


class Host:
    """One device under test: its root, its bundles and what install.sh saw."""

    def __init__(self, root: Path, tmp: Path, keydir: KeyDir) -> None:
        self.root, self.tmp, self.keydir = root, tmp, keydir
        self.record = tmp / "record"

    def bundle(self, version: str, **kw: object) -> Path:
        return write_spec(default_spec(version, **kw), self.keydir, self.tmp)

    def run(self, *args: object, **env: str):  # type: ignore[no-untyped-def]
        return cli(*args, "--root", self.root,
                   env={"AIRGAP_TEST_RECORD": str(self.record), **env})

    def runs(self) -> List[Dict[str, str]]:
        """Each install.sh run: its ``INSTALL_K3S_*``/``K3S_*`` variables and its header."""
        out = []
        text = self.record.read_text() if self.record.exists() else ""
        for block in text.split("--- ")[1:]:
            lines = block.splitlines()
            env = dict(x.split("=", 1) for x in lines[1:] if "=" in x)
            env["_release"] = lines[0]
            out.append(env)
        return out

    def status(self) -> Dict[str, object]:
        r = self.run("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def dev(host: Path, tmp_path: Path, keydir: KeyDir) -> Host:
    return Host(host, tmp_path, keydir)


def test_server_upgrade_keeps_exec(dev: Host) -> None:
    r = dev.run("install", dev.bundle("1.0.0"), "--server", "--exec", TLS, "--skip-start")
    assert r.returncode == 0, r.stderr
    r = dev.run("install", dev.bundle("1.1.0"))  # plain: nothing given
    assert r.returncode == 0, r.stderr
    last = dev.runs()[-1]
    assert last["_release"] == "edge 1.1.0"
    assert last["INSTALL_K3S_EXEC"] == "server " + TLS
    assert last["INSTALL_K3S_SKIP_START"] == "true"
    assert "keeping the installed options: exec, skip_start" in r.stderr
    st = dev.status()
    assert st["installed"]["options"]["exec"] == TLS  # type: ignore[index]
    assert st["installed"]["options"]["install_k3s_exec"] == "server " + TLS  # type: ignore


def test_agent_upgrade_uses_recorded_url_and_token(dev: Host, token: Path) -> None:
    r = dev.run("install", dev.bundle("1.0.0"), "--agent", "--url", "https://10.20.0.10:6443",
                "--token-file", token)
    assert r.returncode == 0, r.stderr
    r = dev.run("install", dev.bundle("1.1.0"))
    assert r.returncode == 0, r.stderr
    last = dev.runs()[-1]
    assert last["_release"] == "edge 1.1.0" and last["INSTALL_K3S_EXEC"] == "agent"
    assert last["K3S_URL"] == "https://10.20.0.10:6443"
    assert last["K3S_TOKEN_FILE"] == str(token)
    token.unlink()  # the recorded token file is gone: a clear error, nothing changed
    before = live(dev.root)
    r = dev.run("install", dev.bundle("1.2.0"))
    assert r.returncode == 2 and str(token) in r.stderr and "--token-file" in r.stderr
    assert live(dev.root) == before


def test_same_version_with_new_exec_applies_it(dev: Host) -> None:
    b = dev.bundle("1.0.0")
    assert dev.run("install", b, "--server", "--skip-start").returncode == 0
    before = live(dev.root)
    r = dev.run("install", b, "--exec", "--disable traefik", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["action"] == "reconfigured"
    assert out["options_changed"] == [{"option": "exec", "old": "", "new": "--disable traefik"}]
    assert dev.runs()[-1]["INSTALL_K3S_EXEC"] == "server --disable traefik"
    assert live(dev.root) == before  # the same files: only install.sh ran again
    st = dev.status()
    assert st["installed"]["options_changed"] == [  # type: ignore[index]
        "exec '' -> '--disable traefik'"]
    text = dev.run("status").stdout
    assert "INSTALL_K3S_EXEC='server --disable traefik'" in text
    assert "last change of options: exec '' -> '--disable traefik'" in text
    again = dev.run("install", b, "--json")  # nothing given, nothing changes
    assert again.returncode == 0 and json.loads(again.stdout)["action"] == "none"


def test_rollback_reuses_options_and_command_line_overrides(dev: Host) -> None:
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--exec", TLS,
                   "--skip-start").returncode == 0
    assert dev.run("install", dev.bundle("1.1.0"), "--exec", "--disable traefik").returncode == 0
    r = dev.run("rollback", "--start")
    assert r.returncode == 0, r.stderr
    last = dev.runs()[-1]
    assert last["_release"] == "edge 1.0.0"
    assert last["INSTALL_K3S_EXEC"] == "server " + TLS  # 1.0.0's own options
    assert "INSTALL_K3S_SKIP_START" not in last          # --start overrides the remembered one
    assert "skip_start true -> false" in r.stderr
    assert dev.run("rollback").returncode == 0           # back to 1.1.0, as it last ran
    last = dev.runs()[-1]
    assert last["_release"] == "edge 1.1.0"
    assert last["INSTALL_K3S_EXEC"] == "server --disable traefik"
    assert last["INSTALL_K3S_SKIP_START"] == "true"


def test_role_change_starts_from_defaults(dev: Host, token: Path) -> None:
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--exec", TLS,
                   "--skip-start").returncode == 0
    r = dev.run("install", dev.bundle("1.1.0"), "--agent", "--url", "https://10.0.0.1:6443",
                "--token-file", token)
    assert r.returncode == 0, r.stderr
    last = dev.runs()[-1]
    assert last["INSTALL_K3S_EXEC"] == "agent"  # no server flags on an agent
    assert "INSTALL_K3S_SKIP_START" not in last
    assert "role 'server' -> 'agent'" in r.stderr


def test_exec_empty_drops_extra_arguments(dev: Host) -> None:
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--exec", TLS,
                   "--skip-start").returncode == 0
    assert dev.run("install", dev.bundle("1.1.0"), "--exec", "").returncode == 0
    assert dev.runs()[-1]["INSTALL_K3S_EXEC"] == "server"


# ---------------------------------------------------------------------------- reconfigure


def test_reconfigure_reruns_install_sh_of_installed_release(dev: Host) -> None:
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--skip-start").returncode == 0
    assert dev.run("install", dev.bundle("1.1.0")).returncode == 0
    before = live(dev.root)
    r = dev.run("reconfigure", "--exec", TLS, "--start")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("reconfigured edge 1.1.0")
    assert "options changed: exec '' -> " in r.stdout
    last = dev.runs()[-1]
    assert last["_release"] == "edge 1.1.0"
    assert last["INSTALL_K3S_EXEC"] == "server " + TLS and "INSTALL_K3S_SKIP_START" not in last
    assert live(dev.root) == before
    st = dev.status()
    assert st["installed"]["version"] == "1.1.0"  # type: ignore[index]
    assert st["previous"]["version"] == "1.0.0"   # type: ignore[index]  # rollback target kept
    again = dev.run("reconfigure", "--exec", TLS, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["action"] == "none"
    nothing = cli("reconfigure", "--root", dev.tmp / "empty-root")
    assert nothing.returncode == 2 and "nothing is installed" in nothing.stderr


def test_reconfigure_failing_install_sh_keeps_old_options(dev: Host) -> None:
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--exec", TLS,
                   "--skip-start").returncode == 0
    before = live(dev.root)
    r = dev.run("reconfigure", "--exec", "--disable traefik", AIRGAP_TEST_SCRIPT_FAIL="1")
    assert r.returncode == 6 and "install.sh" in r.stderr
    assert dev.status()["installed"]["options"]["exec"] == TLS  # type: ignore[index]
    assert live(dev.root) == before


def test_reconfigure_to_agent_drops_server_files(dev: Host, token: Path) -> None:
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--skip-start").returncode == 0
    assert any("/server/" in p for p in live(dev.root))
    r = dev.run("reconfigure", "--agent", "--url", "https://10.0.0.1:6443", "--token-file", token)
    assert r.returncode == 0, r.stderr
    assert not any("/server/" in p for p in live(dev.root)), "agents get no charts/manifests"
    assert dev.runs()[-1]["INSTALL_K3S_EXEC"] == "agent"
    assert dev.status()["installed"]["role"] == "agent"  # type: ignore[index]
    half = dev.run("reconfigure", "--agent", "--url", "")  # an agent must keep its server
    assert half.returncode == 2 and "--url" in half.stderr


@pytest.mark.parametrize("point,finished", [("after-journal", False), ("after-placed", True),
                                            ("after-install-sh", True)])
def test_reconfigure_is_journaled(dev: Host, point: str, finished: bool) -> None:
    """SIGKILL inside a reconfigure: the next run undoes it (before the files were all placed)
    or finishes it (after), like an install."""
    assert dev.run("install", dev.bundle("1.0.0"), "--server", "--exec", TLS,
                   "--skip-start").returncode == 0
    killed = dev.run("reconfigure", "--exec", "--disable traefik",
                     AIRGAP_INSTALL_FAILPOINT=point)
    assert killed.returncode == -9, killed.stderr
    assert dev.status()["pending"]["op"] == "reconfigure"  # type: ignore[index]
    r = dev.run("recover")
    assert r.returncode == 0, r.stderr
    st = dev.status()
    assert st["pending"] is None
    want = "--disable traefik" if finished else TLS
    assert st["installed"]["options"]["exec"] == want  # type: ignore[index]
    if finished:
        assert dev.runs()[-1]["INSTALL_K3S_EXEC"] == "server --disable traefik"


# ---------------------------------------------------------------------------- pure rules


def test_merge_rules() -> None:
    from installer.errors import ConfigError
    from installer.host.options import Given, NodeOptions, check, diff, merge

    rec = NodeOptions("server", exec_args=TLS, skip_start=True)
    assert merge(rec, Given(), role="server") == rec
    assert merge(rec, Given(skip_start=False), role="server").skip_start is False
    assert merge(rec, Given(exec_args=""), role="server").exec_args == ""
    assert merge(rec, Given(), role="agent") == NodeOptions("agent")
    assert merge(None, Given(url="https://a:6443"), role="agent").url == "https://a:6443"
    agent = NodeOptions("agent", url="https://a:6443", token_file="/t")
    assert merge(agent, Given(url=""), role="agent").url is None
    with pytest.raises(ConfigError):
        check(NodeOptions("agent", url="https://a:6443"))
    with pytest.raises(ConfigError):
        Given(exec_args="--a 'unterminated")
    changes = diff(rec, merge(rec, Given(exec_args="--x", skip_start=False), role="server"))
    assert [str(c) for c in changes] == [f"exec {TLS!r} -> '--x'", "skip_start true -> false"]
    assert [c.name for c in diff(None, agent)] == ["role", "url", "token_file"]


def test_docs_option_tables_match_help() -> None:
    """docs/installer.md's `install` option table and the commands table name exactly the
    options and commands `--help` has (the docs cannot drift from the CLI)."""
    import re

    from tests.bundles import REPO
    doc = (REPO / "docs" / "installer.md").read_text()
    table = doc.split("`install` options:", 1)[1].split("\n\n", 2)[1]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    documented = {f for cell in first_cells for f in re.findall(r"`(--[a-z-]+)", cell)}
    help_text = cli("install", "--help").stdout
    common = {"--help", "--root", "--json", "--quiet", "--wait"}
    usage = help_text.split("positional arguments", 1)[0]
    offered = set(re.findall(r"[\[|] ?(--[a-z-]+)", usage)) - common
    assert documented == offered, (documented ^ offered)
    for flag in common - {"--help"}:
        assert f"`{flag}" in doc
    commands = set(re.findall(r"^\| `([a-z]+)[ `]", doc, re.M))
    top = cli("--help").stdout
    listed = set(re.findall(r"^    ([a-z]+)\b", top, re.M))
    assert commands == listed, (commands ^ listed)
