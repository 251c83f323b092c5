"""Installer policy: pure decisions (tables) and the same decisions through the real CLI.

THREATS.md lines covered here: 13 (architecture / role, both values named), 14 (lower version
refused, equal is a no-op), 20 (K3s minor downgrade / skip unless allowed), plus the USB folder
rules, trust pinning and root advance, and exit codes matching ``installer/errors.py``.
"""

import json
from pathlib import Path

import pytest

from installer import errors, policy
from installer.errors import (
    ConfigError,
    EnvironmentProblem,
    FormatError,
    PolicyRefusal,
)
from tests.bundles import (
    KeyDir,
    cli,
    default_spec,
    live,
    live_image,
    tree,
    write_spec,
)

# ---------------------------------------------------------------------------- pure tables


@pytest.mark.parametrize("a,b,expected", [
    ("1.0.0", "1.0.0", 0), ("1.0", "1.0.0", 0), ("1.2.10", "1.2.9", 1), ("1.10.0", "1.9.9", 1),
    ("2.0.0", "10.0.0", -1), ("1.0.0-rc.1", "1.0.0", -1), ("1.0.0-rc.2", "1.0.0-rc.10", -1),
    ("1.0.0-alpha", "1.0.0-1", 1), ("1.0.0+build.5", "1.0.0", 0), ("v1.2.3", "1.2.3", 0),
])
def test_compare_versions_numeric_by_dots(a: str, b: str, expected: int) -> None:
    assert policy.compare_versions(a, b) == expected
    assert policy.compare_versions(b, a) == -expected


@pytest.mark.parametrize("installed,new,skip,down,ok", [
    ("v1.33.5+k3s1", "v1.33.6+k3s1", False, False, True),
    ("v1.33.5+k3s1", "v1.34.1+k3s1", False, False, True),
    ("v1.33.5+k3s2", "v1.33.5+k3s1", False, False, True),    # revision only
    ("v1.33.5+k3s1", "v1.35.0+k3s1", False, False, False),   # skipped minor
    ("v1.33.5+k3s1", "v1.35.0+k3s1", True, False, True),
    ("v1.34.1+k3s1", "v1.33.9+k3s1", False, False, False),   # minor downgrade
    ("v1.34.1+k3s1", "v1.33.9+k3s1", False, True, True),
])
def test_threat20_k3s_minor_rules(installed: str, new: str, skip: bool, down: bool,
                                  ok: bool) -> None:
    if ok:
        policy.check_k3s_change(installed, new, allow_minor_skip=skip, allow_downgrade=down)
    else:
        with pytest.raises(errors.PolicyRefusal) as e:
            policy.check_k3s_change(installed, new, allow_minor_skip=skip, allow_downgrade=down)
        assert installed in e.value.message and new in e.value.message


@pytest.mark.parametrize("machine,arch", [("x86_64", "amd64"), ("aarch64", "arm64"),
                                          ("arm64", "arm64"), ("armv7l", "arm"),
                                          ("armv6l", "arm")])
def test_machine_to_arch(machine: str, arch: str) -> None:
    assert policy.machine_to_arch(machine) == arch


def test_pick_bundle_newest_and_ambiguity() -> None:
    files = ["edge-1.2.0-amd64.tar", "edge-1.10.0-amd64.tar", "edge-1.11.0-arm64.tar",
             "INSTALL.txt", "airgap-install.pyz", "edge-1.9.0-amd64.tar.part"]
    assert policy.pick_bundle(files, "amd64", folder="/usb").version == "1.10.0"
    assert policy.pick_bundle(files, "arm64", folder="/usb").file == "edge-1.11.0-arm64.tar"
    with pytest.raises(errors.ConfigError) as e:
        policy.pick_bundle(files, "arm", folder="/usb")
    assert "amd64, arm64" in e.value.message
    with pytest.raises(errors.ConfigError) as e:
        policy.pick_bundle(files + ["site-b-2.0.0-amd64.tar"], "amd64", folder="/usb")
    assert "site-b-2.0.0-amd64.tar" in e.value.message and "edge-1.2.0-amd64.tar" in \
        e.value.message


