"""Tests for the survivors of the mutation run (tools/mutate.py; scores in tools/MUTATION.md).

Each test names the mutant it kills (module, line, mutation) and asserts behaviour only: the
exit code, the error's wording, and that the tree is unchanged.
"""

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from installer.host import place
from installer.host.layout import (
    AIRGAP_DIR,
    LIVE_TMP_PREFIX,
    REGISTRIES_KEPT,
    REGISTRIES_TARGET,
    Layout,
    Target,
)
from installer.host.state import Options, Release, read_anchor
from tests.bundles import KeyDir, cli, default_spec, live, live_image, tree, write_spec

_SPEC11 = default_spec("1.1.0")
APP11 = live_image("app-1.1.0.tar", _SPEC11.images["app-1.1.0.tar"])


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Dict[str, Any]:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    b1 = write_spec(default_spec("1.0.0"), keydir, tmp_path)
    r = cli("install", b1, "--root", root, "--skip-start", "--server")
    assert r.returncode == 0, r.stderr
    return {"root": root, "b1": b1, "tmp": tmp_path}


def test_folder_at_a_target_path_is_refused_before_placing(host: Dict[str, Any],
                                                           keydir: KeyDir) -> None:
    """place.py line 112 (``raise`` -> ``pass``): a folder where the new release puts a file
    is exit 6 naming it, and nothing is placed (no backup of a folder is attempted)."""
    root = host["root"]
    folder = root / APP11
    folder.mkdir()
    (folder / "keep").write_text("operator's")
    before = tree(root)
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", root,
            "--skip-start")
    assert r.returncode == 6, r.stderr
    assert "is a folder where a file must go" in r.stderr and APP11 in r.stderr
    assert "Traceback" not in r.stderr
    assert tree(root) == before
    status = json.loads(cli("status", "--root", root, "--json").stdout)
    assert status["installed"]["version"] == "1.0.0"


def _release_dir(root: Path) -> Path:
    digest = json.loads(cli("status", "--root", root, "--json").stdout)["installed"]["digest"]
    return root / "var/lib/rancher/airgap/releases" / digest


