"""One error base for both packages, and the mapping of installer errors to `bundle` codes."""

from __future__ import annotations

import pytest

from bundler import errors as berrors
from bundler.cli import main
from installer import errors as ierrors

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


def test_mapping_covers_every_installer_code() -> None:
    assert set(berrors.FROM_INSTALLER) == set(ierrors.EXIT_CODES) - {0}


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
