"""The default health gate of `airgap-install sync` (no --health-cmd): K3s's /readyz, then every
kube-system Deployment Available, asked through `k3s kubectl`. The bundle's K3s binary here is a
stand-in script that answers those two commands as a ready, not-ready or stuck cluster would
(the one thing a test host cannot run is a real K3s server), and logs what it was asked."""

import json
import shlex
from pathlib import Path
from typing import List

from bundler.repo import ringops
from installer.commands import sync

from .bundles import REPO, KeyDir, cli, default_spec, write_spec
from .test_rings_e2e import do_sync, installed, ok

STAND_IN = b"""#!/bin/sh
# stand-in for `k3s kubectl`: the cluster state is the file $AIRGAP_ROOT/cluster-state
echo "$*" >> "$AIRGAP_ROOT/k3s-calls"
state=$(cat "$AIRGAP_ROOT/cluster-state" 2>/dev/null || echo ready)
case "$1 $2" in
  "kubectl get")
    if [ "$state" = not-ready ]; then echo "[-]etcd failed: readyz check failed" >&2; exit 1; fi
    echo ok; exit 0 ;;
  "kubectl -n")
    if [ "$state" = deployments-down ]; then
      echo "error: timed out waiting for the condition on deployments/coredns" >&2; exit 1
    fi
    echo "deployment.apps/coredns condition met"; exit 0 ;;
esac
echo "stand-in k3s: unexpected arguments: $*" >&2; exit 2
"""


def _expected_calls() -> List[str]:
    """What the default command asks `k3s`, from sync.DEFAULT_HEALTH itself."""
    calls = []
    for part in sync.DEFAULT_HEALTH.split(" && "):
        words = shlex.split(part)
        assert words[0] == "k3s"
        calls.append(" ".join(words[1:]))
    return calls


def test_default_health_command_gates_and_rolls_back(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    ringops.init_repo(r, kd.path)
    root = tmp_path / "dev"
    ok(cli("trust", r / "metadata" / "1.root.json", "--root", root, "--ring", "canary"))
    calls = root / "k3s-calls"
    state = root / "cluster-state"

    def publish(version: str) -> None:
        spec = default_spec(version)
        spec.binary = STAND_IN
        ringops.publish([write_spec(spec, kd, tmp_path / "b")], directory=r, keys_dir=kd.path,
                     ring="canary")

    publish("1.0.0")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("ready\n")
    res = json.loads(ok(do_sync(root, r, "--server", "--skip-start")))
    assert res["action"] == "installed" and installed(root) == "1.0.0"
    assert calls.read_text().splitlines() == _expected_calls()

    # /readyz fails: the new version is rolled back and marked failed (THREATS 25)
    publish("1.1.0")
    calls.unlink()
    state.write_text("not-ready\n")
    p = do_sync(root, r, "--health-timeout", "1", "--health-interval", "0.2")
    assert p.returncode == 7, p.stdout + p.stderr
    assert "readyz check failed" in p.stderr and "Traceback" not in p.stderr
    assert installed(root) == "1.0.0"
    asked = calls.read_text().splitlines()
    assert asked and set(asked) == {_expected_calls()[0]}  # && stops at the first failure

    # /readyz passes but the kube-system Deployments do not become Available
    publish("1.2.0")
    calls.unlink()
    state.write_text("deployments-down\n")
    p = do_sync(root, r, "--health-timeout", "1", "--health-interval", "0.2")
    assert p.returncode == 7 and "deployments/coredns" in p.stderr, p.stderr
    assert installed(root) == "1.0.0"
    assert calls.read_text().splitlines()[:2] == _expected_calls()

    # the cluster recovers: the failed versions are not retried, the newest listed is
    state.write_text("ready\n")
    publish("1.3.0")
    res = json.loads(ok(do_sync(root, r)))
    assert res["action"] == "installed" and installed(root) == "1.3.0"


def test_docs_quote_the_default_health_command() -> None:
    assert sync.DEFAULT_HEALTH in (REPO / "docs" / "rings.md").read_text()