def test_parse_bundle_filename_with_dashes() -> None:
    b = policy.parse_bundle_filename("edge-site-2-1.4.2-rc.1-arm.tar")
    assert b is not None and (b.name, b.version, b.arch) == ("edge-site-2", "1.4.2-rc.1", "arm")


def test_space_shortfalls_margin() -> None:
    need = 100 * 2**20
    margin = max(policy.SPACE_MARGIN_BYTES, int(need * policy.SPACE_MARGIN_FRACTION))
    assert policy.space_shortfalls({"fs": need}, {"fs": need + margin}, {}) == []
    short = policy.space_shortfalls({"fs": need}, {"fs": need + margin - 1}, {"fs": "/var"})
    assert short == [policy.Shortfall("/var", need + margin, need + margin - 1)]


def test_decide_version() -> None:
    d = policy.decide_bundle_version(installed_name="edge", installed_version="1.2.0",
                                     name="edge", version="1.2")
    assert d.action == "same"
    with pytest.raises(errors.PolicyRefusal):
        policy.decide_bundle_version(installed_name="edge", installed_version="1.2.0",
                                     name="other", version="9.0.0")


# ---------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Path:
    root = tmp_path / "root"
    r = cli("trust", keydir.root_json, "--root", root)
    assert r.returncode == 0, r.stderr
    return root


def _install(root: Path, bundle: Path, *extra: object, **env: str):  # type: ignore[no-untyped-def]
    return cli("install", bundle, "--root", root, "--skip-start", *extra, env=env)


def test_no_anchor_says_run_trust(tmp_path: Path, keydir: KeyDir) -> None:
    bundle = write_spec(default_spec(), keydir, tmp_path)
    r = _install(tmp_path / "root", bundle, "--server")
    assert r.returncode == errors.ConfigError.exit_code == 2
    assert "airgap-install trust" in r.stderr
    assert not (tmp_path / "root" / "usr").exists()