def test_upgrade_with_a_kept_copy_missing(host: Dict[str, Any], keydir: KeyDir) -> None:
    """place.py line 43 (``b is not None`` -> ``b is None``): the installed release's kept copy
    of an archive the new release also carries is gone; the upgrade still succeeds and lands
    exactly on a fresh install of the new release (no traceback)."""
    root, tmp = host["root"], host["tmp"]
    kept = _release_dir(root)
    shared = [p for p in kept.rglob("*airgap-images*") if p.is_file()]
    assert len(shared) == 1, shared
    shared[0].unlink()
    b2 = write_spec(_SPEC11, keydir, tmp)
    ref = tmp / "ref"
    assert cli("trust", keydir.root_json, "--root", ref).returncode == 0
    assert cli("install", b2, "--root", ref, "--skip-start", "--server").returncode == 0
    r = cli("install", b2, "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert live(root) == live(ref)


def test_failed_upgrade_restores_an_old_only_file_whose_kept_copy_is_gone(
        host: Dict[str, Any], keydir: KeyDir) -> None:
    """place.py line 43 (``a is not None`` -> ``a is None``): the installed release's kept copy
    of a chart the new release drops is gone, so the live chart is backed up; install.sh then
    fails (exit 6) and undo puts the removed chart back: the live tree is the old one."""
    root, tmp = host["root"], host["tmp"]
    before = live(root)
    kept = [p for p in _release_dir(root).rglob("demo-1.0.0.tgz") if p.is_file()]
    assert len(kept) == 1, kept
    kept[0].unlink()
    r = cli("install", write_spec(_SPEC11, keydir, tmp), "--root", root, "--skip-start",
            env={"AIRGAP_TEST_SCRIPT_FAIL": "1"})
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr
    assert live(root) == before


def test_old_image_archives_stay_until_the_commit(host: Dict[str, Any], keydir: KeyDir) -> None:
    """place.py line 32 (``_GROUPS[0][1]`` -> ``_GROUPS[1][1]``): until the state is committed
    the old release's image archives stay in place (so an undone change never brings back an
    archive K3s would import again) while its other files are gone. Killed right after the
    removal step, the live tree holds the old app archive and no old chart."""
    root, tmp = host["root"], host["tmp"]
    old_app = live_image("app-1.0.0.tar", default_spec("1.0.0").images["app-1.0.0.tar"])
    old_chart = "var/lib/rancher/k3s/server/static/charts/demo-1.0.0.tgz"
    assert (root / old_app).is_file() and (root / old_chart).is_file()
    r = cli("install", write_spec(_SPEC11, keydir, tmp), "--root", root, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": "after-remove-old"})
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert (root / old_app).is_file()
    assert not (root / old_chart).exists()
    assert (root / APP11).is_file()


def test_install_sh_output_goes_to_stderr_so_json_stays_clean(host: Dict[str, Any],
                                                              keydir: KeyDir) -> None:
    """txn.py line 79 (``output is not None`` -> ``is None``): install.sh's own output goes to
    stderr, so ``--json`` leaves exactly one JSON object on stdout (the stand-in writes its
    record to its stdout here)."""
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", host["root"],
            "--skip-start", "--json", env={"AIRGAP_TEST_RECORD": "/dev/stdout"})
    assert r.returncode == 0, r.stderr
    assert "--- " in r.stderr and "INSTALL_K3S_EXEC=server" in r.stderr
    assert json.loads(r.stdout)["current"]["version"] == "1.1.0"


def test_failed_upgrade_runs_the_old_install_sh_again(host: Dict[str, Any],
                                                      keydir: KeyDir) -> None:
    """txn.py line 140 (``old is not None`` -> ``is None``): when the new install.sh fails,
    the files are put back AND the old release's install.sh is run again, so its service
    settings are the old ones (here the stand-in records both runs)."""
    record = host["tmp"] / "record"
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", host["root"],
            "--skip-start", env={"AIRGAP_TEST_SCRIPT_FAIL": "1", "AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == 6, r.stderr
    assert "running install.sh of edge 1.0.0 again" in r.stderr
    runs = [line for line in record.read_text().splitlines() if line.startswith("--- ")]
    assert runs == ["--- edge 1.1.0", "--- edge 1.0.0"]


def test_failed_first_install_sh_is_a_clear_error(tmp_path: Path, keydir: KeyDir) -> None:
    """txn.py line 140 the other way: with no installed release nothing is re-run, and the
    failure is exit 6 without a traceback, nothing installed."""
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    r = cli("install", write_spec(default_spec("1.0.0"), keydir, tmp_path), "--root", root,
            "--skip-start", "--server", env={"AIRGAP_TEST_SCRIPT_FAIL": "1"})
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr and "again" not in r.stderr
    assert json.loads(cli("status", "--root", root, "--json").stdout)["installed"] is None


def test_recovery_of_a_committed_change_only_cleans_up(host: Dict[str, Any],
                                                       keydir: KeyDir) -> None:
    """txn.py line 242 (``is not None`` -> ``is None``; ``==`` -> ``!=``): killed after the
    state commit, recovery sees the change committed and only cleans up: install.sh is not
    run a second time."""
    record = host["tmp"] / "record"
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", host["root"],
            "--skip-start", env={"AIRGAP_INSTALL_FAILPOINT": "after-state:kill",
                                 "AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == -9, r.stderr
    r = cli("recover", "--root", host["root"], env={"AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == 0, r.stderr
    assert "cleaned up after the committed install of edge 1.1.0" in r.stdout + r.stderr
    runs = [line for line in record.read_text().splitlines() if line.startswith("--- ")]
    assert runs == ["--- edge 1.1.0"]


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


def test_trust_small_edges() -> None:
    """rootmeta.py line 169 (``raise`` -> ``pass``: a signatures value that is not a list),
    line 158 (``count(k) > 1`` -> ``>= 1`` / ``> 2``: the message names exactly the repeated
    keyid) and line 94 (the fingerprint is 12 hex digits)."""
    import hashlib

    from installer import errors
    from installer.trust import rootmeta
    with pytest.raises(errors.FormatError, match="manifest signatures must be a list"):
        rootmeta.parse_signatures_doc(b'{"signatures":5}')
    with pytest.raises(errors.FormatError, match=r"role x lists keyid a more than once$"):
        rootmeta._parse_role({"keyids": ["a", "b", "a"], "threshold": 1}, "role x")
    root = rootmeta.Root(version=1, expires=0, keys={}, roles={}, signed={}, signatures=(),
                      signed_bytes=b"{}")
    assert rootmeta.root_fingerprint(root) == hashlib.sha256(b"{}").hexdigest()[:12]


def test_trust_threshold_message_counts_signatures_by_role_keyids() -> None:
    """rootmeta.py line 246 (``s.keyid in wanted.keyids`` -> ``not in``): the refusal counts the
    given signatures whose keyid is in the role (2 of 3 here)."""
    from installer import errors
    from installer.trust import rootmeta
    root = rootmeta.Root(version=1, expires=0, keys={},
                      roles={"targets": rootmeta.Role(("k1", "k2"), 2)}, signed={},
                      signatures=(), signed_bytes=b"{}")
    sigs = [rootmeta.Signature("k1", b""), rootmeta.Signature("k2", b""),
            rootmeta.Signature("zz", b"")]
    with pytest.raises(errors.SignatureError, match=r"3 signature\(s\) given, 2 by keyids"):
        rootmeta.verify_threshold(root, "targets", b"x", signatures=sigs)


def test_verify_missing_anchor_names_the_root_flag(tmp_path: Path) -> None:
    """verify.py line 52 (``raise`` -> ``pass``) and line 55 (``layout.root == "/"`` ->
    ``!=``, ``" --root " + root`` -> ``-``): no anchor is a ConfigError (exit 2) whose hint gives
    the ``trust`` command with this host's ``--root``."""
    from installer import errors
    from installer.host.layout import Layout
    with pytest.raises(errors.ConfigError, match="no trust anchor is pinned at") as e:
        read_anchor(Layout(root=str(tmp_path)))
    assert e.value.hint is not None
    assert f"airgap-install trust ROOT_JSON --root {tmp_path}` once" in e.value.hint


def test_verify_reads_an_anchor_of_the_maximum_size_whole(tmp_path: Path) -> None:
    """verify.py line 50 (``MAX_HEADER_MEMBER + 1`` -> ``- 1``): a pinned anchor as large as
    the bundle's metadata limit is read whole, not cut."""
    from installer.format import bundlefmt
    from installer.host.layout import Layout
    layout = Layout(root=str(tmp_path))
    Path(layout.trust_anchor).parent.mkdir(parents=True)
    data = b"{" + b" " * (bundlefmt.MAX_HEADER_MEMBER - 2) + b"}"
    Path(layout.trust_anchor).write_bytes(data)
    assert read_anchor(layout) == data


def test_verify_root_ids_wording(keydir: KeyDir) -> None:
    """verify.py line 79 (``!=`` -> ``==``: root versions only in ``bundle verify``'s wording),
    line 86 (``root is None`` -> ``is not None``: an empty chain is "none", no traceback) and
    line 92 (``and`` -> ``or``, ``not chain`` -> ``chain``: "ships no root chain" only for an
    empty chain in ``bundle verify``'s wording)."""
    from installer.trust import rootmeta, verify
    anchor = keydir.root_json.read_bytes()
    chain = keydir.chain()
    fp = rootmeta.root_fingerprint(rootmeta.parse_root(anchor))
    assert verify.root_ids(anchor, chain) == f"signed for root {fp}, this host trusts {fp}"
    assert verify.root_ids(anchor, []) == f"signed for root none, this host trusts {fp}"
    label = "this trusted root is"
    assert verify.root_ids(anchor, chain, label) == \
        f"signed for root {fp} (v1), this trusted root is {fp} (v1)"
    assert verify.root_ids(anchor, [], label) == \
        f"the bundle ships no root chain, it is unsigned; this trusted root is {fp} (v1)"


def test_verify_open_regular_refuses_a_file_turned_fifo_after_stat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify.py line 178 (``raise`` -> ``pass``) and 184 (re-``raise`` -> ``pass``): a
    regular file replaced by a FIFO between the ``stat`` and the ``open`` is refused (the
    swap really happens on disk, right after the real ``stat``), not read or hung on."""
    import os

    from installer import errors
    from installer.trust import verify
    path = tmp_path / "b.tar"
    path.write_bytes(b"x")
    real_stat = os.stat

    def stat_then_swap(p: Any, *a: Any, **kw: Any) -> os.stat_result:
        st = real_stat(p, *a, **kw)
        if str(p) == str(path) and not a and not kw:
            path.unlink()
            os.mkfifo(path)
        return st

    monkeypatch.setattr(os, "stat", stat_then_swap)
    with pytest.raises(errors.ConfigError, match="changed into a FIFO while being opened"):
        verify.open_regular(str(path), what="bundle")


def _delta_world() -> Any:
    import hashlib

    from installer.format import bundlefmt
    from tests.bundles import _members, manifest_for
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    mbytes = manifest.to_bytes()
    image = manifest.member("images/app-2.0.0.tar")
    good = bundlefmt.Delta(
        base_digest="b" * 64, base_name="edge-1.0.0-amd64.tar", base_version="1.0.0",
        target_digest=hashlib.sha256(mbytes).hexdigest(),
        carried=("k3s/k3s", "images/app-2.0.0.tar"),
        patches=(("images/app-2.0.0.tar", (("lit", 100), ("ref", "images/old.tar", 0,
                                                          image.size - 100, "c" * 64))),))
    return manifest, mbytes, good


def _delta_doc(edit: Any) -> Any:
    def apply(doc: Dict[str, Any]) -> Dict[str, Any]:
        edit(doc)
        return doc
    return apply


_DELTA_CASES = [
    ("not an object", lambda d: [d], r"delta.json is not a JSON object"),
    ("format", _delta_doc(lambda d: d.update(format="k3s-airgap-delta/v2")),
     r"delta format 'k3s-airgap-delta/v2' is not supported"),
    ("carried types", _delta_doc(lambda d: d.update(carried=["k3s/k3s", 5])),
     r"carried must list member paths"),
    ("patch values", _delta_doc(lambda d: d.update(patches={"k3s/k3s": 5})),
     r"patches must map paths to segment lists"),
    ("other target", _delta_doc(lambda d: d.update(target="d" * 64)),
     r"describes manifest dddddddddddddddd, but the delta carries another manifest"),
    ("base is target", _delta_doc(lambda d: d["base"].update(digest=d["target"])),
     r"the base is the target itself"),
    ("order", _delta_doc(lambda d: d.update(carried=list(reversed(d["carried"])))),
     r"carried members must be unique and in manifest order"),
    ("twice", _delta_doc(lambda d: d.update(carried=["k3s/k3s", "k3s/k3s",
                                                     "images/app-2.0.0.tar"])),
     r"carried members must be unique and in manifest order"),
    ("negative lit", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].insert(
        0, ["lit", -1])), r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("bool lit", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].insert(
        0, ["lit", True])), r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("short", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].pop(0)),
     r"the segments of 'images/app-2.0.0.tar' make 8400 bytes, the manifest says 8500"),
    ("unknown field", _delta_doc(lambda d: d.update(note="x")),
     r"delta.json holds fields this installer does not know"),
    ("bad base digest", _delta_doc(lambda d: d["base"].update(digest="xyz")),
     r"'xyz' is not a manifest sha256"),
    ("unlisted", _delta_doc(lambda d: d["carried"].append("manifests/nope.yaml")),
     r"carries 'manifests/nope.yaml', which the manifest does not list"),
    ("patch not carried", _delta_doc(lambda d: d["patches"].update({"k3s/install.sh": []})),
     r"patches 'k3s/install.sh', which it does not carry"),
    ("segment kind", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].insert(
        0, ["cp", 0])), r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("short ref", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"][1].pop()),
     r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("negative offset", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"][1]
                                   .__setitem__(2, -1)),
     r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("ref path", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"][1].__setitem__(
        1, "images/x.txt")), r"'images/x.txt' of kind images is not an image archive"),
]


@pytest.mark.parametrize("case,edit,message", _DELTA_CASES, ids=[c[0] for c in _DELTA_CASES])
def test_bundlefmt_delta_descriptor_rules(case: str, edit: Any, message: str) -> None:
    """bundlefmt.py lines 321 (``total = 0`` -> ``1``), 333/334, 339 (``and`` -> ``or``),
    348/349, 352/353, 361/362, 373/374, 376/377, 381/382, 384/385 and 393/394 (each check's
    comparison flipped or its ``raise`` -> ``pass``): the good descriptor reads back as
    itself, and each broken one is a FormatError naming delta.json's fault (in-process; the
    delta CLI tests build real deltas but never these)."""
    from installer.errors import FormatError
    from installer.format import bundlefmt, canonjson
    manifest, mbytes, good = _delta_world()
    assert bundlefmt.parse_delta(good.to_bytes(), manifest, mbytes) == good
    image = manifest.member("images/app-2.0.0.tar")
    assert bundlefmt.delta_payload(manifest, good) == [
        manifest.member("k3s/k3s"),
        bundlefmt.Member(image.path, 100, "", image.mode, image.kind)]
    data = canonjson.encode(edit(json.loads(good.to_bytes())))
    with pytest.raises(FormatError, match=message):
        bundlefmt.parse_delta(data, manifest, mbytes)


def test_bundlefmt_images_member_must_be_an_image_archive() -> None:
    """bundlefmt.py line 180 (``raise`` -> ``pass``): a member of kind images under
    ``images/`` whose name K3s would not import (a ``.txt`` pre-pull list) is refused."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    with pytest.raises(FormatError, match=r"'images/pull\.txt' of kind images is not an image "
                                          r"archive \(expected \.tar, \.tar\.zst"):
        bundlefmt.check_member_path("images/pull.txt", "images")
    bundlefmt.check_member_path("images/app.tar.zst", "images")


def test_bundlefmt_writer_refuses_a_manifest_that_does_not_round_trip() -> None:
    """bundlefmt.py line 421/422 (``!=`` -> ``==``, ``raise`` -> ``pass``): a manifest whose
    bytes read back as another manifest (roles given as a list, read back as a tuple) is not
    written; a good one is."""
    from dataclasses import replace

    from installer.errors import FormatError
    from installer.format import bundlefmt
    from tests.bundles import _members, manifest_for
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    assert bundlefmt.check_for_write(manifest) == manifest.to_bytes()
    odd = replace(manifest, roles=list(manifest.roles))  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="does not survive its own encoding"):
        bundlefmt.check_for_write(odd)


def _envelope_tar(smalls: Any) -> Any:
    import io
    import tarfile

    from tests.bundles import _members, manifest_for
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", manifest.to_bytes())] + list(smalls):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_bundlefmt_envelope_limits() -> None:
    """bundlefmt.py line 45 (``MAX_HEADER_MEMBER`` 4 MiB -> 5 MiB / 4100 KiB), 46
    (``MAX_HEADER_TOTAL`` 8 MiB -> 9 MiB / 8200 KiB), 47 (``MAX_ROOTS`` 256 -> 257) and 553
    (the metadata count starting at 1, not 0): the
    envelope's limits are exactly the documented ones, checked before the bytes are read."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    limit = bundlefmt.MAX_HEADER_MEMBER
    assert (limit, bundlefmt.MAX_HEADER_TOTAL, bundlefmt.MAX_ROOTS) == (4 << 20, 8 << 20, 256)

    def header(smalls: Any) -> Any:
        return bundlefmt.BundleReader(_envelope_tar(smalls), what="b.tar").header()

    with pytest.raises(FormatError, match=r"'roots/1.root.json' is 4194305 bytes, over the "
                                          r"4194304 limit"):
        header([("signatures.json", b"{}"), ("roots/1.root.json", b" " * (limit + 1))])
    assert len(header([("signatures.json", b"{}"), ("roots/1.root.json", b" " * limit)])
               .roots[0]) == limit
    with pytest.raises(FormatError, match=r"exceed 8388608 bytes together"):
        header([("signatures.json", b" " * limit), ("roots/1.root.json", b" " * limit)])
    manifest_bytes = bundlefmt.BundleReader(_envelope_tar([("signatures.json", b"")])) \
        .header().manifest_bytes
    rest = bundlefmt.MAX_HEADER_TOTAL - limit - len(manifest_bytes)
    full = header([("signatures.json", b" " * limit), ("roots/1.root.json", b" " * rest)])
    assert len(full.roots[0]) == rest  # exactly MAX_HEADER_TOTAL together is allowed
    chain = [(f"roots/{n}.root.json", b"{}") for n in range(1, 258)]
    assert len(header([("signatures.json", b"{}")] + chain[:256]).roots) == 256
    with pytest.raises(FormatError, match=r"the root chain holds more than 256 roots"):
        header([("signatures.json", b"{}")] + chain)


def _unsigned_manifest_and_members() -> "tuple[Any, Dict[str, bytes]]":
    """The manifest of a default 2.0.0 bundle and each member's bytes by path."""
    from tests.bundles import _members, manifest_for
    spec = default_spec("2.0.0")
    pairs = _members(spec)
    return manifest_for(spec, [m for m, _ in pairs]), {m.path: d for m, d in pairs}


def test_bundlefmt_writer_refuses_a_member_shorter_than_its_size() -> None:
    """bundlefmt.py line 504 (``raise`` -> ``pass``): a member whose chunks end before its
    manifest size is refused ("37 bytes, the manifest says 38") before its padding or any
    later member is produced."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    manifest, data = _unsigned_manifest_and_members()
    out = []
    chunks = bundlefmt.iter_bundle(
        manifest=manifest, signatures=bundlefmt.unsigned_signatures(), roots=[],
        member_chunks=lambda m: [data[m.path][:-1] if m.path == "k3s/k3s" else data[m.path]])
    with pytest.raises(FormatError, match=r"'k3s/k3s': 37 bytes, the manifest says 38"):
        for chunk in chunks:
            out.append(chunk)
    assert out[-1] == data["k3s/k3s"][:-1]


def test_bundlefmt_writer_stops_at_a_member_longer_than_its_size() -> None:
    """bundlefmt.py line 501 (``raise`` -> ``pass``): a member whose chunks run past its
    manifest size is refused at the first extra chunk, which is never produced."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    manifest, data = _unsigned_manifest_and_members()
    out = []
    chunks = bundlefmt.iter_bundle(
        manifest=manifest, signatures=bundlefmt.unsigned_signatures(), roots=[],
        member_chunks=lambda m: [data[m.path], b"EXTRA"] if m.path == "k3s/k3s"
        else [data[m.path]])
    with pytest.raises(FormatError, match=r"'k3s/k3s': more than its 38 bytes"):
        for chunk in chunks:
            out.append(chunk)
    assert b"EXTRA" not in b"".join(out)


def test_bundlefmt_delta_bundle_round_trip_in_process() -> None:
    """bundlefmt.py line 486 (``small.insert(0, delta.json)`` -> ``insert(1, ...)``), 546
    (``delta_ok`` default ``False`` -> ``True``), 588/589/590 (the plain reader's "is a delta
    bundle" refusal) and 659 (``n < 0`` -> ``<= 0`` / ``< 1``: ``read(0)`` is empty): a delta
    written by ``iter_bundle`` reads back with its descriptor first, only with ``delta_ok``."""
    import io

    from installer.errors import FormatError
    from installer.format import bundlefmt
    from tests.bundles import _members
    manifest, mbytes, good = _delta_world()
    data = {m.path: d for m, d in _members(default_spec("2.0.0"))}
    blob = b"".join(bundlefmt.iter_bundle(
        manifest=manifest, signatures=bundlefmt.unsigned_signatures(), roots=[], delta=good,
        member_chunks=lambda m: [data[m.path][:m.size]]))
    with pytest.raises(FormatError, match=r"d.tar is a delta bundle: it holds only what its "
                                          r"base lacks"):
        bundlefmt.BundleReader(io.BytesIO(blob), what="d.tar").header()
    reader = bundlefmt.BundleReader(io.BytesIO(blob), what="d.tar", delta_ok=True)
    assert reader.header().manifest_bytes == mbytes and reader.delta == good
    got = []
    for member, f in reader.payload():
        assert f.read(0) == b""
        got.append((member.path, f.read()))
    assert got == [("k3s/k3s", data["k3s/k3s"]),
                   ("images/app-2.0.0.tar", data["images/app-2.0.0.tar"][:100])]


# --- place.py, in process (fast): a tmp root driven through place.prepare/apply/undo directly.

_IMG = "var/lib/rancher/k3s/agent/images/"
_BIN = "usr/local/bin/k3s"
_CHART = "var/lib/rancher/k3s/server/static/charts/c.tgz"
_MAN = "var/lib/rancher/k3s/server/manifests/m.yaml"


def _release(root: Path, digest_char: str, files: Dict[str, bytes],
             modes: Optional[Dict[str, int]] = None) -> Release:
    modes = modes or {}
    digest = digest_char * 64
    targets = []
    for n, (target, data) in enumerate(files.items()):
        member = f"files/{n}"
        src = root / AIRGAP_DIR / "releases" / digest / member
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        targets.append(Target(target=target, member=member,
                              sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                              mode=modes.get(target, 0o644)))
    script = Target(target="", member="install.sh", sha256="0" * 64, size=0, mode=0o755)
    return Release(digest=digest, name="t", version=digest_char, arch="amd64",
                   k3s_version="v1", role="server", options=Options(),
                   targets=tuple(targets), script=script)


def _src(root: Path, rel: Release, target: str) -> Path:
    t = next(t for t in rel.targets if t.target == target)
    return root / AIRGAP_DIR / "releases" / rel.digest / t.member


def _ino(p: Path) -> int:
    return os.lstat(p).st_ino


def test_place_apply_fresh_order_links_and_modes(tmp_path: Path) -> None:
    """place.py apply/put (group order, ``startswith`` filter, hit names, link + chmod, no temp
    left): a first install places every group in order, each file a link of the kept copy."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_BIN: b"bin", _IMG + "a.tar": b"img", _CHART: b"chart",
                                   _MAN: b"man"}, {_BIN: 0o755})
    hits: List[str] = []
    place.apply(lay, None, new, hit=hits.append)
    assert hits == ["after-place-images", "after-place-charts", "after-place-manifests",
                    "after-place-config", "after-place-binary", "after-remove-old"]
    for t in new.targets:
        dest = tmp_path / t.target
        assert _ino(dest) == _ino(_src(tmp_path, new, t.target))
        assert stat.S_IMODE(os.lstat(dest).st_mode) == t.mode
        assert not any(n.startswith(LIVE_TMP_PREFIX) for n in os.listdir(dest.parent))


def test_place_apply_stops_after_a_group_leaves_later_groups_unplaced(tmp_path: Path) -> None:
    """place.py apply (``continue`` on another group's prefix): killed at after-place-images,
    only the archives are live."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_BIN: b"bin", _IMG + "a.tar": b"img"})

    def hit(name: str) -> None:
        if name == "after-place-images":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        place.apply(lay, None, new, hit=hit)
    assert (tmp_path / _IMG / "a.tar").exists() and not (tmp_path / _BIN).exists()


def test_place_upgrade_keeps_unchanged_and_old_images_until_commit(tmp_path: Path) -> None:
    """place.py _already_placed (unchanged archive kept by inode), apply's old-only removal
    (not images), remove_replaced_images (only old-only images, returned)."""
    lay = Layout(root=str(tmp_path))
    old = _release(tmp_path, "a", {_IMG + "same.tar": b"same", _IMG + "gone.tar": b"gone",
                                   _MAN: b"old-man", "usr/local/bin/old": b"x"})
    place.apply(lay, None, old, hit=lambda _: None)
    new = _release(tmp_path, "b", {_IMG + "same.tar": b"same", _MAN: b"new-man"})
    place.apply(lay, old, new, hit=lambda _: None)
    assert _ino(tmp_path / _IMG / "same.tar") == _ino(_src(tmp_path, old, _IMG + "same.tar"))
    assert (tmp_path / _MAN).read_bytes() == b"new-man"
    assert not (tmp_path / "usr/local/bin/old").exists()
    assert (tmp_path / _IMG / "gone.tar").read_bytes() == b"gone"
    assert place.remove_replaced_images(lay, old, new) == [_IMG + "gone.tar"]
    assert not (tmp_path / _IMG / "gone.tar").exists()
    assert (tmp_path / _IMG / "same.tar").exists()
    assert place.remove_replaced_images(lay, None, new) == []


def test_place_already_placed_compares_size_mode_and_hash(tmp_path: Path) -> None:
    """place.py _already_placed: an equal copy (other inode) is left; a wrong mode, size or
    content, or a symlink, is replaced."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_IMG + "a.tar": b"aaaa", _IMG + "b.tar": b"bbbb",
                                   _IMG + "c.tar": b"cccc", _IMG + "d.tar": b"dddd",
                                   _IMG + "e.tar": b"eeee"})
    d = tmp_path / _IMG
    d.mkdir(parents=True)
    (d / "a.tar").write_bytes(b"aaaa")
    os.chmod(d / "a.tar", 0o644)
    (d / "b.tar").write_bytes(b"bbbb")
    os.chmod(d / "b.tar", 0o600)
    (d / "c.tar").write_bytes(b"ccccc")
    os.chmod(d / "c.tar", 0o644)
    (d / "d.tar").write_bytes(b"DDDD")
    os.chmod(d / "d.tar", 0o644)
    os.symlink(_src(tmp_path, new, _IMG + "e.tar"), d / "e.tar")
    equal = _ino(d / "a.tar")
    place.apply(lay, None, new, hit=lambda _: None)
    assert _ino(d / "a.tar") == equal
    for n in "bcde":
        assert _ino(d / f"{n}.tar") == _ino(_src(tmp_path, new, _IMG + f"{n}.tar")), n


def test_place_put_copies_when_a_link_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """place.py put (``e.errno not in _NO_LINK`` / ``raise``): os.link refused with EXDEV (the
    kernel fault of another filesystem, injected) is a verified copy with the target mode;
    any other link error is raised."""
    lay = Layout(root=str(tmp_path))
    new = _release(tmp_path, "b", {_BIN: b"bin"}, {_BIN: 0o755})

    def exdev(*a: Any, **k: Any) -> None:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "link", exdev)
    place.apply(lay, None, new, hit=lambda _: None)
    dest = tmp_path / _BIN
    assert dest.read_bytes() == b"bin"
    assert _ino(dest) != _ino(_src(tmp_path, new, _BIN))
    assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o755
    assert not any(n.startswith(LIVE_TMP_PREFIX) for n in os.listdir(dest.parent))

    def eacces(*a: Any, **k: Any) -> None:
        raise OSError(errno.EACCES, "denied")

    monkeypatch.setattr(os, "link", eacces)
    dest.unlink()
    with pytest.raises(PermissionError):
        place.apply(lay, None, new, hit=lambda _: None)


def test_place_put_replaces_a_stale_temp_and_same_inode(tmp_path: Path) -> None:
    """place.py put (stale temp name removed; a rename onto the same inode leaves no temp)."""
    src = tmp_path / "src"
    src.write_bytes(b"x")
    dest = tmp_path / "d" / "f"
    dest.parent.mkdir()
    (dest.parent / (LIVE_TMP_PREFIX + "f")).write_bytes(b"stale")
    place.put(str(src), str(dest), sha256=None, size=None, mode=0o600)
    assert _ino(dest) == _ino(src) and os.listdir(dest.parent) == ["f"]
    place.put(str(src), str(dest), sha256=None, size=None, mode=0o600)
    assert _ino(dest) == _ino(src) and os.listdir(dest.parent) == ["f"]
    assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o600


def test_place_prepare_records_and_undo_restores(tmp_path: Path) -> None:
    """place.py prepare (absent / release / backup records, 5-digit names, folder refused) and
    undo (each kind put back, idempotent)."""
    lay = Layout(root=str(tmp_path))
    old = _release(tmp_path, "a", {_IMG + "o.tar": b"old", _MAN: b"old-man"})
    place.apply(lay, None, old, hit=lambda _: None)
    os.unlink(_src(tmp_path, old, _MAN))          # kept copy gone: backed up instead
    foreign = tmp_path / _CHART
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"operator")
    os.chmod(foreign, 0o640)
    link = tmp_path / "usr/local/bin/k3s"
    link.parent.mkdir(parents=True)
    os.symlink("/elsewhere", link)
    new = _release(tmp_path, "b", {_IMG + "n.tar": b"new", _CHART: b"chart", _BIN: b"bin",
                                   _IMG + "o.tar": b"changed"})
    backup = tmp_path / "backup"
    records = place.prepare(lay, str(backup), old, new=new)
    assert records == [
        {"target": _IMG + "n.tar", "kind": "absent"},
        {"target": _CHART, "kind": "backup", "backup": "00001"},
        {"target": _BIN, "kind": "backup", "backup": "00002"},
        {"target": _IMG + "o.tar", "kind": "release"},
        {"target": _MAN, "kind": "backup", "backup": "00004"},
    ]
    assert os.readlink(backup / "00002") == "/elsewhere"
    place.apply(lay, old, new, hit=lambda _: None)
    assert not (tmp_path / _MAN).exists()
    for _ in range(2):
        place.undo(lay, str(backup), old, records=records)
        assert not (tmp_path / _IMG / "n.tar").exists()
        assert foreign.read_bytes() == b"operator"
        assert stat.S_IMODE(os.lstat(foreign).st_mode) == 0o640
        assert os.readlink(link) == "/elsewhere"
        assert (tmp_path / _IMG / "o.tar").read_bytes() == b"old"
        assert (tmp_path / _MAN).read_bytes() == b"old-man"
    (tmp_path / _IMG / "n.tar").mkdir()
    with pytest.raises(place.EnvironmentProblem, match="is a folder where a file must go"):
        place.prepare(lay, str(tmp_path / "b2"), old, new=new)


def test_place_backup_copies_when_a_link_is_refused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """place.py _backup (EXDEV -> copy with the file's mode; another error raised)."""
    lay = Layout(root=str(tmp_path))
    foreign = tmp_path / _CHART
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"operator")
    os.chmod(foreign, 0o640)
    new = _release(tmp_path, "b", {_CHART: b"chart"})

    def fail(code: int) -> Callable[..., None]:
        def link(*a: Any, **k: Any) -> None:
            raise OSError(code, os.strerror(code))
        return link

    monkeypatch.setattr(os, "link", fail(errno.EXDEV))
    place.prepare(lay, str(tmp_path / "bk"), None, new=new)
    saved = tmp_path / "bk" / "00000"
    assert saved.read_bytes() == b"operator" and _ino(saved) != _ino(foreign)
    assert stat.S_IMODE(os.lstat(saved).st_mode) == 0o640
    monkeypatch.setattr(os, "link", fail(errno.EACCES))
    with pytest.raises(PermissionError):
        place.prepare(lay, str(tmp_path / "bk2"), None, new=new)


def test_place_sweep_and_foreign_files(tmp_path: Path) -> None:
    """place.py sweep_temp_files (only our temp names, missing folders skipped) and
    foreign_files (sorted, dotfiles and our files left out, no folder -> [])."""
    lay = Layout(root=str(tmp_path))
    assert place.foreign_files(lay, None) == []
    place.sweep_temp_files(lay)
    rel = _release(tmp_path, "b", {_IMG + "ours.tar": b"o"})
    place.apply(lay, None, rel, hit=lambda _: None)
    d = tmp_path / _IMG
    for n in ("z.tar", "b.tar", ".hidden", LIVE_TMP_PREFIX + "x"):
        (d / n).write_bytes(b"f")
    (d / (LIVE_TMP_PREFIX + "dir")).mkdir()
    assert place.foreign_files(lay, rel) == [_IMG + "b.tar", _IMG + "z.tar"]
    assert place.foreign_files(lay, None) == [_IMG + "b.tar", _IMG + "ours.tar", _IMG + "z.tar"]
    place.sweep_temp_files(lay)
    assert sorted(os.listdir(d)) == sorted([".hidden", LIVE_TMP_PREFIX + "dir", "b.tar",
                                            "ours.tar", "z.tar"])


def test_place_union_targets_new_first_then_old_leftovers(tmp_path: Path) -> None:
    """place.py union_targets (``not in`` dedup, old None)."""
    old = _release(tmp_path, "a", {"x": b"1", "y": b"2"})
    new = _release(tmp_path, "b", {"y": b"3", "z": b"4"})
    assert place.union_targets(old, new) == ["y", "z", "x"]
    assert place.union_targets(None, new) == ["y", "z"]


def test_place_rerun_and_unchanged_archive_are_not_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """place.py line 132 (``return True`` -> ``False``) and line 133 (``old_src is not None``
    -> ``is None``): a file already linked from the kept copy, and an archive the old release
    placed with the same sha256, are recognised by inode: never hashed or placed again (a
    re-run does not read gigabytes of archives; K3s does not re-import an unchanged one)."""
    lay = Layout(root=str(tmp_path))
    old = _release(tmp_path, "a", {_IMG + "same.tar": b"same"})
    place.apply(lay, None, old, hit=lambda _: None)
    new = _release(tmp_path, "b", {_IMG + "same.tar": b"same", _MAN: b"new"})
    hashed: List[str] = []
    real = place.hash_file

    def spy(path: Any) -> Any:
        hashed.append(str(path))
        return real(path)

    monkeypatch.setattr(place, "hash_file", spy)
    place.apply(lay, old, new, hit=lambda _: None)
    assert hashed == []
    assert _ino(tmp_path / _IMG / "same.tar") == _ino(_src(tmp_path, old, _IMG + "same.tar"))
    real_put = place.put
    puts: List[str] = []

    def put_spy(src: str, dest: str, **kw: Any) -> None:
        puts.append(dest)
        real_put(src, dest, **kw)

    monkeypatch.setattr(place, "put", put_spy)
    place.apply(lay, old, new, hit=lambda _: None)  # the same change run again
    assert hashed == [] and puts == []  # nothing re-linked: the live folders see no event
    assert _ino(tmp_path / _MAN) == _ino(_src(tmp_path, new, _MAN))


def test_place_undo_skips_a_backup_that_is_gone(tmp_path: Path) -> None:
    """place.py line 187 (``and`` -> ``or``): undo of a backup record whose kept file is gone
    (a repeated undo after the tx folder was cleaned) leaves the live path alone, no error."""
    lay = Layout(root=str(tmp_path))
    live_file = tmp_path / _CHART
    live_file.parent.mkdir(parents=True)
    live_file.write_bytes(b"now")
    records = [{"target": _CHART, "kind": "backup", "backup": "00000"}]
    place.undo(lay, str(tmp_path / "no-backup"), None, records=records)
    assert live_file.read_bytes() == b"now"


def test_place_listing_follows_folder_symlinks_inside_the_root_only(tmp_path: Path) -> None:
    """place.py line 208 / line 223 (``follow=True`` -> ``False``): a managed folder that is an
    absolute symlink is resolved inside the root (THREATS 32), so sweep_temp_files never
    removes, and foreign_files never lists, files of the host folder the link names."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / (LIVE_TMP_PREFIX + "host")).write_bytes(b"host's")
    (outside / "host.tar").write_bytes(b"host's")
    root = tmp_path / "root"
    for rel in ("usr/local/bin", _IMG.rstrip("/")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(str(outside), root / rel)
    inside = root / str(outside).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "in.tar").write_bytes(b"ours")
    (inside / (LIVE_TMP_PREFIX + "in")).write_bytes(b"tmp")
    lay = Layout(root=str(root))
    assert place.foreign_files(lay, None) == [_IMG + "in.tar"]
    place.sweep_temp_files(lay)
    assert sorted(os.listdir(outside)) == [LIVE_TMP_PREFIX + "host", "host.tar"]
    assert os.listdir(inside) == ["in.tar"]


def test_place_hand_written_registries_yaml_kept_and_put_back(tmp_path: Path) -> None:
    """place.py _keep_registries / _restore_registries: a hand-written registries.yaml is kept
    aside (content and mode) when a release brings its own, and put back when a release
    without one replaces it; nothing is kept when the old release owned the file, when the new
    one has none, or when there is none; a folder in either place is left alone."""
    lay = Layout(root=str(tmp_path))
    live_reg, kept = tmp_path / REGISTRIES_TARGET, tmp_path / REGISTRIES_KEPT
    plain = _release(tmp_path, "a", {_MAN: b"m"})
    assert place.apply(lay, None, plain, hit=lambda _: None) == []   # none there, none brought
    live_reg.parent.mkdir(parents=True)
    live_reg.write_bytes(b"mine")
    os.chmod(live_reg, 0o600)
    assert place.apply(lay, plain, plain, hit=lambda _: None) == []  # none brought: left alone
    assert live_reg.read_bytes() == b"mine" and not kept.exists()
    mirrors = _release(tmp_path, "b", {_MAN: b"m", REGISTRIES_TARGET: b"bundle's"})
    notes = place.apply(lay, plain, mirrors, hit=lambda _: None)
    assert len(notes) == 1 and f"kept the hand-written /{REGISTRIES_TARGET}" in notes[0]
    assert f"as /{REGISTRIES_KEPT}: bundle t b brings its own" in notes[0]
    assert kept.read_bytes() == b"mine" and stat.S_IMODE(os.lstat(kept).st_mode) == 0o600
    assert live_reg.read_bytes() == b"bundle's"
    mirrors2 = _release(tmp_path, "c", {_MAN: b"m", REGISTRIES_TARGET: b"bundle's 2"})
    assert place.apply(lay, mirrors, mirrors2, hit=lambda _: None) == []  # old owned it
    assert kept.read_bytes() == b"mine" and live_reg.read_bytes() == b"bundle's 2"
    plain2 = _release(tmp_path, "d", {_MAN: b"m2"})
    notes = place.apply(lay, mirrors2, plain2, hit=lambda _: None)
    assert notes == [f"put the hand-written /{REGISTRIES_TARGET} back from /{REGISTRIES_KEPT}"]
    assert live_reg.read_bytes() == b"mine" and not kept.exists()
    # the bundle's file removed with no kept one: no note, nothing there
    place.apply(lay, plain2, mirrors2, hit=lambda _: None)
    kept.unlink()
    assert place.apply(lay, mirrors2, plain2, hit=lambda _: None) == []
    assert not live_reg.exists()
    # a folder where the kept copy would be: not put back
    place.apply(lay, plain2, mirrors2, hit=lambda _: None)
    kept.mkdir()
    assert place.apply(lay, mirrors2, plain2, hit=lambda _: None) == []
    assert kept.is_dir() and not live_reg.exists()
    kept.rmdir()
    # a folder where registries.yaml goes: nothing kept (the placing then fails on it)
    live_reg.mkdir()
    with pytest.raises(OSError):
        place.apply(lay, plain2, mirrors2, hit=lambda _: None)
    assert live_reg.is_dir() and not kept.exists()


def test_txn_install_sh_past_its_timeout_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """txn.py line 86 (``raise`` -> ``pass`` on ``TimeoutExpired``): an install.sh that
    outlives the timeout is an EnvironmentProblem naming the release and the limit, not an
    UnboundLocalError. The real script runs; only the limit is shortened (3600 s -> 1 s)."""
    from types import SimpleNamespace

    from installer import errors
    from installer.host import txn
    from installer.host.layout import Layout
    layout = Layout(root=str(tmp_path))
    digest = "a" * 64
    script = Path(layout.release_file(digest, "bin/install.sh"))
    script.parent.mkdir(parents=True)
    script.write_text("sleep 30\n")
    release = SimpleNamespace(digest=digest, name="edge", version="1.0.0", role="server",
                              script=SimpleNamespace(member="bin/install.sh"),
                              options=SimpleNamespace(exec_args="", url=None, token_file=None,
                                                      skip_start=True))
    monkeypatch.setattr(txn, "SCRIPT_TIMEOUT", 1)
    with open(os.devnull, "w") as sink, \
            pytest.raises(errors.EnvironmentProblem, match="did not finish in 1 s"):
        txn.run_script(layout, release, sink)  # type: ignore[arg-type]
