"""One error base for both packages, and the mapping of installer errors to `bundle` codes."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from bundler import errors as berrors
from bundler.cli import main
from installer import errors as ierrors

REPO = Path(__file__).resolve().parent.parent

INSTALLER_FAMILIES = [ierrors.ConfigError, ierrors.UntrustedContent, ierrors.FormatError,
                      ierrors.UnsafeMember, ierrors.DigestMismatch, ierrors.SignatureError,
                      ierrors.PolicyRefusal, ierrors.TransferError, ierrors.EnvironmentProblem,
                      ierrors.HealthGateFailed]


def test_both_trees_share_one_base() -> None:
    assert issubclass(berrors.BundleError, ierrors.ToolError)
    assert issubclass(ierrors.InstallerError, ierrors.ToolError)
    e = berrors.SpecError("bad key x", hint="rename it")
    assert e.as_json() == {"code": 2, "kind": "SpecError", "message": "bad key x",
                           "hint": "rename it"}


@pytest.mark.parametrize("family", INSTALLER_FAMILIES, ids=lambda c: c.__name__)
def test_every_installer_code_keeps_its_number_in_bundle(family: type[ierrors.InstallerError]
                                                         ) -> None:
    code = berrors.exit_code_for(family("x"))
    assert code == family.exit_code
    assert code in berrors.EXIT_CODES  # documented in bundle's own table


def test_every_installer_code_is_in_bundles_table() -> None:
    assert set(ierrors.EXIT_CODES) <= set(berrors.EXIT_CODES)
    assert not hasattr(berrors, "FROM_INSTALLER")  # the identity map is gone


def _classes(package: str) -> Iterator[Tuple[Path, ast.ClassDef]]:
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                yield path, node


def _sets_exit_code(cls: ast.ClassDef) -> bool:
    return any(isinstance(stmt, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "exit_code" for t in stmt.targets)
        for stmt in cls.body)


@pytest.mark.parametrize("package", ["installer", "bundler"])
def test_exit_codes_only_on_the_families_in_errors_py(package: str) -> None:
    outside = [f"{p.relative_to(REPO)}:{c.name}" for p, c in _classes(package)
               if _sets_exit_code(c) and p.name != "errors.py"]
    assert outside == []


def test_error_classes_have_distinct_names_across_both_trees() -> None:
    defined: Dict[str, List[str]] = {}
    for package in ("installer", "bundler"):
        for p, c in _classes(package):
            if c.name.endswith(("Error", "Refusal", "Problem", "Failed", "Mismatch", "Bundle",
                                "Content", "Member", "Input")):
                defined.setdefault(c.name, []).append(str(p.relative_to(REPO)))
    twice = {n: ps for n, ps in defined.items() if len(ps) > 1}
    assert twice == {}


def test_repository_refusals_are_families_of_errors_py() -> None:
    from bundler.repo.repostore import RepoRefusal, UntrustedBundle
    assert issubclass(RepoRefusal, berrors.RefusedError) and RepoRefusal("x").exit_code == 4
    assert issubclass(UntrustedBundle, berrors.UntrustedInput)
    assert UntrustedBundle("x").exit_code == 3
    assert issubclass(berrors.UpstreamError, berrors.UntrustedInput)
    assert berrors.exit_code_for(berrors.FetchError("x")) == 5


def test_an_installer_policy_refusal_exits_4_from_bundle(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Through `main`, the one place errors become exit codes (was 1 before)."""
    from bundler.cli import app

    def refuse(*_: object, **__: object) -> None:
        raise ierrors.PolicyRefusal("bundle for arm64, host is amd64", hint="use the amd64 one")

    monkeypatch.setattr(app.cli, "main", refuse)
    with pytest.raises(SystemExit) as e:
        main(["verify", "x"])
    assert e.value.code == 4
    assert "hint: use the amd64 one" in capsys.readouterr().err
