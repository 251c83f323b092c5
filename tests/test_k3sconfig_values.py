"""`k3s_config` and `mirrors` values the device's YAML readers would refuse or misread, and
credentials in URLs (`bundler/spec/k3sconfig.py`; THREATS 56, issue 25 rows 7-9). Refused when
the spec is read (`bundle check`, exit 2, no traceback); what is accepted is written so that
libyaml (``yaml.CSafeLoader``, the C parser K3s's Go YAML agrees with) reads back exactly the
values of the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bundler.errors import SpecError
from bundler.spec import k3sconfig
from tests.cli_helpers import bundle

K3S = "v1.34.3+k3s1"


def _spec(folder: Path, extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "bundles.toml"
    spec.write_text("\n".join([
        "[k3s]", 'releases = "http://127.0.0.1:9/k3s"',
        'install_script = "http://127.0.0.1:9/install.sh"', "", "[bundles.demo]",
        'version = "1.0.0"', 'arch = ["amd64"]', f'k3s = "{K3S}"',
        "k3s_airgap_images = false", "images = []", "", extra]))
    return spec


def _fail(key: str, message: str, hint: str | None = None) -> SpecError:
    return SpecError(f"{key}: {message}", hint=hint)


def _libyaml(data: bytes) -> Any:
    return yaml.load(data, Loader=yaml.CSafeLoader)


@pytest.mark.parametrize("value", [
    "n\U0001F600", "\U0001F600" * 10, "caf\u00e9", "y", "n", "on", "off", "yes", "no", "null",
    "~", "0644", "1:20", "0x1F", "1e3", ".inf", "true", "- a", "a: b", "#x", "'q'", '"dq"',
    "back\\slash", "*alias", "&anchor", "!tag", "%x", "@x", "`x", "a" * 4000, " lead", "trail ",
])
def test_every_value_reads_back_through_libyaml(value: str) -> None:
    config = k3sconfig.check_k3s_config({"node-name": value, "node-label": [value, "x=y"],
                                         "disable-default-registry-endpoint": True},
                                        k3s=K3S, where="k3s_config", fail=_fail)
    data = k3sconfig.config_yaml("demo", config)
    assert _libyaml(data) == config
    assert b"\\ud83d" not in data.lower()   # never a surrogate-pair escape


def test_registries_read_back_through_libyaml() -> None:
    mirrors = k3sconfig.check_mirrors({
        "docker.io": {"endpoint": ["https://[::1]:5000/v2", "http://registry.site.local:5000"],
                      "rewrite": {"^rancher/(.*)": "mirror/\u00e9/$1"},
                      "ca_file": "/etc/ssl/ca \U0001F600.pem", "insecure_skip_verify": False},
        "*": {"endpoint": ["https://y"]}}, where="mirrors", fail=_fail)
    data = k3sconfig.registries_yaml("demo", mirrors)
    back = _libyaml(data)
    assert back["mirrors"]["docker.io"]["endpoint"][0] == "https://[::1]:5000/v2"
    assert back["configs"]["[::1]:5000"]["tls"]["ca_file"] == "/etc/ssl/ca \U0001F600.pem"
    assert back["mirrors"]["*"] == {"endpoint": ["https://y"]}


@pytest.mark.parametrize(("extra", "said"), [
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["http://[abc"]\n', "endpoint[0]"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r:99999999"]\n', "endpoint[0]"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r:0"]\n', "endpoint[0]"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r\\u0000x"]\n', "endpoint[0]"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r/\\u0085"]\n', "endpoint[0]"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r"]\nca_file = "/a\\u0000b"\n',
     "ca_file"),
    ('[bundles.demo.mirrors."docker.io"]\nendpoint = ["https://r"]\n'
     'rewrite = { "^a" = "b\\u0000" }\n', "rewrite"),
    ('[bundles.demo.k3s_config]\nnode-name = "a\\u0000b"\n', "control character"),
    ('[bundles.demo.k3s_config]\nnode-label = ["a\\nb"]\n', "control character"),
    ('[bundles.demo.k3s_config]\ndatastore-endpoint = "postgres://k3s:PASSWORD@db/k3s"\n',
     "URL with a password"),
    ('[bundles.demo.k3s_config]\ndatastore-endpoint = "mysql://u:p@tcp(db:3306)/k3s"\n',
     "URL with a password"),
    ('[bundles.demo.k3s_config]\netcd-s3-endpoint = "https://a:b@s3.site"\n',
     "URL with a password"),
])
def test_bad_values_are_refused_at_spec_load(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             extra: str, said: str) -> None:
    spec = _spec(tmp_path / "proj", extra)
    r = bundle(capsys, "--spec", str(spec), "check")
    assert r.code == 2, (r.code, r.out, r.err)
    assert said in r.err, r.err
    assert "Traceback" not in r.err + r.out
    assert "PASSWORD" not in r.err


def test_a_url_without_a_password_is_fine(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = k3sconfig.check_k3s_config(
        {"datastore-endpoint": "postgres://k3s@db/k3s?sslmode=verify-full"}, k3s=K3S,
        where="k3s_config", fail=_fail)
    assert _libyaml(k3sconfig.config_yaml("demo", config)) == config
