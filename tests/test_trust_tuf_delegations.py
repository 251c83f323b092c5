"""The device's TUF client, delegations (spec 5.6.7): pre-order depth-first search, each role
fetched lazily and once, ``terminating``, path patterns (``*`` never crosses ``/``),
``path_hash_prefixes`` (hash bins), the visit cap, unusual role names, and a role reached
through a second delegator checked against that delegator's keys."""

import hashlib
import urllib.parse
from typing import List, Optional, Sequence, Tuple

import pytest
from tuf.api.metadata import DelegatedRole, Delegations

from installer.errors import SignatureError
from installer.trust import tufupdater
from tests.tufrepo import Device, Repo, new_signer

# (parent, child, paths, terminating)
Edge = Tuple[str, str, Sequence[str], bool]

GRAPHS = {
    "single": ([("targets", "A", ["*"], False)], ["A"]),
    "two at one level": ([("targets", "A", ["*"], False), ("targets", "B", ["*"], False)],
                         ["A", "B"]),
    "dfs order": ([("targets", "A", ["*"], False), ("targets", "B", ["*"], False),
                   ("A", "C", ["*"], False), ("A", "D", ["*"], False)], ["A", "C", "D", "B"]),
    "terminating stops the search": ([("targets", "A", ["*"], False),
                                      ("targets", "B", ["*"], False),
                                      ("A", "C", ["*"], True), ("A", "D", ["*"], False)],
                                     ["A", "C"]),
    "unmatched path skipped": ([("targets", "A", ["*.py"], False),
                                ("targets", "B", ["*"], False)], ["B"]),
    "cycle visited once": ([("targets", "A", ["*"], False), ("A", "B", ["*"], False),
                            ("B", "C", ["*"], False), ("C", "A", ["*"], False),
                            ("C", "D", ["*"], False)], ["A", "B", "C", "D"]),
    "two delegators of one role": ([("targets", "A", ["*"], False),
                                    ("targets", "B", ["*"], False),
                                    ("A", "C", ["*"], False), ("B", "C", ["*"], False)],
                                   ["A", "C", "B"]),
}


def _build(edges: Sequence[Edge]) -> Repo:
    repo = Repo()
    for parent, child, paths, terminating in edges:
        if child in repo.md:    # a second delegator: same role, the delegator's own key
            t = repo.targets(parent)
            if t.delegations is None:
                t.delegations = Delegations({}, roles={})
            assert t.delegations.roles is not None
            t.delegations.roles[child] = DelegatedRole(child, [], 1, terminating, list(paths))
            key = repo.signers[child][0].public_key
            t.add_key(key, child)
            continue
        repo.delegate(parent, child, paths=list(paths), terminating=terminating)
    roles = [e[1] for e in edges] + ["targets"]
    repo.publish(list(dict.fromkeys(reversed(roles))))
    return repo


def _visited(repo: Repo) -> List[str]:
    return [r.split(".", 1)[1][:-5] for r in repo.requests[4:]]


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_search_order(name: str) -> None:
    edges, order = GRAPHS[name]
    repo = _build(edges)
    dev = Device(repo)
    assert dev.find("missing") is None and dev.error is None
    assert _visited(repo) == order


SEARCH = [
    ("no delegations", "targetpath", "targets", []),
    ("matches wildcard", "foo.doc", "A", ["A"]),
    ("separators x", "releases/x/x_v1", "C", ["B", "C"]),
    ("separators y", "releases/y/y_v1.zip", "D", ["B", "D"]),
    ("not delegated by every role in the chain", "releases/z/z_v1.zip", None, ["B"]),
    ("* does not match /", "foo/bar.doc", None, []),
    ("? matches one character", "foo-1.tgz", "A", ["A"]),
    ("? does not match two", "foo-10.tgz", None, []),
    ("matching is case sensitive", "FOO.DOC", None, []),
]


@pytest.mark.parametrize("name,path,role,visited", SEARCH, ids=[s[0] for s in SEARCH])
def test_target_search(name: str, path: str, role: Optional[str], visited: List[str]) -> None:
    repo = _build([("targets", "A", ["*.doc", "*.md", "foo-?.tgz"], False),
                   ("targets", "B", ["releases/*/*"], False),
                   ("B", "C", ["releases/x/*"], False),
                   ("B", "D", ["releases/y/*.zip"], False)])
    holder = role or "targets"
    repo.add_target(holder, path if role else "targetpath", b"data")
    repo.publish(list(dict.fromkeys([holder, "B", "targets"])) if holder in ("C", "D")
                 else [holder] if holder == "targets" else [holder, "targets"])
    dev = Device(repo)
    assert dev.find(path) == role, dev.error
    assert _visited(repo) == visited


def test_hash_bins() -> None:
    repo = Repo()
    path = "bins/file.txt"
    digest = hashlib.sha256(path.encode()).hexdigest()
    other = "0" if digest[0] != "0" else "1"
    repo.delegate("targets", "bin-other", prefixes=[other])
    repo.delegate("targets", "bin-right", prefixes=[digest[:2]])
    repo.add_target("bin-right", path, b"x")
    repo.publish(["bin-other", "bin-right", "targets"])
    dev = Device(repo)
    assert dev.find(path) == "bin-right", dev.error
    assert _visited(repo) == ["bin-right"]


def test_visits_are_capped() -> None:
    n = tufupdater.MAX_DELEGATIONS + 5
    repo = Repo()
    for i in range(n):
        repo.delegate("targets" if i == 0 else f"r{i - 1}", f"r{i}", paths=["*"])
    repo.add_target(f"r{n - 1}", "deep", b"x")
    repo.publish([f"r{i}" for i in range(n)] + ["targets"])
    dev = Device(repo)
    assert dev.find("deep") is None and dev.error is None
    assert len(_visited(repo)) == tufupdater.MAX_DELEGATIONS   # plus targets itself


@pytest.mark.parametrize("role", ["?", "#", "/delegatedrole", "../delegatedrole", "a b%"])
def test_unusual_role_names_are_quoted(role: str) -> None:
    repo = Repo()
    repo.delegate("targets", role, paths=["*"])
    repo.publish([role, "targets"])
    dev = Device(repo)
    assert dev.find("missing") is None and dev.error is None
    assert repo.requests[4:] == [f"1.{urllib.parse.quote(role, safe='')}.json"]
    assert role in dev.store.docs


def test_role_reached_through_another_delegator_is_checked_against_its_keys() -> None:
    """A diamond: parent-a and parent-b both delegate "release", each to its own key; release
    is signed by parent-a's key only. Found through parent-a it is trusted; reached through
    parent-b in the same session it must be checked against parent-b's key (python-tuf and
    go-tuf reuse it unchecked; tuf-conformance's test_cached_role_is_verified_against_current_
    delegator)."""
    repo = Repo()
    repo.delegate("targets", "parent-a", paths=["team-a/*"])
    repo.delegate("targets", "parent-b", paths=["team-b/*"])
    repo.delegate("parent-a", "release", paths=["*/*"])
    t = repo.targets("parent-b")
    t.delegations = Delegations({}, roles={"release": DelegatedRole("release", [], 1, False,
                                                                    ["*/*"])})
    t.add_key(new_signer().public_key, "release")
    repo.add_target("release", "team-a/file", b"A")
    repo.add_target("release", "team-b/file", b"B")
    repo.publish(["release", "parent-a", "parent-b", "targets"])
    dev = Device(repo)
    assert dev.refresh() and dev.updater is not None
    found = dev.updater.find_target("team-a/file")
    assert found is not None and found[1] == "release"
    with pytest.raises(SignatureError):
        dev.updater.find_target("team-b/file")