def test_trust_pins_once(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    again = cli("trust", keydir.root_json, "--root", host, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    other = KeyDir(tmp_path / "other-keys")
    r = cli("trust", other.root_json, "--root", host)
    assert r.returncode == 2 and "already pinned" in r.stderr


def test_threat13_arch_mismatch_names_both(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    bundle = write_spec(default_spec(arch="arm64"), keydir, tmp_path)
    before = tree(host)
    r = _install(host, bundle, "--server")
    assert r.returncode == errors.PolicyRefusal.exit_code == 4
    assert "arm64" in r.stderr and "amd64" in r.stderr
    assert tree(host) == before
    typo = _install(host, bundle, "--server", "--arch", "arm65")
    assert typo.returncode == 2 and "unknown architecture 'arm65'" in typo.stderr
    ok = _install(host, bundle, "--server", "--arch", "aarch64")  # another root; an alias
    assert ok.returncode == 0, ok.stderr


def test_arch_override_refused_for_live_root(tmp_path: Path, keydir: KeyDir) -> None:
    bundle = write_spec(default_spec(), keydir, tmp_path)
    r = cli("verify", bundle, "--root", "/", "--arch", "arm64")
    assert r.returncode == 2 and "--root other than /" in r.stderr


def test_threat13_role_mismatch_names_both(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    bundle = write_spec(default_spec(roles=("server",)), keydir, tmp_path)
    token = tmp_path / "token"
    token.write_text("secret\n")
    before = tree(host)
    r = _install(host, bundle, "--agent", "--url", "https://10.0.0.1:6443", "--token-file", token)
    assert r.returncode == 4
    assert "server" in r.stderr and "agent" in r.stderr
    assert tree(host) == before


def test_agent_install_passes_role_to_install_sh(tmp_path: Path, keydir: KeyDir,
                                                 host: Path) -> None:
    spec = default_spec()
    bundle = write_spec(spec, keydir, tmp_path)
    token = tmp_path / "token"
    token.write_text("secret\n")
    record = tmp_path / "record"
    r = cli("install", bundle, "--root", host, "--agent", "--url", "https://10.0.0.1:6443",
            "--token-file", token, "--exec", "--node-label a=b",
            env={"AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == 0, r.stderr
    env = record.read_text()
    assert "INSTALL_K3S_EXEC=agent --node-label a=b" in env
    assert "K3S_URL=https://10.0.0.1:6443" in env and f"K3S_TOKEN_FILE={token}" in env
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in env
    assert f"INSTALL_K3S_BIN_DIR={host}/usr/local/bin" in env
    assert "INSTALL_K3S_SKIP_START" not in env
    files = live(host)
    assert live_image("app-1.0.0.tar", spec.images["app-1.0.0.tar"]) in files
    assert not any("server" in f for f in files), "agents get no charts or manifests"


def test_threat14_lower_version_refused_equal_is_noop(tmp_path: Path, keydir: KeyDir,
                                                      host: Path) -> None:
    v2 = write_spec(default_spec("1.10.0"), keydir, tmp_path)
    v1 = write_spec(default_spec("1.9.0"), keydir, tmp_path)
    assert _install(host, v2, "--server").returncode == 0
    before = tree(host)
    r = _install(host, v1)
    assert r.returncode == 4 and "1.9.0" in r.stderr and "1.10.0" in r.stderr
    assert tree(host) == before
    same = _install(host, v2, "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["action"] == "none"
    assert tree(host) == before


@pytest.mark.parametrize("new_k3s,allow,ok", [
    ("v1.32.9+k3s1", {}, False),
    ("v1.32.9+k3s1", {"allow_k3s_downgrade": True}, True),
    ("v1.35.1+k3s1", {}, False),
    ("v1.35.1+k3s1", {"allow_k3s_minor_skip": True}, True),
    ("v1.34.0+k3s1", {}, True),
])
def test_threat20_k3s_minor_downgrade_or_skip(tmp_path: Path, keydir: KeyDir, host: Path,
                                              new_k3s: str, allow: dict, ok: bool) -> None:
    assert _install(host, write_spec(default_spec("1.0.0"), keydir, tmp_path),
                    "--server").returncode == 0
    before = tree(host)
    r = _install(host, write_spec(default_spec("2.0.0", k3s_version=new_k3s, **allow), keydir,
                                  tmp_path))
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 4 and "v1.33.5+k3s1" in r.stderr and new_k3s in r.stderr
        assert tree(host) == before


def test_folder_picks_newest_and_refuses_ambiguity(tmp_path: Path, keydir: KeyDir,
                                                   host: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    for v in ("1.2.0", "1.10.0", "1.9.0"):
        write_spec(default_spec(v), keydir, usb)
    write_spec(default_spec("3.0.0", arch="arm64"), keydir, usb)
    r = _install(host, usb, "--server", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["current"]["version"] == "1.10.0"
    write_spec(default_spec("5.0.0", name="other"), keydir, usb)
    r = _install(host, usb)
    assert r.returncode == 2
    assert "other-5.0.0-amd64.tar" in r.stderr and "edge-1.10.0-amd64.tar" in r.stderr


def test_folder_file_renamed_is_refused(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    write_spec(default_spec("1.0.0"), keydir, usb, filename="edge-9.0.0-amd64.tar")
    r = _install(host, usb, "--server")
    assert r.returncode == 3 and "renamed" in r.stderr


def test_root_advances_after_verified_install(tmp_path: Path, host: Path) -> None:
    keys = KeyDir(tmp_path / "rotating")
    root = tmp_path / "root2"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    keys.rotate_targets()  # root v2: new targets key, signed by the v1 root key
    r = _install(root, write_spec(default_spec(), keys, tmp_path), "--server")
    assert r.returncode == 0, r.stderr
    status = json.loads(cli("status", "--root", root, "--json").stdout)
    assert status["trust_root_version"] == 2
    assert (root / "etc/rancher/airgap/root.json").read_bytes() == keys.root_json.read_bytes()


def test_status_and_rollback(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    spec = default_spec("1.0.0")
    assert _install(host, write_spec(spec, keydir, tmp_path), "--server").returncode == 0
    old = live(host)
    assert _install(host, write_spec(default_spec("1.1.0"), keydir, tmp_path)).returncode == 0
    new = live(host)
    st = json.loads(cli("status", "--root", host, "--json").stdout)
    assert st["installed"]["version"] == "1.1.0" and st["previous"]["version"] == "1.0.0"
    assert st["installed"]["k3s_version"] == "v1.33.5+k3s1" and len(st["installed"]["digest"]) == 64
    r = cli("rollback", "--root", host, "--skip-start", "--json")
    assert r.returncode == 0, r.stderr
    assert live(host) == old
    assert sorted(p for p in old if "/images/" in p and "/images/." not in p) == sorted(
        live_image(n, d) for n, d in spec.images.items())
    assert cli("rollback", "--root", host, "--skip-start").returncode == 0
    assert live(host) == new


def test_rollback_without_previous(host: Path) -> None:
    r = cli("rollback", "--root", host)
    assert r.returncode == 2 and "no previous release" in r.stderr


def test_foreign_image_files_left_alone(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    images = host / "var/lib/rancher/k3s/agent/images"
    images.mkdir(parents=True)
    (images / "my-own.tar").write_bytes(b"operator's archive")
    v1, v2 = default_spec("1.0.0"), default_spec("1.1.0")
    assert _install(host, write_spec(v1, keydir, tmp_path), "--server").returncode == 0
    assert _install(host, write_spec(v2, keydir, tmp_path)).returncode == 0
    assert (images / "my-own.tar").read_bytes() == b"operator's archive"
    assert not (host / live_image("app-1.0.0.tar", v1.images["app-1.0.0.tar"])).exists()
    assert (host / live_image("app-1.1.0.tar", v2.images["app-1.1.0.tar"])).exists()
    st = json.loads(cli("status", "--root", host, "--json").stdout)
    assert st["foreign_images"] == ["var/lib/rancher/k3s/agent/images/my-own.tar"]


def test_install_sh_failure_restores_previous(tmp_path: Path, keydir: KeyDir,
                                              host: Path) -> None:
    assert _install(host, write_spec(default_spec("1.0.0"), keydir, tmp_path),
                    "--server").returncode == 0
    old = live(host)
    r = _install(host, write_spec(default_spec("1.1.0"), keydir, tmp_path),
                 AIRGAP_TEST_SCRIPT_FAIL="1")
    assert r.returncode == errors.EnvironmentProblem.exit_code
    assert "install.sh" in r.stderr
    assert live(host) == old


def test_exit_codes_match_errors_module() -> None:
    families = {errors.ConfigError: 2, errors.UntrustedContent: 3, errors.PolicyRefusal: 4,
                errors.TransferError: 5, errors.EnvironmentProblem: 6,
                errors.HealthGateFailed: 7}
    for cls, code in families.items():
        assert cls.exit_code == code and code in errors.EXIT_CODES
    for cls in (errors.FormatError, errors.UnsafeMember, errors.DigestMismatch,
                errors.SignatureError):
        assert cls.exit_code == 3
    doc = (Path(__file__).resolve().parent.parent / "docs" / "exit-codes.md").read_text()
    installer_part, bundler_part = doc.split("## `bundle`")
    for code, meaning in errors.EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in installer_part
    bundler_errors = pytest.importorskip("bundler.errors")
    for code, meaning in bundler_errors.EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in bundler_part


def test_k3s_major_change_refused() -> None:
    with pytest.raises(PolicyRefusal, match="major version change from v1.33.5"):
        policy.check_k3s_change("v1.33.5+k3s1", "v2.33.5+k3s1", allow_minor_skip=True,
                                allow_downgrade=True)
    policy.check_k3s_change("v1.33.5+k3s1", "v1.34.0+k3s1", allow_minor_skip=False,
                            allow_downgrade=False)
    policy.check_k3s_change("v1.33.5+k3s1", "v1.33.1+k3s9", allow_minor_skip=False,
                            allow_downgrade=False)


def test_switch_bundle() -> None:
    kw = dict(installed_name="edge", installed_version="3.0.0", name="core", version="1.0.0")
    with pytest.raises(PolicyRefusal, match="--switch-bundle"):
        policy.decide_bundle_version(**kw)  # type: ignore[arg-type]
    d = policy.decide_bundle_version(**kw, switch_name=True)  # type: ignore[arg-type]
    assert d.action == "install" and "switching bundle edge -> core" in d.reason


def test_switch_bundle_cli(tmp_path: Path, keydir: KeyDir) -> None:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    first = write_spec(default_spec("1.0.0"), keydir, tmp_path)
    assert cli("install", first, "--root", root, "--server", "--skip-start").returncode == 0
    other = write_spec(default_spec("0.5.0", name="core"), keydir, tmp_path)
    r = cli("install", other, "--root", root, "--skip-start")
    assert r.returncode == 4 and "--switch-bundle" in r.stderr, r.stderr
    r = cli("install", other, "--root", root, "--skip-start", "--switch-bundle")
    assert r.returncode == 0, r.stderr
    status = json.loads(cli("status", "--root", root, "--json").stdout)
    assert status["installed"]["name"] == "core" and status["previous"]["name"] == "edge"


@pytest.mark.parametrize("machine", ["riscv64", "s390x", "", "i686"])
def test_unknown_machine_type(machine: str) -> None:
    with pytest.raises(EnvironmentProblem, match=f"machine type {machine!r}"):
        policy.machine_to_arch(machine)


def test_machine_type_is_case_insensitive() -> None:
    assert policy.machine_to_arch("X86_64") == "amd64"
    assert policy.machine_to_arch("AArch64") == "arm64"


@pytest.mark.parametrize("text", ["1." + "9" * 19, "1.0.0-" + "7" * 19])
def test_version_numbers_are_bounded(text: str) -> None:
    with pytest.raises(FormatError, match="19 digits"):
        policy.parse_version(text)
    assert policy.parse_version("1." + "9" * 18)[0] == (1, int("9" * 18))


def test_k3s_version_numbers_are_bounded() -> None:
    with pytest.raises(FormatError, match="19 digits"):
        policy.parse_k3s_version("v1." + "3" * 19 + ".0+k3s1")
    assert policy.parse_k3s_version("v1." + "3" * 18 + ".0+k3s1").minor == int("3" * 18)


def test_pre_release_ordering() -> None:
    assert policy.compare_versions("1.0.0-rc.1", "1.0.0") == -1
    assert policy.compare_versions("1.0.0", "1.0.0-rc.1") == 1
    assert policy.compare_versions("1.0.0-rc.2", "1.0.0-rc.10") == -1
    assert policy.compare_versions("1.0.0-rc.a", "1.0.0-rc.1") == 1
    assert policy.compare_versions("1.2", "1.2.0") == 0


def test_policy_pure_edges() -> None:
    assert policy.parse_version("0")[0] == (0,)
    assert policy.compare_versions("1.0", "1") == 0
    assert policy.parse_k3s_version("v1.33.5+k3s2").revision == 2
    assert policy.parse_k3s_version("v1.33.5").revision == 0
    with pytest.raises(PolicyRefusal, match="lower than the installed version 2.0.0"):
        policy.decide_bundle_version(installed_name="edge", installed_version="2.0.0",
                                     name="edge", version="1.9.9")
    assert policy.decide_bundle_version(installed_name="edge", installed_version="2.0.0",
                                        name="edge", version="2.0").action == "same"
    assert policy.decide_bundle_version(installed_name=None, installed_version=None,
                                        name="edge", version="1").action == "install"
    with pytest.raises(PolicyRefusal, match="built for architecture arm64, this host is amd64"):
        policy.check_arch("arm64", "amd64", bundle="b")
    policy.check_arch("amd64", "amd64", bundle="b")


def test_choose_role_rules() -> None:
    assert policy.choose_role(asked=None, installed=None, bundle_roles=("agent",),
                              bundle="b") == "agent"
    with pytest.raises(ConfigError, match="server or agent: say which"):
        policy.choose_role(asked=None, installed=None, bundle_roles=("server", "agent"),
                           bundle="b")
    with pytest.raises(PolicyRefusal, match="built for role agent, asked to install role server"):
        policy.choose_role(asked="server", installed=None, bundle_roles=("agent",), bundle="b")
    assert policy.choose_role(asked=None, installed="server", bundle_roles=("server", "agent"),
                              bundle="b") == "server"


def test_space_and_human_bytes() -> None:
    assert policy.space_shortfalls({"a": 0}, {"a": 0}, {}) == []
    need = 10 << 30
    total = need + int(need * policy.SPACE_MARGIN_FRACTION)
    assert policy.space_shortfalls({"a": need}, {"a": total}, {}) == []
    assert policy.space_shortfalls({"a": need}, {"a": total - 1}, {"a": "/x"}) == [
        policy.Shortfall("/x", total, total - 1)]
    assert policy.SPACE_MARGIN_BYTES == 64 * 1024 * 1024
    with pytest.raises(EnvironmentProblem, match="/x needs 10 B, has 1 B free"):
        policy.check_space([policy.Shortfall("/x", 10, 1)], bundle="b")
    policy.check_space([], bundle="b")
    assert policy.human_bytes(1023) == "1023 B"
    assert policy.human_bytes(1024) == "1.0 KiB"
    assert policy.human_bytes(3 * 1024 ** 3) == "3.0 GiB"
    assert policy.human_bytes(5 * 1024 ** 5) == "5120.0 TiB"


def test_pick_bundle_order() -> None:
    files = ["edge-1.0.0-amd64.tar", "edge-3.0.0-amd64.tar", "edge-2.0.0-amd64.tar"]
    assert policy.pick_bundle(files, "amd64", folder="f").version == "3.0.0"
    assert policy.pick_bundle(["edge-1.0-amd64.tar", "edge-1.0.0-amd64.tar"], "amd64",
                              folder="f").file == "edge-1.0-amd64.tar"


def test_policy_bad_versions_are_format_errors() -> None:
    """policy.py lines 44 and 101 (``raise`` -> ``pass``): text that is not a version is a
    FormatError naming it, not an AttributeError."""
    from installer import errors, policy
    with pytest.raises(errors.FormatError, match="'one.two' is not a dotted version"):
        policy.parse_version("one.two")
    with pytest.raises(errors.FormatError, match="'1.34' is not like v1.34.3"):
        policy.parse_k3s_version("1.34")


def test_policy_space_and_pick_edges() -> None:
    """policy.py line 221 (``need <= 0`` -> ``<= 1``), 225 (``free.get(fs, 0)`` -> ``1``) and
    293 (``mine[1:]`` -> ``mine[2:]``)."""
    from installer import policy
    short = policy.space_shortfalls({"fs": 1}, {}, {})
    assert short == [policy.Shortfall("fs", 1 + policy.SPACE_MARGIN_BYTES, 0)]
    files = ["edge-1.0.0-amd64.tar", "edge-1.1.0-amd64.tar"]
    assert policy.pick_bundle(files, "amd64", folder="/usb").version == "1.1.0"
